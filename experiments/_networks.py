r"""One training run of the harness, driven step by step, with probes.

The reproductions on networks need what the harness's loop
(:func:`lionx.train.experiment.train_and_evaluate`) does not record: a
function of the parameters after *every* step (:math:`\|\theta_t\|_\infty`,
a reshaper's constraint) and histograms of the weights during an epoch.
:func:`train` runs the harness's own pieces in order (the model and
``nnx.Optimizer`` of :func:`lionx.train.steps.create_train_state`, the
jitted step of :func:`lionx.train.steps.make_train_step`, the task's
training batches, and at each evaluation the exact :math:`f(\theta)` of
:func:`lionx.train.steps.logging_pass` and the held-out metrics), so its
evaluations are those of ``lionx-train`` with the same config
(``tests/test_reproductions.py`` checks this), but it writes nothing: no
workdir, no checkpoints.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import statistics
from typing import Any, Callable, Optional, Sequence

import jax
import numpy as np
from flax import nnx

from lionx.train import config as config_lib
from lionx.train import fields
from lionx.train import optimizers
from lionx.train import parallel
from lionx.train import steps
from lionx.train import tasks

Probe = Callable[[Any], jax.Array]  # params -> scalar
Snapshot = Callable[[Any], Any]  # params -> anything (host side)


@dataclasses.dataclass
class Recording:
  """What :func:`train` measured in one run."""

  d: int  # number of trainable parameters
  steps_per_epoch: int
  total_steps: int
  learning_rates: np.ndarray  # (total_steps,): eta_t of step t = 0 .. K-1
  probes: dict[str, np.ndarray]  # each (total_steps + 1,): t = 0 .. K
  snapshot_steps: np.ndarray  # the steps t of ``snapshots``
  snapshots: list[Any]  # snapshot(params) after step t (t = 0: the start)
  evaluations: list[dict[str, float]]  # step, epoch, full_loss, val_loss,
  #                                      train_accuracy, test_accuracy

  def final(self, key: str) -> float:
    """The value of ``key`` at the last evaluation."""
    return float(self.evaluations[-1][key])

  def curve(self, key: str) -> tuple[np.ndarray, np.ndarray]:
    """(epochs, values) of ``key`` over the evaluations."""
    return (np.array([e['epoch'] for e in self.evaluations]),
            np.array([e[key] for e in self.evaluations]))


def train(config: config_lib.Config, data: Any = None, *,
          probes: Optional[dict[str, Probe]] = None,
          snapshot: Optional[Snapshot] = None, snapshot_every: int = 0,
          ) -> Recording:
  """Trains ``config`` once, recording ``probes`` after every step.

  Args:
    config: a harness config (validated here); its evaluation interval
      (``eval_every_steps``, or one epoch) is the harness's.
    data: the task's loaded data (default: loaded from the config).
    probes: name -> jit-compatible function of the parameter pytree giving a
      scalar, evaluated at the start and after every step.
    snapshot: a host-side function of the parameters, called at the start
      and after every ``snapshot_every``-th step (and the last one).
    snapshot_every: steps between snapshots (0: none).

  Returns:
    A :class:`Recording`.
  """
  config = config_lib.validate(config)
  if isinstance(snapshot_every, bool) or not isinstance(snapshot_every, int):
    raise TypeError(f'snapshot_every={snapshot_every!r}: expected an int.')
  if snapshot_every < 0 or (snapshot_every and snapshot is None):
    raise ValueError(f'snapshot_every={snapshot_every}: expected 0, or a '
                     'positive int with a snapshot function.')
  task = tasks.get_task(config.task)
  data = task.load_data(config) if data is None else data
  per_epoch = task.steps_per_epoch(config, data)
  total = config_lib.total_steps(config, per_epoch)
  every = config_lib.batches_per_eval(config, per_epoch)
  mesh = parallel.make_mesh(config.parallel.num_devices)
  state = steps.create_train_state(config, task, task.data_spec(data), total,
                                   per_epoch, mesh)
  train_step = steps.make_train_step(
      task, mesh, state,
      per_device=optimizers.spec(config.optimizer.name).per_device)
  probes = dict(probes or {})
  measure = jax.jit(lambda p: {k: f(p) for k, f in probes.items()})

  def params():
    return nnx.as_pure(nnx.state(state.model, nnx.Param))

  values = [measure(params())]
  snapshot_steps, snapshots = [], []
  if snapshot_every:
    snapshot_steps.append(0)
    snapshots.append(snapshot(params()))
  evaluations = []
  for step in range(total):
    batch = task.train_batch(config, data, step)
    train_step(state.model, state.optimizer, batch)
    values.append(measure(params()))
    done = step + 1
    if snapshot_every and (done % snapshot_every == 0 or done == total):
      snapshot_steps.append(done)
      snapshots.append(snapshot(params()))
    if done % every == 0 or done == total:
      evaluations.append(_evaluate(task, config, data, state, mesh, done,
                                   per_epoch))
  values = jax.device_get(values)
  return Recording(
      d=steps.count_params(state.model), steps_per_epoch=per_epoch,
      total_steps=total,
      learning_rates=np.array([float(state.schedule(t))
                               for t in range(total)]),
      probes={k: np.array([v[k] for v in values], np.float64)
              for k in probes},
      snapshot_steps=np.array(snapshot_steps, int), snapshots=snapshots,
      evaluations=evaluations)


def _evaluate(task, config, data, state, mesh, step: int,
              per_epoch: int) -> dict[str, float]:
  view = steps.eval_view(state.model)
  logged = steps.logging_pass(
      task, view, task.logging_batches(config, data), mesh)
  held_out = steps.evaluate(task, view, task.held_out_batches(config, data),
                            mesh)
  return {'step': step, 'epoch': step / per_epoch, 'full_loss': logged.loss,
          **logged.metrics, **held_out}


def flat_params(params: Any) -> np.ndarray:
  """All parameters as one float64 vector (host side)."""
  leaves = jax.device_get(jax.tree.leaves(params))
  return np.concatenate([np.ravel(np.asarray(x, np.float64))
                         for x in leaves])


# --- configs and command lines shared by the network reproductions ---------


def digits_config() -> config_lib.Config:
  """``configs/default.py`` in code (the command works without the
  repository): Lion on the embedded digits with the small CNN (d =
  151,306), batch 64, learning rate 3e-3, weight decay 0.1, cosine, 30
  epochs, on one device, quiet."""
  config = config_lib.Config()
  config.num_epochs = 30
  config.batch_size = 64
  config.eval_batch_size = 512
  config.data.name = 'digits'
  config.data.augment = False
  config.model.name = 'cnn'
  config.optimizer.name = 'lion'
  config.optimizer.learning_rate = 3e-3
  config.optimizer.weight_decay = 0.1
  config.schedule.name = 'cosine'
  config.parallel.num_devices = 1
  config.progress = False
  config.tensorboard = False
  return config


def make_config(path: Optional[str], overrides: Sequence[str],
                base: Callable[[], config_lib.Config] = digits_config
                ) -> config_lib.Config:
  """``base()`` (or the config file at ``path``, ``FILE[:ARG]``) with the
  ``key=value`` overrides applied, validated."""
  if path:
    return config_lib.load_config(path, tuple(overrides))
  config = base()
  for item in overrides:
    fields.override(config, item)
  return config_lib.validate(config)


def require_paper_lion(config: config_lib.Config) -> None:
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
                      help='a harness config file instead of the built-in '
                      'digits CNN, e.g. configs/cifar.py:cifar10,resnet18')
  parser.add_argument('overrides', nargs='*', metavar='key=value',
                      help='config overrides, e.g. model.name=resnet18 '
                      'data.name=cifar10 data.data_dir=data')


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
