"""Where each evaluation's metrics go while a run trains.

A writer takes every row as it is logged (:meth:`Writer.write`) and is
closed at the end of the run. :func:`run_writers` gives a run's writers:

* :class:`MetricsFile`: a line of ``metrics.jsonl`` per evaluation;
* :class:`Console`: a line on stdout per evaluation;
* :class:`Figures`: the PNG figures, redrawn during the run (so that a
  killed run has them) at most every ``min_interval`` seconds and at least
  20 times as long as the last drawing took, and at the end;
* :class:`TensorBoard`: TensorBoard event files beside ``metrics.jsonl``,
  every numeric field of a row as a scalar at the row's ``step``, and the
  figures as images at the end of each invocation (``config.tensorboard``
  turns it off). It uses tensorboardX, which needs no TensorFlow.

Only process 0 of a multi-host run writes files.
"""

from __future__ import annotations

import numbers
import pathlib
import time
from typing import Any, Callable, Optional, Sequence

import jax
import numpy as np

from lionx.train import plots
from lionx.train import report
from lionx.train import workdir as workdir_lib

Row = dict[str, Any]


class Writer:
  """Takes the metrics of each evaluation; closed at the end of a run."""

  def write(self, row: Row) -> None:
    """Takes the row of one evaluation (a metrics.jsonl line)."""
    raise NotImplementedError

  def write_train(self, step: int, loss: float) -> None:
    """Takes the mean training loss of the ``log_every_steps`` steps up
    to ``step``; most writers ignore it."""
    del step, loss

  def close(self, finished: bool) -> None:
    """Ends the writer; ``finished``: the run reached its last step."""
    del finished


class MetricsFile(Writer):
  """Appends each row to ``metrics.jsonl``."""

  def __init__(self, path: pathlib.Path):
    self.path = path

  def write(self, row: Row) -> None:
    workdir_lib.append_metrics(self.path, row)

  def write_train(self, step: int, loss: float) -> None:
    workdir_lib.append_metrics(self.path, {'step': step, 'train_loss': loss},
                               workdir_lib.TRAIN_LOG_FILE)


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
    self.paths: list[pathlib.Path] = []  # the PNGs of the last drawing
    self._last = time.perf_counter()
    self._cost = 0.0

  def draw(self) -> None:
    began = time.perf_counter()
    self.paths = plots.write_figures({self.label: self.rows}, self.path,
                                     self.title, self.panels, self.x)
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


class TensorBoard(Writer):
  """Writes rows as TensorBoard scalars and the figures as images.

  The event files go to ``path`` itself (``tensorboard --logdir`` on a
  comparison's folder shows each run under its own name). Every field of a
  row that is a real number (not a bool), except ``step``, becomes the
  scalar of that name at the row's ``step``. At ``close`` the PNGs of
  ``figures``' last drawing are added as images ``figures/<name>`` at the
  last step written.

  A resumed run starts a new event file that first records a restart at
  ``start_step + 1``: TensorBoard then hides what an earlier invocation
  wrote from that step on (rows that metrics.jsonl dropped too, since they
  came after the last checkpoint), so each step shows once.
  """

  def __init__(self, path: pathlib.Path, start_step: int = 0,
               figures: Optional[Figures] = None):
    from tensorboardX import SummaryWriter  # the train extra
    # The suffix keeps two invocations that start in the same second from
    # sharing a file name (a later one never starts from an earlier step).
    self._writer = SummaryWriter(
        logdir=str(path), purge_step=start_step + 1, flush_secs=30,
        filename_suffix=f'.from_step_{start_step:012d}')
    self.figures = figures
    self.last_step: Optional[int] = None

  def write(self, row: Row) -> None:
    step = int(row['step'])
    for key, value in row.items():
      if (key != 'step' and isinstance(value, numbers.Real)
          and not isinstance(value, bool)):
        self._writer.add_scalar(key, float(value), step)
    self._writer.flush()
    self.last_step = step

  def write_train(self, step: int, loss: float) -> None:
    self._writer.add_scalar('train_loss_running', loss, step)

  def close(self, finished: bool) -> None:
    del finished
    try:
      if self.figures is not None and self.last_step is not None:
        for png in self.figures.paths:
          self._writer.add_image(f'figures/{png.stem}', _read_png(png),
                                 self.last_step, dataformats='HWC')
    finally:
      self._writer.close()


def _read_png(path: pathlib.Path) -> np.ndarray:
  """The RGB pixels (H, W, 3) uint8 of a PNG."""
  from PIL import Image  # pillow comes with matplotlib
  with Image.open(path) as image:
    return np.asarray(image.convert('RGB'))


def run_writers(path: pathlib.Path, echo: Optional[Callable[[str], None]],
                total_steps: int, label: str, title: str, task: Any,
                x: str, rows: Sequence[Row] = (), *,
                tensorboard: bool = True,
                start_step: int = 0) -> list[Writer]:
  """The writers of one run of ``task`` (files only on process 0).

  ``rows`` are the run's rows so far and ``start_step`` the step it
  resumes after (0 for a fresh run); ``tensorboard`` adds
  :class:`TensorBoard`.
  """
  out: list[Writer] = []
  if jax.process_index() == 0:
    figures = Figures(path, label, title, task.panels, x, rows)
    out += [MetricsFile(path), figures]
    if tensorboard:
      # After `figures`: it closes after the last drawing.
      out.append(TensorBoard(path, start_step, figures))
  if echo is not None:
    out.append(Console(echo, total_steps, task.summary))
  return out
