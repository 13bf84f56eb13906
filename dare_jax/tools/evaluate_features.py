r"""Evaluates every query_NAME / gallery_NAME pair of a features file.

  python -m dare_jax.tools.evaluate_features FEATURES.npz \
      [--ap=market|standard] [--metric=euclidean|sqeuclidean|cosine] \
      [--[no]normalize] [--rerank] [--k1=20] [--k2=6] [--lambda=0.3]

Prints one JSON object to stdout:
  {NAME: {"rank1", "rank5", "rank10", "mAP", "mINP", "num_valid_queries"}}
with fractions in [0, 1] (mINP: mean inverse negative penalty, Ye et al.
2020, as fast-reid reports it). The file may come from any framework; its
schema is in dare_jax/retrieval/features.py. It is scored as its protocol
says (how the run scored it; raw Euclidean and the Market AP for a file
without one); --metric, --normalize, --ap, --k1, --k2 and --lambda override
it. Logs go to stderr.
"""


from absl import app
from absl import flags

from dare_jax import console
from dare_jax.retrieval import features as features_lib
from dare_jax.tools import cli

cli.define_protocol_flags(rerank=True)
flags.DEFINE_bool('rerank', False, 'k-reciprocal re-ranking (Zhong et al.; '
                  'from squared Euclidean distances, --metric ignored).')
FLAGS = flags.FLAGS
REPORTED = ('rank1', 'rank5', 'rank10', 'mAP', 'mINP', 'num_valid_queries')


def main(argv):
  console.start()
  if len(argv) != 2:
    raise app.UsageError('Usage: python -m dare_jax.tools.evaluate_features '
                         'FEATURES.npz [--flags]')
  def compute():
    feats = features_lib.load_features(argv[1])
    proto = cli.protocol_of(feats, argv[1]).replace(ranks=(1, 5, 10))
    results = proto.evaluate(feats, reranked=FLAGS.rerank)
    return {name: {k: r[k] for k in REPORTED}
            for name, r in results.items()}
  # Bad files and options are the user's to fix: one line, no traceback.
  return cli.emit_json(compute, indent=2)

if __name__ == '__main__':
  app.run(main, flags_parser=console.parse_flags)
