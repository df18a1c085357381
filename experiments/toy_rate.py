r"""Lion's rate on the toy problem of Dong, Li, Lin (journal version, A.1.1).

Objective (d = 2), with the noisy gradient :math:`g = \nabla f + \varepsilon`,
:math:`\varepsilon \sim N(0, I_2)`, so :math:`\sigma^2 = 2`:

.. math::

  f(\theta) = \theta_1^2 + \theta_2^2 + 5\cos\theta_1\cos\theta_2,
  \qquad L = \sup\|\nabla^2 f\|_2 = 7,

whose global minima are :math:`(0, \pm 2.125)` and :math:`(\pm 2.125, 0)`
with :math:`f^* = 1.884` (as the paper reports; :func:`find_minimum`
recomputes them). Settings of the paper: :math:`\lambda = 0.1` (the box
:math:`\|\theta\|_\infty \le 10`), :math:`\eta = 0.01`, :math:`K = 2000`,
5 initial points × 5 repeats. Constrained runs start on the box,
:math:`\theta_1 = 10`, :math:`\theta_2 \sim U[-10, 10]`; unconstrained runs
start at :math:`\theta \sim U[-10, 10]^2`. For every :math:`K` the running
averages (left-hand sides)

.. math::

  \frac1K\sum_{k\le K}\big[\lambda\langle\nabla f(\theta_k),\theta_k\rangle
    + \|\nabla f(\theta_k)\|_1\big] \ \ \text{(Cor. 3)}, \qquad
  \frac{1}{2K}\sum_{k\le K}\|\nabla f(\theta_k)\|_1 \ \ \text{(Cor. 5)}

are compared with :math:`15\sqrt d K^{-1/4}(\sigma^2 L (f(\theta_1) -
f^*))^{1/4}`. The paper's figure uses a fixed :math:`\eta`, not the schedule
of Theorem 2, so the comparison is a sanity check of the shape, not a test
of the theorem; ``schedule='paper'`` runs the schedule of Corollary 3
instead (then the bound is claimed at the final :math:`K` only).

Run the full size from the command line::

  python -m experiments.toy_rate --out results/toy_rate
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import pathlib
import sys
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

import lionx
from lionx import checks
from lionx import metrics
from lionx import theory
from experiments import _common

D = 2
L_PAPER = 7.0
SIGMA2 = 2.0  # E||eps||^2 for eps ~ N(0, I_2).
F_STAR_PAPER = 1.884
MINIMA_PAPER = ((0.0, 2.125), (0.0, -2.125), (2.125, 0.0), (-2.125, 0.0))
BOX = 10.0
SCHEDULES = ('fixed', 'paper')


def f(theta: Any) -> Any:
  """The objective; works on NumPy and JAX arrays of shape ``(..., 2)``."""
  xp = jnp if isinstance(theta, jax.Array) else np
  t1, t2 = theta[..., 0], theta[..., 1]
  return t1 ** 2 + t2 ** 2 + 5 * xp.cos(t1) * xp.cos(t2)


def grad_f(theta: Any) -> Any:
  r""":math:`\nabla f = (2\theta_1 - 5\sin\theta_1\cos\theta_2,
  2\theta_2 - 5\cos\theta_1\sin\theta_2)`."""
  xp = jnp if isinstance(theta, jax.Array) else np
  t1, t2 = theta[..., 0], theta[..., 1]
  return xp.stack([2 * t1 - 5 * xp.sin(t1) * xp.cos(t2),
                   2 * t2 - 5 * xp.cos(t1) * xp.sin(t2)], axis=-1)


def _hessian_np(theta: np.ndarray) -> np.ndarray:
  t1, t2 = theta[..., 0], theta[..., 1]
  diag = 2 - 5 * np.cos(t1) * np.cos(t2)
  off = 5 * np.sin(t1) * np.sin(t2)
  return np.stack([np.stack([diag, off], -1), np.stack([off, diag], -1)], -2)


def find_minimum(box: float = BOX, step: float = 0.02) -> tuple[np.ndarray,
                                                               float]:
  """Global minimisers of ``f`` on ``[-box, box]^2``: grid, then Newton.

  Every grid point within 0.1 of the grid minimum starts 20 Newton steps in
  float64; limits that stay in the box with a vanishing gradient join the
  grid points, and the distinct points with the smallest value are returned
  (on a small box the minimum can sit on the boundary, where the grid point
  is kept).

  Returns:
    ``(minimizers, f_star)``: an ``(n, 2)`` array sorted lexicographically
    and the minimum value.
  """
  axis = np.linspace(-box, box, int(round(2 * box / step)) + 1)
  grid = np.stack(np.meshgrid(axis, axis, indexing='ij'), -1).reshape(-1, 2)
  values = f(grid)
  start = grid[values < values.min() + 0.1]
  x = start
  with np.errstate(all='ignore'):
    for _ in range(20):
      x = x - np.linalg.solve(_hessian_np(x), grad_f(x)[..., None])[..., 0]
  ok = (np.all(np.abs(x) <= box, axis=-1)
        & (np.linalg.norm(grad_f(x), axis=-1) < 1e-9))
  x = np.concatenate([x[ok], start])
  fx = f(x)
  x = x[fx < fx.min() + 1e-9]
  found = np.unique(np.round(x, 6) + 0.0, axis=0)
  return found, float(f(found).min())


def lipschitz_constant(box: float = BOX, num: int = 401) -> float:
  r""":math:`\max\|\nabla^2 f\|_2` on a ``num``² grid (``jax.hessian``)."""
  axis = jnp.linspace(-box, box, num)
  grid = jnp.stack(jnp.meshgrid(axis, axis, indexing='ij'), -1).reshape(-1, 2)
  hess = jax.vmap(jax.hessian(lambda t: f(t)))(grid.astype(jnp.float32))
  return float(jnp.max(jnp.abs(jnp.linalg.eigvalsh(hess))))


@dataclasses.dataclass
class RunSet:
  """One family of runs (constrained or unconstrained) and its margins."""

  name: str
  theta0: np.ndarray  # (R, 2) initial points theta_1.
  point: np.ndarray  # (R,) index of the initial point.
  repeat: np.ndarray  # (R,) index of the repeat.
  b1: np.ndarray  # (R,)
  b2: np.ndarray  # (R,)
  learning_rate: np.ndarray  # (R,)
  thetas: np.ndarray  # (R, K, 2) iterates theta_1 .. theta_K.
  f_gap: np.ndarray  # (R,) f(theta_1) - f*.
  min_steps: np.ndarray  # (R,) Corollary 3/5's lower bound on K.
  lhs: np.ndarray  # (R, K) running average (left-hand side).
  rhs: np.ndarray  # (R, K) 15 sqrt(d) K^{-1/4} (sigma^2 L Delta)^{1/4}.
  residual_min: np.ndarray  # (R,) min_k KKT residual.
  linf_scaled_max: np.ndarray  # (R,) max_k lambda ||theta_k||_inf.

  @property
  def holds(self) -> np.ndarray:
    """(R,) whether LHS <= RHS at every K."""
    return np.all(self.lhs <= self.rhs, axis=1)

  @property
  def max_ratio(self) -> np.ndarray:
    """(R,) max over K of LHS / RHS (<= 1 iff the bound holds)."""
    return np.max(self.lhs / self.rhs, axis=1)

  @property
  def min_margin(self) -> np.ndarray:
    """(R,) min over K of RHS - LHS (>= 0 iff the bound holds)."""
    return np.min(self.rhs - self.lhs, axis=1)

  @property
  def claimed(self) -> np.ndarray:
    """(R, K) mask of the K >= min_steps where the corollary claims a bound."""
    k = np.arange(1, self.lhs.shape[1] + 1)
    return k[None, :] >= self.min_steps[:, None]

  @property
  def max_ratio_claimed(self) -> np.ndarray:
    """(R,) max of LHS / RHS over K >= min_steps (NaN if K never reaches)."""
    ratio = np.where(self.claimed, self.lhs / self.rhs, -np.inf)
    out = ratio.max(axis=1)
    return np.where(np.isfinite(out), out, np.nan)

  def violations(self) -> list[str]:
    """(R,) the K range where LHS > RHS, as text ('' if none)."""
    out = []
    for r in range(self.lhs.shape[0]):
      bad = np.flatnonzero(self.lhs[r] > self.rhs[r]) + 1
      out.append(f'{bad.min()}-{bad.max()}' if bad.size else '')
    return out

  def rows(self) -> list[dict[str, Any]]:
    """One table row per run."""
    ratio = self.lhs / self.rhs
    claimed = self.max_ratio_claimed
    violations = self.violations()
    rows = []
    for r in range(len(self.point)):
      rows.append({
          'setting': self.name,
          'point': int(self.point[r]),
          'repeat': int(self.repeat[r]),
          'theta0': f'({self.theta0[r, 0]:.3f}, {self.theta0[r, 1]:.3f})',
          'f_gap': float(self.f_gap[r]),
          'eta': float(self.learning_rate[r]),
          'final_theta': (f'({self.thetas[r, -1, 0]:.3f}, '
                          f'{self.thetas[r, -1, 1]:.3f})'),
          'max_lam_linf': float(self.linf_scaled_max[r]),
          'min_kkt_residual': float(self.residual_min[r]),
          'lhs_final': float(self.lhs[r, -1]),
          'rhs_final': float(self.rhs[r, -1]),
          'max_lhs_over_rhs': float(ratio[r].max()),
          'at_K': int(np.argmax(ratio[r]) + 1),
          'min_margin': float(self.min_margin[r]),
          'holds_all_K': bool(self.holds[r]),
          'K_violated': violations[r],
          'K_min': float(self.min_steps[r]),
          'max_ratio_K>=K_min': float(claimed[r]),
      })
    return rows


@dataclasses.dataclass
class ToyRateResult:
  """Everything :func:`run` measured."""

  minimizers: np.ndarray  # (n, 2) global minimisers found numerically.
  f_star: float
  lipschitz: float  # max ||Hessian||_2 on the grid.
  sigma2_empirical: float  # mean ||eps||^2 over all draws.
  constrained: RunSet
  unconstrained: RunSet
  settings: dict[str, Any]

  def summary(self) -> dict[str, Any]:
    """The headline numbers as a JSON-friendly dict."""
    out = {
        'minimizers': self.minimizers.round(4).tolist(),
        'f_star': self.f_star,
        'paper_minimizers': [list(m) for m in MINIMA_PAPER],
        'paper_f_star': F_STAR_PAPER,
        'lipschitz_grid_max': self.lipschitz,
        'paper_L': L_PAPER,
        'sigma2_empirical': self.sigma2_empirical,
        'paper_sigma2': SIGMA2,
        'settings': self.settings,
    }
    for rs in (self.constrained, self.unconstrained):
      mean_lhs, mean_rhs = rs.lhs.mean(0), rs.rhs.mean(0)
      out[rs.name] = {
          'runs': len(rs.point),
          'runs_holding_all_K': int(rs.holds.sum()),
          'max_lhs_over_rhs': float(rs.max_ratio.max()),
          'min_margin': float(rs.min_margin.min()),
          'mean_curve_holds_all_K': bool(np.all(mean_lhs <= mean_rhs)),
          'mean_curve_max_ratio': float(np.max(mean_lhs / mean_rhs)),
          'max_lam_linf': float(rs.linf_scaled_max.max()),
          'min_kkt_residual': float(rs.residual_min.min()),
          'min_steps_max': float(rs.min_steps.max()),
          'max_lhs_over_rhs_for_K_ge_min_steps': float(
              np.nanmax(rs.max_ratio_claimed)
              if np.any(np.isfinite(rs.max_ratio_claimed)) else np.nan),
          'runs_holding_for_K_ge_min_steps': int(np.sum(
              rs.max_ratio_claimed <= 1)),
      }
    return out


@functools.partial(jax.jit, static_argnames=('num_steps',))
def _simulate(theta0, b1, b2, lr, weight_decay, keys, *, num_steps):
  def one(x0, b1, b2, lr, key):
    opt = lionx.lion(lr, b1=b1, b2=b2, weight_decay=weight_decay)
    return _common.trajectory(opt, grad_f, x0, num_steps, key, 1.0)
  return jax.vmap(one)(theta0, b1, b2, lr, keys)


def _measure(thetas: jax.Array, weight_decay: float) -> tuple[jax.Array, ...]:
  grads = grad_f(thetas)
  kkt = jax.vmap(jax.vmap(
      lambda t, g: metrics.kkt_residual(t, g, weight_decay)))(thetas, grads)
  l1 = jax.vmap(jax.vmap(metrics.tree_l1))(grads)
  box = jax.vmap(jax.vmap(
      lambda t: metrics.box_feasibility(t, weight_decay).linf_scaled))(thetas)
  return kkt, l1, box


def _run_set(name, theta0, n_repeats, *, num_steps, learning_rate, weight_decay,
             b1, b2, schedule, f_star, key) -> tuple[RunSet, np.ndarray]:
  sigma = math.sqrt(SIGMA2)
  theta0 = np.repeat(theta0, n_repeats, axis=0)
  runs = len(theta0)
  f_gap = f(theta0.astype(np.float64)) - f_star
  consts = [theory.corollary3_constants(L_PAPER, sigma, g) for g in f_gap]
  if schedule == 'paper':
    sched = [theory.paper_schedule(num_steps, D, c.c1, c.c2, c.c3)
             for c in consts]
    b1s = np.array([s.b1 for s in sched])
    b2s = np.array([s.b2 for s in sched])
    lrs = np.array([s.learning_rate for s in sched])
  else:
    b1s, b2s = np.full(runs, b1), np.full(runs, b2)
    lrs = np.full(runs, learning_rate)
  keys = jax.random.split(key, runs)
  xs, noise_sq = _simulate(
      jnp.asarray(theta0, jnp.float32), jnp.asarray(b1s, jnp.float32),
      jnp.asarray(b2s, jnp.float32), jnp.asarray(lrs, jnp.float32),
      jnp.float32(weight_decay), keys, num_steps=num_steps)
  thetas = xs[:, :num_steps]  # theta_1 .. theta_K
  kkt, l1, box = _measure(thetas, weight_decay)
  k = np.arange(1, num_steps + 1, dtype=np.float64)
  if name == 'constrained':
    lhs = np.cumsum(np.asarray(kkt, np.float64), axis=1) / k
  else:
    lhs = np.cumsum(np.asarray(l1, np.float64), axis=1) / (2 * k)
  rhs = np.stack([theory.corollary3_bound(D, k, L_PAPER, sigma, g)
                  for g in f_gap])
  return RunSet(
      name=name, theta0=theta0,
      point=np.repeat(np.arange(runs // n_repeats), n_repeats),
      repeat=np.tile(np.arange(n_repeats), runs // n_repeats),
      b1=b1s, b2=b2s, learning_rate=lrs, thetas=np.asarray(thetas),
      f_gap=f_gap, min_steps=np.array([c.min_steps for c in consts]),
      lhs=lhs, rhs=rhs, residual_min=np.asarray(kkt.min(axis=1)),
      linf_scaled_max=np.asarray(box.max(axis=1))), np.asarray(noise_sq)


def run(
    n_points: int = 5,
    n_repeats: int = 5,
    num_steps: int = 2000,
    learning_rate: float = 0.01,
    weight_decay: float = 0.1,
    b1: float = 0.9,
    b2: float = 0.99,
    schedule: str = 'fixed',
    seed: int = 0,
) -> ToyRateResult:
  """Runs Dong, Li, Lin's toy problem (defaults: the paper's settings).

  Args:
    n_points: initial points per setting.
    n_repeats: noisy runs per initial point.
    num_steps: :math:`K`.
    learning_rate: :math:`\\eta` for ``schedule='fixed'``.
    weight_decay: :math:`\\lambda` (the box is :math:`1/\\lambda`).
    b1, b2: Lion's :math:`\\beta_1, \\beta_2` for ``schedule='fixed'``.
    schedule: ``'fixed'`` (the paper's figure) or ``'paper'`` (Theorem 2's
      schedule with Corollary 3's constants, per run since they depend on
      :math:`f(\\theta_1)`; needs :math:`K \\ge L\\Delta/\\sigma^2`).
    seed: seeds the initial points and the noise.

  Returns:
    A :class:`ToyRateResult`.

  Example:
    >>> from experiments import toy_rate
    >>> res = toy_rate.run(n_points=1, n_repeats=1, num_steps=50)
    >>> bool(res.constrained.linf_scaled_max.max() <= 1 + 1e-6)
    True
  """
  for name, value in (('n_points', n_points), ('n_repeats', n_repeats),
                      ('num_steps', num_steps)):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
      raise TypeError(f'{name}={value!r}: expected a positive int.')
    if value < 1:
      raise ValueError(f'{name}={value!r}: expected a positive int.')
  checks.positive('learning_rate', learning_rate)
  checks.positive('weight_decay', weight_decay)
  checks.in_range('b1', b1, 0.0, 1.0)
  checks.in_range('b2', b2, 0.0, 1.0)
  checks.one_of('schedule', schedule, SCHEDULES)
  box = 1.0 / weight_decay
  minimizers, f_star = find_minimum(BOX)
  # Corollary 3's f* is the infimum over the box; the same unless it is small.
  f_star_box = f_star if box >= BOX else find_minimum(box)[1]
  rng = np.random.default_rng(seed)
  start_c = np.stack([np.full(n_points, box),
                      rng.uniform(-box, box, n_points)], -1)
  start_u = rng.uniform(-box, box, (n_points, 2))
  key_c, key_u = jax.random.split(jax.random.key(seed))
  common = dict(num_steps=num_steps, learning_rate=learning_rate,
                weight_decay=weight_decay, b1=b1, b2=b2, schedule=schedule)
  constrained, noise_c = _run_set('constrained', start_c, n_repeats,
                                  key=key_c, f_star=f_star_box, **common)
  unconstrained, noise_u = _run_set('unconstrained', start_u, n_repeats,
                                    key=key_u, f_star=f_star, **common)
  settings = dict(n_points=n_points, n_repeats=n_repeats, num_steps=num_steps,
                  learning_rate=learning_rate, weight_decay=weight_decay,
                  b1=b1, b2=b2, schedule=schedule, seed=seed)
  return ToyRateResult(
      minimizers=minimizers, f_star=f_star, lipschitz=lipschitz_constant(),
      sigma2_empirical=float(np.mean(np.concatenate([noise_c, noise_u]))),
      constrained=constrained, unconstrained=unconstrained,
      settings=settings)


def plot(result: ToyRateResult):
  """Fig. 2 of Dong, Li, Lin's journal version: running averages (solid)
  against the bounds (dashed)."""
  fig = _common.figure(figsize=(11, 4.2), layout='constrained')
  axes = fig.subplots(1, 2)
  titles = {'constrained': 'Corollary 3: box, LHS = avg KKT residual',
            'unconstrained': 'Corollary 5: LHS = avg ||grad f||_1 / 2'}
  for ax, rs in zip(axes, (result.constrained, result.unconstrained)):
    k = np.arange(1, rs.lhs.shape[1] + 1)
    for r in range(rs.lhs.shape[0]):
      ax.loglog(k, rs.lhs[r], color='C0', alpha=0.15, lw=0.7)
    ax.loglog(k, rs.lhs.mean(0), color='C0', lw=2, label='LHS (mean of runs)')
    ax.loglog(k, rs.rhs.mean(0), 'k--', lw=2, label='RHS (mean of runs)')
    ax.axvline(rs.min_steps.max(), color='gray', ls=':',
               label='largest K_min of the corollary')
    ax.set_title(f'{titles[rs.name]}\n{int(rs.holds.sum())}/{len(rs.holds)} '
                 'runs with LHS <= RHS at every K', fontsize=10)
    ax.set_xlabel('K (steps)')
    ax.set_ylabel('running average of the stationarity measure')
    ax.legend(fontsize=8)
  return fig


def report(result: ToyRateResult) -> str:
  """A markdown report: the constants, the summary and per-run margins."""
  s = result.summary()
  lines = [
      '# Toy problem of Dong, Li, Lin (journal version), Appendix A.1.1',
      '',
      f"settings: {json.dumps(s['settings'])}", '',
      f"global minimisers found: {s['minimizers']} "
      f'(paper: (0, ±2.125), (±2.125, 0))',
      f"f* found: {s['f_star']:.6f} (paper: {F_STAR_PAPER})",
      f"L = max ||Hessian||_2 on a 401x401 grid: {s['lipschitz_grid_max']:.4f}"
      f' (paper: {L_PAPER:g})',
      f"sigma^2 = mean ||eps||^2 over all draws: {s['sigma2_empirical']:.4f}"
      f' (paper: {SIGMA2:g})', '']
  for name in ('constrained', 'unconstrained'):
    v = s[name]
    lines.append(
        f"{name}: {v['runs_holding_all_K']}/{v['runs']} runs have LHS <= RHS "
        f"at every K; max LHS/RHS = {v['max_lhs_over_rhs']:.4g}; "
        f"min margin RHS-LHS = {v['min_margin']:.4g}; mean curve holds: "
        f"{v['mean_curve_holds_all_K']}; max lambda||theta||_inf = "
        f"{v['max_lam_linf']:.6f}; min KKT residual = "
        f"{v['min_kkt_residual']:.4g}; for K >= K_min (where the corollary "
        f"claims the bound; largest K_min {v['min_steps_max']:.0f}): "
        f"{v['runs_holding_for_K_ge_min_steps']}/{v['runs']} runs hold, max "
        f"LHS/RHS = {v['max_lhs_over_rhs_for_K_ge_min_steps']:.4g}")
  lines.append('')
  rows = result.constrained.rows() + result.unconstrained.rows()
  return '\n'.join(lines) + '\n' + _common.markdown_table(rows)


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Command line: runs :func:`run` and writes a PNG and the tables."""
  parser = _common.parser('toy_rate', __doc__)
  parser.add_argument('--out', required=True, type=pathlib.Path,
                      help='directory for toy_rate.{png,md,csv,json}')
  parser.add_argument('--points', type=int, default=5)
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--steps', type=int, default=2000)
  parser.add_argument('--lr', type=float, default=0.01)
  parser.add_argument('--wd', type=float, default=0.1)
  parser.add_argument('--b1', type=float, default=0.9)
  parser.add_argument('--b2', type=float, default=0.99)
  parser.add_argument('--schedule', choices=SCHEDULES, default='fixed')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--overwrite', action='store_true',
                      help='replace existing result files')
  args = parser.parse_args(argv)
  png, md, csv, js = _common.check_outputs(
      args.out, ['toy_rate.png', 'toy_rate.md', 'toy_rate.csv',
                 'toy_rate.json'], args.overwrite)
  result = run(n_points=args.points, n_repeats=args.repeats,
               num_steps=args.steps, learning_rate=args.lr,
               weight_decay=args.wd, b1=args.b1, b2=args.b2,
               schedule=args.schedule, seed=args.seed)
  plot(result).savefig(png, dpi=120)
  text = report(result)
  md.write_text(text)
  csv.write_text(_common.csv_text(
      result.constrained.rows() + result.unconstrained.rows()))
  js.write_text(json.dumps(result.summary(), indent=2))
  print(text)
  print(f'wrote {png}, {md}, {csv}, {js}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
