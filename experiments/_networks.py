r"""The network reproductions' runs: the harness's loop, with probes.

The reproductions on networks need what the harness's loop
(:func:`lionx.train.train_and_evaluate`) does not record: a function of
the parameters after *every* step (:math:`\|\theta_t\|_\infty`, a
reshaper's constraint) and histograms of the weights during an epoch.
:func:`train` runs that loop, the one of ``lionx-train``, with a
:class:`lionx.train.Hook` that measures them, so its evaluations are the
harness's rows. Each run trains in a temporary workdir: what persists is
the reproduction's own result files (never overwritten without
``--overwrite``), from which ``--replot`` redraws.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import statistics
import sys
import tempfile
from typing import Any, Callable, Optional, Sequence

import jax
import numpy as np
from flax import nnx

import lionx.train as lt
from lionx import metrics
from experiments import _common

Probe = Callable[[Any], jax.Array]  # params -> scalar
Snapshot = Callable[[Any], Any]  # params -> anything (host side)

# configs/default.py, run quietly on one device.
DIGITS_OVERRIDES = ('progress=false', 'tensorboard=false',
                    'parallel.num_devices=1')


@dataclasses.dataclass
class Recording:
  """What :func:`train` measured in one run."""

  d: int  # number of trainable parameters
  total_steps: int
  learning_rates: np.ndarray  # (total_steps,): eta_t of step t = 0 .. K-1
  probes: dict[str, np.ndarray]  # each (total_steps + 1,): t = 0 .. K
  snapshot_steps: np.ndarray  # the steps t of ``snapshots``
  snapshots: list[Any]  # snapshot(params) after step t (t = 0: the start)
  evaluations: list[dict[str, Any]]  # the harness's rows (step, epoch,
  #                                    full_loss, val_loss, ...)

  def final(self, key: str) -> float:
    """The value of ``key`` at the last evaluation."""
    return float(self.evaluations[-1][key])

  def curve(self, key: str) -> tuple[np.ndarray, np.ndarray]:
    """(epochs, values) of ``key`` over the evaluations."""
    return (np.array([float(e['epoch']) for e in self.evaluations]),
            np.array([e[key] for e in self.evaluations]))


def _params(state: Any) -> Any:
  return nnx.as_pure(nnx.state(state.model, nnx.Param))


class _Recorder(lt.Hook):
  """Probes after every step, snapshots every ``every`` steps."""

  def __init__(self, probes: dict[str, Probe], snapshot: Optional[Snapshot],
               every: int, total: int):
    self.measure = jax.jit(lambda p: {k: f(p) for k, f in probes.items()})
    self.snapshot, self.every, self.total = snapshot, every, total
    self.values, self.snapshot_steps, self.snapshots = [], [], []
    self.schedule, self.d = None, 0

  def _record(self, step: int, state: Any) -> None:
    params = _params(state)
    self.values.append(self.measure(params))
    if self.every and (step % self.every == 0 or step == self.total):
      self.snapshot_steps.append(step)
      self.snapshots.append(self.snapshot(params))

  def start(self, step: int, state: Any) -> None:
    self.schedule = state.built.schedule
    self.d = int(metrics.tree_size(_params(state)))
    self._record(step, state)

  def after_step(self, step: int, state: Any) -> None:
    self._record(step, state)


def train(config: lt.Config, data: Any = None, *,
          probes: Optional[dict[str, Probe]] = None,
          snapshot: Optional[Snapshot] = None, snapshot_every: int = 0,
          ) -> Recording:
  """Trains ``config`` once with :func:`lionx.train.train_and_evaluate`
  (in a temporary workdir), recording ``probes`` after every step.

  Args:
    config: a harness config (validated by the harness); its evaluation
      interval (``eval_every_steps``, or one epoch) is the harness's.
    data: the task's loaded data (default: loaded from the config).
    probes: name -> jit-compatible function of the parameter pytree giving a
      scalar, evaluated at the start and after every step.
    snapshot: a host-side function of the parameters, called at the start
      and after every ``snapshot_every``-th step (and the last one).
    snapshot_every: steps between snapshots (0: none).

  Returns:
    A :class:`Recording`.

  Raises:
    lionx.train.NonFiniteLossError: the loss became NaN or infinite.
  """
  config = lt.validate(config)
  if isinstance(snapshot_every, bool) or not isinstance(snapshot_every, int):
    raise TypeError(f'snapshot_every={snapshot_every!r}: expected an int.')
  if snapshot_every < 0 or (snapshot_every and snapshot is None):
    raise ValueError(f'snapshot_every={snapshot_every}: expected 0, or a '
                     'positive int with a snapshot function.')
  task = lt.get_task(config.task)
  data = task.load_data(config) if data is None else data
  total = lt.total_steps(config, task.steps_per_epoch(config, data))
  recorder = _Recorder(dict(probes or {}), snapshot, snapshot_every, total)
  with tempfile.TemporaryDirectory(prefix='lionx-run-') as workdir:
    result = lt.train_and_evaluate(config, workdir, data=data,
                                   verbose=False, hooks=[recorder])
  values = jax.device_get(recorder.values)
  return Recording(
      d=recorder.d, total_steps=total,
      learning_rates=np.array([float(recorder.schedule(t))
                               for t in range(total)]),
      probes={k: np.array([v[k] for v in values], np.float64)
              for k in probes or {}},
      snapshot_steps=np.array(recorder.snapshot_steps, int),
      snapshots=recorder.snapshots, evaluations=result.rows)


def flat_params(params: Any) -> np.ndarray:
  """All parameters as one float64 vector (host side)."""
  leaves = jax.device_get(jax.tree.leaves(params))
  return np.concatenate([np.ravel(np.asarray(x, np.float64))
                         for x in leaves])


# --- configs and command lines shared by the network reproductions ---------


def digits_config() -> lt.Config:
  """``configs/default.py`` (Lion on the embedded digits with the small
  CNN, d = 151,306, batch 64, learning rate 3e-3, weight decay 0.1, cosine,
  30 epochs), quiet, on one device."""
  return lt.load_config(_common.DIGITS_CONFIG, DIGITS_OVERRIDES)


def make_config(path: Optional[str], overrides: Sequence[str],
                base: Callable[[], lt.Config] = digits_config
                ) -> lt.Config:
  """``base()`` (or the config file at ``path``, ``FILE[:ARG]``) with the
  ``key=value`` overrides applied, validated."""
  if path:
    return lt.load_config(path, tuple(overrides))
  config = base()
  for item in overrides:
    lt.override(config, item)
  return lt.validate(config)


def optimizer_of(config: lt.Config, data: Any = None) -> lt.Optimizer:
  """The optimizer (settings, schedule, reshaper) that a run of ``config``
  builds; ``data``, the task's loaded data, gives the steps of an epoch
  (None: a task without epochs, such as the language model's)."""
  task = lt.get_task(config.task)
  per_epoch = None if data is None else task.steps_per_epoch(config, data)
  return lt.make_optimizer(config, lt.total_steps(config, per_epoch),
                           per_epoch)


def require_paper_lion(config: lt.Config) -> None:
  """Raises ``ValueError`` unless the config trains Lion with the paper's
  weight-decay convention (whose box is ``||theta||_inf <= 1/lambda``)."""
  opt = config.optimizer
  if opt.name != 'lion' or opt.weight_decay_convention != 'paper':
    raise ValueError(
        f'optimizer.name={opt.name!r}, optimizer.weight_decay_convention='
        f'{opt.weight_decay_convention!r}: expected lion with the paper '
        'convention (the box ||theta||_inf <= 1/lambda).')


def parse_numbers(name: str, text: str, kind: type = float) -> tuple:
  """``'0,0.5,1'`` -> ``(0.0, 0.5, 1.0)``; a one-line error otherwise."""
  try:
    values = tuple(kind(x) for x in text.split(',') if x.strip())
  except ValueError:
    raise ValueError(f'{name}={text!r}: expected comma-separated '
                     f'{kind.__name__}s, e.g. 0,1,2.') from None
  if not values:
    raise ValueError(f'{name}={text!r}: expected at least one value.')
  return values


def spread(values: Sequence[float], fmt: str = '.3g') -> str:
  """``median [min, max]`` over seeds (one value: itself)."""
  values = [float(v) for v in values]
  if len(values) == 1:
    return format(values[0], fmt)
  return (f'{format(statistics.median(values), fmt)} '
          f'[{format(min(values), fmt)}, {format(max(values), fmt)}]')


def first_step_within(values: np.ndarray, limit: float) -> int:
  """The first t from which ``values[t:] <= limit`` (-1: not at the end)."""
  bad = np.flatnonzero(~(np.asarray(values) <= limit))
  if bad.size == 0:
    return 0
  if bad[-1] == len(values) - 1:
    return -1
  return int(bad[-1] + 1)


def parser(name: str, doc: str) -> argparse.ArgumentParser:
  """:func:`experiments._common.parser` with :func:`add_common_arguments`."""
  out = _common.parser(name, doc)
  add_common_arguments(out)
  return out


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
  """``--out``, ``--overwrite``, ``--seeds``, ``--config`` and the
  ``key=value`` overrides of every network reproduction."""
  parser.add_argument('--out', required=True, type=pathlib.Path,
                      help='directory for the PNG, markdown, CSV and JSON')
  parser.add_argument('--overwrite', action='store_true',
                      help='replace existing result files')
  parser.add_argument('--seeds', default='0,1,2', metavar='S,S,...',
                      help='one run per seed (default 0,1,2); tables give '
                      'the median [min, max]')
  parser.add_argument('--config', default=None, metavar='FILE[:ARG]',
                      help="a harness config file instead of the "
                      "repository's configs/default.py (the digits CNN), "
                      'e.g. configs/cifar.py:cifar10,resnet18')
  parser.add_argument('overrides', nargs='*', metavar='key=value',
                      help='config overrides, e.g. model.name=resnet18 '
                      'data.name=cifar10 data.data_dir=data')


def command(name: str, argv: Optional[Sequence[str]]) -> str:
  """The command line of ``python -m experiments.<name>`` with ``argv``
  (default: this process's arguments), for the reports."""
  return ' '.join([f'python -m experiments.{name}']
                  + list(sys.argv[1:] if argv is None else argv))


def write_results(paths: dict[str, pathlib.Path], text: str,
                  runs: Sequence[Any], command: str, extra: dict[str, Any],
                  *, curves: bool = True, indent: int = 1,
                  default: Callable[[Any], Any] = str) -> None:
  """Writes a network reproduction's report ``text`` (the ``.md`` of
  ``paths``), a CSV row per run (the ``.csv``) and ``summary.json``:
  the command, ``extra``, the rows and (``curves``) the runs themselves
  (:func:`runs_to_json`, for ``--replot``); prints the report."""
  by_suffix = {p.suffix: p for name, p in paths.items()
               if name != 'summary.json'}
  by_suffix['.md'].write_text(text)
  by_suffix['.csv'].write_text(_common.csv_text([r.row() for r in runs]))
  summary = {'command': command, **extra, 'runs': [r.row() for r in runs]}
  if curves:
    summary['curves'] = runs_to_json(runs)
  paths['summary.json'].write_text(json.dumps(summary, indent=indent,
                                              default=default))
  print(text)
  print('wrote', ', '.join(str(p) for p in paths.values()))


def runs_to_json(runs: Sequence[Any]) -> list[dict[str, Any]]:
  """Dataclass runs as JSON-ready dicts (arrays as lists), so that a report
  can be redrawn from ``summary.json`` without training again."""
  out = []
  for run in runs:
    item = {}
    for field in dataclasses.fields(run):
      value = getattr(run, field.name)
      item[field.name] = (value.tolist() if isinstance(value, np.ndarray)
                          else value)
    out.append(item)
  return out


def runs_from_json(items: Sequence[dict[str, Any]], cls: type) -> list[Any]:
  """The inverse of :func:`runs_to_json` for the dataclass ``cls``."""
  names = [f.name for f in dataclasses.fields(cls)]
  runs = []
  for item in items:
    missing = sorted(set(names) - set(item))
    if missing:
      raise ValueError(f'a stored run lacks the fields {missing}; expected '
                       f'a summary.json written by this version.')
    runs.append(cls(**{k: (np.asarray(item[k], float)
                           if isinstance(item[k], list) else item[k])
                       for k in names}))
  return runs


def stored_runs(out: pathlib.Path, cls: type) -> tuple[list[Any], str]:
  """The runs and the command stored in ``out/summary.json``."""
  path = out / 'summary.json'
  if not path.is_file():
    raise FileNotFoundError(f'--replot: {path} does not exist; run the '
                            'command without --replot first.')
  data = json.loads(path.read_text())
  if 'curves' not in data:
    raise ValueError(f'--replot: {path} holds no curves; rerun the command.')
  return runs_from_json(data['curves'], cls), data.get('command', '')
