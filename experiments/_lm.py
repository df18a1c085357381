"""Shared pieces of the language-model experiments: runs of the harness.

Each experiment trains ``configs/lm_default.py`` (or ``--config``) with a
few overrides through :func:`lionx.train.experiment.train_and_evaluate`,
one workdir per run under ``OUT/runs/``; a rerun reports finished runs
again instead of training them, and resumes an interrupted one. With
``overwrite`` a run whose workdir holds another config is trained afresh.
"""

from __future__ import annotations

import math
import pathlib
import statistics
import time
from typing import Any, NamedTuple, Sequence

from lionx.train import config as config_lib
from lionx.train import experiment
from lionx.train import workdir as workdir_lib
from lionx.train.config import Config, ConfigError

DEFAULT_CONFIG = 'configs/lm_default.py'


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

  def at(self, step: int, key: str) -> float:
    """``key`` at the evaluation of ``step`` (NaN if there is none)."""
    for row in self.rows:
      if row['step'] == step:
        return float(row[key])
    return math.nan


def load_config(path: str | pathlib.Path,
                overrides: Sequence[str]) -> Config:
  """The config file at ``path`` with ``overrides`` (quiet, one device)."""
  return config_lib.load_config(
      path, tuple(overrides) + ('progress=false', 'parallel.num_devices=1'))


def train(config: Config, workdir: pathlib.Path, *, overwrite: bool,
          data: Any = None) -> Run:
  """Trains ``config`` in ``workdir``, or reports the finished run there.

  A workdir holding another config is refused unless ``overwrite``.
  """
  began = time.perf_counter()
  identity = config_lib.run_identity(config_lib.validate(config))
  fresh = False
  try:
    workdir_lib.check(workdir, identity, overwrite=False)
  except ConfigError as err:
    if not overwrite:
      raise ConfigError(f'{err} (or pass --overwrite)') from None
    fresh = True
  try:
    result = experiment.train_and_evaluate(
        config, workdir, overwrite=fresh, data=data, verbose=False)
  except experiment.NonFiniteLossError:
    return Run('diverged', workdir_lib.read_metrics(workdir),
               time.perf_counter() - began)
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


def claim_table(rows: Sequence[tuple[str, str, str]]) -> str:
  """The papers' claims beside the measured verdicts, as markdown."""
  lines = ['| claim (paper) | measured here | verdict |', '|---|---|---|']
  lines += [f'| {a} | {b} | {c} |' for a, b, c in rows]
  return '\n'.join(lines) + '\n'
