"""Shared pieces of the language-model experiments: runs, command line,
plots.

Each experiment trains ``configs/lm_default.py`` (or ``--config``) with a
few overrides through :func:`lionx.train.train_and_evaluate`, one workdir
per run under ``OUT/runs/``; a rerun reports finished runs again instead of
training them, and resumes an interrupted one. With ``overwrite`` a run
whose workdir holds another config is trained afresh. :func:`main` is the
command line of all three: ``--out``, ``--config``, the overrides and
``--overwrite``, plus each experiment's own options.

Every experiment's ``run(config, out, ..., overrides, overwrite,
verbose)`` takes

* ``config``: the language config file (the repository's
  ``configs/lm_default.py``);
* ``out``: the folder whose ``runs/`` holds one workdir per run;
* ``overrides``: extra ``key=value`` overrides of every run;
* ``overwrite``: retrain runs whose workdir holds another config;
* ``verbose``: print a line per run.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import statistics
import sys
import time
from types import ModuleType
from typing import Any, Callable, Mapping, NamedTuple, Optional, Sequence

import numpy as np

import lionx.train as lt
from experiments import _common
from experiments import _networks

DEFAULT_CONFIG = _common.LM_CONFIG
# The learning-rate grid behind DEFAULT_CONFIG's rates (its docstring).
GRID_CONFIG = _common.LM_CONFIG.with_name('lm_default_grid.py')


class Run(NamedTuple):
  """One finished (or diverged) run: its metrics.jsonl rows."""

  status: str  # 'finished' | 'diverged'
  rows: list[dict[str, Any]]
  seconds: float  # wall time of this call (0 when reported again)

  def final(self, key: str) -> float:
    """``key`` at the last evaluation (NaN if the run diverged)."""
    if self.status != 'finished' or not self.rows:
      return math.nan
    return float(self.rows[-1][key])

  def curve(self, key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of ``key`` over the evaluations."""
    return ([r['step'] for r in self.rows],
            [float(r[key]) for r in self.rows])

  def trained(self) -> float:
    """Seconds the run trained (its last row's ``wall_time``; the same
    when it is reported again), NaN if it logged nothing."""
    if not self.rows or 'wall_time' not in self.rows[-1]:
      return math.nan
    return float(self.rows[-1]['wall_time'])

  def at(self, step: int, key: str) -> float:
    """``key`` at the evaluation of ``step`` (NaN if there is none)."""
    for row in self.rows:
      if row['step'] == step:
        return float(row[key])
    return math.nan


def load_config(path: str | pathlib.Path,
                overrides: Sequence[str]) -> lt.Config:
  """The config file at ``path`` with ``overrides`` (quiet, one device)."""
  return lt.load_config(
      path, tuple(overrides) + ('progress=false', 'parallel.num_devices=1'))


def _rows(workdir: pathlib.Path) -> list[dict[str, Any]]:
  """The lines of ``workdir/metrics.jsonl`` (the harness's rows)."""
  file = workdir / 'metrics.jsonl'
  if not file.exists():
    return []
  return [json.loads(line) for line in file.read_text().splitlines()
          if line.strip()]


def train(config: lt.Config, workdir: pathlib.Path, *, overwrite: bool,
          data: Any = None) -> Run:
  """Trains ``config`` in ``workdir``, or reports the finished run there.

  A workdir holding another config is refused unless ``overwrite``.
  """
  began = time.perf_counter()
  config = lt.validate(config)
  try:
    try:
      result = lt.train_and_evaluate(config, workdir, data=data,
                                     verbose=False)
    except lt.ConfigError as err:  # the workdir holds another run
      if not overwrite:
        raise lt.ConfigError(f'{err} (or pass --overwrite)') from None
      result = lt.train_and_evaluate(config, workdir, overwrite=True,
                                     data=data, verbose=False)
  except lt.NonFiniteLossError:
    return Run('diverged', _rows(workdir), time.perf_counter() - began)
  return Run(result.status, result.rows, time.perf_counter() - began)


def median(values: Sequence[float]) -> float:
  """The median of the finite values (NaN if there is none)."""
  finite = [v for v in values if math.isfinite(v)]
  return statistics.median(finite) if finite else math.nan


def extreme(pick, values: Sequence[float]) -> float:
  """``pick`` (min or max) of the finite values (NaN if there is none)."""
  finite = [v for v in values if math.isfinite(v)]
  return pick(finite) if finite else math.nan


def spread(values: Sequence[float], digits: int = 4) -> str:
  """``median [min, max]`` of the finite values, or the one value."""
  finite = [v for v in values if math.isfinite(v)]
  if not finite:
    return 'diverged'
  text = f'{statistics.median(finite):.{digits}g}'
  if len(finite) > 1:
    text += f' [{min(finite):.{digits}g}, {max(finite):.{digits}g}]'
  if len(finite) < len(values):
    text += f' ({len(values) - len(finite)} diverged)'
  return text


def steps_overrides(steps: int, evals: int) -> tuple[str, ...]:
  """``num_steps`` and ``eval_every_steps`` for ``evals`` evaluations, and
  a warm-up of 5 % of the steps (as ``configs/lm_default.py``'s 50 of
  1000)."""
  if steps < 1 or evals < 1 or steps % evals:
    raise ValueError(f'--steps {steps} with {evals} evaluations: expected '
                     'a positive multiple of the number of evaluations.')
  return (f'num_steps={steps}', f'eval_every_steps={steps // evals}',
          f'schedule.warmup_steps={steps // 20}')


def document(title: str, intro: str, claims: Sequence[tuple[str, str, str]],
             *tables: tuple[str, Sequence[dict[str, Any]]]) -> str:
  """The markdown report of an experiment: the title, what ran, the
  papers' claims beside the verdicts, then each (caption, rows) table."""
  parts = [f'# {title}', '', intro, '', claim_table(claims)]
  for caption, rows in tables:
    parts += ([caption, ''] if caption else []) + [
        _common.markdown_table(rows)]
  return '\n'.join(parts)


def claim_table(rows: Sequence[tuple[str, str, str]]) -> str:
  """The papers' claims beside the measured verdicts, as markdown."""
  lines = ['| claim (paper) | measured here | verdict |', '|---|---|---|']
  lines += [f'| {a} | {b} | {c} |' for a, b, c in rows]
  return '\n'.join(lines) + '\n'


# --- verdicts -------------------------------------------------------------


def grid_edges(chosen: Mapping[Any, float],
               grid: Sequence[float]) -> dict[Any, str]:
  """Which rates of ``chosen`` (name -> rate picked from ``grid``) sit at
  an edge of ``grid``: name -> ``'largest'`` or ``'smallest'``. The best
  rate may then lie beyond the grid, so a verdict resting on it is
  inconclusive (:func:`at_edge`). A grid of one rate picks nothing: ``{}``.

  Example:
    >>> grid_edges({'lion': 1e-3, 'sgd': 1.0}, (1.0, 0.1, 1e-3))
    {'lion': 'smallest', 'sgd': 'largest'}
  """
  if not grid:
    raise ValueError('grid=(): expected at least one rate.')
  top, bottom = max(grid), min(grid)
  if math.isclose(top, bottom, rel_tol=1e-6):
    return {}  # one rate: fixed, not picked
  out = {}
  for name, rate in chosen.items():
    if math.isclose(rate, top, rel_tol=1e-6):
      out[name] = 'largest'
    elif math.isclose(rate, bottom, rel_tol=1e-6):
      out[name] = 'smallest'
  return out


def default_grid_edges(config: str, names: Sequence[str]) -> dict[str, str]:
  """For the repository's LM config (``config`` as :func:`_common.shown`
  gives it, with or without ``:task``), the config's rates of ``names``
  that sit at an edge of :data:`GRID_CONFIG`'s grid, which they were picked
  from (:func:`grid_edges`); ``{}`` for any other config."""
  if str(config).split(':')[0] != _common.shown(DEFAULT_CONFIG):
    return {}
  rates = lt.load_config(DEFAULT_CONFIG).optimizer.learning_rates
  grid = lt.load_config(GRID_CONFIG).optimizer.lr_grid
  return grid_edges({n: rates[n] for n in names if n in rates}, grid)


def at_edge(verdict: str, edges: Mapping[Any, str],
            what: str = 'rate') -> str:
  """``verdict``, or ``'inconclusive'`` with the reason when it rests on
  rates at an edge of their grid (``edges`` of :func:`grid_edges`, for the
  rates the verdict rests on). A verdict that measured nothing stays.

  Example:
    >>> at_edge('does not hold', {'sgd': 'largest'}).split(':')[0]
    'inconclusive'
    >>> at_edge('does not hold', {})
    'does not hold'
  """
  if not edges or verdict.startswith('not measured'):
    return verdict
  why = '; '.join(f"{name}'s best {what} is the grid's {side}"
                  for name, side in edges.items())
  return (f'inconclusive: {why}, so a better {what} may lie beyond the '
          f'grid (as measured: {verdict})')


def unlike_paper(verdict: str, why: str) -> str:
  """``verdict``, followed by ``why`` it may differ from the paper when
  it does not (fully) hold: 'does not hold', 'not confirmed' or 'holds in
  k of n'."""
  if verdict.startswith(('does not hold', 'not confirmed', 'holds in ')):
    return f'{verdict}; {why}'
  return verdict


# --- the figures ---------------------------------------------------------


def errorbar(ax: Any, x: Sequence[float], values: Sequence[Sequence[float]],
             fmt: str, **kwargs: Any) -> None:
  """Per x, the median of ``values[i]`` (over seeds) with a bar from the
  smallest to the largest finite value."""
  med = np.array([median(v) for v in values])
  low = med - np.array([extreme(min, v) for v in values])
  high = np.array([extreme(max, v) for v in values]) - med
  ax.errorbar(x, med, yerr=[low, high], fmt=fmt, capsize=3, **kwargs)


def label(ax: Any, xlabel: str, ylabel: str, title: str,
          **settings: Any) -> None:
  """The axis labels, a 10-point title and ``settings`` such as
  ``xscale='log'`` (matplotlib's ``Axes.set``)."""
  ax.set(xlabel=xlabel, ylabel=ylabel, **settings)
  ax.set_title(title, fontsize=10)


def finish(axes: Sequence[Any], fontsize: int = 7) -> None:
  """A light grid and a legend on each panel."""
  for ax in axes:
    ax.grid(alpha=0.3)
    ax.legend(fontsize=fontsize)


# --- the command line ------------------------------------------------------


def sized(args: argparse.Namespace, name: str, small: Any, full: Any,
          kind: type = int) -> Any:
  """``--<name>`` when given, else ``full`` with ``--full``, else
  ``small``; a comma-separated option is parsed as ``kind`` values."""
  given = getattr(args, name)
  if given is None:
    return full if getattr(args, 'full', False) else small
  if isinstance(given, str):
    return _networks.parse_numbers(f'--{name}', given, kind)
  return given


def names(text: str) -> tuple[str, ...]:
  """``'lion, sgd'`` -> ``('lion', 'sgd')``."""
  return tuple(n.strip() for n in text.split(',') if n.strip())


def main(module: ModuleType, argv: Optional[Sequence[str]],
         add_arguments: Callable[[argparse.ArgumentParser], None],
         options: Callable[[argparse.Namespace], dict[str, Any]]) -> int:
  """The command line of the experiment ``module``: its ``run(config,
  out, **options(args), overrides=..., overwrite=...)``, then its
  ``plot`` and ``report`` and the result's ``summary()`` written to
  ``module.NAMES`` (PNG, markdown, JSON) in ``--out``.

  ``add_arguments`` adds the experiment's own options to the parser.
  Returns the exit status (2 and a one-line error for bad arguments).
  """
  name = getattr(module.__spec__, 'name', module.__name__)
  parser = _common.parser(name.rpartition('.')[2], module.__doc__)
  parser.add_argument('--out', required=True, type=pathlib.Path,
                      help=f'directory for {", ".join(module.NAMES)} and '
                      'runs/')
  parser.add_argument('--config', default=str(DEFAULT_CONFIG),
                      help='the language config file (default: the '
                      "repository's configs/lm_default.py)")
  parser.add_argument('overrides', nargs='*', metavar='key=value',
                      help='config overrides of every run')
  add_arguments(parser)
  parser.add_argument('--overwrite', action='store_true',
                      help='replace existing result files (and retrain '
                      'runs of another config)')
  args = parser.parse_args(argv)
  try:
    kwargs = options(args)
    paths = _common.check_outputs(args.out, module.NAMES, args.overwrite)
    result = module.run(args.config, args.out, overrides=args.overrides,
                        overwrite=args.overwrite, **kwargs)
  except (ValueError, OSError) as err:
    print(f'{parser.prog}: error: {err}', file=sys.stderr)
    return 2
  _common.write_outputs(paths, module.plot(result), module.report(result),
                        result.summary())
  return 0
