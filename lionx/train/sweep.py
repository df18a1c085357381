"""Comparisons, learning-rate grids and seeds, built from single runs.

Layout of a comparison workdir ``W`` (each piece resumable on its own)::

  W/comparison.json               marks W as a comparison
  W/<optimizer>/                  one run (config.json, metrics.jsonl, ...)
  W/<optimizer>/seed_<s>/         ... or one run per seed (``--seeds``)
  W/<optimizer>/lr_<lr>/[seed_<s>/]   ... per rate of a grid, with
  W/<optimizer>/grid.json         the grid's results and the best rate
  W/figure1.png, W/*.png          the combined figures (lionx.train.plots)
  W/summary.md                    the summary table

A grid keeps, per optimizer, the rate with the lowest final full training
loss ``f(θ)`` (``lr_select='full_loss'``, the papers' criterion for their
loss curves) or the lowest held-out loss, in median over the seeds;
diverged runs are skipped. With several seeds the summary gives the median
and the range (``median [min, max]``) of each final number.
"""

from __future__ import annotations

import pathlib
import statistics
from typing import Any, NamedTuple, Optional, Sequence

from lionx.train import config as config_lib
from lionx.train import experiment
from lionx.train import optimizers
from lionx.train import plots
from lionx.train import report
from lionx.train import tasks
from lionx.train import workdir as workdir_lib
from lionx.train.config import Config, ConfigError
from lionx.train.experiment import RunResult


class SweepResult(NamedTuple):
  """The rate kept for one optimizer: its runs (one per seed), and the
  runs of every rate of its grid."""

  best: RunResult  # the kept rate's run of the first seed
  seeds: list[RunResult]  # the kept rate's runs, one per seed
  grid: list[list[RunResult]]  # per rate: one run per seed


def _seeds(config: Config) -> tuple[int, ...]:
  return config.seeds or (config.seed,)


def _sub(config: Config, lr: Optional[float], seed: int) -> Config:
  sub = config_lib.copy(config)
  if lr is not None:
    sub.optimizer.learning_rate = lr
  sub.optimizer.lr_grid = ()
  sub.seed, sub.seeds = seed, ()
  return sub


def _layout(config: Config, workdir: pathlib.Path
            ) -> list[tuple[Optional[float], list[tuple[Config, pathlib.Path]]]]:
  """Per rate (None: the config's): the (config, workdir) of each seed."""
  seeds = _seeds(config)
  rates = config.optimizer.lr_grid or (None,)
  out = []
  for lr in rates:
    folder = workdir / f'lr_{lr:g}' if lr is not None else workdir
    runs = [(_sub(config, lr, s),
             folder / f'seed_{s}' if config.seeds else folder)
            for s in seeds]
    out.append((lr, runs))
  return out


def _grid_identity(config: Config) -> dict[str, Any]:
  identity = config_lib.run_identity(_sub(config, 1.0, config.seed))
  identity['optimizer'].pop('learning_rate')
  identity.pop('seed')
  identity['seeds'] = list(_seeds(config))
  return identity


def check(config: Config, workdir: pathlib.Path, overwrite: bool,
          extend: bool = False) -> None:
  """Refuses ``workdir`` (or a run under it) holding another config."""
  if config.optimizer.lr_grid:
    workdir_lib.check(workdir, _grid_identity(config), overwrite, 'grid')
  for _, runs in _layout(config, workdir):
    for sub, path in runs:
      workdir_lib.check(path, config_lib.run_identity(sub), overwrite,
                        extend=extend)


def _single(config: Config, workdir: pathlib.Path, overwrite: bool,
            data: Any, verbose: bool, options: dict[str, bool]) -> RunResult:
  try:
    return experiment.train_and_evaluate(
        config, workdir, overwrite=overwrite, data=data, verbose=verbose,
        **options)
  except experiment.NonFiniteLossError as err:
    if verbose:
      print(f'{workdir}: {err}', flush=True)
    return RunResult('diverged', workdir,
                     optimizers.learning_rate(config.optimizer),
                     workdir_lib.read_metrics(workdir), str(err))


def _score(runs: Sequence[RunResult], select: str) -> Optional[float]:
  values = [r.rows[-1][select] for r in runs
            if r.status == 'finished' and r.rows]
  if len(values) < len(runs):
    return None
  return statistics.median(values)


def run(config: Config, workdir: str | pathlib.Path, *,
        overwrite: bool = False, data: Any = None,
        verbose: bool = True, extend: bool = False,
        allow_data_change: bool = False) -> SweepResult:
  """One optimizer: one run, or one per seed, per rate of its grid.

  A non-finite loss does not raise here: the run comes back with status
  ``'diverged'``. ``extend`` and ``allow_data_change`` are those of
  :func:`lionx.train.experiment.train_and_evaluate` (``extend`` not with a
  learning-rate grid).
  """
  config, workdir = config_lib.validate(config), pathlib.Path(workdir)
  if extend and config.optimizer.lr_grid:
    raise ConfigError('--extend continues runs, not a learning-rate grid; '
                      'extend the kept rate\'s run in its own workdir.')
  check(config, workdir, overwrite, extend)
  with workdir_lib.lock(workdir):
    return _run(config, workdir, overwrite, data, verbose,
                dict(extend=extend, allow_data_change=allow_data_change))


def _run(config: Config, workdir: pathlib.Path, overwrite: bool, data: Any,
         verbose: bool, options: Optional[dict[str, bool]] = None
         ) -> SweepResult:
  """:func:`run` of a validated, checked config."""
  task = tasks.get_task(config.task)
  data = task.load_data(config) if data is None else data
  grid = config.optimizer.lr_grid
  if grid:
    if overwrite:
      workdir_lib.clear(workdir)
    workdir_lib.make(workdir)
    workdir_lib.start(workdir, 'grid', _grid_identity(config), {})
  results = [[_single(sub, path, overwrite, data, verbose, options or {})
              for sub, path in runs] for _, runs in _layout(config, workdir)]
  scored = [(s, i) for i, runs in enumerate(results)
            if (s := _score(runs, config.lr_select)) is not None]
  kept = results[min(scored)[1]] if scored else results[0]
  if grid:
    _write_grid(config, task, workdir, results, kept, verbose)
  return SweepResult(kept[0], kept, results)


def _write_grid(config: Config, task: tasks.Task, workdir: pathlib.Path,
                results: list[list[RunResult]], kept: list[RunResult],
                verbose: bool) -> None:
  """grid.json with every rate's results, and the grid's figures."""
  stored = workdir_lib.read_json(workdir / workdir_lib.GRID_FILE)
  stored.update({
      'lr_select': config.lr_select,
      'best_learning_rate': kept[0].learning_rate,
      'runs': [{'learning_rate': runs[0].learning_rate,
                'status': [r.status for r in runs],
                'full_loss': [report.final(r.rows, 'full_loss')
                              for r in runs],
                'val_loss': [report.final(r.rows, 'val_loss') for r in runs]}
               for runs in results]})
  workdir_lib.write_json(workdir / workdir_lib.GRID_FILE, stored)
  curves = {f'{config.optimizer.name} (lr {runs[0].learning_rate:g})':
            runs[0].rows for runs in results if runs[0].rows}
  if curves:
    x = 'epoch' if any('epoch' in r[0] for r in curves.values()) else 'step'
    plots.write_figures(curves, workdir, config.optimizer.name, task.panels,
                        x)
  if verbose:
    print(grid_table(config.optimizer.name, results, kept), flush=True)


def grid_table(name: str, results: Sequence[Sequence[RunResult]],
               kept: Sequence[RunResult]) -> str:
  """One row per rate of a grid: its final losses over the seeds."""
  rows = [[name, report.number(runs[0].learning_rate),
           ', '.join(sorted({r.status for r in runs})),
           report.spread([report.final(r.rows, 'full_loss') for r in runs]),
           report.spread([report.final(r.rows, 'val_loss') for r in runs]),
           '*' if runs is kept else ''] for runs in results]
  return report.table(
      ['optimizer', 'lr', 'status', 'final f(θ)', 'final held-out loss',
       'kept'], rows)


def comparison_table(results: dict[str, SweepResult],
                     configs: dict[str, Config],
                     extra: Sequence[tuple[str, str]] = ()) -> str:
  """One row per optimizer: the final numbers of its kept rate (median
  [min, max] over the seeds), its peak learning rate and weight decay."""
  keys = [('train_loss', 'train loss'), ('full_loss', 'final f(θ)'),
          ('val_loss', 'held-out loss'), *extra,
          ('grad_norm_ratio_over_sqrt_d', 'r/√d'),
          ('box_linf_scaled', 'λ‖θ‖∞'), ('wall_time', 'time s')]
  rows = []
  for name, sweep in results.items():
    runs = sweep.seeds
    first = runs[0]
    steps = first.rows[-1]['step'] if first.rows else 0
    rows.append([
        name, report.number(first.learning_rate),
        report.number(optimizers.weight_decay(configs[name].optimizer)),
        str(steps), str(len(runs)),
        ', '.join(sorted({r.status for r in runs})),
        *[report.spread([report.final(r.rows, k) for r in runs], k)
          for k, _ in keys]])
  return report.table(
      ['optimizer', 'peak lr', 'weight decay', 'steps', 'seeds', 'status',
       *[h for _, h in keys]], rows)


def compare(config: Config, workdir: str | pathlib.Path,
            optimizer_names: Optional[Sequence[str]] = None, *,
            overwrite: bool = False, data: Any = None,
            verbose: bool = True,
            allow_data_change: bool = False) -> dict[str, SweepResult]:
  """Runs each optimizer (default ``config.compare_optimizers``) on
  ``config`` in ``workdir/<name>``, then writes the figures and summary.
  """
  config = config_lib.validate(config)
  names = tuple(optimizer_names or config.compare_optimizers)
  if not names:
    raise ConfigError('--optimizers is empty; expected names such as '
                      'lion,sgd,adamw.')
  if len(set(names)) != len(names):
    raise ConfigError(f'--optimizers {",".join(names)}: a name repeats.')
  for name in names:
    if name not in optimizers.OPTIMIZERS:
      raise ConfigError(
          f'--optimizers {",".join(names)}: {name!r} is not one of '
          f'{optimizers.OPTIMIZERS.names()}.')
  workdir = pathlib.Path(workdir)
  workdir_lib.check(workdir, None, overwrite, 'comparison')
  configs = {}
  for name in names:
    sub = config_lib.copy(config)
    sub.optimizer.name = name
    configs[name] = config_lib.validate(sub)
    check(configs[name], workdir / name, overwrite)  # all before any run
  with workdir_lib.lock(workdir):
    if overwrite:
      workdir_lib.clear(workdir)
    workdir_lib.write_json(workdir / workdir_lib.COMPARISON_FILE, {
        'optimizers': list(names), 'seeds': list(_seeds(config))})
    task = tasks.get_task(config.task)
    data = task.load_data(config) if data is None else data
    results = {}
    for name in names:
      results[name] = _run(configs[name], workdir / name, overwrite, data,
                           verbose, dict(allow_data_change=allow_data_change))
      _write_summary(config, configs, task, workdir, results, verbose=False)
    _write_summary(config, configs, task, workdir, results, verbose)
  return results


def _write_summary(config: Config, configs: dict[str, Config],
                   task: tasks.Task, workdir: pathlib.Path,
                   results: dict[str, SweepResult], verbose: bool) -> None:
  """The combined figures (first seed of each) and summary.md."""
  curves = {f'{name} (lr {s.best.learning_rate:g})': s.best.rows
            for name, s in results.items() if s.best.rows}
  x = 'epoch' if any('epoch' in r[0] for r in curves.values()) else 'step'
  title = f'{config.model.name} on {config.data.name}'
  paths = (plots.write_figures(curves, workdir, title, task.panels, x)
           if curves else [])
  text = comparison_table(results, configs, task.summary)
  grids = [grid_table(n, s.grid, s.seeds) for n, s in results.items()
           if config.optimizer.lr_grid]
  seeds = _seeds(config)
  note = (f'\nMedian [min, max] over the seeds {list(seeds)}.\n'
          if len(seeds) > 1 else '')
  summary = workdir / 'summary.md'
  summary.write_text(f'# {title}\n\n{text}\n{note}' +
                     ''.join(f'\n{g}\n' for g in grids))
  if verbose:
    print(f'\n{title}\n{text}{note}', flush=True)
    for path in paths + [summary]:
      print(f'wrote {path}')
