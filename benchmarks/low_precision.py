"""bfloat16 parameters against float32 Lion: how far they drift in 3000 steps.

The setting of issue 14 (and of ``tests/test_compensated.py``): 4096
coordinates, |theta_0| about 0.05 (stored in bfloat16, and the float32 run
starts from the same values), Lion with lr 1e-4, weight decay 0.1, betas
(0.9, 0.99), and the same float32 gradients (standard normal noise) for
every run, so that the runs differ only in how the parameters are stored.
After 3000 steps the table gives, against float32 Lion's parameters
``p32``:

* ``equal to bf16(p32)``: the share of coordinates whose stored bfloat16
  value equals ``p32`` rounded to bfloat16;
* ``max abs(p - p32) / lr``: the largest distance of the stored value;
* ``max abs(precise - p32) / lr``: the same for the precise value
  (``lionx.quantized.compensated_params``; flashoptim's ``reconstruct_weights``).

Rows: plain bfloat16 params (``lionx.lion``), ``lionx.compensated`` with an
int8 and an int16 residual, and flashoptim-jax's ``flash_lion`` (its
int8 error correction, float32 momentum so that only the parameter storage
differs; unfused) when it is installed. Medians over ``--seeds`` seeds,
with their range.

Usage (from the repository root):

  python benchmarks/low_precision.py            # print the table
  python benchmarks/low_precision.py --write    # also update RESULTS.md
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import _common  # noqa: E402  pylint: disable=g-import-not-at-top

import lionx  # noqa: E402

SCRIPT = 'low_precision.py'
N, LR, WD = 4096, 1e-4, 0.1


def _lion():
  return lionx.lion(learning_rate=LR, weight_decay=WD)


def _optax_run(opt, params, key, steps):
  def body(carry, k):
    p, s = carry
    g = jax.random.normal(jax.random.fold_in(key, k), (N,))
    u, s = opt.update(g, s, p)
    return (optax.apply_updates(p, u), s), None
  (p, s), _ = jax.lax.scan(body, (params, opt.init(params)),
                           jnp.arange(steps))
  return p, s


def runs() -> dict[str, Callable[[Any, Any, int], tuple[Any, Any]]]:
  """name -> run(theta0 bf16, key, steps) -> (stored params, precise)."""
  def plain(theta0, key, steps):
    p, _ = _optax_run(_lion(), theta0, key, steps)
    return p, p.astype(jnp.float32)

  def comp(dtype):
    def run(theta0, key, steps):
      p, s = _optax_run(lionx.compensated(_lion(), dtype), theta0, key,
                        steps)
      return p, lionx.quantized.compensated_params(p, s)
    return run

  out = {'bf16 params, lionx.lion': plain,
         'lionx.compensated, int8 residual': comp(jnp.int8),
         'lionx.compensated, int16 residual': comp(jnp.int16)}
  try:
    import flashoptim_jax as fo  # pylint: disable=g-import-not-at-top
  except ImportError:
    return out

  def flash(theta0, key, steps):
    opt = fo.flash_lion(LR, weight_decay=WD, quantize=False, fused=False)

    def body(carry, k):
      p, s = carry
      g = jax.random.normal(jax.random.fold_in(key, k), (N,))
      return opt.step(p, s, g), None
    (p, s), _ = jax.lax.scan(body, (theta0, opt.init(theta0)),
                             jnp.arange(steps))
    return p, fo.reconstruct_weights(p, s.ecc)

  out['flashoptim flash_lion, int8 ECC'] = flash
  return out


def _args() -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--seeds', type=int, default=3)
  parser.add_argument('--steps', type=int, default=3000)
  parser.add_argument('--write', action='store_true',
                      help='replace our section of benchmarks/RESULTS.md')
  args = parser.parse_args()
  if args.seeds < 1:
    parser.error(f'--seeds={args.seeds}: expected >= 1')
  if args.steps < 1:
    parser.error(f'--steps={args.steps}: expected >= 1')
  return args


def _cell(values: list[float], fmt: str) -> str:
  med = statistics.median(values)
  return (f'{med:{fmt}} ({min(values):{fmt}} to {max(values):{fmt}})'
          if len(values) > 1 else f'{med:{fmt}}')


def main(args: argparse.Namespace) -> None:
  stats = {name: ([], [], []) for name in runs()}
  for seed in range(args.seeds):
    key = jax.random.PRNGKey(seed)
    theta0 = (0.05 * jnp.sign(jax.random.normal(key, (N,)))
              * (1 + 0.2 * jax.random.uniform(jax.random.fold_in(key, 1),
                                              (N,)))).astype(jnp.bfloat16)
    p32, _ = jax.jit(lambda t, k: _optax_run(_lion(), t, k, args.steps))(
        theta0.astype(jnp.float32), key)
    for name, run in runs().items():
      p, full = jax.jit(lambda t, k, run=run: run(t, k, args.steps))(
          theta0, key)
      equal, far, far_full = stats[name]
      equal.append(100 * float(jnp.mean(p == p32.astype(jnp.bfloat16))))
      far.append(float(jnp.max(jnp.abs(p.astype(jnp.float32) - p32))) / LR)
      far_full.append(float(jnp.max(jnp.abs(full - p32))) / LR)
  rows = [[name, _cell(e, '.1f') + ' %', _cell(f, '.1f'), _cell(g, '.2f')]
          for name, (e, f, g) in stats.items()]
  lines = ['## low_precision.py: bfloat16 parameters against float32 Lion',
           '', *_common.machine(),
           f'- command: `python benchmarks/low_precision.py --seeds '
           f'{args.seeds} --steps {args.steps}`',
           f'- {N} coordinates, |theta_0| about 0.05, Lion lr {LR}, weight '
           f'decay {WD}, the same float32 gradients for every run; after '
           f'{args.steps} steps, medians over {args.seeds} seeds (range)', '',
           *_common.table(['parameters', 'equal to bf16(p32)',
                           'max abs(p - p32) / lr',
                           'max abs(precise - p32) / lr'], rows), '']
  print('\n'.join(lines))
  if args.write:
    _common.write_section(SCRIPT, lines)


if __name__ == '__main__':
  main(_args())
