"""How a run scores retrieval, decided once and carried as one value.

config.eval's metric, normalisation, AP definition, reported ranks and
k-reciprocal re-ranking (k1, k2, lambda) make a frozen Protocol. The run
writes it into features.npz (key 'protocol', JSON) and bundle.json
('search'); every scorer reads it back from there: the evaluator
(--mode=eval), the budget report and its figures, tools/evaluate_features,
tools/budgeted, tools/search, tools/stream and the anytime engine.

  proto = Protocol.from_config(config.eval)
  dist_QxG = proto.distances(q_QxD, g_GxD)     # jittable
  results = proto.evaluate(feats)              # {name: CMC, mAP, ...}

A file or bundle that records none (written before 2026-12-03, or by another
framework) gets the defaults below -- raw Euclidean distances, the Market AP
-- and says so once.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping, Optional, Sequence

from absl import logging
import numpy as np

from dare_jax import errors
from dare_jax.evaluation import metrics
from dare_jax.retrieval import features as features_lib

# The features.npz key that holds the protocol (a JSON string).
KEY = features_lib.PROTOCOL_KEY
_NOTED: set = set()


@dataclasses.dataclass(frozen=True)
class Protocol:
  metric: str = 'euclidean'  # metrics.METRICS
  normalize: bool = False  # L2-normalise the embeddings first
  ap: str = 'market'  # metrics.AP_KINDS
  ranks: tuple = (1, 5, 10)  # the CMC ranks reported
  rerank: bool = False  # also report k-reciprocal re-ranked results
  k1: int = 20
  k2: int = 6
  lambda_value: float = 0.3

  def __post_init__(self):
    if self.metric not in metrics.METRICS:
      raise errors.ConfigError(f'eval.metric={self.metric!r}: use one of '
                               f'{", ".join(metrics.METRICS)}.')
    if self.ap not in metrics.AP_KINDS:
      raise errors.ConfigError(f'eval.ap={self.ap!r}: use one of '
                               f'{", ".join(metrics.AP_KINDS)}.')
    object.__setattr__(self, 'ranks', tuple(int(r) for r in self.ranks))
    if not self.ranks or min(self.ranks) < 1:
      raise errors.ConfigError(f'eval.ranks={self.ranks}: ranks are >= 1.')
    if self.k1 < 1 or self.k2 < 1 or not 0 <= self.lambda_value <= 1:
      raise errors.ConfigError(
          f'eval.k1={self.k1}, eval.k2={self.k2}, '
          f'eval.lambda_value={self.lambda_value}: re-ranking needs k1, '
          'k2 >= 1 and lambda_value in [0, 1].')

  @classmethod
  def from_config(cls, eval_cfg) -> 'Protocol':
    return cls(str(eval_cfg.metric), bool(eval_cfg.normalize),
               str(eval_cfg.ap), tuple(eval_cfg.ranks),
               bool(eval_cfg.rerank), int(eval_cfg.k1), int(eval_cfg.k2),
               float(eval_cfg.lambda_value))

  def to_dict(self) -> dict:
    d = dataclasses.asdict(self)
    d['ranks'] = list(self.ranks)
    return d

  @classmethod
  def from_dict(cls, d: Optional[Mapping[str, Any]], source: str
                ) -> 'Protocol':
    """The protocol a file records; the defaults (said once per source)
    when it records none."""
    if not d:
      if source not in _NOTED:
        _NOTED.add(source)
        logging.warning(
            '%s records no retrieval protocol (written before 2026-12-03 or '
            'by another framework): scoring with the defaults (%s).', source,
            cls().describe())
      return cls()
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - fields)
    if unknown:
      raise errors.DataError(f'{source}: unknown protocol fields '
                             f'{", ".join(unknown)} (known: '
                             f'{", ".join(sorted(fields))}).')
    kinds = {f.name: type(getattr(cls(), f.name))
             for f in dataclasses.fields(cls)}
    try:
      return cls(**{k: kinds[k](v) for k, v in d.items()})
    except (TypeError, ValueError) as e:
      raise errors.DataError(f'{source}: a malformed protocol {dict(d)} '
                             f'({e}).') from e

  @classmethod
  def from_bundle(cls, meta: Mapping[str, Any],
                  source: str = 'bundle.json') -> 'Protocol':
    """A bundle's protocol (bundle.json's 'search')."""
    return cls.from_dict(meta.get('search'), source)

  @classmethod
  def from_features(cls, feats: Mapping[str, Any], source: str
                    ) -> 'Protocol':
    """The protocol a features file holds (features.KEY)."""
    raw = feats.get(KEY)
    if raw is None:
      return cls.from_dict(None, source)
    try:
      d = json.loads(str(np.asarray(raw)))
    except ValueError as e:
      raise errors.DataError(f'{source}: its {KEY!r} entry is not JSON '
                             f'({e}).') from e
    return cls.from_dict(d, source)

  @classmethod
  def of_run(cls, feats: Mapping[str, Any], source: str,
             eval_cfg=None) -> 'Protocol':
    """The protocol a run's features file records; for a file that records
    none, config.eval's when a config is given (said once), else the
    defaults. A config whose protocol differs from the file's is warned
    about, naming the fields: the file's is how the run was scored."""
    if KEY not in feats:
      if eval_cfg is None:
        return cls.from_dict(None, source)
      if source not in _NOTED:
        _NOTED.add(source)
        logging.warning('%s records no retrieval protocol (written before '
                        '2026-12-03): scoring with the config\'s.', source)
      return cls.from_config(eval_cfg)
    proto = cls.from_features(feats, source)
    if eval_cfg is not None:
      mine = cls.from_config(eval_cfg)
      diff = [f'eval.{k}' for k, v in mine.to_dict().items()
              if proto.to_dict()[k] != v]
      if diff:
        logging.warning('%s was scored with other %s than this config\'s; '
                        'keeping the file\'s (%s).', source,
                        ', '.join(diff), proto.describe())
    return proto

  def to_array(self) -> np.ndarray:
    """The features-file entry (a 0-d string array of JSON)."""
    return np.array(json.dumps(self.to_dict(), sort_keys=True))

  def describe(self) -> str:
    return (f'{self.metric}{", L2-normalised" if self.normalize else ""}, '
            f'{self.ap} AP')

  def replace(self, **changes) -> 'Protocol':
    return dataclasses.replace(self, **changes)

  def distances(self, q_QxD, g_GxD):
    """float32 [Q, G] distances under this protocol (jittable)."""
    return metrics.pairwise_distances(q_QxD, g_GxD, self.metric,
                                      self.normalize)

  def rerank_distances(self, q_QxD, g_GxD) -> np.ndarray:
    """[Q, G] k-reciprocal re-ranked distances (from squared Euclidean
    distances, L2-normalised first when `normalize`; `metric` does not
    apply)."""
    from dare_jax.evaluation import rerank as rerank_lib  # pylint: disable=g-import-not-at-top
    return rerank_lib.rerank_features(q_QxD, g_GxD, k1=self.k1, k2=self.k2,
                                      lambda_value=self.lambda_value,
                                      normalize=self.normalize)

  def evaluate(self, feats: Mapping[str, np.ndarray],
               names: Optional[Sequence[str]] = None,
               reranked: bool = False) -> dict[str, dict]:
    """{NAME: {rank1, rank5, rank10, ..., mAP, mINP, num_valid_queries,
    num_queries}} for each embedding NAME of a features dict (fractions in
    [0, 1]); with reranked, on the re-ranked distances."""
    names = (list(names) if names is not None
             else features_lib.embedding_names(feats))
    ids = [np.asarray(feats[k]) for k in features_lib.ID_KEYS]
    out = {}
    for name in names:
      q, g = feats[f'query_{name}'], feats[f'gallery_{name}']
      if reranked:
        out[name] = metrics.evaluate_ranking(
            self.rerank_distances(q, g), *ids, ranks=self.ranks, ap=self.ap)
      else:
        out[name] = metrics.evaluate_features(
            q, g, *ids, metric=self.metric, normalize=self.normalize,
            ranks=self.ranks, ap=self.ap)
      log_metrics(name, out[name], reranked)
    return out

  def evaluate_run(self, feats: Mapping[str, np.ndarray],
                   names: Optional[Sequence[str]] = None) -> dict:
    """evaluate(), plus {'rerank': {NAME: ...}} when the protocol asks for
    re-ranking: what metrics.json holds."""
    results = self.evaluate(feats, names)
    if self.rerank:
      results['rerank'] = self.evaluate(feats, names, reranked=True)
    return results


def log_metrics(name: str, result: Mapping, reranked: bool = False) -> None:
  """One log line of an embedding's evaluate_ranking result."""
  # A summary of per-query results without 'inp' has no mINP.
  minp = f' mINP {result["mINP"]:.4f}' if 'mINP' in result else ''
  logging.info('%-8s%s rank1 %.4f mAP %.4f%s (%d of %d queries valid)', name,
               ' (re-ranked)' if reranked else '', result['rank1'],
               result['mAP'], minp, result['num_valid_queries'],
               result['num_queries'])
