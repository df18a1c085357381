r"""Figures 2 (BERT) and 3 (GPT-2) of Dong, Li, Lin on the byte corpus.

The paper trains BERT-Small and BERT-Base (Figure 2; the MLM plus
sentence-order loss) and GPT-2 Small and Medium (Figure 3; the LM loss) on
OpenWebText with Lion and SGD. Each figure shows, over training, the loss
on the training set (:math:`f(\theta)` of a logging pass over 100
batches) and on the test set (panels a, c), and the gradient norm ratio
:math:`r = \|\nabla f\|_1/\|\nabla f\|_2` of that pass with
:math:`\sqrt d` (panels b, d). Its claims: Lion's losses lie below SGD's,
and :math:`r = \Theta(\sqrt d)`, which is what makes Lion's :math:`\ell_1`
rate :math:`O(\sqrt d K^{-1/4})` comparable to SGD's :math:`\ell_2` rate.

Here each figure is a *panel*, (task, config, model family): ``bert`` is
``masked_lm`` with BERT (``configs/lm_default.py:masked_lm``, MLM +
sentence order), ``gpt2`` is ``language_model`` with GPT
(``configs/lm_default.py``); both are 2 pre-LN blocks, 4 heads, context 64,
on the bytes of the standard library. One mechanism trains each panel at
several widths, so that :math:`d` varies within one family, with Lion,
SGD and AdamW at the config's rates over several seeds. Those rates are
the best of ``configs/lm_default_grid.py`` for the GPT at width 64 (one
seed); they were not tuned for BERT nor for the other widths. A verdict
resting on a rate at an edge of that grid reads "inconclusive". For each
run the harness logs :math:`f(\theta)`, the validation loss, :math:`r` and
:math:`\sqrt d` at every evaluation; the slope of :math:`\log r` against
:math:`\log d` over the widths is 0.5 when :math:`r/\sqrt d` is the same
at every size.

Reduced size (default; 27 runs a panel, about 17 minutes of CPU time
for BERT and 13 for GPT-2): widths 16, 32, 64, 400 steps, seeds 0, 1, 2,
both panels. ``--full``: widths 16
to 256, 1000 steps. ``--panel bert`` or ``gpt2`` runs one::

  python -m experiments.lm_sqrt_d --out results/lm_sqrt_d
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import pathlib
import sys
from typing import Any, Optional, Sequence

import numpy as np

import lionx.train as lt
from experiments import _common
from experiments import _lm
from experiments import _networks

WIDTHS, FULL_WIDTHS = (16, 32, 64), (16, 32, 64, 128, 256)
SEEDS = (0, 1, 2)
STEPS, FULL_STEPS = 400, 1000
OPTIMIZERS = ('lion', 'sgd', 'adamw')
EVALS = 4
NAMES = ('lm_sqrt_d.png', 'lm_sqrt_d.md', 'lm_sqrt_d.json')
PAPER_STEPS = 50_000  # the papers' BERT and GPT-2 runs


@dataclasses.dataclass(frozen=True)
class Panel:
  """One figure of the paper: the task, the model family, what it shows."""

  key: str  # the --panel name
  figure: str  # how the claims cite it
  task: str  # the harness's task; the config file's get_config(task)
  paper: str  # the paper's models and loss
  here: str  # the model here
  unit: str  # of the losses


PANELS = {
    'bert': Panel('bert', 'Figure 2 (BERT)', 'masked_lm',
                  'BERT-Small and BERT-Base on OpenWebText, MLM + '
                  'sentence-order loss',
                  'BERT (bert_tiny): MLM + sentence-order loss on bytes',
                  'nats: MLM + order'),
    'gpt2': Panel('gpt2', 'Figure 3 (GPT-2)', 'language_model',
                  'GPT-2 Small and Medium on OpenWebText, LM loss',
                  'GPT (gpt_tiny): next-byte LM loss', 'nats per byte'),
}


def panel_config(config: str | pathlib.Path, panel: Panel) -> str:
  """The config file of ``panel``: ``config``'s ``get_config(task)``."""
  return f'{config}:{panel.task}'


@dataclasses.dataclass
class Result:
  """One panel: the runs by (optimizer, width, seed), and the settings."""

  panel: Panel
  runs: dict[tuple[str, int, int], _lm.Run]
  widths: tuple[int, ...]
  seeds: tuple[int, ...]
  optimizers: tuple[str, ...]
  settings: dict[str, Any]

  def d(self, width: int) -> int:
    """The parameter count at ``width`` (from any of its runs)."""
    for (_, w, _), run in self.runs.items():
      if w == width and run.rows:
        return round(run.rows[0]['sqrt_d'] ** 2)
    raise ValueError(f'width {width}: no run logged anything.')

  def finals(self, name: str, width: int, key: str) -> list[float]:
    """``key`` at the end of each seed's run."""
    return [self.runs[name, width, s].final(key) for s in self.seeds]

  def slopes(self, name: str) -> list[float]:
    """Per seed: the slope of log r against log d over the widths."""
    x = np.log([self.d(w) for w in self.widths])
    out = []
    for s in self.seeds:
      r = np.array([self.runs[name, w, s].final('grad_norm_ratio')
                    for w in self.widths])
      out.append(float(np.polyfit(x, np.log(r), 1)[0])
                 if len(x) > 1 and np.all(np.isfinite(r)) else math.nan)
    return out

  def wins(self, key: str, winner: str = 'lion',
           loser: str = 'sgd') -> tuple[int, int]:
    """(pairs where ``winner``'s final ``key`` < ``loser``'s, pairs)."""
    pairs = [(self.runs[winner, w, s].final(key),
              self.runs[loser, w, s].final(key))
             for w in self.widths for s in self.seeds]
    return sum(a < b or (math.isfinite(a) and not math.isfinite(b))
               for a, b in pairs), len(pairs)

  def edges(self, names: Sequence[str]) -> dict[str, str]:
    """The rates of ``names`` at an edge of the grid they came from."""
    grid = self.settings.get('grid')
    if not grid:
      return {}
    edges = _lm.grid_edges(self.settings['rates'], grid)
    return {n: edges[n] for n in names if n in edges}

  def rows(self) -> list[dict[str, Any]]:
    out = []
    for name in self.optimizers:
      for w in self.widths:
        d = self.d(w)
        out.append({
            'optimizer': name, 'width': w, 'd': f'{d:,}',
            'sqrt_d': round(math.sqrt(d), 1),
            'final f(θ)': _lm.spread(self.finals(name, w, 'full_loss')),
            'final val loss': _lm.spread(self.finals(name, w, 'val_loss')),
            'final r': _lm.spread(self.finals(name, w, 'grad_norm_ratio')),
            'final r/√d': _lm.spread(
                self.finals(name, w, 'grad_norm_ratio_over_sqrt_d'), 3),
        })
    return out

  def summary(self) -> dict[str, Any]:
    out = {'figure': self.panel.figure, 'task': self.panel.task,
           'settings': self.settings,
           'd': {str(w): self.d(w) for w in self.widths},
           'slopes': {n: self.slopes(n) for n in self.optimizers},
           'final': {f'{n}/{w}/{s}': {k: run.final(k) for k in (
               'full_loss', 'val_loss', 'grad_norm_ratio',
               'grad_norm_ratio_over_sqrt_d')} | {'status': run.status}
                     for (n, w, s), run in self.runs.items()}}
    if {'lion', 'sgd'} <= set(self.optimizers):
      out['lion_below_sgd'] = {k: list(self.wins(k))
                               for k in ('full_loss', 'val_loss')}
    return out


@dataclasses.dataclass
class Reproduction:
  """The panels that ran, by key (``bert``, ``gpt2``)."""

  panels: dict[str, Result]

  def summary(self) -> dict[str, Any]:
    return {key: result.summary() for key, result in self.panels.items()}


def run_panel(panel: Panel, config: str | pathlib.Path, out: pathlib.Path,
              *, widths: Sequence[int], seeds: Sequence[int],
              optimizers: Sequence[str], steps: int, evals: int,
              overrides: Sequence[str], overwrite: bool,
              grid_config: str | pathlib.Path | None,
              verbose: bool) -> Result:
  """Trains one panel's (optimizer, width, seed) runs in ``out``."""
  file = panel_config(config, panel)
  timing = _lm.steps_overrides(steps, evals)
  base = _lm.load_config(file, tuple(overrides) + timing)
  rates = {name: float(_networks.optimizer_of(_lm.load_config(
      file, tuple(overrides) + timing + (f'optimizer.name={name}',)))
                       .settings.learning_rate) for name in optimizers}
  grid = []
  if grid_config is not None:
    grid = list(_lm.load_config(grid_config, ()).optimizer.lr_grid)
  runs = {}
  data = lt.get_task(base.task).load_data(base)
  for name in optimizers:
    for width in widths:
      for seed in seeds:
        cfg = _lm.load_config(file, tuple(overrides) + timing + (
            f'optimizer.name={name}', f'model.width={width}',
            'model.num_heads=4', f'seed={seed}'))
        path = out / 'runs' / panel.key / f'{name}_w{width}_seed{seed}'
        runs[name, width, seed] = one = _lm.train(
            cfg, path, overwrite=overwrite, data=data)
        if verbose:
          print(f'{panel.key}: {name} width {width} seed {seed}: '
                f'{one.status}, f(θ) {one.final("full_loss"):.4f}, val '
                f'{one.final("val_loss"):.4f}, r/√d '
                f'{one.final("grad_norm_ratio_over_sqrt_d"):.3f} '
                f'({one.seconds:.0f} s)', flush=True)
  settings = dict(config=_common.shown(file), task=panel.task,
                  model=base.model.name, overrides=list(overrides),
                  widths=list(widths), seeds=list(seeds),
                  optimizers=list(optimizers), steps=steps, evals=evals,
                  rates=rates, grid=grid,
                  grid_config=(None if grid_config is None
                               else _common.shown(grid_config)),
                  seconds=round(sum(r.trained() for r in runs.values()), 1))
  return Result(panel, runs, tuple(widths), tuple(seeds), tuple(optimizers),
                settings)


def run(config: str = _lm.DEFAULT_CONFIG, out: str | pathlib.Path = '.', *,
        panels: Sequence[str] = tuple(PANELS),
        widths: Sequence[int] = WIDTHS, seeds: Sequence[int] = SEEDS,
        optimizers: Sequence[str] = OPTIMIZERS, steps: int = STEPS,
        evals: int = EVALS, overrides: Sequence[str] = (),
        grid_config: str | pathlib.Path | None = _lm.GRID_CONFIG,
        overwrite: bool = False, verbose: bool = True) -> Reproduction:
  """Trains every (panel, optimizer, width, seed) under ``out/runs``
  (with ``config``, ``overrides``, ... as :mod:`experiments._lm` says).

  Args:
    config: a config file whose ``get_config(task)`` takes the panel's
      task (``configs/lm_default.py``).
    panels: keys of :data:`PANELS` (``bert``: Figure 2, ``gpt2``: Figure 3).
    widths: ``model.width`` of each size (heads: 4).
    seeds: the seeds of each (optimizer, width).
    optimizers: the harness's optimizer names, at the config's rates.
    steps: ``num_steps`` of each run.
    evals: evaluations per run (``eval_every_steps = steps / evals``).
    grid_config: the config whose ``optimizer.lr_grid`` the config's rates
      were picked from (None: not picked from a grid; the default applies
      to the default ``config`` only); a verdict resting on a rate at its
      edge reads "inconclusive".

  Returns:
    A :class:`Reproduction`.
  """
  unknown = [p for p in panels if p not in PANELS]
  if not panels or unknown:
    raise ValueError(f'panels={tuple(panels)}: expected some of '
                     f'{tuple(PANELS)}.')
  for name, values in (('widths', widths), ('seeds', seeds)):
    if not values or any(v < 0 for v in values):
      raise ValueError(f'{name}={tuple(values)}: expected non-negative '
                       'integers.')
  if any(w % 4 for w in widths):
    raise ValueError(f'widths={tuple(widths)}: expected multiples of 4 '
                     '(the model has 4 heads).')
  if not optimizers:
    raise ValueError('optimizers=(): expected at least one name.')
  if (grid_config == _lm.GRID_CONFIG
      and _common.shown(config) != _common.shown(_lm.DEFAULT_CONFIG)):
    grid_config = None  # that grid tuned the repository's config only
  return Reproduction({key: run_panel(
      PANELS[key], config, pathlib.Path(out), widths=widths, seeds=seeds,
      optimizers=optimizers, steps=steps, evals=evals, overrides=overrides,
      overwrite=overwrite, grid_config=grid_config, verbose=verbose)
                       for key in panels})


def plot(result: Reproduction):
  """A row per panel: the losses (panels a, c of the paper's figure) and
  r against √d (panels b, d)."""
  rows = len(result.panels)
  fig = _common.figure(figsize=(20, 4.6 * rows), layout='constrained')
  axes = np.asarray(fig.subplots(rows, 4)).reshape(rows, 4)
  for (loss, curves, ratio, scaled), one in zip(axes,
                                                result.panels.values()):
    _plot_panel(one, loss, curves, ratio, scaled)
  _lm.finish(axes.ravel())
  return fig


def _plot_panel(result: Result, loss, curves, ratio, scaled) -> None:
  ds = np.array([result.d(w) for w in result.widths])
  mid = result.widths[len(result.widths) // 2]
  seed = result.seeds[0]
  fig_name = result.panel.figure
  unit = result.panel.unit
  for i, name in enumerate(result.optimizers):
    color = f'C{i}'
    for key, style, label in (('full_loss', 'o-', 'f(θ) (training)'),
                              ('val_loss', 's--', 'validation')):
      values = [result.finals(name, w, key) for w in result.widths]
      loss.plot(ds, [_lm.median(v) for v in values], style, color=color,
                label=f'{name}: {label}')
    run_ = result.runs[name, mid, seed]
    curves.plot(*run_.curve('full_loss'), 'o-', color=color,
                label=f'{name}: f(θ)')
    curves.plot(*run_.curve('val_loss'), 's--', color=color,
                label=f'{name}: validation')
    for j, w in enumerate(result.widths):
      steps, r = result.runs[name, w, seed].curve('grad_norm_ratio')
      ratio.plot(steps, r, '-', color=color, alpha=0.35 + 0.65 * (j + 1)
                 / len(result.widths),
                 label=name if j == len(result.widths) - 1 else None)
    _lm.errorbar(scaled, ds, [
        result.finals(name, w, 'grad_norm_ratio_over_sqrt_d')
        for w in result.widths], 'o-', color=color,
                 label=f'{name}: median, min-max over seeds')
  for value in np.sqrt(ds):
    ratio.axhline(value, color='k', ls=':', lw=0.8)
  _lm.label(loss, 'd (parameters)', f'final loss ({unit})',
            f'{fig_name} (a, c) analogue: final losses against d\n'
            f'(median over {len(result.seeds)} '
            f'seed{"s" * (len(result.seeds) > 1)})',
            xscale='log', yscale='log')
  _lm.label(curves, 'step', f'loss ({unit})',
            f'{fig_name}: width {mid} (d = {result.d(mid):,}), '
            f'seed {seed}', yscale='log')
  _lm.label(ratio, 'step', 'r = ‖∇f‖₁ / ‖∇f‖₂',
            f'{fig_name} (b, d) analogue: r over training (darker: '
            f'wider),\ndotted: √d of each width; seed {seed}', yscale='log')
  _lm.label(scaled, 'd (parameters)', 'final r / √d',
            f'{fig_name}: r/√d across d, flat if r = Θ(√d)', xscale='log')
  scaled.set_ylim(bottom=0)


def why_different(result: Result) -> str:
  """Why a verdict at this size may differ from the paper's."""
  s = result.settings
  d = result.d(result.widths[-1])
  tuned = ('for the GPT at width 64 only, not for BERT'
           if result.panel.task == 'masked_lm' else 'at width 64 only')
  seeds = len(result.seeds)
  return (f'may differ from the paper for the reduced size: {s["steps"]} '
          f'steps (paper: {PAPER_STEPS:,}), d ≤ {d:,}, {seeds} '
          f'seed{"s" * (seeds > 1)}, rates tuned {tuned}')


def panel_claims(result: Result) -> list[tuple[str, str, str]]:
  """One panel's claims beside what was measured."""
  out = []
  fig_name, paper = result.panel.figure, result.panel.paper
  why = why_different(result)
  if {'lion', 'sgd'} <= set(result.optimizers):
    for key, what in (('full_loss', 'training loss f(θ)'),
                      ('val_loss', 'test (here: validation) loss')):
      won, total = result.wins(key)
      verdict = ('holds' if won == total else 'does not hold'
                 if won == 0 else f'holds in {won} of {total}')
      verdict = _lm.at_edge(_lm.unlike_paper(verdict, why),
                            result.edges(('lion', 'sgd')))
      out.append((f'{fig_name}: Lion\'s {what} is below SGD\'s ({paper})',
                  f'Lion below SGD at the end in {won} of {total} (width, '
                  'seed) pairs', verdict))
  for name in result.optimizers:
    slopes = result.slopes(name)
    med = _lm.median(slopes)
    scaled = [_lm.median(result.finals(name, w,
                                       'grad_norm_ratio_over_sqrt_d'))
              for w in result.widths]
    if not math.isfinite(med):
      verdict = 'not measured (a run diverged)'
    elif abs(med - 0.5) <= 0.1:
      verdict = 'consistent'
    else:
      verdict = f'not confirmed: r grows like d^{med:.2f}'
    verdict = _lm.at_edge(_lm.unlike_paper(verdict, why),
                          result.edges((name,)))
    out.append((
        f'{fig_name}, §4: r = Θ(√d), i.e. r/√d about constant in d',
        f'{name}: slope of log r against log d {_lm.spread(slopes, 3)} '
        f'(median [min, max] over seeds); final r/√d from '
        f'{scaled[0]:.3f} (d = {result.d(result.widths[0]):,}) to '
        f'{scaled[-1]:.3f} (d = {result.d(result.widths[-1]):,})',
        verdict))
  return out


def claims(result: Reproduction) -> list[tuple[str, str, str]]:
  """The paper's claims beside what was measured, panel by panel."""
  return [row for one in result.panels.values()
          for row in panel_claims(one)]


def _rates_note(result: Result) -> str:
  s = result.settings
  rates = ', '.join(f'{n} {r:g}' for n, r in s['rates'].items())
  if not s['grid']:
    return f'Rates: {rates} (the config\'s; not picked from a grid here).'
  edges = result.edges(result.optimizers)
  where = ('none of them is at an edge of the grid' if not edges else
           'at an edge of the grid: ' + ', '.join(
               f'{n} ({side})' for n, side in edges.items()))
  return (f'Rates: {rates}, the config\'s, picked from the grid of '
          f'{s["grid_config"]} ({", ".join(f"{g:g}" for g in s["grid"])}) '
          'for the GPT at width 64, one seed; they are not tuned again '
          f'here; {where}.')


def report(result: Reproduction) -> str:
  """A markdown report: the claims and verdicts, then a table per panel."""
  intro = ['Each panel trains its model at several widths with Lion, SGD '
           'and AdamW; every number is measured by this run.', '']
  tables = []
  for one in result.panels.values():
    s = one.settings
    intro += [f'* **{one.panel.figure}**: {one.panel.here}; config '
              f'{s["config"]}, {s["steps"]} steps, {s["evals"]} '
              f'evaluations, widths {s["widths"]}, seeds {s["seeds"]}; '
              f'{s["seconds"]:.0f} s of training (the runs\' own wall '
              f'time). {_rates_note(one)}']
    tables.append((f'{one.panel.figure}: final values, median [min, max] '
                   'over the seeds:', one.rows()))
  return _lm.document(
      'Figures 2 (BERT) and 3 (GPT-2) of Dong, Li, Lin on the embedded '
      'byte corpus', '\n'.join(intro), claims(result), *tables)


def _arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument('--panel', choices=('both', *PANELS), default='both',
                      help='bert: Figure 2 (masked LM), gpt2: Figure 3 '
                      '(LM); default both')
  parser.add_argument('--widths', default=None,
                      help=f'comma-separated (default {WIDTHS})')
  parser.add_argument('--seeds', default=None,
                      help=f'comma-separated (default {SEEDS})')
  parser.add_argument('--optimizers', default=','.join(OPTIMIZERS))
  parser.add_argument('--steps', type=int, default=None,
                      help=f'steps per run (default {STEPS})')
  parser.add_argument('--evals', type=int, default=EVALS)
  parser.add_argument('--full', action='store_true',
                      help=f'widths {FULL_WIDTHS}, {FULL_STEPS} steps')


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Command line: runs :func:`run`, writes a PNG, markdown and JSON."""
  return _lm.main(sys.modules[__name__], argv, _arguments, lambda args: {
      'panels': tuple(PANELS) if args.panel == 'both' else (args.panel,),
      'widths': _lm.sized(args, 'widths', WIDTHS, FULL_WIDTHS),
      'seeds': _lm.sized(args, 'seeds', SEEDS, SEEDS),
      'steps': _lm.sized(args, 'steps', STEPS, FULL_STEPS),
      'optimizers': _lm.names(args.optimizers), 'evals': args.evals})

if __name__ == '__main__':
  sys.exit(main())
