r"""Figure 4 of Chen, Liu, Liang, Liu on a network: the converged
training loss of Lion against the weight decay :math:`\lambda`.

Lion with weight decay :math:`\lambda` solves :math:`\min f` s.t.
:math:`\|\theta\|_\infty \le 1/\lambda`. While the box holds an
unconstrained minimiser :math:`\theta^*`, :math:`\lambda` should not change
the converged loss (it only speeds up Phase 1); once :math:`1/\lambda <
\|\theta^*\|_\infty` for every minimiser, the loss must rise. The paper
reads from its CIFAR-10 ResNet (Figure 4) an optimal :math:`\lambda =
0.56`, beyond which the training loss rises (left panel), and shows that a
larger :math:`\lambda` converges faster (right panel). It proposes
:math:`\lambda = 1/\|\theta^*_{\text{unc}}\|_\infty` as the ideal choice.

:func:`run` trains the digits CNN of ``configs/default.py`` (Lion, learning
rate 3e-3 with cosine annealing, batch 64, 30 epochs) once per
(:math:`\lambda`, seed) through the harness's loop
(:mod:`experiments._networks`), with the exact :math:`f(\theta)` of
the logging pass after every epoch. The measured *threshold* is the
smallest :math:`\lambda` of the grid above the best one (lowest median final
:math:`f`) from which on every seed's final :math:`f` lies above every
seed's final :math:`f` at the best :math:`\lambda`. It is compared with
:math:`1/\|\theta_K\|_\infty` of the runs with :math:`\lambda = 0` (the
unregularised solution the runs find). "Converges faster" is measured as
the epochs until :math:`f(\theta) \le` ``level`` (median over the seeds).

Command (about 15 minutes on 2 CPU cores)::

  python -m experiments.weight_decay_sweep --out results/figure4
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
from typing import Any, Optional, Sequence

import numpy as np

import lionx.train as lt
from lionx import checks
from lionx import metrics
from experiments import _common
from experiments import _networks

WEIGHT_DECAYS = (0.0, 0.1, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 15.0,
                 20.0, 30.0)
LEVEL = 1e-2  # "converged" for the speed of the right panel: f <= LEVEL


def base_config() -> lt.Config:
  """The digits CNN of ``configs/default.py`` (Lion, 3e-3, cosine, 30
  epochs)."""
  return _networks.digits_config()


@dataclasses.dataclass
class SweepRun:
  """One run of the sweep: f(theta) after each epoch and the box."""

  weight_decay: float
  seed: int
  epochs: np.ndarray  # (E,) epoch of each evaluation
  full_loss: np.ndarray  # (E,) f(theta) over the training set
  val_loss: np.ndarray  # (E,) test loss
  test_accuracy: np.ndarray  # (E,)
  linf: np.ndarray  # (K + 1,) ||theta_t||_inf after each step
  d: int

  @property
  def final_loss(self) -> float:
    return float(self.full_loss[-1])

  def epochs_to(self, level: float) -> float:
    """The first epoch from which f(theta) stays <= level (inf: not at
    the end)."""
    at = _networks.first_step_within(self.full_loss, level)
    return float(self.epochs[at]) if at >= 0 else float('inf')

  def row(self) -> dict[str, Any]:
    return {'lambda': self.weight_decay, 'seed': self.seed, 'd': self.d,
            'final_full_loss': self.final_loss,
            'final_val_loss': float(self.val_loss[-1]),
            'final_test_accuracy': float(self.test_accuracy[-1]),
            'linf_end': float(self.linf[-1]),
            'max_lambda_linf': float(self.weight_decay * self.linf.max()),
            f'epochs_to_f<={LEVEL:g}': self.epochs_to(LEVEL)}


def run(config: Optional[lt.Config] = None, *,
        weight_decays: Sequence[float] = WEIGHT_DECAYS,
        seeds: Sequence[int] = (0, 1, 2), data: Any = None,
        verbose: bool = False) -> list[SweepRun]:
  """One run per (lambda, seed) of ``config`` (default
  :func:`base_config`, whose Lion weight decay is replaced).

  Raises:
    ValueError: not Lion with the paper convention, a lambda outside
      [0, 1/eta], or an empty grid.
  """
  config = lt.copy(base_config() if config is None else config)
  _networks.require_paper_lion(config)
  if not weight_decays or not seeds:
    raise ValueError('weight_decays and seeds must not be empty.')
  if data is None:
    data = lt.get_task(config.task).load_data(config)
  peak = _networks.optimizer_of(config, data).settings.learning_rate
  for lam in weight_decays:
    checks.in_range('weight_decays', lam, 0.0, 1.0 / peak)
  out = []
  for lam in weight_decays:
    for seed in seeds:
      sub = lt.copy(config)
      sub.optimizer.weight_decay = float(lam)
      sub.optimizer.weight_decays = {}
      sub.seed = seed
      rec = _networks.train(sub, data, probes={'linf': metrics.tree_linf})
      epochs, loss = rec.curve('full_loss')
      out.append(SweepRun(
          weight_decay=float(lam), seed=seed, epochs=epochs,
          full_loss=loss, val_loss=rec.curve('val_loss')[1],
          test_accuracy=rec.curve('test_accuracy')[1],
          linf=rec.probes['linf'], d=rec.d))
      if verbose:
        print(f'lambda = {lam:g}, seed {seed}: final f(theta) = '
              f'{out[-1].final_loss:.4g}, ||theta||_inf = '
              f'{out[-1].linf[-1]:.4f}', flush=True)
  return out


@dataclasses.dataclass
class Analysis:
  """The sweep's answers to Figure 4 of Chen, Liu, Liang, Liu."""

  weight_decays: np.ndarray  # the grid, ascending
  median: np.ndarray  # final f(theta), median over seeds
  low: np.ndarray  # min over seeds
  high: np.ndarray  # max over seeds
  best: float  # lambda of the lowest median final loss
  threshold: Optional[float]  # first lambda where the loss has risen
  previous: Optional[float]  # the grid point below the threshold
  inverse_linf_unregularised: Optional[list[float]]  # 1/||theta_K||_inf,
  #                                                    lambda = 0, per seed
  epochs_to_level: np.ndarray  # median over seeds, per lambda
  speed_correlation: Optional[float]  # Spearman(lambda, epochs_to_level)
  #                                     over the lambdas whose every seed
  #                                     ends below LEVEL


def _spearman(x: np.ndarray, y: np.ndarray) -> Optional[float]:
  if len(x) < 3:
    return None
  rank = lambda v: np.argsort(np.argsort(v, kind='stable'), kind='stable')
  rx, ry = rank(x).astype(float), rank(y).astype(float)
  if rx.std() == 0 or ry.std() == 0:
    return None
  return float(np.corrcoef(rx, ry)[0, 1])


def analyse(runs: Sequence[SweepRun]) -> Analysis:
  """Threshold, optimum, 1/||theta*||_inf and convergence speed."""
  lams = np.array(sorted({r.weight_decay for r in runs}))
  groups = [[r for r in runs if r.weight_decay == lam] for lam in lams]
  finals = [[r.final_loss for r in g] for g in groups]
  median = np.array([statistics.median(f) for f in finals])
  low = np.array([min(f) for f in finals])
  high = np.array([max(f) for f in finals])
  i_best = int(np.argmin(median))
  threshold = previous = None
  for i in range(i_best + 1, len(lams)):
    if np.all(low[i:] > high[i_best]):
      threshold, previous = float(lams[i]), float(lams[i - 1])
      break
  inverse = None
  if lams[0] == 0.0:
    inverse = [float(1.0 / r.linf[-1]) for r in groups[0]]
  speed = np.array([statistics.median(r.epochs_to(LEVEL) for r in g)
                    for g in groups])
  reach = np.array([all(np.isfinite(r.epochs_to(LEVEL)) for r in g)
                    for g in groups])
  corr = _spearman(lams[reach], speed[reach])
  return Analysis(lams, median, low, high, float(lams[i_best]), threshold,
                  previous, inverse, speed, corr)


def table_rows(runs: Sequence[SweepRun]) -> list[dict[str, Any]]:
  """One row per lambda: medians [min, max] over the seeds."""
  rows = []
  for lam in sorted({r.weight_decay for r in runs}):
    group = [r for r in runs if r.weight_decay == lam]
    rows.append({
        'λ': f'{lam:g}', 'box 1/λ': f'{1 / lam:.3g}' if lam else '∞',
        'seeds': len(group),
        'final f(θ)': _networks.spread([r.final_loss for r in group]),
        'final test loss': _networks.spread(
            [r.val_loss[-1] for r in group]),
        'final test top-1 (%)': _networks.spread(
            [100 * r.test_accuracy[-1] for r in group], '.1f'),
        '‖θ_K‖∞': _networks.spread([r.linf[-1] for r in group]),
        'max_t λ‖θ_t‖∞': _networks.spread(
            [lam * r.linf.max() for r in group]),
        f'epoch from which f(θ) ≤ {LEVEL:g}': _networks.spread(
            [r.epochs_to(LEVEL) for r in group], 'g'),
    })
  return rows


def verdict_text(a: Analysis) -> str:
  """Markdown lines: the paper's claims against the measurements."""
  i_best = int(np.flatnonzero(a.weight_decays == a.best)[0])
  below = [i for i, lam in enumerate(a.weight_decays) if i != i_best and (
      a.threshold is None or lam < a.threshold)]
  resolved = all(a.low[i] > a.high[i_best] for i in below)
  lines = [f'* Lowest median final f(θ) at λ = {a.best:g} '
           f'({a.median[i_best]:.3g}); Chen, Liu, Liang, Liu read an '
           'optimum λ = 0.56 off their CIFAR-10 ResNet, with the loss '
           'rising beyond it. '
           + ('Every other λ below the threshold ends above its range.'
              if resolved else
              'The ranges over the seeds of the λ below the threshold '
              'overlap the best one\'s, so the optimum is not resolved by '
              'these seeds.')]
  upto = a.weight_decays < (np.inf if a.threshold is None else a.threshold)
  if a.threshold is None:
    lines.append('* The final loss does not rise above the best λ\'s range '
                 'anywhere on the grid: no threshold found.')
  else:
    lines.append(
        f'* The final loss has risen (every seed above every seed at the '
        f'best λ, for this and every larger λ) from λ = {a.threshold:g} on; '
        f'the previous grid point is {a.previous:g}: the threshold lies in '
        f'({a.previous:g}, {a.threshold:g}]. Up to λ = {a.previous:g} the '
        f'median final f(θ) lies between {a.median[upto].min():.3g} and '
        f'{a.median[upto].max():.3g}.')
  if a.inverse_linf_unregularised:
    inv = a.inverse_linf_unregularised
    center = statistics.median(inv)
    lines.append(
        f'* 1/‖θ*‖∞ of the runs with λ = 0 (the unregularised solution they '
        f'reach): {_networks.spread(inv)}. Chen, Liu, Liang, Liu expect '
        'the loss to rise once λ exceeds it (and call it the ideal λ).')
    if a.threshold is not None:
      if a.previous < center <= a.threshold:
        where = ('**inside the interval of the rise: as Chen, Liu, Liang, '
                 'Liu predict.**')
      elif center <= a.previous:
        where = (f'**below the interval**: at λ = {a.previous:g}, '
                 f'{a.previous / center:.3g}× 1/‖θ*‖∞, a seed still ends '
                 'within the best λ\'s range. The box excludes the θ* that '
                 'the unregularised runs reach long before it excludes every '
                 'solution of that loss. (When a network fits its training '
                 'set, cross-entropy has no finite minimiser: ‖θ*‖∞ is set '
                 'by the training budget.)')
      else:
        where = (f'**above the interval**: the loss rises already at λ = '
                 f'{a.threshold:g}, {a.threshold / center:.3g}× 1/‖θ*‖∞.')
      lines.append(f'  The median 1/‖θ*‖∞ = {center:.3g} lies ' + where)
  if a.speed_correlation is not None:
    faster = a.speed_correlation < 0
    lines.append(
        f'* Convergence speed, over the λ whose every seed ends below '
        f'{LEVEL:g}: the Spearman correlation of λ with the epoch from which '
        f'f(θ) stays ≤ {LEVEL:g} (median over seeds) is '
        f'{a.speed_correlation:+.2f} '
        + ('(a larger λ converges faster: **as in Chen, Liu, Liang, '
           'Liu**).' if faster else
           '(**not** faster with a larger λ, unlike in Chen, Liu, Liang, '
           'Liu).'))
  return '\n'.join(lines)


def plot(runs: Sequence[SweepRun], a: Optional[Analysis] = None):
  """Figure 4 of Chen, Liu, Liang, Liu: left, the final f(theta) against
  lambda (median, band min-max over seeds); right, f(theta) over epochs per
  lambda."""
  a = analyse(runs) if a is None else a
  fig = _common.figure(figsize=(12, 4.4), layout='constrained')
  left, right = fig.subplots(1, 2)
  x = a.weight_decays
  left.fill_between(x, a.low, a.high, color='C0', alpha=0.25,
                    label='min – max over seeds')
  left.plot(x, a.median, 'o-', color='C0', label='median over seeds')
  left.set_yscale('log')
  if x[0] == 0.0 and len(x) > 1:
    left.set_xscale('symlog', linthresh=max(x[1], 1e-3))
  if a.threshold is not None:
    left.axvspan(a.previous, a.threshold, color='C3', alpha=0.2,
                 label=f'the rise: ({a.previous:g}, {a.threshold:g}]')
  if a.inverse_linf_unregularised:
    inv = statistics.median(a.inverse_linf_unregularised)
    left.axvline(inv, color='k', ls='--', lw=1,
                 label=f'1/‖θ*‖∞ of λ = 0: {inv:.3g}')
  left.axvline(a.best, color='C2', ls=':', lw=1.2,
               label=f'lowest median: λ = {a.best:g}')
  left.set_xlabel('weight decay λ')
  left.set_ylabel('final training loss f(θ_K)')
  left.set_title('(a) converged loss against λ', fontsize=10)
  left.legend(fontsize=7)
  colors = _colormap(len(x))
  for lam, color in zip(x, colors):
    group = [r for r in runs if r.weight_decay == lam]
    curves = np.array([r.full_loss for r in group])
    right.semilogy(group[0].epochs, np.median(curves, 0), color=color,
                   lw=1.4, label=f'λ = {lam:g}')
  right.axhline(LEVEL, color='k', ls=':', lw=0.8)
  right.set_xlabel('epoch')
  right.set_ylabel('f(θ) over the training set (median over seeds)')
  right.set_title('(b) loss curves per λ', fontsize=10)
  right.legend(fontsize=7, ncol=2)
  return fig


def _colormap(n: int):
  from matplotlib import colormaps  # pylint: disable=g-import-not-at-top
  return colormaps['viridis'](np.linspace(0, 0.9, n))


FILES = ('figure4.png', 'figure4.md', 'figure4.csv', 'summary.json')


def report(runs: Sequence[SweepRun], command: str = '') -> str:
  a = analyse(runs)
  seeds = sorted({r.seed for r in runs})
  return ('# Figure 4 of Chen, Liu, Liang, Liu: converged loss against '
          'the weight decay\n\n'
          + (f'Command: `{command}`\n\n' if command else '')
          + f'd = {runs[0].d:,}; {len(runs[0].linf) - 1} steps; seeds '
          f'{seeds} (cells: median [min, max] over the seeds).\n\n'
          + _common.markdown_table(table_rows(runs)) + '\n'
          + verdict_text(a) + '\n')


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Command line: the sweep, figure4.png and its tables."""
  parser = _networks.parser('weight_decay_sweep', __doc__)
  parser.add_argument('--weight-decays',
                      default=','.join(f'{x:g}' for x in WEIGHT_DECAYS),
                      help='comma-separated lambdas')
  parser.add_argument('--replot', action='store_true',
                      help='redraw the figure and tables from the runs in '
                      'OUT/summary.json (with --overwrite); train nothing')
  args = parser.parse_args(argv)
  if args.replot:
    runs, command = _networks.stored_runs(args.out, SweepRun)
  paths = dict(zip(FILES, _common.check_outputs(args.out, FILES,
                                                args.overwrite)))
  if not args.replot:
    config = _networks.make_config(args.config, args.overrides, base_config)
    runs = run(config,
               weight_decays=_networks.parse_numbers('--weight-decays',
                                                     args.weight_decays),
               seeds=_networks.parse_numbers('--seeds', args.seeds, int),
               verbose=True)
    command = _networks.command('weight_decay_sweep', argv)
  a = analyse(runs)
  plot(runs, a).savefig(paths['figure4.png'], dpi=110)
  summary = {k: (v.tolist() if isinstance(v, np.ndarray) else v)
             for k, v in dataclasses.asdict(a).items()}
  _networks.write_results(paths, report(runs, command), runs, command,
                          {'analysis': summary}, default=float)
  return 0


if __name__ == '__main__':
  sys.exit(main())
