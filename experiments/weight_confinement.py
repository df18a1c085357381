r"""Figures 2 and 3 of Chen, Liu, Liang, Liu: the weights of a network
trained by Lion are confined to :math:`[-1/\lambda, 1/\lambda]`.

Lion with weight decay :math:`\lambda` and :math:`\eta\lambda \le 1` solves
:math:`\min f` s.t. :math:`\|\theta\|_\infty \le 1/\lambda`. From outside the
box, Phase 1 of their Theorem 4.1 shrinks the excess at least
geometrically,

.. math::

  \lambda\|\theta_{t+1}\|_\infty - 1 \le (1 - \eta_t\lambda)
  \,(\lambda\|\theta_t\|_\infty - 1),

so :math:`\lambda\|\theta_t\|_\infty \le 1 + \tau` after at most
:math:`\min\{t : e_0\prod_{s<t}(1-\eta_s\lambda) \le \tau\}` steps,
:math:`e_0 = \lambda\|\theta_0\|_\infty - 1` (the *bound* in the tables).
Their Figure 3 (ResNet-18 on CIFAR-10) shows the histograms of the weights
over training for Kaiming uniform and Kaiming normal initialisations, each
with :math:`\lambda = 20` (the weights are "quickly confined into
[-0.05, 0.05]") and :math:`\lambda = 0` (they "keep growing").

:func:`run` trains one run per (initialisation, :math:`\lambda`, seed)
through the harness's loop with a hook (:mod:`experiments._networks`),
recording :math:`\|\theta_t\|_\infty` and the root mean square of
:math:`\theta_t` after every step and a histogram of all :math:`d` weights
every few steps.
The default is the digits CNN of ``configs/default.py`` with a constant
learning rate :math:`3\cdot10^{-3}` for 15 epochs (330 steps); ResNet-18 on
CIFAR-10 runs with overrides when the archive is present::

  python -m experiments.weight_confinement --out results/figure3
  python -m experiments.weight_confinement --out results/figure3_c10 \
      model.name=resnet18 data.name=cifar10 data.data_dir=data num_epochs=1

"The weights keep growing" (the histogram keeps spreading) is measured as:
the root mean square of :math:`\theta` rises over each tenth of the run.
Whether :math:`\|\theta_K\|_\infty > \|\theta_0\|_\infty` is reported
beside it: a single weight in the tail of the initialisation can shrink
while the bulk grows.
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
from typing import Any, Optional, Sequence

import jax.numpy as jnp
import numpy as np

import lionx.train as lt
from lionx import checks
from lionx import metrics
from experiments import _common
from experiments import _networks

WEIGHT_DECAYS = (20.0, 0.0)  # Figure 3: confined, and no box
KERNEL_INITS = ('kaiming_uniform', 'kaiming_normal')
TOLERANCES = (1e-2, 1e-3)  # lambda ||theta||_inf <= 1 + tau
EPOCHS = 15
LEARNING_RATE = 3e-3
GROWTH_PIECES = 10


def base_config() -> lt.Config:
  """The digits CNN of ``configs/default.py`` with Lion at a constant
  learning rate of 3e-3 for 15 epochs (330 steps)."""
  config = _networks.digits_config()
  config.num_epochs = EPOCHS
  config.optimizer.learning_rate = LEARNING_RATE
  config.schedule.name = 'constant'
  return config


@dataclasses.dataclass
class ConfinementRun:
  """One run: the largest weight after every step and the histograms."""

  kernel_init: str
  weight_decay: float
  seed: int
  learning_rates: np.ndarray  # (K,) eta_t
  linf: np.ndarray  # (K + 1,) ||theta_t||_inf, t = 0 .. K
  rms: np.ndarray  # (K + 1,) sqrt(mean theta_t^2)
  hist_steps: np.ndarray  # (S,) steps of the histograms
  edges: np.ndarray  # (bins + 1,)
  hists: np.ndarray  # (S, bins) weights per bin
  full_loss: float  # f(theta_K) over the training set
  test_accuracy: float
  d: int
  at_bound: float = 0.0  # share of weights with lambda |theta_i| >= 0.999
  #                        after the last step (0 for lambda = 0)

  @property
  def steps(self) -> int:
    return len(self.learning_rates)

  def steps_to(self, tol: float) -> Optional[int]:
    """First t from which lambda ||theta_t||_inf <= 1 + tol to the end
    (-1: not even at the end; None for lambda = 0)."""
    if not self.weight_decay:
      return None
    return _networks.first_step_within(self.weight_decay * self.linf,
                                       1.0 + tol)

  def bound(self, tol: float) -> Optional[int]:
    """The steps Phase 1 of Theorem 4.1 needs at most to reach 1 + tol
    (-1: more than the run's; None for lambda = 0)."""
    if not self.weight_decay:
      return None
    excess = self.weight_decay * self.linf[0] - 1.0
    if excess <= tol:
      return 0
    shrink = np.cumprod(1.0 - self.learning_rates * self.weight_decay)
    within = np.flatnonzero(excess * shrink <= tol)
    return int(within[0] + 1) if within.size else -1

  def keeps_growing(self) -> bool:
    """The RMS of theta rises over each tenth of the run (the histogram
    keeps spreading)."""
    marks = np.linspace(0, self.steps, GROWTH_PIECES + 1).round().astype(int)
    return bool(np.all(np.diff(self.rms[marks]) > 0))

  def linf_grows(self) -> bool:
    """The largest weight ends above its start."""
    return bool(self.linf[-1] > self.linf[0])

  def row(self) -> dict[str, Any]:
    out = {'kernel_init': self.kernel_init, 'lambda': self.weight_decay,
           'seed': self.seed, 'd': self.d,
           'linf_start': float(self.linf[0]),
           'linf_end': float(self.linf[-1]),
           'rms_start': float(self.rms[0]), 'rms_end': float(self.rms[-1])}
    for tol in TOLERANCES:
      out[f'steps_to_1+{tol:g}'] = self.steps_to(tol)
      out[f'bound_1+{tol:g}'] = self.bound(tol)
    out['lambda_linf_end'] = (float(self.weight_decay * self.linf[-1])
                              if self.weight_decay else None)
    out['share_at_bound_end'] = self.at_bound
    out['keeps_growing'] = self.keeps_growing()
    out['linf_grows'] = self.linf_grows()
    out['full_loss'] = self.full_loss
    out['test_accuracy'] = self.test_accuracy
    return out


def _check(config: lt.Config, data: Any, weight_decays: Sequence[float],
           kernel_inits: Sequence[str], seeds: Sequence[int]) -> None:
  _networks.require_paper_lion(config)
  peak = _networks.optimizer_of(config, data).settings.learning_rate
  for lam in weight_decays:
    checks.in_range('weight_decays', lam, 0.0, 1.0 / peak)
  for name in kernel_inits:
    checks.one_of('kernel_inits', name, tuple(lt.KERNEL_INITS))
  for seed in seeds:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
      raise ValueError(f'seeds: {seed!r} is not an int >= 0.')
  if not (weight_decays and kernel_inits and seeds):
    raise ValueError('weight_decays, kernel_inits and seeds must not be '
                     'empty.')


def run(config: Optional[lt.Config] = None, *,
        weight_decays: Sequence[float] = WEIGHT_DECAYS,
        kernel_inits: Sequence[str] = KERNEL_INITS,
        seeds: Sequence[int] = (0,), data: Any = None, every: int = 5,
        bins: int = 201, verbose: bool = False) -> list[ConfinementRun]:
  r"""One run per (initialisation, lambda, seed) of ``config``.

  Args:
    config: a harness config of Lion (default :func:`base_config`); its
      ``optimizer.weight_decay``, ``model.kernel_init`` and ``seed`` are
      replaced by each run's.
    weight_decays: the lambdas (each with eta * lambda <= 1).
    kernel_inits: names of :data:`lionx.train.KERNEL_INITS`.
    seeds: the seeds (initialisation and data order).
    data: the task's loaded data (default: loaded once from the config).
    every: steps between two histograms.
    bins: bins of each histogram, over a range that the theory says holds
      every weight of the run: :math:`\pm\max(\|\theta_0\|_\infty,
      1/\lambda)`, or :math:`\pm(\|\theta_0\|_\infty + \eta K)` for
      :math:`\lambda = 0`.
    verbose: print a line per run.

  Returns:
    The runs, in the order (kernel_init, weight_decay, seed).
  """
  config = lt.copy(base_config() if config is None else config)
  weight_decays = tuple(float(x) for x in weight_decays)
  for name, value in (('every', every), ('bins', bins)):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ValueError(f'{name}={value!r}: expected a positive int.')
  if data is None:
    data = lt.get_task(config.task).load_data(config)
  _check(config, data, weight_decays, tuple(kernel_inits), tuple(seeds))
  out = []
  for init in kernel_inits:
    for lam in weight_decays:
      for seed in seeds:
        sub = lt.copy(config)
        sub.model.kernel_init = init
        sub.optimizer.weight_decay = lam
        sub.optimizer.weight_decays = {}
        sub.seed = seed
        out.append(_one(sub, data, lam, every, bins))
        if verbose:
          r = out[-1]
          print(f'{init}, lambda = {lam:g}, seed {seed}: ||theta||_inf '
                f'{r.linf[0]:.4f} -> {r.linf[-1]:.4f} in {r.steps} steps; '
                f'f(theta) = {r.full_loss:.4g}', flush=True)
  return out


def _one(config: lt.Config, data: Any, lam: float, every: int,
         bins: int) -> ConfinementRun:
  # Every weight of the run lies within +-edge (eta_t <= the peak rate).
  growth = _networks.optimizer_of(
      config, data).settings.learning_rate * _total_steps(config, data)
  binning = {}

  def histogram(params):
    flat = _networks.flat_params(params)
    if 'edges' not in binning:  # the start: fix the range for the run
      linf0 = float(np.max(np.abs(flat)))
      edge = max(linf0, 1.0 / lam) if lam else linf0 + growth
      binning['edges'] = np.linspace(-edge, edge, bins + 1)
    return np.histogram(flat, binning['edges'])[0]

  rec = _networks.train(
      config, data,
      probes={'linf': metrics.tree_linf,
              'rms': lambda p: metrics.tree_l2(p) / jnp.sqrt(
                  metrics.tree_size(p)),
              'at_bound': lambda p: metrics.box_feasibility(
                  p, lam).fraction_at_bound},
      snapshot=histogram, snapshot_every=every)
  return ConfinementRun(
      kernel_init=config.model.kernel_init, weight_decay=lam,
      seed=config.seed, learning_rates=rec.learning_rates,
      linf=rec.probes['linf'], rms=rec.probes['rms'],
      hist_steps=rec.snapshot_steps, edges=binning['edges'],
      hists=np.array(rec.snapshots), full_loss=rec.final('full_loss'),
      test_accuracy=rec.final('test_accuracy'), d=rec.d,
      at_bound=float(rec.probes['at_bound'][-1]))


def _total_steps(config: lt.Config, data: Any) -> int:
  task = lt.get_task(config.task)
  return lt.total_steps(config, task.steps_per_epoch(config, data))


# --- tables and verdicts ----------------------------------------------------


def _groups(runs: Sequence[ConfinementRun]):
  keys = list(dict.fromkeys((r.kernel_init, r.weight_decay) for r in runs))
  return [(k, [r for r in runs if (r.kernel_init, r.weight_decay) == k])
          for k in keys]


def _count(values: Sequence[Optional[int]]) -> str:
  """Step counts over seeds; -1 (never) is shown as 'never'."""
  if any(v is not None and v < 0 for v in values):
    reached = [v for v in values if v >= 0]
    return f'never in {len(values) - len(reached)}/{len(values)} seeds'
  return _networks.spread(values, 'g')


def summary_rows(runs: Sequence[ConfinementRun]) -> list[dict[str, Any]]:
  """One row per (initialisation, lambda): medians [min, max] over seeds."""
  rows = []
  for (init, lam), group in _groups(runs):
    row = {'init': init, 'λ': f'{lam:g}',
           'box 1/λ': f'{1 / lam:g}' if lam else '∞',
           'seeds': len(group),
           '‖θ₀‖∞': _networks.spread([r.linf[0] for r in group], '.3f')}
    if lam:
      for tol in TOLERANCES:
        row[f'steps to λ‖θ‖∞ ≤ 1+{tol:g}'] = _count(
            [r.steps_to(tol) for r in group])
        row[f'bound (1+{tol:g})'] = _count([r.bound(tol) for r in group])
      row['λ‖θ_K‖∞ − 1 (max)'] = (
          f'{max(lam * r.linf[-1] for r in group) - 1:.2g}')
      row['share at ±1/λ'] = _networks.spread(
          [r.at_bound for r in group], '.3f')
      row['‖θ_K‖∞'] = _networks.spread([r.linf[-1] for r in group], '.4f')
      row['RMS θ: start → end'] = '–'
      row['RMS grows every tenth'] = '–'
      row['‖θ‖∞ grows'] = '–'
    else:
      for tol in TOLERANCES:
        row[f'steps to λ‖θ‖∞ ≤ 1+{tol:g}'] = '–'
        row[f'bound (1+{tol:g})'] = '–'
      row['λ‖θ_K‖∞ − 1 (max)'] = '–'
      row['share at ±1/λ'] = '–'
      row['‖θ_K‖∞'] = _networks.spread([r.linf[-1] for r in group], '.3f')
      row['RMS θ: start → end'] = (
          f'{statistics.median(r.rms[0] for r in group):.4f} → '
          f'{statistics.median(r.rms[-1] for r in group):.4f}')
      row['RMS grows every tenth'] = (
          f'{sum(r.keeps_growing() for r in group)}/{len(group)} seeds')
      row['‖θ‖∞ grows'] = (
          f'{sum(r.linf_grows() for r in group)}/{len(group)} seeds')
    row['f(θ_K)'] = _networks.spread([r.full_loss for r in group])
    row['test top-1 (%)'] = _networks.spread(
        [100 * r.test_accuracy for r in group], '.1f')
    rows.append(row)
  return rows


def verdict(runs: Sequence[ConfinementRun]) -> dict[str, Any]:
  """The measured answers to the paper's two claims, and to the bound."""
  boxed = [r for r in runs if r.weight_decay]
  free = [r for r in runs if not r.weight_decay]
  tol = TOLERANCES[-1]
  out: dict[str, Any] = {}
  if boxed:
    confined = [r.steps_to(tol) >= 0 for r in boxed]
    # The bound claims nothing when it is longer than the run (-1).
    within = [r.bound(t) < 0 or 0 <= r.steps_to(t) <= r.bound(t)
              for r in boxed for t in TOLERANCES]
    out['confined_runs'] = f'{sum(confined)}/{len(boxed)}'
    out['confined_all'] = all(confined)
    out['steps_within_bound_all'] = all(within)
    out['max_final_excess'] = max(
        float(r.weight_decay * r.linf[-1] - 1) for r in boxed)
  if free:
    out['growing_runs'] = f'{sum(r.keeps_growing() for r in free)}/{len(free)}'
    out['growing_all'] = all(r.keeps_growing() for r in free)
    out['linf_growing_runs'] = (
        f'{sum(r.linf_grows() for r in free)}/{len(free)}')
  return out


def verdict_text(runs: Sequence[ConfinementRun]) -> str:
  """Markdown lines: each claim of Figure 3 of Chen, Liu, Liang, Liu
  against the runs."""
  v = verdict(runs)
  lines = []
  if 'confined_all' in v:
    lams = sorted({r.weight_decay for r in runs if r.weight_decay})
    lines.append(
        f'* λ = {", ".join(f"{x:g}" for x in lams)}: λ‖θ_t‖∞ ≤ 1 + '
        f'{TOLERANCES[-1]:g} holds to the end from some step on in '
        f'{v["confined_runs"]} runs; at the end λ‖θ‖∞ − 1 ≤ '
        f'{v["max_final_excess"]:.2g}. Paper: "quickly confined". '
        + ('**Reproduced.**' if v['confined_all'] else '**Not reproduced.**'))
    lines.append(
        '* Phase 1 (Theorem 4.1): every measured step count is at most the '
        "bound's: " + ('yes.' if v['steps_within_bound_all'] else
                       '**no** (see the table).'))
  if 'growing_all' in v:
    lines.append(
        f'* λ = 0: the RMS of θ rises over each tenth of the run in '
        f'{v["growing_runs"]} runs (‖θ‖∞ ends above its start in '
        f'{v["linf_growing_runs"]}). Paper: the weights "keep growing". '
        + ('**Reproduced.**' if v['growing_all'] else '**Not reproduced.**'))
  return '\n'.join(lines)


# --- figures ----------------------------------------------------------------


def plot_histograms(runs: Sequence[ConfinementRun], seed: Optional[int] = None,
                    columns: int = 2):
  """Figure 3 of Chen, Liu, Liang, Liu: the histogram of the weights over
  training (x: the weight, y: the step, colour: weights per bin), one panel
  per (initialisation, lambda), for one seed; red lines at +-1/lambda."""
  from matplotlib.colors import LogNorm  # pylint: disable=g-import-not-at-top
  seed = runs[0].seed if seed is None else seed
  chosen = [r for r in runs if r.seed == seed]
  # The paper's order: (a) uniform 20, (b) normal 20, (c) uniform 0, ...
  lams = list(dict.fromkeys(r.weight_decay for r in chosen))
  inits = list(dict.fromkeys(r.kernel_init for r in chosen))
  chosen = [next(r for r in chosen if (r.kernel_init, r.weight_decay) ==
                 (i, lam)) for lam in lams for i in inits]
  rows = -(-len(chosen) // columns)
  fig = _common.figure(figsize=(5.6 * columns, 3.8 * rows),
                       layout='constrained')
  axes = np.atleast_1d(fig.subplots(rows, columns, squeeze=False)).ravel()
  for i, (ax, r) in enumerate(zip(axes, chosen)):
    steps = np.append(r.hist_steps, r.hist_steps[-1] + 1)
    image = ax.pcolormesh(r.edges, steps, np.maximum(r.hists, 0.5),
                          norm=LogNorm(vmin=1), cmap='viridis',
                          shading='flat')
    if r.weight_decay:
      for x in (-1 / r.weight_decay, 1 / r.weight_decay):
        ax.axvline(x, color='red', lw=1)
    ax.set_xlabel('weight value θᵢ')
    ax.set_ylabel('step')
    box = (f'red: ±1/λ = ±{1 / r.weight_decay:g}' if r.weight_decay
           else 'no box')
    ax.set_title(f'({chr(97 + i)}) {r.kernel_init}, λ = {r.weight_decay:g}'
                 f': {box}', fontsize=10)
    fig.colorbar(image, ax=ax, label='weights per bin')
  for ax in axes[len(chosen):]:
    ax.set_visible(False)
  fig.suptitle(f'Histograms of the {chosen[0].d:,} weights during training '
               f'(seed {seed})', fontsize=11)
  return fig


def plot_linf(runs: Sequence[ConfinementRun]):
  """||theta_t||_inf of every run (solid) against the Phase-1 bound
  (dashed) and the box 1/lambda (dotted)."""
  fig = _common.figure(figsize=(7.5, 4.5), layout='constrained')
  ax = fig.subplots()
  keys = list(dict.fromkeys((r.kernel_init, r.weight_decay) for r in runs))
  for i, key in enumerate(keys):
    group = [r for r in runs if (r.kernel_init, r.weight_decay) == key]
    color = f'C{i}'
    for j, r in enumerate(group):
      t = np.arange(len(r.linf))
      ax.semilogy(t, r.linf, color=color, lw=1.2, alpha=0.8,
                  label=f'{key[0]}, λ = {key[1]:g}' if j == 0 else None)
    r = group[0]
    t = np.arange(len(r.linf))
    if r.weight_decay:
      box = 1 / r.weight_decay
      shrink = np.concatenate([[1.0], np.cumprod(
          1 - r.learning_rates * r.weight_decay)])
      ax.semilogy(t, box + max(r.linf[0] - box, 0) * shrink, '--',
                  color=color, lw=1)
      ax.axhline(box, color=color, ls=':', lw=0.8)
    else:
      ax.semilogy(t, r.linf[0] + np.concatenate(
          [[0.0], np.cumsum(r.learning_rates)]), '--', color=color, lw=1)
  ax.set_xlabel('step t')
  ax.set_ylabel('‖θ_t‖∞ (largest |weight|)')
  ax.set_title('solid: each seed; dashed: the bound of the theory (first '
               'seed); dotted: 1/λ', fontsize=9)
  ax.legend(fontsize=8)
  return fig


FILES = ('figure3.png', 'figure3_linf.png', 'figure3.md', 'figure3.csv',
         'summary.json')


def report(runs: Sequence[ConfinementRun], command: str = '') -> str:
  """The markdown report: settings, the table and the verdict."""
  first = runs[0]
  seeds = sorted({r.seed for r in runs})
  rows = summary_rows(runs)
  return (
      '# Figure 3 of Chen, Liu, Liang, Liu: weight histograms for two '
      'initialisations\n\n'
      + (f'Command: `{command}`\n\n' if command else '')
      + f'd = {first.d:,}; {first.steps} steps, learning rate '
      f'{first.learning_rates[0]:g} → {first.learning_rates[-1]:g}; seeds '
      f'{seeds} (cells: median [min, max] over the seeds).\n\n'
      + _common.markdown_table(rows) + '\n' + verdict_text(runs) + '\n')


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Command line: the runs, figure3.png, figure3_linf.png and tables."""
  parser = _networks.parser('weight_confinement', __doc__)
  parser.add_argument('--weight-decays', default='20,0',
                      help='comma-separated lambdas (default 20,0)')
  parser.add_argument('--inits', default=','.join(KERNEL_INITS),
                      help='comma-separated model.kernel_init values')
  parser.add_argument('--every', type=int, default=5,
                      help='steps between histograms')
  args = parser.parse_args(argv)
  paths = dict(zip(FILES, _common.check_outputs(args.out, FILES,
                                                args.overwrite)))
  config = _networks.make_config(args.config, args.overrides, base_config)
  runs = run(config,
             weight_decays=_networks.parse_numbers('--weight-decays',
                                                   args.weight_decays),
             kernel_inits=tuple(x for x in args.inits.split(',') if x),
             seeds=_networks.parse_numbers('--seeds', args.seeds, int),
             every=args.every, verbose=True)
  plot_histograms(runs).savefig(paths['figure3.png'], dpi=110)
  plot_linf(runs).savefig(paths['figure3_linf.png'], dpi=110)
  command = _networks.command('weight_confinement', argv)
  _networks.write_results(paths, report(runs, command), runs, command,
                          {'verdict': verdict(runs)}, curves=False,
                          indent=2, default=None)
  return 0


if __name__ == '__main__':
  sys.exit(main())
