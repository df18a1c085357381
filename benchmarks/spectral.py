"""The spectral reshaper's polar factor: accuracy at real sizes, and speed.

Issue 23, item 2. For each size (n x n and the 4:1 rectangles n x 4n and
4n x n, n = 256, 1024, 2048) and each spectrum of condition number 100
(``flat``: every singular value 1 but one at 0.01, the issue's example;
``geometric``: 1 down to 0.01; ``two-level``: half 1, half 0.01;
``random``: uniform in [0.01, 1], both ends present), it prints

* ``err``: ||out - U V^T||_2, against the polar factor known by
  construction (C = P Q with P = W diag(s) W^T, Q with orthonormal rows;
  float64 NumPy), exact spectral norms (float64 eigvalsh of the Gram);
* ``top - 1``: sigma_max(out) - 1.

The targets: err <= 1e-3 and every singular value in [0, 1 + 1e-3]. With
``--old`` the table also has the old algorithm's error (lionx 0.2: 20
Newton-Schulz steps from C / ||C||_F, reimplemented below, only here) at
256 and 1024. Then it times one orthogonalisation of a 1024 x 1024 float32
matrix, jitted, the new default against the old one and Muon's quintic
(median over rounds, after a warm-up), and prints the ratio.

Usage (from the repository root; a few minutes on 2 CPU cores):

  nice -n 5 python benchmarks/spectral.py             # the full table
  nice -n 5 python benchmarks/spectral.py --sizes 256 --rounds 3 --old
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from lionx._src import spectral

SPECTRA = ('flat', 'geometric', 'two-level', 'random')
_HIGHEST = jax.lax.Precision.HIGHEST


def old_orthogonalize(c: jax.Array, steps: int = 20) -> jax.Array:
  """lionx 0.2's default: Newton-Schulz's cubic from C / ||C||_F."""
  c = c.astype(jnp.float32)
  wide = c.shape[0] <= c.shape[1]
  x = c if wide else c.T
  scale = jnp.max(jnp.abs(x), initial=0.0)
  safe = jnp.where(scale > 0, scale, 1.0)
  norm = jnp.sqrt(jnp.sum(jnp.square(x / safe)))
  x = x / safe / jnp.where(norm > 0, norm, 1.0)

  def cubic(_, x):
    gram = jnp.matmul(x, x.T, precision=_HIGHEST)
    return 1.5 * x - 0.5 * jnp.matmul(gram, x, precision=_HIGHEST)

  x = jax.lax.fori_loop(0, steps, cubic, x)
  return x if wide else x.T


def spectrum(kind: str, r: int, rng: np.random.Generator) -> np.ndarray:
  """r singular values, largest 1, smallest 0.01 (condition number 100)."""
  if kind == 'flat':
    s = np.ones(r)
    s[-1] = 0.01
  elif kind == 'geometric':
    s = np.geomspace(1.0, 0.01, r)
  elif kind == 'two-level':
    s = np.where(np.arange(r) < r // 2, 1.0, 0.01)
  else:
    s = np.concatenate([[1.0, 0.01], rng.uniform(0.01, 1.0, r - 2)])
  return s


def orthogonal(rng: np.random.Generator, n: int) -> np.ndarray:
  """A dense random n x n orthogonal matrix (n a power of 2), float64."""
  h = np.ones((1, 1))
  while h.shape[0] < n:
    h = np.block([[h, h], [h, -h]])
  h /= np.sqrt(n)
  a = h[rng.permutation(n)] * rng.choice([-1.0, 1.0], n)
  b = h[rng.permutation(n)] * rng.choice([-1.0, 1.0], n)
  return a @ b


def with_polar(rng, n: int, m: int, s: np.ndarray):
  """(C, U V^T) for an n x m matrix with singular values s."""
  k, big = min(n, m), max(n, m)
  q = np.concatenate([orthogonal(rng, k) for _ in range(big // k)],
                     axis=1) / np.sqrt(big // k)
  w = orthogonal(rng, k)
  c = (w * s) @ (w.T @ q)
  return (c, q) if n <= m else (c.T, q.T)


def spectral_norm(d: np.ndarray) -> float:
  d = np.asarray(d, np.float64)
  gram = d @ d.T if d.shape[0] <= d.shape[1] else d.T @ d
  return float(np.sqrt(max(np.linalg.eigvalsh(gram)[-1], 0.0)))


def one_blas_thread():
  """NumPy's LAPACK on one thread (much faster on a loaded shared CPU)."""
  try:
    from threadpoolctl import threadpool_limits  # pylint: disable=all
  except ImportError:
    return contextlib.nullcontext()
  return threadpool_limits(limits=1, user_api='blas')


def median_time(fn, x, rounds: int) -> float:
  fn(x).block_until_ready()  # compile and warm up
  times = []
  for _ in range(rounds):
    start = time.perf_counter()
    fn(x).block_until_ready()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--sizes', default='256,1024,2048',
                      help='comma-separated n (powers of 2)')
  parser.add_argument('--rounds', type=int, default=5,
                      help='timed rounds at 1024 x 1024 (median)')
  parser.add_argument('--old', action='store_true',
                      help="also the old algorithm's error at n <= 1024")
  parser.add_argument('--no-timing', action='store_true')
  args = parser.parse_args(argv)
  sizes = [int(n) for n in args.sizes.split(',')]
  new = jax.jit(spectral.orthogonalize)
  old = jax.jit(old_orthogonalize)
  rng = np.random.default_rng(0)
  print(f'device: {jax.devices()[0].device_kind}; float32, the default '
        f'{spectral.DEFAULT_STEPS["polar_express"]} steps')
  header = f'{"shape":>12} {"spectrum":>10} {"err":>9} {"top - 1":>9}'
  print(header + (f' {"old err":>9}' if args.old else '') + '  target')
  worst = 0.0
  with one_blas_thread():
    for n in sizes:
      shapes = [(n, n), (n, 4 * n)] + ([(4 * n, n)] if n <= 1024 else [])
      for shape in shapes:
        for kind in SPECTRA:
          c, q = with_polar(rng, *shape, spectrum(kind, min(shape), rng))
          c32 = jnp.asarray(c, jnp.float32)
          out = np.asarray(new(c32), np.float64)
          err = spectral_norm(out - q)
          top = spectral_norm(out) - 1.0
          worst = max(worst, err)
          ok = err <= 1e-3 and top <= 1e-3
          line = (f'{shape[0]:>5}x{shape[1]:<6} {kind:>10} {err:9.2e} '
                  f'{top:9.1e}')
          if args.old:
            old_err = (spectral_norm(np.asarray(old(c32), np.float64) - q)
                       if n <= 1024 else float('nan'))
            line += f' {old_err:9.2e}'
          print(line + ('  ok' if ok else '  MISSED'), flush=True)
  print(f'largest err: {worst:.2e} (target 1e-3)')
  if args.no_timing:
    return
  c, _ = with_polar(rng, 1024, 1024, spectrum('flat', 1024, rng))
  x = jnp.asarray(c, jnp.float32)
  quintic = jax.jit(lambda c: spectral.orthogonalize(c, 'quintic'))
  t_new = median_time(new, x, args.rounds)
  t_old = median_time(old, x, args.rounds)
  t_quintic = median_time(quintic, x, args.rounds)
  print(f'1024 x 1024, median of {args.rounds} rounds: polar_express '
        f'{t_new * 1e3:.0f} ms, old newton_schulz (20 steps) '
        f'{t_old * 1e3:.0f} ms, quintic {t_quintic * 1e3:.0f} ms; '
        f'new / old = {t_new / t_old:.2f}')


if __name__ == '__main__':
  main()
