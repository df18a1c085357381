r"""Lion-K on the 2-D quadratic of Chen, Liu, Liang, Liu (Figures 1 and 5).

The trajectories, the weight-decay sweep and Phase 1 of Theorem 4.1.

Objective :math:`f(x) = (x_1 - 1.5)^2 + x_2^2` (deterministic gradients),
whose unconstrained minimum :math:`x^* = (1.5, 0)` has
:math:`\|x^*\|_\infty = 1.5`. Lion-K with weight decay :math:`\lambda`
minimises :math:`F(x) = f(x) + \frac1\lambda K^*(\lambda x)` (their (4)):

* :func:`run_trajectories` (Figures 1 and 5): one trajectory per reshaper for
  :math:`\lambda \in \{0.5, 1.5\}`; each run should end at the minimiser of
  :math:`F`, which :func:`theory_endpoint` finds numerically from the
  reshaper's own ``conjugate`` (no case analysis): the optimum itself when it
  lies in the set, a boundary point when it does not.
* :func:`run_weight_decay_sweep` (Figure 1(d)): the converged loss against
  :math:`\lambda`; the constraint binds once :math:`1/\lambda < 1.5`, i.e.
  :math:`\lambda > 1/1.5 \approx 0.667`.
* :func:`run_phase1` (Theorem 4.1, part 1): from infeasible starts the
  distance of :math:`\lambda x_t` to :math:`\operatorname{dom}K^*` decays at
  least like :math:`(1+\epsilon\lambda)^{-t}` (implicit scheme (15)) or
  :math:`(1-\epsilon\lambda)^t` (explicit scheme, lionx's default).

The distance used in Phase 1 is measured in the norm whose unit ball is
(the closure of) :math:`\operatorname{dom}K^*`, i.e. the reshaper's gauge:
:math:`\operatorname{dist}(y) = \max(\texttt{gauge}(y) - 1, 0)` (for Lion,
:math:`\max(\|\lambda x\|_\infty - 1, 0)`, the :math:`\ell_\infty` distance
to the box; for :math:`\ell_p`, the :math:`\ell_q` distance to the
:math:`\ell_q` ball). Theorem 4.1 holds for any norm, since every
:math:`\nabla K` lies in that unit ball.

Run everything from the command line::

  python -m experiments.lion_k_2d --out results/lion_k_2d
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
import sys
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

import lionx
from lionx import checks
from experiments import _common

X_STAR = (1.5, 0.0)
THRESHOLD = 1.0 / 1.5  # lambda above which the box excludes x*.
WEIGHT_DECAYS = (0.5, 1.5)  # Figure 1.
START = (-1.5, 1.8)


def f(x: Any) -> Any:
  """:math:`(x_1 - 1.5)^2 + x_2^2` on arrays of shape ``(..., 2)``."""
  return (x[..., 0] - X_STAR[0]) ** 2 + (x[..., 1] - X_STAR[1]) ** 2


def grad_f(x: jax.Array) -> jax.Array:
  return 2.0 * (x - jnp.asarray(X_STAR, x.dtype))


def default_reshapers() -> dict[str, lionx.Reshaper]:
  """The reshapers of Table 2 of Chen, Liu, Liang, Liu (and tanh), as in
  Figure 5."""
  return {
      'sign (Lion)': lionx.sign_reshaper(),
      'l2 (p=2)': lionx.lp_reshaper(2.0),
      'sparse sign (e=0.5)': lionx.sparse_sign_reshaper(0.5),
      'top-1 sign': lionx.topk_sign_reshaper(1, scope='global'),
      'huber (e=1)': lionx.huber_reshaper(1.0),
      'tanh (beta=4)': lionx.tanh_reshaper(4.0),
  }


def objective_value(reshaper: lionx.Reshaper, weight_decay: float,
                    x: jax.Array) -> jax.Array:
  r""":math:`F(x) = f(x) + K^*(\lambda x)/\lambda` (``inf`` outside)."""
  return f(x) + reshaper.conjugate(weight_decay * x) / weight_decay


def theory_endpoint(
    reshaper: lionx.Reshaper, weight_decay: float, *, radius: float = 4.0,
    levels: int = 18,
) -> np.ndarray:
  r"""The minimiser of :math:`F(x) = f(x) + K^*(\lambda x)/\lambda` in 2-D.

  A grid search on :math:`[-r, r]^2` refined by zooming in (41 × 41 points,
  the spacing shrinking 4 times per level), evaluating :math:`F` in float64
  with the reshaper's ``conjugate``; accurate to about
  ``radius * 4 ** -levels / 20`` (up to the ``1e-6`` slack that lionx's
  indicator conjugates allow on the boundary).
  :math:`F` is convex here, so the grid minimum is the global one.
  """
  value = jax.jit(jax.vmap(functools.partial(objective_value, reshaper,
                                             weight_decay)))
  center, half = np.zeros(2), float(radius)
  axis = np.linspace(-1, 1, 41)
  grid = np.stack(np.meshgrid(axis, axis, indexing='ij'), -1).reshape(-1, 2)
  with jax.enable_x64(True):  # F is flat near its minimum: float64 matters.
    for _ in range(levels):
      points = center + half * grid
      values = np.asarray(value(jnp.asarray(points, jnp.float64)))
      center = points[np.argmin(values)]
      half /= 4.0
  return center


def _check_steps(num_steps: Any) -> None:
  if isinstance(num_steps, bool) or not isinstance(num_steps,
                                                   (int, np.integer)):
    raise TypeError(f'num_steps={num_steps!r}: expected a positive int.')
  if num_steps < 1:
    raise ValueError(f'num_steps={num_steps!r}: expected a positive int.')


def _check_betas(b1: Any, b2: Any) -> None:
  checks.in_range('b1', b1, 0.0, 1.0)
  checks.in_range('b2', b2, 0.0, 1.0)


def _weight_decays(name: str, values: Sequence[float]) -> np.ndarray:
  values = np.asarray(values, np.float64).reshape(-1)
  if values.size == 0:
    raise ValueError(f'{name} is empty; expected positive weight decays.')
  for v in values:
    checks.positive(name, float(v))
  return values


@functools.partial(jax.jit, static_argnames=('reshaper', 'num_steps',
                                             'implicit'))
def _simulate(x0, weight_decay, learning_rate, b1, b2, *, reshaper, num_steps,
              implicit):
  """Trajectories, vmapped over (x0, weight_decay): shape (n, K + 1, 2)."""
  def one(x, wd):
    opt = lionx.lion_k(learning_rate, reshaper, b1=b1, b2=b2,
                       weight_decay=wd, implicit=implicit)
    return _common.trajectory(opt, grad_f, x, num_steps)[0]
  return jax.vmap(one)(x0, weight_decay)


@dataclasses.dataclass
class Trajectory:
  """One Lion-K run and where the theory says it should end."""

  reshaper: str
  weight_decay: float
  xs: np.ndarray  # (K + 1, 2) iterates.
  endpoint: np.ndarray  # (2,) mean of the last `tail` iterates.
  expected: np.ndarray  # (2,) minimiser of F.
  optimum_inside: bool  # whether x* = (1.5, 0) satisfies the constraint.
  constraint_end: float  # reshaper.constraint at the endpoint.
  error: float  # ||endpoint - expected||_inf.
  transform: lionx.Reshaper  # the reshaper itself (draws its set).

  def row(self) -> dict[str, Any]:
    return {
        'reshaper': self.reshaper, 'lambda': self.weight_decay,
        'x* inside': self.optimum_inside,
        'theory endpoint': f'({self.expected[0]:.4f}, {self.expected[1]:.4f})',
        'run endpoint': f'({self.endpoint[0]:.4f}, {self.endpoint[1]:.4f})',
        'error (linf)': self.error,
        'constraint at end': self.constraint_end,
        'f at end': float(f(self.endpoint)),
    }


def run_trajectories(
    reshapers: Optional[dict[str, lionx.Reshaper]] = None,
    weight_decays: Sequence[float] = WEIGHT_DECAYS,
    start: Sequence[float] = START,
    learning_rate: float = 0.01,
    num_steps: int = 3000,
    b1: float = 0.9,
    b2: float = 0.99,
    tail: int = 200,
) -> list[Trajectory]:
  """Figures 1 and 5 of Chen, Liu, Liang, Liu: one run per (reshaper, lambda).

  The endpoint is the mean of the last ``tail`` iterates (sign-type
  reshapers keep oscillating at amplitude :math:`\\sim\\eta`).

  Example:
    >>> import lionx
    >>> from experiments import lion_k_2d
    >>> runs = lion_k_2d.run_trajectories(
    ...     {'sign': lionx.sign_reshaper()}, num_steps=1500)
    >>> [round(float(r.expected[0]), 3) for r in runs]  # x1; lambda = .5, 1.5
    [1.5, 0.667]
    >>> all(r.error < 0.01 for r in runs)
    True
  """
  reshapers = default_reshapers() if reshapers is None else reshapers
  wds = _weight_decays('weight_decays', weight_decays)
  _check_steps(num_steps)
  _check_betas(b1, b2)
  checks.positive('learning_rate', learning_rate)
  if not 1 <= tail <= num_steps:
    raise ValueError(f'tail={tail!r}: expected 1 <= tail <= num_steps.')
  x0 = jnp.tile(jnp.asarray(start, jnp.float32), (len(wds), 1))
  out = []
  for name, reshaper in reshapers.items():
    xs = np.asarray(_simulate(
        x0, jnp.asarray(wds, jnp.float32), learning_rate, b1, b2,
        reshaper=reshaper, num_steps=num_steps, implicit=False))
    for i, wd in enumerate(wds):
      end = xs[i, -tail:].mean(axis=0)
      expected = theory_endpoint(reshaper, float(wd))
      inside = float(reshaper.constraint(jnp.asarray(X_STAR), wd)) <= 1.0
      out.append(Trajectory(
          reshaper=name, weight_decay=float(wd), xs=xs[i], endpoint=end,
          expected=expected, optimum_inside=inside,
          constraint_end=float(reshaper.constraint(jnp.asarray(end), wd)),
          error=float(np.max(np.abs(end - expected))),
          transform=reshaper))
  return out


@dataclasses.dataclass
class Sweep:
  """Converged loss against the weight decay (Figure 1(d))."""

  weight_decays: np.ndarray  # (n,)
  loss: np.ndarray  # (n,) f at the mean of the last iterates.
  theory_loss: np.ndarray  # (n,) (1.5 - min(1.5, 1/lambda))^2.
  threshold: float  # first lambda whose loss exceeds baseline + tol.
  previous: float  # the grid point before it (threshold in (previous, t]).
  tol: float

  def rows(self) -> list[dict[str, Any]]:
    return [{'lambda': float(w), 'converged loss': float(l),
             'theory loss': float(t)}
            for w, l, t in zip(self.weight_decays, self.loss,
                               self.theory_loss)]


def run_weight_decay_sweep(
    weight_decays: Optional[Sequence[float]] = None,
    reshaper: Optional[lionx.Reshaper] = None,
    start: Sequence[float] = START,
    learning_rate: float = 0.01,
    num_steps: int = 3000,
    b1: float = 0.9,
    b2: float = 0.99,
    tail: int = 200,
    tol: float = 1e-4,
) -> Sweep:
  """Figure 1(d) of Chen, Liu, Liang, Liu: where the constraint binds.

  The converged loss is :math:`f` at the mean of the last ``tail`` iterates.
  The threshold is the first :math:`\\lambda` of the grid whose loss exceeds
  the loss at the smallest :math:`\\lambda` by more than ``tol`` and stays
  above for every larger :math:`\\lambda`; the theory puts it at
  :math:`1/1.5`. (With ``tol`` the detectable rise starts at
  :math:`1/(1.5 - \\sqrt{tol})`, 0.6711 for the default.)

  Example:
    >>> from experiments import lion_k_2d
    >>> sweep = lion_k_2d.run_weight_decay_sweep([0.3, 0.6, 0.7, 1.0],
    ...                                          num_steps=1500)
    >>> sweep.previous, sweep.threshold
    (0.6, 0.7)
  """
  if weight_decays is None:
    weight_decays = np.round(np.arange(0.05, 1.5001, 0.01), 4)
  wds = _weight_decays('weight_decays', weight_decays)
  if np.any(np.diff(wds) <= 0):
    raise ValueError('weight_decays must be increasing.')
  _check_steps(num_steps)
  _check_betas(b1, b2)
  checks.positive('learning_rate', learning_rate)
  checks.positive('tol', tol)
  reshaper = lionx.sign_reshaper() if reshaper is None else reshaper
  x0 = jnp.tile(jnp.asarray(start, jnp.float32), (len(wds), 1))
  xs = np.asarray(_simulate(
      x0, jnp.asarray(wds, jnp.float32), learning_rate, b1, b2,
      reshaper=reshaper, num_steps=num_steps, implicit=False))
  loss = f(xs[:, -tail:].mean(axis=1).astype(np.float64))
  theory_loss = (X_STAR[0] - np.minimum(X_STAR[0], 1.0 / wds)) ** 2
  above = loss > loss[0] + tol
  stays = np.flip(np.cumprod(np.flip(above))).astype(bool)
  idx = int(np.argmax(stays)) if stays.any() else len(wds)
  threshold = float(wds[idx]) if idx < len(wds) else float('nan')
  previous = float(wds[idx - 1]) if 0 < idx <= len(wds) else float('nan')
  return Sweep(weight_decays=wds, loss=loss, theory_loss=theory_loss,
               threshold=threshold, previous=previous, tol=tol)


@dataclasses.dataclass
class Phase1:
  """Distance to dom K* along runs from infeasible starts."""

  reshaper: str
  scheme: str  # 'implicit' or 'explicit'
  rate: float  # 1/(1 + eps lam) or 1 - eps lam.
  dist: np.ndarray  # (starts, K + 1) max(gauge(lambda x_t) - 1, 0).
  worst_step_ratio: float  # max dist_{t+1} / (rate dist_t), dist_t > 1e-3.
  holds: bool  # dist_t <= rate^(t-s) dist_s for all s <= t (float slack).
  steps_to_enter: np.ndarray  # (starts,) first t with dist_t == 0.

  def row(self) -> dict[str, Any]:
    return {'reshaper': self.reshaper, 'scheme': self.scheme,
            'rate': self.rate, 'max dist ratio / rate': self.worst_step_ratio,
            'bound holds': self.holds,
            'steps to enter': ' '.join(str(int(s))
                                       for s in self.steps_to_enter)}


def phase1_distance(reshaper: lionx.Reshaper, weight_decay: float,
                    x: jax.Array) -> jax.Array:
  r""":math:`\max(\texttt{gauge}(\lambda x) - 1, 0)`: the distance of
  :math:`\lambda x` to :math:`\operatorname{dom}K^*` in the gauge's norm."""
  return jnp.maximum(reshaper.constraint(x, weight_decay) - 1.0, 0.0)


def run_phase1(
    reshapers: Optional[dict[str, lionx.Reshaper]] = None,
    weight_decay: float = 1.5,
    learning_rate: float = 0.01,
    starts: Sequence[Sequence[float]] = ((10.0, 0.0), (-8.0, 6.0), (1.45, 0.0)),
    num_steps: int = 400,
    b1: float = 0.9,
    b2: float = 0.99,
    rtol: float = 1e-4,
    atol: float = 5e-7,
) -> list[Phase1]:
  r"""Phase 1 of Theorem 4.1 of Chen, Liu, Liang, Liu, both decay schemes.

  ``learning_rate`` is :math:`\epsilon`: ``lionx.lion_k(eps, ...,
  implicit=True)`` is scheme (15) (rate :math:`1/(1+\epsilon\lambda)`), and
  the explicit scheme with the same :math:`\epsilon` has rate
  :math:`1-\epsilon\lambda`. The bound is checked step by step,
  :math:`d_{t+1} \le \text{rate}\cdot d_t (1 + \text{rtol}) + \text{atol}`
  (float32 slack), which implies it for all :math:`s \le t` up to that slack.
  ``steps_to_enter`` is -1 for a run still outside after ``num_steps``: when
  :math:`\nabla f` pushes outwards, :math:`\lambda x_t` approaches the
  boundary from outside at exactly the rate and never enters.

  Example:
    >>> import lionx
    >>> from experiments import lion_k_2d
    >>> res = lion_k_2d.run_phase1({'sign': lionx.sign_reshaper()},
    ...                            num_steps=100)
    >>> [(r.scheme, r.holds) for r in res]
    [('implicit', True), ('explicit', True)]
  """
  reshapers = default_reshapers() if reshapers is None else reshapers
  checks.positive('weight_decay', weight_decay)
  checks.positive('learning_rate', learning_rate)
  if learning_rate * weight_decay >= 1:
    raise ValueError(
        f'learning_rate={learning_rate!r}, weight_decay={weight_decay!r}: '
        'expected learning_rate * weight_decay < 1.')
  _check_steps(num_steps)
  _check_betas(b1, b2)
  x0 = jnp.asarray(starts, jnp.float32)
  if x0.ndim != 2 or x0.shape[1] != 2:
    raise ValueError(f'starts has shape {x0.shape}; expected (n, 2).')
  wd = jnp.full(len(x0), weight_decay, jnp.float32)
  out = []
  for name, reshaper in reshapers.items():
    dist_fn = jax.jit(jax.vmap(jax.vmap(
        functools.partial(phase1_distance, reshaper, weight_decay))))
    for scheme in ('implicit', 'explicit'):
      xs = _simulate(x0, wd, learning_rate, b1, b2, reshaper=reshaper,
                     num_steps=num_steps, implicit=scheme == 'implicit')
      dist = np.asarray(dist_fn(xs), np.float64)
      eps_lam = learning_rate * weight_decay
      rate = 1 / (1 + eps_lam) if scheme == 'implicit' else 1 - eps_lam
      prev, nxt = dist[:, :-1], dist[:, 1:]
      positive = prev > 1e-3  # below, float32 rounding dominates the ratio
      ratios = np.where(positive, nxt / np.where(positive, prev, 1.0), 0.0)
      holds = bool(np.all(nxt <= rate * prev * (1 + rtol) + atol))
      entered = dist <= 0
      steps = np.where(entered.any(1), np.argmax(entered, 1), -1)
      out.append(Phase1(
          reshaper=name, scheme=scheme, rate=rate, dist=dist,
          worst_step_ratio=float(ratios.max() / rate), holds=holds,
          steps_to_enter=steps))
  return out


def _constraint_grid(reshaper, wd, lim, num=301):
  axis = np.linspace(-lim, lim, num)
  xx, yy = np.meshgrid(axis, axis, indexing='xy')
  points = jnp.asarray(np.stack([xx, yy], -1).reshape(-1, 2), jnp.float32)
  values = jax.vmap(lambda p: reshaper.constraint(p, wd))(points)
  return xx, yy, np.asarray(values).reshape(xx.shape)


def plot_trajectories(runs: list[Trajectory]):
  """Figure 5 of Chen, Liu, Liang, Liu: each reshaper's runs with their
  constraint sets."""
  names = list(dict.fromkeys(r.reshaper for r in runs))
  cols = min(3, len(names))
  rows = -(-len(names) // cols)
  fig = _common.figure(figsize=(4.2 * cols, 4.0 * rows), layout='constrained')
  axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
  lim = 2.6
  axis = np.linspace(-lim, lim, 201)
  xx, yy = np.meshgrid(axis, axis)
  ff = (xx - X_STAR[0]) ** 2 + (yy - X_STAR[1]) ** 2
  for ax, name in zip(axes, names):
    ax.contour(xx, yy, ff, levels=12, colors='0.85', linewidths=0.6)
    for i, r in enumerate(rr for rr in runs if rr.reshaper == name):
      color = f'C{i}'
      cx, cy, cv = _constraint_grid(r.transform, r.weight_decay, lim)
      ax.contour(cx, cy, cv, levels=[1.0], colors=color, linewidths=1.2)
      ax.plot(r.xs[:, 0], r.xs[:, 1], color=color, lw=1,
              label=f'lambda={r.weight_decay:g}')
      ax.plot(*r.expected, 'k*', ms=9)
      ax.plot(*r.endpoint, 'o', color=color, mfc='none', ms=8)
    ax.plot(*X_STAR, 'kx', ms=7)
    ax.set_title(name, fontsize=10)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect('equal')
    ax.set_xlabel('x1')
    ax.set_ylabel('x2')
    ax.legend(fontsize=7, loc='lower left')
  for ax in axes[len(names):]:
    ax.set_visible(False)
  fig.suptitle('Lion-K on f = (x1-1.5)^2 + x2^2: sets {gauge(lambda x) <= 1}, '
               'theory endpoint (*)', fontsize=10)
  return fig


def plot_sweep(sweep: Sweep):
  """Figure 1(d) of Chen, Liu, Liang, Liu: converged loss against lambda."""
  fig = _common.figure(figsize=(5.5, 4), layout='constrained')
  ax = fig.subplots()
  ax.plot(sweep.weight_decays, sweep.loss, 'o-', ms=3, label='Lion (sign)')
  ax.plot(sweep.weight_decays, sweep.theory_loss, 'k--', lw=1,
          label='theory (1.5 - min(1.5, 1/lambda))^2')
  ax.axvline(THRESHOLD, color='gray', ls=':', label='1/1.5')
  ax.axvline(sweep.threshold, color='C3', ls='-.',
             label=f'measured threshold {sweep.threshold:.3g}')
  ax.set_xlabel('weight decay lambda')
  ax.set_ylabel('converged loss f(x) after the run')
  ax.legend(fontsize=8)
  return fig


def plot_phase1(results: list[Phase1]):
  """Theorem 4.1 (Phase 1): normalised distance against the rate."""
  names = list(dict.fromkeys(r.reshaper for r in results))
  fig = _common.figure(figsize=(11, 4.2), layout='constrained')
  axes = fig.subplots(1, 2)
  for ax, scheme in zip(axes, ('implicit', 'explicit')):
    rate = None
    for i, name in enumerate(names):
      r = next(x for x in results if x.reshaper == name and x.scheme == scheme)
      rate = r.rate
      for s in range(r.dist.shape[0]):
        d = r.dist[s] / r.dist[s, 0]
        ax.semilogy(np.where(d > 0, d, np.nan), color=f'C{i}', lw=1,
                    label=name if s == 0 else None)
    t = np.arange(results[0].dist.shape[1])
    ax.semilogy(t, rate ** t, 'k--', lw=2, label=f'rate^t, rate={rate:.5f}')
    ax.set_title(f'{scheme} scheme: dist(lambda x_t, dom K*) / dist_0',
                 fontsize=10)
    ax.set_xlabel('t (steps)')
    ax.set_ylabel('dist(lambda x_t, dom K*) / dist(lambda x_0, dom K*)')
    ax.legend(fontsize=7)
  return fig


FILES = ('trajectories.png', 'trajectories.md', 'weight_decay_sweep.png',
         'weight_decay_sweep.md', 'phase1.png', 'phase1.md', 'summary.json')


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Command line: the three experiments, each a PNG and a table."""
  parser = _common.parser('lion_k_2d', __doc__)
  parser.add_argument('--out', required=True, type=pathlib.Path)
  parser.add_argument('--lr', type=float, default=0.01)
  parser.add_argument('--steps', type=int, default=3000)
  parser.add_argument('--overwrite', action='store_true',
                      help='replace existing result files')
  args = parser.parse_args(argv)
  paths = dict(zip(FILES, _common.check_outputs(args.out, FILES,
                                                args.overwrite)))
  runs = run_trajectories(learning_rate=args.lr, num_steps=args.steps)
  sweep = run_weight_decay_sweep(learning_rate=args.lr, num_steps=args.steps)
  phase1 = run_phase1(learning_rate=args.lr)
  plot_trajectories(runs).savefig(paths['trajectories.png'], dpi=120)
  plot_sweep(sweep).savefig(paths['weight_decay_sweep.png'], dpi=120)
  plot_phase1(phase1).savefig(paths['phase1.png'], dpi=120)
  traj_md = ('# Figures 1 and 5 of Chen, Liu, Liang, Liu: Lion-K '
             'endpoints\n\n'
             + _common.markdown_table([r.row() for r in runs]))
  sweep_md = (
      '# Figure 1(d) of Chen, Liu, Liang, Liu: converged loss against '
      'lambda\n\n'
      f'threshold: the loss first rises (by > {sweep.tol:g}) at lambda = '
      f'{sweep.threshold:.4g} (previous grid point {sweep.previous:.4g}); '
      f'theory: 1/1.5 = {THRESHOLD:.4f}\n\n'
      + _common.markdown_table(sweep.rows()))
  phase_md = ('# Phase 1 of Theorem 4.1 of Chen, Liu, Liang, Liu\n\n'
              + _common.markdown_table([r.row() for r in phase1]))
  paths['trajectories.md'].write_text(traj_md)
  paths['weight_decay_sweep.md'].write_text(sweep_md)
  paths['phase1.md'].write_text(phase_md)
  summary = {
      'settings': {'learning_rate': args.lr, 'num_steps': args.steps,
                   'start': START},
      'max_endpoint_error': max(r.error for r in runs),
      'threshold': sweep.threshold, 'threshold_previous': sweep.previous,
      'threshold_theory': THRESHOLD,
      'phase1_all_hold': all(r.holds for r in phase1),
  }
  paths['summary.json'].write_text(json.dumps(summary, indent=2))
  print(traj_md, sweep_md.split('\n\n|')[0], '', phase_md, sep='\n')
  print('wrote', ', '.join(str(p) for p in paths.values()))
  return 0


if __name__ == '__main__':
  sys.exit(main())
