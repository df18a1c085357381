"""Learning-rate grids and optimizer comparisons built from single runs.

Layout of a comparison workdir ``W`` (each piece resumable on its own)::

  W/<optimizer>/                 one run (config.json, metrics.jsonl, ...)
  W/<optimizer>/lr_<lr>/         ... or one run per rate of the grid,
  W/<optimizer>/grid.json        with the grid's results and the best rate
  W/figure1.png, W/*.png         the combined figures (lionx.train.plots)
  W/summary.md                   the summary table

A grid keeps, per optimizer, the rate with the lowest final full training
loss ``f(θ)`` (``lr_select='full_loss'``, the papers' criterion for their
loss curves) or the highest final test accuracy; diverged rates are skipped.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, NamedTuple, Optional, Sequence

from lionx.train import config as config_lib
from lionx.train import data as data_lib
from lionx.train import loop, optimizers, plots, report
from lionx.train.config import Config, ConfigError


class SweepResult(NamedTuple):
  """The run kept for one optimizer, and every run of its grid."""

  best: loop.RunResult
  grid: list[loop.RunResult]  # [best] without a grid


def _lr_dir(lr: float) -> str:
  return f'lr_{lr:g}'


def _sub_config(config: Config, lr: float) -> Config:
  sub = config_lib.copy(config)
  sub.optimizer.learning_rate = lr
  sub.optimizer.lr_grid = ()
  return sub


def _grid_identity(config: Config) -> dict[str, Any]:
  identity = loop.run_identity(_sub_config(config, 1.0))
  identity['optimizer'].pop('learning_rate')
  return identity


def check(config: Config, workdir: pathlib.Path, overwrite: bool) -> None:
  """Refuses ``workdir`` if it holds results of a different config."""
  if config.optimizer.lr_grid:
    loop.check_workdir(workdir, _grid_identity(config), overwrite,
                       kind=loop.GRID_FILE)
  else:
    loop.check_workdir(workdir, loop.run_identity(config), overwrite)


def _single(config: Config, workdir: pathlib.Path, overwrite: bool,
            dataset, verbose: bool) -> loop.RunResult:
  try:
    return loop.train_and_evaluate(config, workdir, overwrite=overwrite,
                                   dataset=dataset, verbose=verbose)
  except loop.NonFiniteLossError as err:
    print(f'{workdir}: {err}', flush=True)
    return loop.RunResult('diverged', workdir,
                          config_lib.learning_rate(config),
                          loop.read_metrics(workdir), str(err))


def _score(result: loop.RunResult, select: str) -> Optional[float]:
  if result.status != 'finished' or not result.rows:
    return None
  value = result.rows[-1][select]
  return value if select == 'full_loss' else -value


def run(config: Config, workdir: str | pathlib.Path, *,
        overwrite: bool = False,
        dataset: Optional[data_lib.Dataset] = None,
        verbose: bool = True) -> SweepResult:
  """One run, or one run per rate of ``config.optimizer.lr_grid``.

  A non-finite loss does not raise here: the run comes back with status
  ``'diverged'``.
  """
  config = config_lib.validate(config)
  workdir = pathlib.Path(workdir)
  check(config, workdir, overwrite)
  dataset = dataset or data_lib.load_dataset(config.data)
  if not config.optimizer.lr_grid:
    result = _single(config, workdir, overwrite, dataset, verbose)
    return SweepResult(result, [result])

  if overwrite:
    loop.clear_run_files(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  identity = _grid_identity(config)
  grid_file = workdir / loop.GRID_FILE
  if not grid_file.exists():
    _write(grid_file, {'config': identity})
  results = [
      _single(_sub_config(config, lr), workdir / _lr_dir(lr), overwrite,
              dataset, verbose)
      for lr in config.optimizer.lr_grid]
  scored = [(s, i) for i, r in enumerate(results)
            if (s := _score(r, config.lr_select)) is not None]
  if scored:
    best = results[min(scored)[1]]
  else:
    best = loop.RunResult(
        'diverged', workdir, float('nan'), [],
        f'every rate of the grid {config.optimizer.lr_grid} diverged.')
  _write(grid_file, {
      'config': identity, 'lr_select': config.lr_select,
      'best_learning_rate': best.learning_rate,
      'runs': [{'learning_rate': r.learning_rate, 'status': r.status,
                'full_loss': report.final(r.rows, 'full_loss'),
                'test_accuracy': report.final(r.rows, 'test_accuracy')}
               for r in results]})
  if verbose:
    print(grid_table(config.optimizer.name, results, best), flush=True)
  return SweepResult(best, results)


def _write(path: pathlib.Path, value: Any) -> None:
  path.write_text(json.dumps(value, indent=1, sort_keys=True) + '\n')


def grid_table(name: str, results: Sequence[loop.RunResult],
               best: loop.RunResult) -> str:
  rows = [[name, r.learning_rate, r.status,
           report.final(r.rows, 'full_loss'),
           report.final(r.rows, 'test_accuracy'),
           '*' if r is best else '']
          for r in results]
  return report.table(
      ['optimizer', 'lr', 'status', 'final f(θ)', 'final test top-1',
       'best'], rows)


def comparison_table(results: dict[str, SweepResult]) -> str:
  """One row per optimizer: its kept run's final numbers."""
  rows = []
  for name, sweep in results.items():
    r = sweep.best
    accs = [row['test_accuracy'] for row in r.rows]
    rows.append([
        name, r.learning_rate, len(r.rows), r.status,
        report.final(r.rows, 'train_loss'),
        report.final(r.rows, 'full_loss'),
        report.final(r.rows, 'test_accuracy'),
        max(accs) if accs else float('nan'),
        report.final(r.rows, 'grad_norm_ratio_over_sqrt_d'),
        report.final(r.rows, 'box_linf_scaled'),
        report.final(r.rows, 'wall_time')])
  return report.table(
      ['optimizer', 'lr', 'epochs', 'status', 'train loss', 'final f(θ)',
       'final test top-1', 'best test top-1', 'r/√d', 'λ‖θ‖∞',
       'time s'],
      rows)


def compare(config: Config, workdir: str | pathlib.Path,
            optimizer_names: Optional[Sequence[str]] = None, *,
            overwrite: bool = False,
            dataset: Optional[data_lib.Dataset] = None,
            verbose: bool = True) -> dict[str, SweepResult]:
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
          f'{tuple(sorted(optimizers.OPTIMIZERS))}.')
  workdir = pathlib.Path(workdir)
  configs = {}
  for name in names:
    sub = config_lib.copy(config)
    sub.optimizer.name = name
    configs[name] = config_lib.validate(sub)
    check(configs[name], workdir / name, overwrite)  # all before any run
  dataset = dataset or data_lib.load_dataset(config.data)
  results = {name: run(configs[name], workdir / name, overwrite=overwrite,
                       dataset=dataset, verbose=verbose)
             for name in names}
  curves = {f'{name} (lr {s.best.learning_rate:g})': s.best.rows
            for name, s in results.items() if s.best.rows}
  title = (f'{config.model.name} on {config.data.name}, '
           f'weight decay {config.optimizer.weight_decay:g}')
  paths = plots.write_figures(curves, workdir, title) if curves else []
  text = comparison_table(results)
  grids = [grid_table(n, s.grid, s.best) for n, s in results.items()
           if config.optimizer.lr_grid]
  (workdir / 'summary.md').write_text(
      f'# {title}\n\n{text}\n' + ''.join(f'\n{g}\n' for g in grids))
  if verbose:
    print(f'\n{title}\n{text}', flush=True)
    for path in paths:
      print(f'wrote {path}')
    print(f"wrote {workdir / 'summary.md'}", flush=True)
  return results
