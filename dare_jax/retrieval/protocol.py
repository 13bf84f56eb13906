"""How a run scores retrieval, decided once: the metric, the normalisation
and the AP definition of config.eval, carried as one value to every scorer
that ranks a gallery -- the evaluator, the budget report and its stream
simulation, the anytime engine (tools/stream, bench/anytime) and search.

  proto = protocol.Protocol.from_config(config.eval)
  dist_QxG = proto.distances(q_QxD, g_GxD)     # jittable

A bundle carries it in bundle.json ('search': metric, normalize); a features
file or bundle without it gets the defaults (raw Euclidean, Market AP).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from dare_jax import errors
from dare_jax.evaluation import metrics


@dataclasses.dataclass(frozen=True)
class Protocol:
  metric: str = 'euclidean'  # metrics.METRICS
  normalize: bool = False  # L2-normalise the embeddings first
  ap: str = 'market'  # metrics.AP_KINDS

  def __post_init__(self):
    if self.metric not in metrics.METRICS:
      raise errors.ConfigError(f'eval.metric={self.metric!r}: use one of '
                               f'{", ".join(metrics.METRICS)}.')
    if self.ap not in metrics.AP_KINDS:
      raise errors.ConfigError(f'eval.ap={self.ap!r}: use one of '
                               f'{", ".join(metrics.AP_KINDS)}.')

  @classmethod
  def from_config(cls, eval_cfg) -> 'Protocol':
    return cls(str(eval_cfg.metric), bool(eval_cfg.normalize),
               str(eval_cfg.ap))

  @classmethod
  def from_bundle(cls, meta: Mapping[str, Any]) -> 'Protocol':
    """A bundle's protocol (bundle.json's 'search'; the defaults without)."""
    s = meta.get('search', {})
    return cls(str(s.get('metric', 'euclidean')),
               bool(s.get('normalize', False)), str(s.get('ap', 'market')))

  def distances(self, q_QxD, g_GxD):
    """float32 [Q, G] distances under this protocol (jittable)."""
    return metrics.pairwise_distances(q_QxD, g_GxD, self.metric,
                                      self.normalize)
