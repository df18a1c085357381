"""Lion with float32, bfloat16 and 8-bit momentum on the embedded default.

Trains ``configs/default.py`` (the small CNN on scikit-learn's digits, 30
epochs, batch size 64, cosine schedule, weight decay 0.1, Lion at its
config rate) with the harness's ``train_and_evaluate`` for each seed and
each momentum storage, set by ``optimizer.mu_dtype``:

* ``fp32``: ``lionx.lion`` with float32 momentum, the reference;
* ``optax.lion``: the peer, float32 too. Its steps differ from ``fp32``
  only in the sign of coordinates where c_k is at float32 rounding level
  (``tests/test_perf.py``), so its distance to ``fp32`` is the floor of
  what any change to the momentum's arithmetic can be told apart from;
* ``bf16`` and ``int8`` (8-bit blockwise, ``lionx.scale_by_lion_8bit``).

A seed fixes the initialisation and the data order, so that within a seed
the runs differ only through the momentum. The tables give the final full
training loss f(θ) (the harness's ``full_loss`` after the last epoch), its
ratio to ``fp32`` of the same seed at a few epochs, and how many seeds end
within 2% of ``fp32``.

Usage (from the repository root):

  python benchmarks/momentum_dtype.py                # 5 seeds, print
  python benchmarks/momentum_dtype.py --seeds 2 --epochs 3   # quick look
  python benchmarks/momentum_dtype.py --write        # also RESULTS.md

The runs go to a temporary directory that is deleted afterwards. Without
``--write`` nothing is written; with it, only this script's section of
``benchmarks/RESULTS.md`` is replaced.
"""

from __future__ import annotations

import argparse
import math
import pathlib
import statistics
import sys
import tempfile

import jax
import optax

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import _common  # noqa: E402  pylint: disable=g-import-not-at-top

SCRIPT = 'momentum_dtype.py'
ROOT = pathlib.Path(__file__).resolve().parent.parent
CONFIG = ROOT / 'configs' / 'default.py'
# variant -> (optimizer.name, optimizer.mu_dtype)
VARIANTS = {'fp32': ('lion', 'float32'), 'optax.lion': ('optax_lion', None),
            'bf16': ('lion', 'bfloat16'), 'int8': ('lion', 'int8')}
TOLERANCE = 0.02


def _register_optax_lion(optimizers) -> None:
  """The peer in the harness: optax.lion, read like lionx's Lion."""

  def build(s):
    return optax.lion(s.schedule, b1=s.b1, b2=s.b2,
                      weight_decay=s.weight_decay)

  def direction(s, opt_state, grads):
    mu = optimizers.find(opt_state, optax.ScaleByLionState).mu
    return jax.tree.map(lambda m, g: s.b1 * m + (1 - s.b1) * g, mu, grads)

  lion = optimizers.OPTIMIZERS['lion']
  optimizers.register('optax_lion', optimizers.OptimizerSpec(
      build, direction, None, lion.betas, lion.reshaper))


def _args() -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--seeds', type=int, default=5,
                      help='seeds 0 .. N-1, each with every variant')
  parser.add_argument('--epochs', type=int, default=0,
                      help='override num_epochs (0: the config\'s 30)')
  parser.add_argument('--write', action='store_true',
                      help='replace our section of benchmarks/RESULTS.md')
  args = parser.parse_args()
  if args.seeds < 1:
    parser.error(f'--seeds={args.seeds}: expected >= 1')
  if args.epochs < 0:
    parser.error(f'--epochs={args.epochs}: expected >= 0')
  return args


def _state_bytes_per_param(config, dataset) -> tuple[float, int]:
  """(optimizer state bytes per parameter, number of parameters)."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from lionx.train import steps, tasks  # pylint: disable=g-import-not-at-top
  state = steps.create_train_state(config, tasks.get_task(config.task),
                                   dataset.spec, 1, 1)
  n = sum(x.size for x in jax.tree.leaves(nnx.state(state.model, nnx.Param)))
  opt = nnx.as_pure(state.optimizer.opt_state)
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(opt)) / n, n


def _fmt_ratio(r: float) -> str:
  return f'{100 * (r - 1):+.1f}%'


def main(args: argparse.Namespace) -> None:
  from lionx.train import config as config_lib  # pylint: disable=g-import-not-at-top
  from lionx.train import experiment  # pylint: disable=g-import-not-at-top
  from lionx.train import optimizers  # pylint: disable=g-import-not-at-top
  from lionx.train.data import images  # pylint: disable=g-import-not-at-top

  _register_optax_lion(optimizers)
  base = config_lib.load_config(CONFIG)
  if args.epochs:
    base.num_epochs = args.epochs
  base.progress = False
  lr = base.optimizer.learning_rates['lion']
  dataset = images.load_dataset(base.data)
  curves, accuracy, per_param = {}, {}, {}
  with tempfile.TemporaryDirectory() as tmp:
    for seed in range(args.seeds):
      for variant, (name, mu_dtype) in VARIANTS.items():
        config = config_lib.copy(base)
        config.seed = seed
        config.optimizer.name = name
        config.optimizer.mu_dtype = mu_dtype
        config.optimizer.learning_rates = {name: lr}
        result = experiment.train_and_evaluate(
            config, pathlib.Path(tmp) / f'{variant}_{seed}', data=dataset,
            verbose=False)
        curves[variant, seed] = [r['full_loss'] for r in result.rows]
        accuracy[variant, seed] = result.rows[-1]['test_accuracy']
        if seed == 0:
          per_param[variant], n = _state_bytes_per_param(config, dataset)
        print(f'seed {seed} {variant:10s} f(θ) final '
              f'{curves[variant, seed][-1]:.4e}', flush=True)

  epochs = len(curves['fp32', 0])
  marks = sorted({e for e in (1, 3, 10, epochs) if e <= epochs})
  seeds = range(args.seeds)

  def ratio(variant, seed, epoch):
    return curves[variant, seed][epoch - 1] / curves['fp32', seed][epoch - 1]

  per_seed = []
  for seed in seeds:
    for variant in VARIANTS:
      final = curves[variant, seed][-1]
      cells = ([f'{final:.3e}'] + [
          '(ref)' if variant == 'fp32' else _fmt_ratio(
              ratio(variant, seed, e)) for e in marks])
      per_seed.append([str(seed), variant, *cells,
                       f'{100 * accuracy[variant, seed]:.2f}%'])
  summary = []
  for variant in VARIANTS:
    finals = [curves[variant, s][-1] for s in seeds]
    geo = math.exp(statistics.fmean(math.log(f) for f in finals))
    if variant == 'fp32':
      spread = max(finals) / min(finals)
      summary.append([variant, f'{geo:.3e}', '(ref)', '(ref)', '(ref)',
                      f'{spread:.1f}x', f'{per_param[variant]:.3f}'])
      continue
    rel = [abs(ratio(variant, s, epochs) - 1) for s in seeds]
    within = sum(r <= TOLERANCE for r in rel)
    rel1 = [abs(ratio(variant, s, 1) - 1) for s in seeds]
    summary.append([
        variant, f'{geo:.3e}', f'{100 * statistics.median(rel1):.1f}%',
        f'{100 * statistics.median(rel):.1f}%',
        f'{within}/{len(rel)}', f'{max(finals) / min(finals):.1f}x',
        f'{per_param[variant]:.3f}'])

  lines = ['## momentum_dtype.py: Lion\'s momentum storage on the embedded '
           'default', '', *_common.machine(),
           f'- command: `python benchmarks/momentum_dtype.py --seeds '
           f'{args.seeds}{f" --epochs {args.epochs}" if args.epochs else ""}`',
           f'- `configs/default.py`: {base.model.name} on {base.data.name} '
           f'(d = {n:,}), {base.num_epochs} epochs, batch '
           f'{base.batch_size}, Lion lr {lr:g}, weight decay '
           f'{base.optimizer.weight_decay}, {base.schedule.name} schedule; '
           'f(θ) is the full training loss after an epoch. Within a seed '
           '(initialisation and data order) the runs differ only in the '
           'momentum; `optax.lion` differs from `fp32` only in signs where '
           'c_k is at float32 rounding level.', '',
           '### Over seeds: f(θ) against fp32 with the same seed', '',
           *_common.table(
               ['momentum', 'geometric mean final f(θ)',
                'median abs. difference, epoch 1',
                f'median abs. difference, epoch {epochs}',
                f'seeds within {100 * TOLERANCE:.0f}% at epoch {epochs}',
                'max / min final over seeds', 'state bytes / parameter'], summary), '',
           '### Per seed', '',
           *_common.table(
               ['seed', 'momentum', 'final f(θ)',
                *[f'vs fp32, epoch {e}' for e in marks], 'test accuracy'],
               per_seed), '']
  print('\n'.join(lines))
  if args.write:
    _common.write_section(SCRIPT, lines)


if __name__ == '__main__':
  main(_args())
