"""Every figure dare_jax draws, in one place (matplotlib, Agg, no display).

  common.py  matplotlib on demand, the PNG writer, an item's image loaded
             one way (a split's array or its file, at the input size)
  run.py     next to metrics.json: training curves, accuracy per exit, the
             engine's time-accuracy plot (bench/early_exit --figure)
  ranked.py  ranked lists, drawn by ONE function (ranked_panels) for
             --mode=eval's ranked_lists.png, tools/search --figure and the
             paper's Figures 7 and 8
  budget.py  the paper's resource figures: 3 (error per exit, fusion
             weights), 5 (anytime), 6 (budgeted stream), 7 and 8 (ranked
             lists per exit; easy and hard queries)
"""
