"""The Flax NNX training harness (``pip install lionx[train]``).

Layers, each importing only the ones below it::

  cli · sample   lionx-train, lionx-compare (argument parsing, --dry-run);
                 lionx-sample (generation from a GPT run, a KV cache)
  sweep          comparisons, learning-rate grids, seeds
  experiment     train_and_evaluate: the task-agnostic loop
  steps · diagnostics · workdir · checkpoint · writers · plots · report
  config         composes the sections below into one Config
  tasks · optimizers   the unit of extension (model + loss + metrics +
                 data); the optimizer's one owner (rate, schedule, tx)
  data · models · schedules · parallel
  fields         typed config sections, overrides, ConfigError

This is the only part of lionx that imports Flax, orbax, scikit-learn,
matplotlib and tqdm.

The public API is the flat namespace below (``__all__``); the
submodules are the harness's internals. Each name is imported on first
use (PEP 562), so that ``import lionx.train`` and ``lionx-train --help``
stay fast.

Configs:
  :class:`~lionx.train.config.Config`,
  :exc:`~lionx.train.fields.ConfigError`,
  :func:`~lionx.train.config.load_config` (a config file with ``key=value``
  overrides), :func:`~lionx.train.fields.override` (one ``key=value``),
  :func:`~lionx.train.config.validate`, :func:`~lionx.train.config.copy`,
  :func:`~lionx.train.config.total_steps` (the steps of a run).

Tasks (the unit of extension):
  :class:`~lionx.train.tasks.base.Task`,
  :func:`~lionx.train.tasks.base.register_task`,
  :func:`~lionx.train.tasks.base.get_task`.

Optimizers:
  :func:`~lionx.train.optimizers.make_optimizer` (a config's transform,
  schedule and settings) and the :class:`~lionx.train.optimizers.Optimizer`
  it returns; ``KERNEL_INITS`` (the vision models' ``model.kernel_init``
  names, :mod:`lionx.train.models.vision`).

Runs:
  :func:`~lionx.train.experiment.train_and_evaluate` (one run into a
  workdir; ``extend=``, ``allow_data_change=``) with
  :class:`~lionx.train.experiment.Hook` callbacks,
  :func:`~lionx.train.experiment.evaluate_checkpoint` (``--eval-only``), its
  :class:`~lionx.train.experiment.RunResult` and
  :exc:`~lionx.train.experiment.NonFiniteLossError`;
  :func:`~lionx.train.sweep.compare` (optimizers, learning-rate grids and
  seeds) and its :class:`~lionx.train.sweep.SweepResult`.

Example:
  >>> import lionx.train as lt
  >>> config = lt.Config()
  >>> lt.override(config, 'optimizer.learning_rate=3e-3')
  >>> lt.make_optimizer(lt.validate(config), total_steps=10).settings.name
  'lion'
"""

import importlib
from typing import Any

# name -> the submodule (of lionx.train) that defines it.
_EXPORTS = {
    'Config': 'config',
    'ConfigError': 'fields',
    'load_config': 'config',
    'override': 'fields',
    'validate': 'config',
    'copy': 'config',
    'total_steps': 'config',
    'Task': 'tasks',
    'register_task': 'tasks',
    'get_task': 'tasks',
    'make_optimizer': 'optimizers',
    'Optimizer': 'optimizers',
    'KERNEL_INITS': 'models.vision',
    'train_and_evaluate': 'experiment',
    'evaluate_checkpoint': 'experiment',
    'Hook': 'experiment',
    'RunResult': 'experiment',
    'NonFiniteLossError': 'experiment',
    'compare': 'sweep',
    'SweepResult': 'sweep',
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
  if name not in _EXPORTS:
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
  value = getattr(importlib.import_module(f'{__name__}.{_EXPORTS[name]}'),
                  name)
  globals()[name] = value  # later look-ups skip __getattr__
  return value


def __dir__() -> list[str]:
  return sorted(set(globals()) | set(__all__))
