"""The retrieval core: how every scorer ranks a gallery, said once.

  protocol.py  Protocol: metric, normalisation, AP, ranks, re-ranking; from
               config.eval, written into features.npz and bundle.json
  exits.py     eq. 3's exit fractions, the online exit rule, the confidences
               (the paper's simulation and the deployed engine both call them)
  features.py  the one features-file schema (--mode=eval/export, tools/embed,
               other frameworks)
"""
