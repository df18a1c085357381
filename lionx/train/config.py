"""Training configs: the run-level fields, composed with each section.

A config file is a Python file with ``get_config()`` returning a
:class:`Config`, or ``get_config(arg)`` taking the text after a colon:
``--config configs/cifar.py:cifar100,resnet18`` (as big_vision does). Files
may import their siblings (``from configs import default``), so an override
file changes only a few fields of another one.

Each section is owned by the module that uses it and validates itself:
``data`` and ``model`` by the task (``config.task``), ``optimizer`` by
:mod:`lionx.train.optimizers`, ``schedule`` by
:mod:`lionx.train.schedules`, ``parallel`` by :mod:`lionx.train.parallel`.
This module composes them and imports nothing back.

On the command line, ``key=value`` pairs or the Flax examples' flags
``--config.key=value`` change single fields (``optimizer.learning_rate=1e-3``,
``optimizer.learning_rates.sgd=0.1``, ``optimizer.lion_lp.p=1.5``). Each
text is read as its field's type (:func:`lionx.train.fields.parse`).
"""

from __future__ import annotations

import copy as copy_lib
import dataclasses
import importlib.util
import pathlib
import sys
from typing import Any

from lionx.train import fields
from lionx.train import optimizers
from lionx.train import parallel as parallel_lib
from lionx.train import schedules
from lionx.train import tasks
from lionx.train.fields import ConfigError

__all__ = ('Config', 'ConfigError', 'PAPER_LR_GRID', 'copy', 'identity',
           'load_config', 'run_identity', 'to_dict', 'validate')

# The learning-rate grid of the papers' CIFAR runs (REFERENCE §6).
PAPER_LR_GRID = (3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6, 1e-6)

# Fields that change how a run executes but not its result; they may differ
# between a run and its resumption (dotted: a field of a section, if the
# section has it).
RUNTIME_FIELDS = ('max_evals_this_run', 'checkpoint_every_evals', 'progress',
                  'tensorboard', 'data.workers', 'log_every_steps')
# Fields of comparisons and grids (lionx.train.sweep), not of one run.
SWEEP_FIELDS = ('compare_optimizers', 'lr_select', 'seeds')
LR_SELECT = ('full_loss', 'val_loss')
# The version of the identity recorded in a workdir's config.json.
IDENTITY_FORMAT = 2


@dataclasses.dataclass(slots=True)
class Config:
  """One training run, comparison or grid.

  The length of a run is ``num_epochs`` (data with epochs) or
  ``num_steps``: exactly one of them is positive. It is evaluated (logging
  pass, held-out metrics, one line of metrics.jsonl) every
  ``eval_every_steps`` steps, or once per epoch when that is 0.
  """

  task: str = 'classification'
  seed: int = 0
  num_epochs: int = 30
  num_steps: int = 0
  eval_every_steps: int = 0
  batch_size: int = 64
  # Split each batch into this many micro-batches inside the step (a
  # lax.scan: memory for one micro-batch's activations), one update.
  grad_accum_steps: int = 1
  eval_batch_size: int = 512
  # Logging pass: 0 means every batch of the training split (exact f and
  # gradient); N > 0 caps it at N batches of eval_batch_size.
  logging_max_batches: int = 0
  checkpoint_every_evals: int = 5
  # > 0: at every multiple of log_every_steps, the mean training loss of
  # the steps since the last log line (within the evaluation interval) goes
  # to train_log.jsonl and TensorBoard (no logging pass).
  log_every_steps: int = 0
  # Stop after this many evaluations in this invocation (0: no limit); a
  # later invocation resumes. Used to simulate preemption.
  max_evals_this_run: int = 0
  progress: bool = True
  # Fine-tuning: start from the parameters of the newest checkpoint in
  # this workdir of another run (same model shape), with a fresh optimizer.
  init_from: str = ''
  # TensorBoard event files beside metrics.jsonl (lionx.train.writers).
  tensorboard: bool = True
  # lionx-compare: the optimizers, the seeds (empty: just `seed`) and how
  # a learning-rate grid picks its rate.
  compare_optimizers: tuple[str, ...] = ('lion', 'sgd', 'adamw')
  seeds: tuple[int, ...] = ()
  lr_select: str = 'full_loss'  # full_loss | val_loss
  # The task's sections (their classes depend on `task`).
  data: Any = None
  model: Any = None
  optimizer: optimizers.OptimizerConfig = dataclasses.field(
      default_factory=optimizers.OptimizerConfig)
  schedule: schedules.ScheduleConfig = dataclasses.field(
      default_factory=schedules.ScheduleConfig)
  parallel: parallel_lib.ParallelConfig = dataclasses.field(
      default_factory=parallel_lib.ParallelConfig)

  def __post_init__(self):
    task = tasks.get_task(self.task)
    if self.data is None:
      self.data = task.data_config()
    if self.model is None:
      self.model = task.model_config()


def copy(config: Config) -> Config:
  """A deep copy."""
  return copy_lib.deepcopy(config)


def to_dict(config: Any) -> dict[str, Any]:
  """The config as JSON-ready nested dicts (tuples become lists)."""
  return fields.to_dict(config)


def _check_run_fields(config: Config) -> None:
  for path in ('batch_size', 'eval_batch_size', 'checkpoint_every_evals',
               'grad_accum_steps'):
    fields.positive(path, getattr(config, path))
  if config.batch_size % config.grad_accum_steps:
    raise ConfigError(
        f'grad_accum_steps={config.grad_accum_steps} does not divide '
        f'batch_size={config.batch_size}; expected equal micro-batches.')
  for path in ('num_epochs', 'num_steps', 'eval_every_steps',
               'logging_max_batches', 'max_evals_this_run', 'seed',
               'log_every_steps'):
    fields.non_negative(path, getattr(config, path))
  if (config.num_epochs > 0) == (config.num_steps > 0):
    raise ConfigError(
        f'num_epochs={config.num_epochs}, num_steps={config.num_steps}: '
        'set exactly one of them (the other 0).')
  if config.num_steps and config.eval_every_steps > config.num_steps:
    raise ConfigError(
        f'eval_every_steps={config.eval_every_steps} is larger than '
        f'num_steps={config.num_steps}.')
  warm = config.schedule
  for length, name, value in (('num_epochs', 'warmup_epochs',
                               warm.warmup_epochs),
                              ('num_steps', 'warmup_steps', warm.warmup_steps)):
    total = getattr(config, length)
    if value and total and value >= total:
      raise ConfigError(
          f'schedule.{name}={value} must be smaller than {length}={total}.')
  fields.one_of('lr_select', config.lr_select, LR_SELECT)
  for name in config.compare_optimizers:
    fields.one_of('compare_optimizers', name, optimizers.OPTIMIZERS)
  for i, seed in enumerate(config.seeds):
    fields.non_negative(f'seeds[{i}]', seed)


def _check_precision(config: Config) -> None:
  """optimizer.compensation needs low-precision model.param_dtype."""
  compensation = config.optimizer.compensation
  if compensation == 'none':
    return
  # A task whose model section has no param_dtype keeps float32 params.
  dtype = getattr(config.model, 'param_dtype', 'float32')
  if dtype == 'float32':
    raise ConfigError(
        f'optimizer.compensation={compensation!r} with model.param_dtype='
        f"{dtype!r}: compensation keeps the rounding residual of bfloat16 "
        "or float16 parameters; set model.param_dtype='bfloat16' or "
        "optimizer.compensation='none'.")
  if compensation == 'int16' and dtype == 'float16':
    raise ConfigError(
        "optimizer.compensation='int16' with model.param_dtype='float16': "
        'float16 + int16 needs a 27-bit significand, more than float32 '
        "holds; use optimizer.compensation='int8'.")


def validate(config: Config) -> Config:
  """Checks types and values; returns the config or raises ConfigError."""
  if not isinstance(config, Config):
    raise ConfigError(
        f'the config is a {type(config).__name__}; expected '
        'lionx.train.config.Config.')
  fields.check(config)
  task = tasks.get_task(config.task)
  for section, cls in (('data', task.data_config),
                       ('model', task.model_config)):
    if not isinstance(getattr(config, section), cls):
      raise ConfigError(
          f'config.{section} is a {type(getattr(config, section)).__name__}'
          f', but task={config.task!r} needs a {cls.__name__}: create the '
          f'config with Config(task={config.task!r}).')
  task.validate(config)
  optimizers.validate(config.optimizer)
  schedules.validate(config.schedule)
  parallel_lib.validate(config.parallel)
  _check_run_fields(config)
  _check_precision(config)
  opt = optimizers.spec(config.optimizer.name)
  if opt.per_device and config.parallel.mode != 'replicated':
    raise ConfigError(
        f'optimizer.name={config.optimizer.name!r} with parallel.mode='
        f'{config.parallel.mode!r}: it keeps the parameters replicated and '
        "one momentum per device; use parallel.mode='replicated'.")
  return config


def identity(config: Config) -> dict[str, Any]:
  """The fields that decide a result (all but the runtime fields)."""
  out = to_dict(config)
  for name in RUNTIME_FIELDS:
    *sections, field = name.split('.')
    where = out
    for section in sections:
      where = where.get(section)
      if not isinstance(where, dict):
        break
    else:
      where.pop(field, None)
  return out


def run_identity(config: Config) -> dict[str, Any]:
  """What decides one run's result, as recorded in its workdir.

  The learning rate and weight decay are resolved, the betas too; only
  the chosen optimizer's own section is kept (so that registering another
  optimizer does not change the identity of a run); the number of devices
  is the number the run uses (sums over another number round differently).
  """
  out = identity(config)
  for name in SWEEP_FIELDS:
    out.pop(name)
  opt = config.optimizer
  s = optimizers.resolve(opt)
  kept = {'name': opt.name, 'learning_rate': s.learning_rate,
          'weight_decay': s.weight_decay,
          'weight_decay_convention': opt.weight_decay_convention,
          'b1': s.b1, 'b2': s.b2, 'mu_dtype': opt.mu_dtype}
  # Absent from earlier workdirs' identity where they have the default.
  for name, default in (('compensation', 'none'), ('decay', 'all'),
                        ('clip_norm', 0.0)):
    if getattr(opt, name) != default:
      kept[name] = getattr(opt, name)
  if opt.name in opt.hparams:
    kept[opt.name] = out['optimizer'][opt.name]
  for name, default in (('init_from', ''), ('grad_accum_steps', 1)):
    if out[name] == default:  # absent from earlier workdirs' identity
      out.pop(name)
  for name, default in (('compute_dtype', 'float32'), ('remat', False)):
    if out['model'].get(name) == default:
      out['model'].pop(name)
  out['optimizer'] = kept
  out['parallel']['num_devices'] = len(
      parallel_lib.select_devices(config.parallel.num_devices))
  out['format'] = IDENTITY_FORMAT
  return out


def _split_arg(text: str) -> tuple[pathlib.Path, str | None]:
  """``configs/x.py:arg`` -> (path, 'arg'); no colon -> (path, None)."""
  head, sep, tail = str(text).rpartition(':')
  if sep and head.endswith('.py'):
    return pathlib.Path(head), tail
  return pathlib.Path(text), None


def _run_file(path: pathlib.Path, arg: str | None) -> Any:
  folder = path.resolve().parent
  package = folder.name

  def forget():
    for name in list(sys.modules):
      if name == package or name.startswith(package + '.'):
        del sys.modules[name]

  forget()
  sys.path.insert(0, str(folder.parent))
  try:
    spec = importlib.util.spec_from_file_location(
        f'_lionx_config_{path.stem}', path)
    module = importlib.util.module_from_spec(spec)
    try:
      spec.loader.exec_module(module)
    except Exception as err:  # a broken config file: report it in one line
      raise ConfigError(
          f'--config {path}: {type(err).__name__}: {err}') from None
    if not hasattr(module, 'get_config'):
      raise ConfigError(f'--config {path}: the file defines no get_config().')
    try:
      return module.get_config() if arg is None else module.get_config(arg)
    except ConfigError as err:
      raise ConfigError(f'--config {path}: {err}') from None
    except Exception as err:
      raise ConfigError(
          f'--config {path}: get_config({"" if arg is None else repr(arg)}) '
          f'raised {type(err).__name__}: {err}') from None
  finally:
    sys.path.remove(str(folder.parent))
    forget()


def load_config(path: str | pathlib.Path,
                overrides: tuple[str, ...] = ()) -> Config:
  """Runs ``get_config()`` of the file at ``path`` and applies overrides.

  ``path`` may end in ``:arg``, passed to ``get_config(arg)``. The parent
  of the file's folder is put on ``sys.path`` while it loads, so
  ``configs/x.py`` can ``from configs import default``; modules imported
  from that folder are forgotten afterwards, so that configs from other
  folders with the same names load cleanly.

  Example:
    >>> from lionx.train.config import load_config
    >>> config = load_config('configs/default.py', ('num_epochs=3',))
    >>> config.num_epochs, config.data.name
    (3, 'digits')
  """
  path, arg = _split_arg(path)
  if not path.is_file():
    raise ConfigError(f'--config {path}: no such file; expected a Python '
                      'config file with get_config(), e.g. '
                      'configs/default.py.')
  config = _run_file(path, arg)
  if not isinstance(config, Config):
    raise ConfigError(
        f'--config {path}: get_config() returned {type(config).__name__}; '
        'expected lionx.train.config.Config.')
  for item in overrides:
    fields.override(config, item)
  return validate(config)


def batches_per_eval(config: Config, steps_per_epoch: int | None) -> int:
  """Steps between two evaluations (one epoch when eval_every_steps=0)."""
  if config.eval_every_steps:
    return config.eval_every_steps
  if steps_per_epoch is None:
    raise ConfigError(
        f'eval_every_steps=0 means once per epoch, but task={config.task!r} '
        'has no epochs here; set eval_every_steps.')
  return steps_per_epoch


def total_steps(config: Config, steps_per_epoch: int | None) -> int:
  """The length of the run in steps."""
  if config.num_steps:
    return config.num_steps
  if steps_per_epoch is None:
    raise ConfigError(
        f'num_epochs={config.num_epochs}: task={config.task!r} has no epochs '
        'here; set num_steps (and num_epochs=0).')
  return config.num_epochs * steps_per_epoch
