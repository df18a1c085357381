"""Where each evaluation's metrics go while a run trains.

A writer takes every row as it is logged (:meth:`Writer.write`) and is
closed at the end of the run. :func:`run_writers` gives a run's writers:

* :class:`MetricsFile`: a line of ``metrics.jsonl`` per evaluation;
* :class:`Console`: a line on stdout per evaluation;
* :class:`Figures`: the PNG figures, redrawn during the run (so that a
  killed run has them) at most every ``min_interval`` seconds and at least
  20 times as long as the last drawing took, and at the end.

Only process 0 of a multi-host run writes files.
"""

from __future__ import annotations

import pathlib
import time
from typing import Any, Callable, Optional, Sequence

import jax

from lionx.train import plots
from lionx.train import report
from lionx.train import workdir as workdir_lib

Row = dict[str, Any]


class Writer:
  """Takes the metrics of each evaluation; closed at the end of a run."""

  def write(self, row: Row) -> None:
    raise NotImplementedError

  def close(self, finished: bool) -> None:
    del finished


class MetricsFile(Writer):
  """Appends each row to ``metrics.jsonl``."""

  def __init__(self, path: pathlib.Path):
    self.path = path

  def write(self, row: Row) -> None:
    workdir_lib.append_metrics(self.path, row)


class Console(Writer):
  """Prints one line per evaluation through ``echo``."""

  def __init__(self, echo: Callable[[str], None], total_steps: int,
               extra: Sequence[tuple[str, str]]):
    self.echo, self.total_steps, self.extra = echo, total_steps, extra

  def write(self, row: Row) -> None:
    self.echo(report.eval_line(row, self.total_steps, self.extra))


class Figures(Writer):
  """Redraws a run's figures from its rows (see the module doc)."""

  def __init__(self, path: pathlib.Path, label: str, title: str,
               panels: Sequence[tuple[str, str]], x: str,
               rows: Sequence[Row] = (), min_interval: float = 10.0):
    self.path, self.label, self.title = path, label, title
    self.panels, self.x = panels, x
    self.rows = list(rows)
    self.min_interval = min_interval
    self._last = time.perf_counter()
    self._cost = 0.0

  def draw(self) -> None:
    began = time.perf_counter()
    plots.write_figures({self.label: self.rows}, self.path, self.title,
                        self.panels, self.x)
    self._last = time.perf_counter()
    self._cost = self._last - began

  def write(self, row: Row) -> None:
    self.rows.append(row)
    wait = max(self.min_interval, 20 * self._cost)
    if time.perf_counter() - self._last >= wait:
      self.draw()

  def close(self, finished: bool) -> None:
    del finished
    if self.rows:
      self.draw()


def run_writers(path: pathlib.Path, echo: Optional[Callable[[str], None]],
                total_steps: int, label: str, title: str, task: Any,
                x: str, rows: Sequence[Row] = ()) -> list[Writer]:
  """The writers of one run of ``task`` (files only on process 0)."""
  out: list[Writer] = []
  if jax.process_index() == 0:
    out += [MetricsFile(path),
            Figures(path, label, title, task.panels, x, rows)]
  if echo is not None:
    out.append(Console(echo, total_steps, task.summary))
  return out
