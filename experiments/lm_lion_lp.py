r"""Figures 6 and 7 of Chen, Liu, Liang, Liu, language panel:
Lion-ℓp on a byte-level GPT.

Lion-:math:`\ell_p` (the harness's ``lion_lp``: :func:`lionx.lp_reshaper`
with the global norm over all :math:`d` parameters) with weight decay
:math:`\lambda` solves :math:`\min f` s.t. :math:`\|\lambda\theta\|_q \le
1`, :math:`1/p + 1/q = 1`. On GPT-2 (OpenWebText) the paper shows the
norms following the theory (Figure 6) and the loss against :math:`p`
(Figure 7), where :math:`p = 1`, Lion itself, is best.

Here the model is ``configs/lm_default.py``'s GPT on the bytes of the
standard library, :math:`p \in \{1, 1.25, 1.5, 2\}`, and two kinds of runs,
as in the vision panel (:mod:`experiments.lion_lp_networks`):

* **Figure 6, the constraint.** One run per :math:`p` started *on* the
  boundary, :math:`\lambda_p = (1 - 10^{-4})/\|\theta_0\|_q`, at the
  matched rate below; the harness logs the reshaper's ``constraint``
  :math:`\|\lambda_p\theta\|_q` at each of its 20 evaluations. Theorem 4.1
  (with :math:`\eta\lambda \le 1`) says it stays :math:`\le 1`.
* **Figure 7, the loss against p.** :math:`\eta_p = \eta\,d^{1/q}` and
  :math:`\lambda_p = \lambda\,d^{-1/q}`, with :math:`\eta, \lambda` the
  config's Lion rate and weight decay: a direction whose entries have
  equal size then moves every coordinate by :math:`\eta` for every
  :math:`p`, with the same decay :math:`1 - \eta_p\lambda_p`. That matching
  is a choice, so each :math:`p` takes the best of ``multipliers`` times
  :math:`\eta_p` by the final validation loss of the first seed, then runs
  the other seeds at that rate; the tables give median [min, max].

Reduced size (default; about 13 minutes of CPU time): 400 steps, seeds 0
and 1. ``--full``: 1000 steps, seeds 0, 1, 2::

  python -m experiments.lm_lion_lp --out results/lm_lion_lp
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import pathlib
import sys
from typing import Any, Optional, Sequence

from flax import nnx

import lionx
import lionx.train as lt
from lionx import metrics
from experiments import _common
from experiments import _lm
from experiments import _networks

PS = (1.0, 1.25, 1.5, 2.0)
MULTIPLIERS = (1 / 3, 1.0, 3.0)
SEEDS, FULL_SEEDS = (0, 1), (0, 1, 2)
STEPS, FULL_STEPS = 400, 1000
EVALS, CONSTRAINT_EVALS = 4, 20
ROUNDING = 1e-5  # float32 slack on ||lambda theta||_q <= 1
NAMES = ('lm_lion_lp.png', 'lm_lion_lp.md', 'lm_lion_lp.json')


def dual(p: float) -> float:
  """q with 1/p + 1/q = 1 (inf for p = 1)."""
  return math.inf if p == 1 else p / (p - 1)


def scale(p: float, d: int) -> float:
  r""":math:`d^{1/q}`: the ratio of :math:`\eta_p` to Lion's rate."""
  return 1.0 if p == 1 else d ** (1.0 / dual(p))


def initial_params(config) -> Any:
  """The parameters the config's model starts from (its seed)."""
  task = lt.get_task(config.task)
  model = task.create_model(config, task.input_spec(config), config.seed)
  return nnx.state(model, nnx.Param)


@dataclasses.dataclass
class Result:
  """The runs and the settings."""

  loss_runs: dict[tuple[float, float, int], _lm.Run]  # (p, mult, seed)
  constraint_runs: dict[float, _lm.Run]
  chosen: dict[float, float]  # p -> multiplier
  rates: dict[float, float]  # p -> matched eta_p (multiplier 1)
  decays: dict[float, float]  # p -> lambda_p of the loss runs
  boundary_decays: dict[float, float]  # p -> lambda_p of the constraint runs
  d: int
  seeds: tuple[int, ...]
  settings: dict[str, Any]

  def finals(self, p: float, key: str) -> list[float]:
    return [self.loss_runs[p, self.chosen[p], s].final(key)
            for s in self.seeds]

  def constraint_max(self, p: float) -> float:
    _, values = self.constraint_runs[p].curve('constraint')
    return max(values) if values else math.nan

  def best_p(self) -> float:
    medians = {p: _lm.median(self.finals(p, 'val_loss')) for p in self.rates}
    finite = {p: v for p, v in medians.items() if math.isfinite(v)}
    return min(finite, key=finite.get) if finite else math.nan

  def rows(self) -> list[dict[str, Any]]:
    out = []
    for p in self.rates:
      out.append({
          'p': p, 'q': dual(p), 'lr multiplier (seed 0 grid)':
          f'{self.chosen[p]:.3g}',
          'eta_p': f'{self.rates[p] * self.chosen[p]:.3g}',
          'lambda_p': f'{self.decays[p]:.3g}',
          'final val loss': _lm.spread(self.finals(p, 'val_loss')),
          'final f(θ)': _lm.spread(self.finals(p, 'full_loss')),
          'final ‖λθ‖_q': _lm.spread(self.finals(p, 'constraint'), 3),
          'boundary start: max ‖λθ‖_q': f'{self.constraint_max(p):.6f}',
      })
    return out

  def grid_rows(self) -> list[dict[str, Any]]:
    seed = self.seeds[0]
    return [{'p': p, 'multiplier': f'{m:.3g}',
             'eta': f'{self.rates[p] * m:.3g}',
             'final val loss (seed 0)': f'{run.final("val_loss"):.4f}',
             'status': run.status}
            for (p, m, s), run in self.loss_runs.items() if s == seed]

  def summary(self) -> dict[str, Any]:
    return {
        'settings': self.settings, 'd': self.d,
        'chosen_multiplier': {str(p): m for p, m in self.chosen.items()},
        'final_val_loss': {str(p): self.finals(p, 'val_loss')
                           for p in self.rates},
        'final_full_loss': {str(p): self.finals(p, 'full_loss')
                            for p in self.rates},
        'boundary_constraint': {
            str(p): self.constraint_runs[p].curve('constraint')
            for p in self.rates},
        'boundary_weight_decay': {str(p): v for p, v in
                                  self.boundary_decays.items()},
        'grid': self.grid_rows()}


def run(config: str = _lm.DEFAULT_CONFIG, out: str | pathlib.Path = '.', *,
        ps: Sequence[float] = PS, seeds: Sequence[int] = SEEDS,
        multipliers: Sequence[float] = MULTIPLIERS, steps: int = STEPS,
        evals: int = EVALS, overrides: Sequence[str] = (),
        overwrite: bool = False,
        verbose: bool = True) -> Result:
  """Trains the constraint runs and the loss runs under ``out/runs``;
  :mod:`experiments._lm` describes the arguments all three take.

  Args:
    config: its Lion rate and weight decay are :math:`\\eta` and
      :math:`\\lambda`.
    ps: the exponents :math:`p \\ge 1`.
    seeds: the seeds of the loss runs (the first one picks the rate).
    multipliers: the rate grid, in units of :math:`\\eta_p`.
    steps: ``num_steps`` of every run.
    evals: evaluations of each loss run (the constraint runs have 20).

  Returns:
    A :class:`Result`.
  """
  if not ps or any(not p >= 1 for p in ps):
    raise ValueError(f'ps={tuple(ps)}: expected exponents >= 1.')
  if not seeds or any(s < 0 for s in seeds):
    raise ValueError(f'seeds={tuple(seeds)}: expected non-negative '
                     'integers.')
  if not multipliers or any(not m > 0 for m in multipliers):
    raise ValueError(f'multipliers={tuple(multipliers)}: expected positive '
                     'numbers.')
  base = _lm.load_config(config,
                         tuple(overrides) + ('optimizer.name=lion',))
  settings = _networks.optimizer_of(base).settings  # no epochs: no data
  eta, lam = settings.learning_rate, settings.weight_decay
  theta0 = initial_params(_lm.load_config(
      config, tuple(overrides) + (f'seed={seeds[0]}',)))
  d = metrics.tree_size(theta0)
  runs_dir = pathlib.Path(out) / 'runs'
  data = None

  def train(name: str, extra: tuple[str, ...]) -> _lm.Run:
    nonlocal data
    cfg = _lm.load_config(config, tuple(overrides) + extra)
    if data is None:
      data = lt.get_task(cfg.task).load_data(cfg)
    one = _lm.train(cfg, runs_dir / name, overwrite=overwrite, data=data)
    if verbose:
      print(f'{name}: {one.status}, val {one.final("val_loss"):.4f}, '
            f'‖λθ‖_q {one.final("constraint"):.4g} ({one.seconds:.0f} s)',
            flush=True)
    return one

  def lp(p: float, lr: float, wd: float, seed: int) -> tuple[str, ...]:
    return ('optimizer.name=lion_lp', f'optimizer.lion_lp.p={p!r}',
            'optimizer.lion_lp.scope=global',
            f'optimizer.learning_rate={lr!r}',
            f'optimizer.weight_decay={wd!r}', f'seed={seed}')

  rates = {p: eta * scale(p, d) for p in ps}
  decays = {p: lam / scale(p, d) for p in ps}
  boundary, constraint_runs = {}, {}
  for p in ps:
    # ||theta_0||_q, the gauge of the reshaper's constraint set.
    norm = float(lionx.lp_reshaper(p, 'global').gauge(theta0))
    boundary[p] = (1 - 1e-4) / norm
    constraint_runs[p] = train(
        f'constraint_p{p:g}',
        lp(p, rates[p], boundary[p], seeds[0])
        + _lm.steps_overrides(steps, CONSTRAINT_EVALS)
        + ('logging_max_batches=2', 'data.val_max_batches=2'))
  timing = _lm.steps_overrides(steps, evals)
  loss_runs, chosen = {}, {}
  for p in ps:
    for m in multipliers:
      loss_runs[p, m, seeds[0]] = train(
          f'p{p:g}_x{m:.3g}_seed{seeds[0]}',
          lp(p, rates[p] * m, decays[p], seeds[0]) + timing)
    scores = {m: loss_runs[p, m, seeds[0]].final('val_loss')
              for m in multipliers}
    finite = {m: v for m, v in scores.items() if math.isfinite(v)}
    chosen[p] = min(finite, key=finite.get) if finite else multipliers[0]
    for seed in seeds[1:]:
      loss_runs[p, chosen[p], seed] = train(
          f'p{p:g}_x{chosen[p]:.3g}_seed{seed}',
          lp(p, rates[p] * chosen[p], decays[p], seed) + timing)
  settings = dict(config=_common.shown(config), overrides=list(overrides),
                  ps=list(ps), seeds=list(seeds),
                  multipliers=list(multipliers), steps=steps, evals=evals,
                  eta=eta, weight_decay=lam)
  return Result(loss_runs, constraint_runs, chosen, rates, decays, boundary,
                d, tuple(seeds), settings)


def plot(result: Result):
  """Figure 6 (constraints over training) and Figure 7 (loss against p)."""
  fig = _common.figure(figsize=(12, 8.5), layout='constrained')
  (bound, matched), (against, grid) = fig.subplots(2, 2)
  ps = list(result.rates)
  for i, p in enumerate(ps):
    color = f'C{i}'
    label = f'p = {p:g} (q = {dual(p):g})'
    bound.plot(*result.constraint_runs[p].curve('constraint'), 'o-',
               color=color, ms=3, label=label)
    run_ = result.loss_runs[p, result.chosen[p], result.seeds[0]]
    matched.plot(*run_.curve('constraint'), 'o-', color=color, label=label)
    seed0 = [(m, result.loss_runs[p, m, result.seeds[0]].final('val_loss'))
             for m in result.settings['multipliers']]
    grid.plot([m for m, _ in seed0], [v for _, v in seed0], 'o-',
              color=color, label=label)
  bound.axhline(1.0, color='k', ls='--', lw=1, label='constraint boundary')
  _lm.label(bound, 'step', '‖λθ‖_q', 'Figure 6 analogue: started on the '
            'boundary,\nλ_p = (1 - 1e-4)/‖θ₀‖_q')
  _lm.label(matched, 'step', '‖λθ‖_q', '‖λ_pθ‖_q of the loss runs (λ_p = '
            'λ d^(-1/q)),\nchosen rate, first seed', yscale='log')
  for key, style, label in (('val_loss', 'o-', 'validation loss'),
                            ('full_loss', 's--', 'f(θ)')):
    _lm.errorbar(against, ps, [result.finals(p, key) for p in ps], style,
                 label=f'{label}: median, min-max over seeds')
  _lm.label(against, 'p', 'final loss (nats per byte)',
            'Figure 7 analogue: loss against p\n(each p at its chosen rate)')
  _lm.label(grid, 'rate multiplier (of η_p = η d^(1/q))',
            'final validation loss, first seed',
            'the rate grid behind the chosen rates', xscale='log')
  _lm.finish((bound, matched, against, grid))
  return fig


def claims(result: Result) -> list[tuple[str, str, str]]:
  ps = list(result.rates)
  worst = max(result.constraint_max(p) for p in ps)
  inside = all(result.constraint_max(p) <= 1 + ROUNDING for p in ps)
  best = result.best_p()
  medians = {p: _lm.median(result.finals(p, 'val_loss')) for p in ps}
  order = ', '.join(f'p = {p:g}: {medians[p]:.4f}' for p in ps)
  # Whether the best p's worst seed beats every other p's best seed.
  clear = math.isfinite(best) and all(
      _lm.extreme(max, result.finals(best, 'val_loss'))
      < _lm.extreme(min, result.finals(p, 'val_loss'))
      for p in ps if p != best)
  within = '' if clear else ', within the spread over seeds'
  if not math.isfinite(best):
    verdict = 'not measured (every run diverged)'
  elif best == 1.0:
    verdict = f'holds{within}'
  else:
    verdict = f'does not hold: p = {best:g} is best here{within}'
  s = result.settings
  seeds = len(result.seeds)
  verdict = _lm.at_edge(_lm.unlike_paper(verdict, (
      f'may differ from the paper for the reduced size: {s["steps"]} '
      f'steps of a d = {result.d:,} byte-level GPT (paper: GPT-2 on '
      f'OpenWebText), {seeds} seed{"s" * (seeds > 1)}')), _lm.grid_edges(
          {f'p = {p:g}': result.chosen[p] for p in ps}, s['multipliers']),
                        'rate multiplier')
  return [
      ('Figure 6: Lion-ℓp keeps ‖λθ‖_q ≤ 1 during training (the norms '
       'follow the theory on GPT-2)',
       f'started on the boundary, the largest ‖λθ‖_q logged over '
       f'{CONSTRAINT_EVALS} evaluations is {worst:.6f} (float32 slack '
       f'{ROUNDING:g})', 'holds' if inside else 'does not hold'),
      ('Figure 7: on GPT-2, p = 1 (Lion) gives the lowest loss; smaller p '
       'is better',
       f'median final validation loss over seeds {list(result.seeds)}: '
       f'{order}', verdict)]


def report(result: Result) -> str:
  """A markdown report: the claims and verdicts, then the tables."""
  s = result.settings
  return _lm.document(
      'Figures 6 and 7 of Chen, Liu, Liang, Liu, language panel: '
      'Lion-ℓp on a byte-level GPT',
      f'Config {s["config"]} (d = {result.d:,}; Lion rate η = {s["eta"]:g},'
      f' weight decay λ = {s["weight_decay"]:g}), {s["steps"]} steps, '
      f'seeds {s["seeds"]}, rate multipliers {s["multipliers"]}; every '
      'number is measured by this run.', claims(result),
      ('Each p at its chosen rate; median [min, max] over the seeds:',
       result.rows()),
      ('The rate grid (first seed):', result.grid_rows()))


def _arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument('--ps', default=','.join(f'{p:g}' for p in PS))
  parser.add_argument('--seeds', default=None,
                      help=f'comma-separated (default {SEEDS})')
  parser.add_argument('--multipliers', default=None,
                      help='comma-separated (default 1/3, 1, 3)')
  parser.add_argument('--steps', type=int, default=None,
                      help=f'steps per run (default {STEPS})')
  parser.add_argument('--evals', type=int, default=EVALS)
  parser.add_argument('--full', action='store_true',
                      help=f'{FULL_STEPS} steps, seeds {FULL_SEEDS}')


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Command line: runs :func:`run`, writes a PNG, markdown and JSON."""
  return _lm.main(sys.modules[__name__], argv, _arguments, lambda args: {
      'ps': _lm.sized(args, 'ps', PS, PS, float),
      'seeds': _lm.sized(args, 'seeds', SEEDS, FULL_SEEDS),
      'multipliers': _lm.sized(args, 'multipliers', MULTIPLIERS,
                               MULTIPLIERS, float),
      'steps': _lm.sized(args, 'steps', STEPS, FULL_STEPS),
      'evals': args.evals})

if __name__ == '__main__':
  sys.exit(main())
