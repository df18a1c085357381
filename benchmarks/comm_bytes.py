"""Bytes that cross devices per step: Distributed Lion vs data-parallel Lion.

Compiles one training step of an MLP over N simulated CPU devices and reads,
from the compiled HLO, the operand bytes of every collective (per device,
with ``lionx.distributed.collective_bytes``). The baseline is standard
data-parallel Lion: an fp32 ``pmean`` of the gradients, then
``lionx.lion``. Nothing is timed: these are byte counts, exact for the
compiled program.

Two columns:

* ``operand``: bytes each device hands to collectives (the HLO operand
  sizes, the issue's measure).
* ``ring``: bytes each device receives with the usual algorithms, from the
  operand sizes B: all-reduce 2(N-1)/N B (ring), all-gather (N-1) B,
  all-to-all and reduce-scatter (N-1)/N B.

With ``--digits`` it also trains a small MLP on scikit-learn's digits with
``lionx.lion`` (one device) and with Distributed Lion over N workers at the
same global batch, and prints the final losses.

Usage (from the repository root):

  python benchmarks/comm_bytes.py                 # print the byte table
  python benchmarks/comm_bytes.py --digits        # and the digits losses
  python benchmarks/comm_bytes.py --digits --write  # also update RESULTS.md
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

_FLAG = '--xla_force_host_platform_device_count'


def _set_devices(n: int) -> None:
  """Simulates n CPU devices; must run before jax starts its backend."""
  flags = os.environ.get('XLA_FLAGS', '')
  if _FLAG in flags:
    flags = ' '.join(f for f in flags.split() if not f.startswith(_FLAG))
  os.environ['XLA_FLAGS'] = f'{flags} {_FLAG}={n}'.strip()


def _args() -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--devices', type=int, default=8)
  parser.add_argument('--width', type=int, default=1024,
                      help='hidden width of the MLP whose step is compiled')
  parser.add_argument('--digits', action='store_true',
                      help='also train on digits and print the losses')
  parser.add_argument('--steps', type=int, default=300)
  parser.add_argument('--batch', type=int, default=128,
                      help='global batch size for --digits')
  parser.add_argument('--write', action='store_true',
                      help='replace our section of benchmarks/RESULTS.md')
  args = parser.parse_args()
  if args.devices < 1 or args.width < 1 or args.steps < 1:
    parser.error('--devices, --width and --steps must be >= 1')
  if args.batch % args.devices:
    parser.error(f'--batch={args.batch} is not a multiple of '
                 f'--devices={args.devices}')
  return args


ARGS = _args() if __name__ == '__main__' else None
if ARGS is not None:
  _set_devices(ARGS.devices)

import jax  # noqa: E402  (after XLA_FLAGS)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import lionx  # noqa: E402

RESULTS = pathlib.Path(__file__).with_name('RESULTS.md')
BEGIN = '<!-- comm_bytes.py: begin (regenerate with --write) -->'
END = '<!-- comm_bytes.py: end -->'


def init_mlp(sizes, seed=0):
  keys = jax.random.split(jax.random.key(seed), len(sizes) - 1)
  return [{'w': jax.random.normal(k, (a, b)) / np.sqrt(a),
           'b': jnp.zeros(b)} for k, a, b in zip(keys, sizes, sizes[1:])]


def mlp(params, x):
  for layer in params[:-1]:
    x = jax.nn.relu(x @ layer['w'] + layer['b'])
  return x @ params[-1]['w'] + params[-1]['b']


def loss_fn(params, x, y):
  logits = mlp(params, x)
  return -jnp.mean(jnp.sum(jax.nn.log_softmax(logits) * y, axis=-1))


def make_step(opt, mesh, distributed):
  """One shard_map training step; the batch is sharded over 'data'."""
  if distributed:
    specs = lionx.DistributedLionState.partition_specs('data')
  else:
    specs = P()

  def step(params, state, x, y):
    # This worker's gradient (jax.grad of the replicated params would
    # already be summed over 'data').
    local = jax.lax.pcast(params, 'data', to='varying')
    grads = jax.grad(loss_fn)(local, x, y)
    if not distributed:
      grads = jax.lax.pmean(grads, 'data')  # the fp32 all-reduce.
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  step = jax.jit(jax.shard_map(
      step, mesh=mesh, in_specs=(P(), specs, P('data'), P('data')),
      out_specs=(P(), specs)))
  init = jax.jit(jax.shard_map(
      opt.init, mesh=mesh, in_specs=P(), out_specs=specs))
  return step, init


def optimizers(lr=1e-3, wd=0.1):
  table = [('data-parallel Lion (fp32 pmean)',
            lionx.lion(lr, weight_decay=wd), False)]
  for aggregation in ('majority', 'average'):
    for communication in ('all_to_all', 'all_gather'):
      table.append((
          f'Distributed Lion {aggregation}, {communication}',
          lionx.distributed_lion(
              lr, weight_decay=wd, aggregation=aggregation,
              communication=communication), True))
  return table


def ring_bytes(kinds: dict[str, int], n: int) -> float:
  factor = {'all-reduce': 2 * (n - 1) / n, 'all-gather': n - 1,
            'all-to-all': (n - 1) / n, 'reduce-scatter': (n - 1) / n,
            'collective-permute': 1}
  return sum(factor[k] * b for k, b in kinds.items() if k != 'total')


def byte_table(n: int, width: int) -> tuple[list[str], int]:
  mesh = jax.make_mesh((n,), ('data',), devices=jax.devices('cpu')[:n])
  params = init_mlp([64, width, width, 10])
  d = sum(x.size for x in jax.tree.leaves(params))
  batch = 8 * n
  x = jax.ShapeDtypeStruct((batch, 64), jnp.float32,
                           sharding=NamedSharding(mesh, P('data')))
  y = jax.ShapeDtypeStruct((batch, 10), jnp.float32,
                           sharding=NamedSharding(mesh, P('data')))
  rows, base = [], None
  for name, opt, distributed in optimizers():
    step, init = make_step(opt, mesh, distributed)
    state = jax.eval_shape(init, params)
    hlo = step.lower(params, state, x, y).compile().as_text()
    kinds = lionx.distributed.collective_bytes(hlo)
    ring = ring_bytes(kinds, n)
    if base is None:
      base = (kinds['total'], ring)
    detail = ', '.join(f'{k} {v:,}' for k, v in kinds.items()
                       if k != 'total')
    rows.append(
        f'| {name} | {detail} | {kinds["total"]:,} | '
        f'1/{base[0] / kinds["total"]:.1f} | {ring:,.0f} | '
        f'1/{base[1] / ring:.1f} |')
  header = [
      f'N = {n} simulated devices, MLP 64-{width}-{width}-10, '
      f'd = {d:,} parameters (fp32). Bytes per device per step.',
      '',
      '| step | collectives in the HLO (operand bytes) | operand | '
      'ratio | ring (received) | ratio |',
      '|---|---|---:|---:|---:|---:|',
  ]
  return header + rows, d


def load_digits_split():
  from sklearn.datasets import load_digits
  data = load_digits()
  x = (data.data / 16.0).astype(np.float32)
  y = np.eye(10, dtype=np.float32)[data.target]
  rng = np.random.default_rng(0)
  order = rng.permutation(len(x))
  x, y = x[order], y[order]
  return (x[:1500], y[:1500]), (x[1500:], y[1500:])


def train_digits(opt, n, steps, batch, distributed, seed=0):
  """Final (train loss, test loss, test accuracy) after ``steps`` steps."""
  (xtr, ytr), (xte, yte) = load_digits_split()
  mesh = jax.make_mesh((n,), ('data',), devices=jax.devices('cpu')[:n])
  step, init = make_step(opt, mesh, distributed)
  params = init_mlp([64, 64, 10], seed)
  state = init(params)
  rng = np.random.default_rng(seed)
  sharding = NamedSharding(mesh, P('data'))
  for _ in range(steps):
    idx = rng.choice(len(xtr), batch, replace=False)
    params, state = step(params, state,
                         jax.device_put(xtr[idx], sharding),
                         jax.device_put(ytr[idx], sharding))
    # XLA:CPU with several devices can deadlock in a collective when many
    # steps are in flight (cf. jax-ml/jax#25861): wait for each step.
    jax.block_until_ready(params)
  acc = float(np.mean(np.argmax(mlp(params, xte), -1) == yte.argmax(-1)))
  return (float(loss_fn(params, xtr, ytr)), float(loss_fn(params, xte, yte)),
          acc)


def digits_table(n, steps, batch, lr=3e-3, wd=0.1):
  runs = [('lionx.lion, 1 device', lionx.lion(lr, weight_decay=wd), 1,
           False)]
  runs.append((f'data-parallel Lion, {n} devices',
               lionx.lion(lr, weight_decay=wd), n, False))
  for aggregation in ('majority', 'average'):
    runs.append((f'Distributed Lion {aggregation}, {n} workers',
                 lionx.distributed_lion(lr, weight_decay=wd,
                                        aggregation=aggregation), n, True))
  lines = [
      f'Digits (sklearn, 1500 train / 297 test), MLP 64-64-10, {steps} '
      f'steps, global batch {batch}, lr {lr}, weight decay {wd}, seed 0.',
      '',
      '| optimizer | train loss | test loss | test accuracy |',
      '|---|---:|---:|---:|',
  ]
  for name, opt, devices, distributed in runs:
    train, test, acc = train_digits(opt, devices, steps, batch, distributed)
    lines.append(f'| {name} | {train:.4f} | {test:.4f} | {acc:.3f} |')
  return lines


def write_section(lines: list[str]) -> None:
  section = '\n'.join([BEGIN, *lines, END])
  text = RESULTS.read_text() if RESULTS.exists() else ''
  if BEGIN in text and END in text:
    head, rest = text.split(BEGIN, 1)
    text = head + section + rest.split(END, 1)[1]
  else:
    text = text.rstrip('\n') + ('\n\n' if text else '') + section + '\n'
  RESULTS.write_text(text)
  print(f'wrote our section of {RESULTS}')


def main(args: argparse.Namespace) -> None:
  if jax.device_count('cpu') < args.devices:
    sys.exit(f'only {jax.device_count("cpu")} CPU devices; XLA_FLAGS was '
             'read before this script could set it')
  table, d = byte_table(args.devices, args.width)
  lines = [
      '## Distributed Lion: bytes across devices per step',
      '',
      f'Command: `python benchmarks/comm_bytes.py --devices {args.devices} '
      f'--width {args.width}' + (' --digits' if args.digits else '') + '`',
      '',
      *table,
      '',
      'Formulas (d coordinates, N workers; padding to a multiple of 4N): '
      'fp32 all-reduce 4d; majority all_to_all d/4 + all_gather d/(4N); '
      'average all_to_all d/4 + all_gather d/N (int8 sums); all_gather '
      'mode d/4.',
  ]
  if args.digits:
    lines += ['', *digits_table(args.devices, args.steps, args.batch)]
  print('\n'.join(lines))
  if args.write:
    write_section(lines)


if __name__ == '__main__':
  main(ARGS)
