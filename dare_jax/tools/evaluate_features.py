r"""Evaluates every query_NAME / gallery_NAME pair of a features file.

  python -m dare_jax.tools.evaluate_features FEATURES.npz \
      [--ap=market|standard] [--metric=euclidean|sqeuclidean|cosine] \
      [--normalize] [--rerank] [--k1=20] [--k2=6] [--lambda=0.3]

Prints one JSON object to stdout:
  {NAME: {"rank1", "rank5", "rank10", "mAP", "mINP", "num_valid_queries"}}
with fractions in [0, 1] (mINP: mean inverse negative penalty, Ye et al.
2020, as fast-reid reports it). The file may come from any framework; its
schema is in dare_jax/evaluation/features.py. Logs go to stderr.
"""


from absl import app
from absl import flags

from dare_jax import console
from dare_jax.tools import cli
from dare_jax.evaluation import features as features_lib
from dare_jax.evaluation import metrics

flags.DEFINE_enum('ap', 'market', list(metrics.AP_KINDS),
                  'market: the official Market-1501 (trapezoidal) AP; '
                  'standard: mean precision at each hit (torchreid, '
                  'fast-reid).')
flags.DEFINE_enum('metric', 'euclidean', list(metrics.METRICS),
                  'Distance between embeddings (ignored with --rerank, '
                  'which works on squared Euclidean distances).')
flags.DEFINE_bool('normalize', False, 'L2-normalise the embeddings first.')
flags.DEFINE_bool('rerank', False, 'k-reciprocal re-ranking (Zhong et al.).')
flags.DEFINE_integer('k1', 20, 'Re-ranking: k of the k-reciprocal sets.')
flags.DEFINE_integer('k2', 6, 'Re-ranking: neighbours in query expansion.')
flags.DEFINE_float('lambda', 0.3, 'Re-ranking: weight of the original '
                   'distance (1 - lambda weighs the Jaccard distance).')
FLAGS = flags.FLAGS


def main(argv):
  console.start()
  if len(argv) != 2:
    raise app.UsageError('Usage: python -m dare_jax.tools.evaluate_features '
                         'FEATURES.npz [--flags]')
  def compute():
    feats = features_lib.load_features(argv[1])
    results = features_lib.evaluate_features_file(
        feats, metric=FLAGS.metric, normalize=FLAGS.normalize, ap=FLAGS.ap,
        ranks=(1, 5, 10), rerank=FLAGS.rerank, k1=FLAGS.k1, k2=FLAGS.k2,
        lambda_value=FLAGS['lambda'].value)
    return {name: {k: r[k] for k in features_lib.REPORTED}
            for name, r in results.items()}
  # Bad files and options are the user's to fix: one line, no traceback.
  return cli.emit_json(compute, indent=2)

if __name__ == '__main__':
  app.run(main, flags_parser=console.parse_flags)
