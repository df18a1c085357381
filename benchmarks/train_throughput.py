"""Training-step throughput of ResNet-18 and GPT-2 Small, by optimizer.

One jitted ``nnx`` training step (forward, backward,
``nnx.Optimizer.update``) on a fixed random batch already on the device,
for each optimizer, round-robin, one step each per round; the table gives
medians over the timed rounds, and the median of per-round ratios against
``optax.adamw``. Models come from the training harness
(``lionx.train.models``): the CIFAR ResNet-18 (batch of 32x32x3 images, 10
classes) and GPT-2 Small (124M parameters, sequences of token ids).

Optimizers: ``optax.adamw``, ``optax.lion``, ``lionx.lion`` with float32
and int8 momentum, and the 6-byte setting (the model's parameters in
bfloat16, ``lionx.compensated(lionx.lion(mu_dtype=jnp.int8))``).

Usage (from the repository root):

  python benchmarks/train_throughput.py                      # both models
  python benchmarks/train_throughput.py --models resnet18 --batch 8 \\
      --rounds 5 --small                                      # a CPU check
  python benchmarks/train_throughput.py --out table.md        # also a file

``--small`` swaps GPT-2 Small for the harness's ``gpt_tiny`` with a
context of 64 (for a quick check on CPU). Nothing is written unless
``--out`` (a new file) or ``--write`` (this script's section of
``benchmarks/RESULTS.md``) is given.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import _common  # noqa: E402  pylint: disable=g-import-not-at-top

import lionx  # noqa: E402

SCRIPT = 'train_throughput.py'
LR, WD = 1e-4, 0.1
MODELS = ('resnet18', 'gpt2')


def optimizers() -> dict[str, tuple[Any, Any]]:
  """name -> (param dtype, GradientTransformation)."""
  return {
      'optax.adamw': (jnp.float32, optax.adamw(3e-4, weight_decay=0.01)),
      'optax.lion': (jnp.float32, optax.lion(LR, weight_decay=WD)),
      'lionx.lion fp32': (jnp.float32, lionx.lion(
          learning_rate=LR, weight_decay=WD)),
      'lionx.lion int8': (jnp.float32, lionx.lion(
          learning_rate=LR, weight_decay=WD, mu_dtype=jnp.int8)),
      'lionx 6-byte (bf16 params)': (jnp.bfloat16, lionx.compensated(
          lionx.lion(learning_rate=LR, weight_decay=WD,
                     mu_dtype=jnp.int8))),
  }


def build(model: str, small: bool, batch: int, dtype: Any):
  """(nnx model with params in ``dtype``, batch, loss fn, items per step)."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  if model == 'resnet18':
    from lionx.train.models import vision  # pylint: disable=g-import-not-at-top
    net = vision.create_model(vision.VisionModelConfig(name='resnet18'), 10,
                              (32, 32, 3))
    data = (jnp.asarray(rng.standard_normal((batch, 32, 32, 3)),
                        jnp.float32),
            jnp.asarray(rng.integers(0, 10, batch), jnp.int32))
    items = batch
  else:
    from lionx.train.models import lm  # pylint: disable=g-import-not-at-top
    name, vocab, context = (('gpt_tiny', 256, 64) if small
                            else ('gpt2_small', 50257, 1024))
    config = lm.GPTModelConfig(name=name, context_length=context)
    net = lm.create_model(config, vocab)
    tokens = rng.integers(0, vocab, (batch, context + 1))
    data = (jnp.asarray(tokens[:, :-1], jnp.int32),
            jnp.asarray(tokens[:, 1:], jnp.int32))
    items = batch * context
  if dtype != jnp.float32:
    state = nnx.state(net, nnx.Param)
    nnx.update(net, jax.tree.map(lambda x: x.astype(dtype), state))

  def loss_fn(net, x, y):
    logits = net(x).astype(jnp.float32)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  return net, data, loss_fn, items


def run_model(model: str, args: argparse.Namespace) -> list[str]:
  from flax import nnx  # pylint: disable=g-import-not-at-top
  runners, info = {}, {}
  for name, (dtype, tx) in optimizers().items():
    net, (x, y), loss_fn, items = build(model, args.small, args.batch, dtype)
    optimizer = nnx.Optimizer(net, tx, wrt=nnx.Param)

    @nnx.jit(donate_argnums=(0, 1))
    def step(net, optimizer, x, y, loss_fn=loss_fn):
      loss, grads = nnx.value_and_grad(loss_fn)(net, x, y)
      optimizer.update(net, grads)
      return loss

    params = nnx.state(net, nnx.Param)
    info[name] = (items, sum(int(p.size) for p in jax.tree.leaves(params)))

    def go(net=net, optimizer=optimizer, x=x, y=y, step=step):
      return _common.timed(lambda: step(net, optimizer, x, y))

    runners[name] = go
  times = _common.interleaved(runners, args.rounds)
  rows = []
  for name in runners:
    t = _common.median_ms(times[name])
    items, d = info[name]
    rows.append([name, f'{t:.1f}', f'{items / (t * 1e-3):,.0f}',
                 f'{_common.paired_ratio(times, "optax.adamw", name):.3f}x'])
  unit = 'images/s' if model == 'resnet18' else 'tokens/s'
  label = {'resnet18': 'ResNet-18 (CIFAR)',
           'gpt2': 'gpt_tiny (context 64)' if args.small
           else 'GPT-2 Small (context 1024)'}[model]
  return [f'### {label}: d = {d:,}, batch {args.batch}, {args.rounds} '
          'rounds', '',
          *_common.table(['optimizer', 'median ms/step', unit,
                          'x optax.adamw (per-round)'], rows), '']


def _args() -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--models', default=','.join(MODELS))
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--rounds', type=int, default=10,
                      help='timed rounds (>= 3), after 2 warm-up rounds')
  parser.add_argument('--small', action='store_true',
                      help='gpt_tiny (context 64) instead of GPT-2 Small')
  parser.add_argument('--out', default='',
                      help='also write the tables to this new file')
  parser.add_argument('--write', action='store_true',
                      help='replace our section of benchmarks/RESULTS.md')
  args = parser.parse_args()
  args.models = [m for m in args.models.split(',') if m]
  if not args.models or set(args.models) - set(MODELS):
    parser.error(f'--models: expected some of {", ".join(MODELS)}')
  if args.batch < 1:
    parser.error(f'--batch={args.batch}: expected >= 1')
  if args.rounds < 3:
    parser.error(f'--rounds={args.rounds}: expected >= 3')
  if args.out and pathlib.Path(args.out).exists():
    parser.error(f'--out={args.out}: the file exists; not overwriting it')
  return args


def main(args: argparse.Namespace) -> None:
  warnings.filterwarnings('ignore', message='Some donated buffers')
  lines = ['## train_throughput.py: training steps per second', '',
           *_common.machine(),
           f'- command: `python benchmarks/train_throughput.py --models '
           f'{",".join(args.models)} --batch {args.batch} --rounds '
           f'{args.rounds}{" --small" if args.small else ""}`', '']
  print('\n'.join(lines), flush=True)
  for model in args.models:
    section = run_model(model, args)
    print('\n'.join(section), flush=True)
    lines += section
  if args.out:
    pathlib.Path(args.out).write_text('\n'.join(lines) + '\n')
  if args.write:
    _common.write_section(SCRIPT, lines)


if __name__ == '__main__':
  main(_args())
