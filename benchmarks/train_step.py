"""Images per second of one ResNet-18 CIFAR training step: Lion, AdamW, SGD.

The step is the harness's own (``lionx.train.steps.make_train_step``:
forward, backward, ``nnx.Optimizer.update``, jitted with the model and the
optimizer donated, on a mesh of one device), on the model and optimizers
that ``configs/cifar.py:cifar10,resnet18`` builds (ResNet-18 with the CIFAR stem,
batch size 64, weight decay 0.1, SGD momentum 0.9). The batch is a fixed
random one already on the device, so that data loading is not timed. The
three optimizers run round-robin, one step each per round, in one process;
the table gives medians over the timed rounds.

Usage (from the repository root):

  python benchmarks/train_step.py             # print the table
  python benchmarks/train_step.py --write     # also update RESULTS.md

Without ``--write`` nothing is written; with it, only this script's section
of ``benchmarks/RESULTS.md`` is replaced.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import _common  # noqa: E402  pylint: disable=g-import-not-at-top

SCRIPT = 'train_step.py'
ROOT = pathlib.Path(__file__).resolve().parent.parent
CONFIG = f"{ROOT / 'configs' / 'cifar.py'}:cifar10,resnet18"
OPTIMIZERS = ('lion', 'adamw', 'sgd')


def _args() -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--rounds', type=int, default=10,
                      help='timed rounds (>= 5), after 2 warm-up rounds')
  parser.add_argument('--write', action='store_true',
                      help='replace our section of benchmarks/RESULTS.md')
  args = parser.parse_args()
  if args.batch < 1:
    parser.error(f'--batch={args.batch}: expected >= 1')
  if args.rounds < 5:
    parser.error(f'--rounds={args.rounds}: expected >= 5')
  return args


def main(args: argparse.Namespace) -> None:
  from flax import nnx

  from lionx.train import config as config_lib
  from lionx.train import parallel, steps, tasks
  from lionx.train.data.images import InputSpec

  warnings.filterwarnings('ignore', message='Some donated buffers')
  base = config_lib.load_config(CONFIG)
  base.batch_size = args.batch
  rng = np.random.default_rng(0)
  batch = {
      'image': jnp.asarray(rng.standard_normal((args.batch, 32, 32, 3)),
                           jnp.float32),
      'label': jnp.asarray(rng.integers(0, 10, args.batch), jnp.int32)}
  task = tasks.get_task(base.task)
  mesh = parallel.make_mesh(1)
  runners, info = {}, {}
  for name in OPTIMIZERS:
    config = config_lib.copy(base)
    config.optimizer.name = name
    config.optimizer.learning_rate = 1e-4
    state = steps.create_train_state(config, task, InputSpec((32, 32, 3), 10),
                                     1000, 1000, mesh)
    train_step = steps.make_train_step(task, mesh, state)
    params = nnx.state(state.model, nnx.Param)
    opt_state = nnx.as_pure(state.optimizer.opt_state)
    info[name] = (
        sum(x.size for x in jax.tree.leaves(params)),
        sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(opt_state)))

    def run(state=state, train_step=train_step):
      return _common.timed(
          lambda: train_step(state.model, state.optimizer, batch))

    runners[name] = run

  times = _common.interleaved(runners, args.rounds)
  adamw = _common.median_ms(times['adamw'])
  rows = []
  for name in OPTIMIZERS:
    t = _common.median_ms(times[name])
    d, state_bytes = info[name]
    rows.append([name, f'{t:.1f}', f'{args.batch / (t * 1e-3):.2f}',
                 f'{adamw / t:.3f}x',
                 f'{_common.paired_ratio(times, "adamw", name):.3f}x',
                 f'{state_bytes / 1e6:.1f} MB'])
  lines = ['## train_step.py: one ResNet-18 CIFAR training step', '',
           *_common.machine(),
           f'- command: `python benchmarks/train_step.py --batch '
           f'{args.batch} --rounds {args.rounds}`',
           f'- ResNet-18 (CIFAR stem), d = {d:,}, batch {args.batch} of '
           '32x32x3, `configs/cifar.py:cifar10,resnet18` optimizers '
           '(weight decay 0.1, SGD momentum 0.9)', '',
           *_common.table(['optimizer', 'median ms/step', 'images/s',
                           'speed vs AdamW (medians)',
                           'vs AdamW (median of per-round ratios)',
                           'optimizer state'], rows), '']
  print('\n'.join(lines))
  if args.write:
    _common.write_section(SCRIPT, lines)


if __name__ == '__main__':
  main(_args())
