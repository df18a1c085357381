"""Shared pieces of the benchmark scripts: machine, timing, RESULTS.md.

* :func:`machine` names what the numbers were measured on.
* :func:`interleaved` times several contenders round-robin, one call each
  per round, so that the noise of a shared machine hits them equally.
* :func:`write_section` replaces one script's section of ``RESULTS.md``
  (only when the script is run with ``--write``).
"""

from __future__ import annotations

import datetime
import os
import pathlib
import platform
import statistics
import time
from typing import Any, Callable

import jax
import numpy as np

RESULTS = pathlib.Path(__file__).with_name('RESULTS.md')
HEADER = (
    '# Benchmark results\n\n'
    'Each section below is written by one script under `benchmarks/` when '
    'it is run\nwith `--write`, and names the machine and command of its '
    'run. Timings are\nmedians over interleaved (round-robin) steps; compare '
    'ratios within a section.\n')


def cpu_model() -> str:
  """The CPU's model name from /proc/cpuinfo (or the platform's)."""
  try:
    for line in pathlib.Path('/proc/cpuinfo').read_text().splitlines():
      if line.startswith('model name'):
        return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or 'unknown'


def machine() -> list[str]:
  """Markdown lines naming the machine and the software versions."""
  import optax  # pylint: disable=g-import-not-at-top
  device = jax.devices()[0]
  try:
    cores = len(os.sched_getaffinity(0))
  except AttributeError:
    cores = os.cpu_count()
  load = ', '.join(f'{x:.2f}' for x in os.getloadavg())
  flags = os.environ.get('XLA_FLAGS', '') or '(none)'
  return [
      f'- machine: {cpu_model()}, {cores} cores usable, '
      f'{platform.system()} {platform.machine()}; device '
      f'`{device.platform}` ({device.device_kind}), '
      f'{jax.device_count()} device(s)',
      f'- software: Python {platform.python_version()}, jax {jax.__version__}'
      f', jaxlib {jax.lib.__version__}, optax {optax.__version__}, '
      f'numpy {np.__version__}; XLA_FLAGS: {flags}',
      f'- run: {datetime.datetime.now().isoformat(timespec="seconds")}, '
      f'load average at start {load} (the machine is shared)',
  ]


def block(tree: Any) -> Any:
  return jax.block_until_ready(tree)


def interleaved(
    contenders: dict[str, Callable[[], float]],
    rounds: int,
    warmup: int = 2,
) -> dict[str, list[float]]:
  """Times each contender once per round, in turn; returns seconds.

  Each contender is a callable that runs one step, waits for it, and
  returns the elapsed seconds (so that it can keep its own donated state).
  The order rotates from round to round, so that no contender always runs
  after the same one. The first ``warmup`` rounds (compilation, first touch
  of memory) are dropped; ``times[name][r]`` is round ``r``.
  """
  names = list(contenders)
  times = {name: [] for name in names}
  for r in range(warmup + rounds):
    shift = r % len(names)
    for name in names[shift:] + names[:shift]:
      dt = contenders[name]()
      if r >= warmup:
        times[name].append(dt)
  return times


def paired_ratio(times: dict[str, list[float]], base: str, name: str
                 ) -> float:
  """Median over rounds of base's time over name's time in that round."""
  return statistics.median(
      b / t for b, t in zip(times[base], times[name]))


def timed(fn: Callable[[], Any]) -> float:
  """Seconds that ``fn()`` takes, waiting for its result."""
  start = time.perf_counter()
  block(fn())
  return time.perf_counter() - start


def median_ms(seconds: list[float]) -> float:
  return 1e3 * statistics.median(seconds)


def table(header: list[str], rows: list[list[str]]) -> list[str]:
  """A Markdown table."""
  lines = ['| ' + ' | '.join(header) + ' |',
           '|' + '|'.join('---' for _ in header) + '|']
  lines += ['| ' + ' | '.join(row) + ' |' for row in rows]
  return lines


def markers(script: str) -> tuple[str, str]:
  return (f'<!-- {script}: begin (regenerate with --write) -->',
          f'<!-- {script}: end -->')


def write_section(script: str, lines: list[str]) -> None:
  """Replaces (or appends) ``script``'s section of RESULTS.md."""
  begin, end = markers(script)
  section = '\n'.join([begin, *lines, end])
  text = RESULTS.read_text() if RESULTS.exists() else HEADER
  if begin in text and end in text:
    head, rest = text.split(begin, 1)
    text = head + section + rest.split(end, 1)[1]
  else:
    text = text.rstrip('\n') + '\n\n' + section + '\n'
  RESULTS.write_text(text)
  print(f'wrote the {script} section of {RESULTS}')
