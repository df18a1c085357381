"""A run's workdir: its identity, the refusals, results and provenance.

Layout of a run's workdir::

  config.json      {'config': the run's identity, 'provenance': [...]}
  metrics.jsonl    one line per evaluation
  train_log.jsonl  {'step', 'train_loss'} every log_every_steps steps
  result.json      written when the run finished or diverged
  checkpoints/     orbax checkpoints (lionx.train.checkpoint)
  extension.json   the schedule's length, once --extend continued the run
  eval/            step_<k>.json: evaluations of checkpoints (--eval-only)
  *.png            figures
  events.out.tfevents.*  TensorBoard (lionx.train.writers)

A learning-rate grid marks its folder with ``grid.json`` and a comparison
with ``comparison.json``; a folder of one kind is never used as another.
A workdir that holds results of a different config is refused unless the
caller passes ``overwrite``; one without results (a run that failed before
its first evaluation) never blocks. JSON files are replaced atomically.

One process at a time works in a workdir: :func:`lock` holds an OS lock on
``.lock`` in it (``flock``; released by the OS when the process ends, so a
killed run leaves nothing stale), and a second process is refused in one
line that names the first one's pid.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import pathlib
import platform
import shutil
import subprocess
import sys
from importlib import metadata
from typing import Any, Iterator, Optional

import jax

from lionx.train.fields import ConfigError

CONFIG_FILE, METRICS_FILE, RESULT_FILE = (
    'config.json', 'metrics.jsonl', 'result.json')
TRAIN_LOG_FILE = 'train_log.jsonl'  # the running loss (log_every_steps)
CHECKPOINT_DIR = 'checkpoints'
EXTENSION_FILE = 'extension.json'  # the schedule's length, once extended
EVAL_DIR = 'eval'  # evaluations of checkpoints (--eval-only)
LOCK_FILE = '.lock'
GRID_FILE, COMPARISON_FILE = 'grid.json', 'comparison.json'
MARKERS = {'run': CONFIG_FILE, 'grid': GRID_FILE,
           'comparison': COMPARISON_FILE}
_WHAT = {'run': 'a single run', 'grid': 'a learning-rate grid',
         'comparison': 'a comparison of optimizers'}
_RUN_FILES = (CONFIG_FILE, METRICS_FILE, RESULT_FILE, CHECKPOINT_DIR,
              EXTENSION_FILE, EVAL_DIR, TRAIN_LOG_FILE)
_HINT = 'pass --overwrite to discard what is there, or choose another --workdir'


def os_error(path: pathlib.Path, err: OSError, doing: str) -> ConfigError:
  """An OSError as a one-line error that names ``--workdir``."""
  reason = err.strerror or type(err).__name__
  return ConfigError(f'--workdir {path}: cannot {doing} ({reason}: '
                     f'{err.filename or path}).')


def has_results(path: pathlib.Path) -> bool:
  """Whether ``path`` (or a folder below it) holds any run's results."""
  if not path.is_dir():
    return False
  for folder, dirs, files in os.walk(path):
    here = pathlib.Path(folder)
    if RESULT_FILE in files:
      return True
    if METRICS_FILE in files and (here / METRICS_FILE).stat().st_size:
      return True
    if CHECKPOINT_DIR in dirs and any((here / CHECKPOINT_DIR).iterdir()):
      return True
  return False


def _diff(old: Any, new: Any, prefix: str = '') -> list[str]:
  if isinstance(old, dict) and isinstance(new, dict):
    out = []
    for key in sorted(set(old) | set(new), key=str):
      path = f'{prefix}.{key}' if prefix else str(key)
      out += _diff(old.get(key, '<unset>'), new.get(key, '<unset>'), path)
    return out
  return [] if old == new else [f'{prefix}: {old!r} -> {new!r}']


_LENGTH = ('num_steps: ', 'num_epochs: ')


def check(path: pathlib.Path, identity: Optional[dict[str, Any]],
          overwrite: bool, kind: str = 'run', extend: bool = False) -> None:
  """Refuses ``path`` if it holds results of another config or kind.

  ``kind`` is ``'run'``, ``'grid'`` or ``'comparison'``; with ``identity``
  None only the kind is checked (a comparison's runs check themselves).
  With ``extend`` the run's length may differ (``--extend``).
  """
  if path.exists() and not path.is_dir():
    raise ConfigError(f'--workdir {path} is a file; expected a directory.')
  if overwrite or not path.exists():
    return
  for other, marker in MARKERS.items():
    if other != kind and (path / marker).exists():
      raise ConfigError(
          f'--workdir {path} holds {_WHAT[other]}, not {_WHAT[kind]}; '
          f'{_HINT}.')
  if identity is None or not has_results(path):
    return
  marker = path / MARKERS[kind]
  if not marker.exists():
    raise ConfigError(
        f'--workdir {path} holds results without a {marker.name}; {_HINT}.')
  try:
    stored = json.loads(marker.read_text())
    stored_format = stored.get('format', stored['config'].get('format'))
    stored = stored['config']
  except (ValueError, KeyError, TypeError, AttributeError) as err:
    raise ConfigError(f'{marker}: unreadable ({err}); {_HINT}.') from None
  if stored_format != identity.get('format'):
    raise ConfigError(
        f'--workdir {path} holds results of an earlier version of lionx '
        f'(config format {stored_format}, now {identity.get("format")}); '
        f'they cannot be resumed: {_HINT}.')
  changes = _diff(stored, identity)
  length = [c for c in changes if c.startswith(_LENGTH)]
  if extend:
    changes = [c for c in changes if c not in length]
  if changes:
    shown = '; '.join(changes[:3]) + ('; ...' if len(changes) > 3 else '')
    hint = (' pass --extend to continue the run to the new length (its '
            'schedule keeps its final value), or'
            if kind == 'run' and changes == length else '')
    raise ConfigError(
        f'--workdir {path} holds results of a different config ({shown});'
        f'{hint} {_HINT}.')


def clear(path: pathlib.Path) -> None:
  """Deletes what a run, grid or comparison wrote in ``path``, nothing
  else (sub-runs are cleared when they start)."""
  names = _RUN_FILES + (GRID_FILE, COMPARISON_FILE, 'summary.md')
  try:
    for name in names:
      target = path / name
      if target.is_dir():
        shutil.rmtree(target)
      elif target.exists():
        target.unlink()
    for name in ('*.png', 'events.out.tfevents.*'):
      for found in path.glob(name):
        found.unlink()
  except OSError as err:
    raise os_error(path, err, 'clear earlier results') from None


_HELD: dict[str, int] = {}  # resolved path -> this process's nesting depth


def _try_lock(fd: int) -> bool:
  """Takes an exclusive, non-blocking OS lock on ``fd``; False if taken."""
  try:
    import fcntl  # pylint: disable=g-import-not-at-top
  except ImportError:  # Windows
    import msvcrt  # pylint: disable=g-import-not-at-top
    try:
      msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError:
      return False
    return True
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    return False
  return True


@contextlib.contextmanager
def lock(path: pathlib.Path) -> Iterator[None]:
  """Holds the workdir ``path`` for this process while the body runs.

  Creates ``path``. Nested calls on the same path in one process pass
  through; in a multi-host run only process 0, which writes the run's
  files, takes the lock. Raises ``ConfigError`` naming the other process
  when one holds it.
  """
  path = pathlib.Path(path)
  if path.exists() and not path.is_dir():
    raise ConfigError(f'--workdir {path} is a file; expected a directory.')
  key = str(path.resolve())
  if key in _HELD or jax.process_index() != 0:
    _HELD[key] = _HELD.get(key, 0) + 1
    try:
      yield
    finally:
      _HELD[key] -= 1
      if not _HELD[key]:
        del _HELD[key]
    return
  if not path.is_dir():
    make(path)
  file = path / LOCK_FILE
  try:
    fd = os.open(file, os.O_RDWR | os.O_CREAT, 0o644)
  except OSError as err:
    raise os_error(path, err, f'create {LOCK_FILE}') from None
  try:
    if not _try_lock(fd):
      holder = os.read(fd, 64).decode(errors='replace').strip() or '?'
      raise ConfigError(
          f'--workdir {path} is in use by another process (pid {holder}); '
          'wait for it to end, or choose another --workdir.')
    os.ftruncate(fd, 0)
    os.write(fd, f'{os.getpid()}\n'.encode())
    _HELD[key] = 1
    try:
      yield
    finally:
      del _HELD[key]
  finally:
    os.close(fd)  # releases the lock


def make(path: pathlib.Path) -> None:
  """Creates ``path`` (and parents), or a one-line error."""
  try:
    path.mkdir(parents=True, exist_ok=True)
  except OSError as err:
    raise os_error(path, err, 'create the folder') from None
  if not os.access(path, os.W_OK):
    raise ConfigError(f'--workdir {path}: not writable.')


def write_json(path: pathlib.Path, value: Any) -> None:
  """Writes ``value`` as JSON, atomically (a temporary file, renamed)."""
  tmp = path.with_suffix(path.suffix + '.tmp')
  try:
    tmp.write_text(json.dumps(value, indent=1, sort_keys=True) + '\n')
    tmp.replace(path)
  except OSError as err:
    raise os_error(path.parent, err, f'write {path.name}') from None


def read_json(path: pathlib.Path) -> Optional[dict[str, Any]]:
  """The JSON in ``path``, or None if there is no such file."""
  if not path.exists():
    return None
  try:
    return json.loads(path.read_text())
  except ValueError as err:
    raise ConfigError(f'{path}: unreadable JSON ({err}).') from None


def start(path: pathlib.Path, kind: str, identity: dict[str, Any],
          provenance: dict[str, Any]) -> None:
  """Records ``identity`` (a new one after --extend) and appends
  ``provenance`` to the marker file."""
  marker = path / MARKERS[kind]
  stored = read_json(marker)
  entries = [] if stored is None else stored.get('provenance', [])
  write_json(marker, {'config': identity,
                      'provenance': entries + [provenance]})


def read_metrics(path: pathlib.Path, name: str = METRICS_FILE
                 ) -> list[dict[str, Any]]:
  """The lines of ``path/metrics.jsonl`` (or of ``name``; empty if there
  is none)."""
  file = pathlib.Path(path) / name
  if not file.exists():
    return []
  return [json.loads(line) for line in file.read_text().splitlines()
          if line.strip()]


def append_metrics(path: pathlib.Path, row: dict[str, Any],
                   name: str = METRICS_FILE) -> None:
  try:
    with open(path / name, 'a') as f:
      f.write(json.dumps(row) + '\n')
  except OSError as err:
    raise os_error(path, err, f'write {name}') from None


def truncate_metrics(path: pathlib.Path, step: int) -> None:
  """Drops lines after ``step`` (written after the last checkpoint) from
  metrics.jsonl and train_log.jsonl."""
  for name in (METRICS_FILE, TRAIN_LOG_FILE):
    if name != METRICS_FILE and not (path / name).exists():
      continue
    rows = [r for r in read_metrics(path, name) if r['step'] <= step]
    try:
      (path / name).write_text(''.join(json.dumps(r) + '\n' for r in rows))
    except OSError as err:
      raise os_error(path, err, f'write {name}') from None


def _version(package: str) -> Optional[str]:
  try:
    return metadata.version(package)
  except metadata.PackageNotFoundError:
    return None


def _git_commit() -> Optional[str]:
  """The commit of the checkout lionx runs from, if it is one."""
  root = pathlib.Path(__file__).resolve().parents[2]
  if not (root / '.git').exists():
    return None
  try:
    out = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=root, timeout=10,
                         capture_output=True, text=True, check=True)
    dirty = subprocess.run(['git', 'status', '--porcelain'], cwd=root,
                           timeout=10, capture_output=True, text=True)
  except (OSError, subprocess.SubprocessError):
    return None
  return out.stdout.strip() + ('+changes' if dirty.stdout.strip() else '')


def provenance(seed: int, extra: Optional[dict[str, Any]] = None
               ) -> dict[str, Any]:
  """Who ran what, where: versions, commit, command line, devices, seed."""
  devices = jax.devices()
  return {
      'time': datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec='seconds'),
      'versions': {p: _version(p) for p in
                   ('lionx', 'jax', 'jaxlib', 'flax', 'optax',
                    'orbax-checkpoint', 'numpy')},
      'python': platform.python_version(),
      'git_commit': _git_commit(),
      'command': sys.argv,
      'devices': {'count': len(devices), 'kind': devices[0].device_kind,
                  'platform': devices[0].platform,
                  'processes': jax.process_count()},
      'seed': seed,
      **(extra or {}),
  }
