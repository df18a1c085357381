"""Lion with float32, bfloat16 and 8-bit momentum on the embedded default.

Trains ``configs/default.py`` (the small CNN on scikit-learn's digits, 30
epochs, batch size 64, cosine schedule, weight decay 0.1, Lion at lr 1e-3)
with the harness's ``train_and_evaluate``, once per momentum storage:
``lionx.lion(..., mu_dtype=None | jnp.bfloat16 | jnp.int8)``. Everything
else (data order, initialisation, schedule) is the same, so the final
losses differ only through the momentum's storage. The table gives the
final full training loss f(θ) (the harness's ``full_loss``), its relative
difference to float32 momentum, the test accuracy and the optimizer state
bytes per parameter. A second float32 run with another seed shows how
much the loss moves for reasons other than the momentum's storage.

Usage (from the repository root):

  python benchmarks/momentum_dtype.py            # print the table
  python benchmarks/momentum_dtype.py --write    # also update RESULTS.md

The runs go to a temporary directory that is deleted afterwards. Without
``--write`` nothing is written; with it, only this script's section of
``benchmarks/RESULTS.md`` is replaced.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile

import jax
import jax.numpy as jnp

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import _common  # noqa: E402  pylint: disable=g-import-not-at-top

import lionx  # noqa: E402

SCRIPT = 'momentum_dtype.py'
ROOT = pathlib.Path(__file__).resolve().parent.parent
CONFIG = ROOT / 'configs' / 'default.py'
MOMENTA = {'fp32': None, 'bf16': jnp.bfloat16, 'int8': jnp.int8}


_STATES = (lionx.ScaleByLionState, lionx.ScaleByLion8bitState)


def _lion_state(opt_state):
  found = [x for x in jax.tree.leaves(
      opt_state, is_leaf=lambda x: isinstance(x, _STATES))
           if isinstance(x, _STATES)]
  return found[0]


def _register(optimizers, name: str, mu_dtype) -> None:
  """Adds ``name`` (plain Lion with this mu_dtype) to the harness registry."""

  def build(config, schedule):
    b1, b2 = optimizers.betas(config, 'lion')
    return lionx.lion(schedule, b1=b1, b2=b2,
                      weight_decay=config.weight_decay, mu_dtype=mu_dtype)

  def direction(config, opt_state, grads):
    b1, _ = optimizers.betas(config, 'lion')
    state = _lion_state(opt_state)
    if isinstance(state, lionx.ScaleByLion8bitState):
      mu = jax.tree.map(
          lambda g, k, s: lionx.dequantize(lionx.QuantizedArray(k, s),
                                           g.shape),
          grads, state.codes, state.scales)
    else:
      mu = state.mu
    return jax.tree.map(
        lambda g, m: b1 * m.astype(jnp.float32) + (1 - b1) * g, grads, mu)

  optimizers.OPTIMIZERS[name] = optimizers.OptimizerSpec(
      build, direction, lambda c: lionx.sign_reshaper())


def _args() -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--epochs', type=int, default=0,
                      help='override num_epochs (0: the config\'s 30)')
  parser.add_argument('--write', action='store_true',
                      help='replace our section of benchmarks/RESULTS.md')
  args = parser.parse_args()
  if args.epochs < 0:
    parser.error(f'--epochs={args.epochs}: expected >= 0')
  return args


def main(args: argparse.Namespace) -> None:
  from lionx.train import config as config_lib
  from lionx.train import data as data_lib
  from lionx.train import loop
  from lionx.train import optimizers

  base = config_lib.load_config(CONFIG)
  if args.epochs:
    base.num_epochs = args.epochs
  base.progress = False
  lr = base.optimizer.learning_rates['lion']
  dataset = data_lib.load_dataset(base.data)
  results = {}
  runs = [('fp32', 0), ('fp32', 1), ('bf16', 0), ('int8', 0)]
  with tempfile.TemporaryDirectory() as tmp:
    for mu, seed in runs:
      name = f'lion_mu_{mu}'
      _register(optimizers, name, MOMENTA[mu])
      config = config_lib.copy(base)
      config.seed = seed
      config.optimizer.name = name
      config.optimizer.learning_rates = {name: lr}
      result = loop.train_and_evaluate(
          config, pathlib.Path(tmp) / f'{name}_{seed}', dataset=dataset,
          verbose=False)
      state = loop.create_train_state(config, dataset.num_classes,
                                      dataset.image_shape, 1)
      n = sum(x.size for x in jax.tree.leaves(_param_sizes(state.model)))
      state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(
          _pure(state.optimizer.opt_state)))
      results[mu, seed] = (result.rows, state_bytes / n)
      print(mu, seed, [f'{r["full_loss"]:.3e}' for r in result.rows],
            flush=True)

  epochs = len(results['fp32', 0][0])
  marks = sorted({e for e in (1, 3, 10, epochs) if e <= epochs})
  base_loss = results['fp32', 0][0][-1]['full_loss']
  rows = []
  for (mu, seed), (curve, per_param) in results.items():
    final = curve[-1]
    rel = final['full_loss'] / base_loss - 1
    rows.append([f'{mu}, seed {seed}',
                 *[f'{curve[e - 1]["full_loss"]:.3e}' for e in marks],
                 f'{100 * rel:+.1f}%', f'{100 * final["test_accuracy"]:.2f}%',
                 f'{per_param:.3f}'])
  lines = ['## momentum_dtype.py: Lion\'s momentum storage on the embedded '
           'default', '', *_common.machine(),
           f'- command: `python benchmarks/momentum_dtype.py'
           f'{f" --epochs {args.epochs}" if args.epochs else ""}`',
           f'- `configs/default.py`: {base.model.name} on {base.data.name} '
           f'(d = {n:,}), {base.num_epochs} epochs, batch '
           f'{base.batch_size}, Lion lr {lr:g}, weight decay '
           f'{base.optimizer.weight_decay}, {base.schedule.name} schedule; '
           'f(θ) is the full training loss after each epoch (the harness\'s '
           '`full_loss`). The fp32 run with seed 1 (another initialisation '
           'and data order) shows how much f(θ) moves for reasons other '
           'than the momentum\'s storage.',
           '',
           *_common.table(
               ['momentum', *[f'f(θ) epoch {e}' for e in marks],
                'final vs fp32 seed 0', 'test accuracy',
                'state bytes / parameter'], rows), '']
  print('\n'.join(lines))
  if args.write:
    _common.write_section(SCRIPT, lines)


def _param_sizes(model):
  from flax import nnx
  return nnx.state(model, nnx.Param)


def _pure(tree):
  from flax import nnx
  return nnx.as_pure(tree)


if __name__ == '__main__':
  main(_args())
