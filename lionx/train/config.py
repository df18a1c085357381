"""Training configs: typed dataclasses, config files and overrides.

A config file is a Python file with ``get_config()`` returning a
:class:`Config`. Files may import their siblings (``from configs import
default``), so an override file changes only a few fields of another one.
On the command line, ``key=value`` pairs (``optimizer.learning_rate=1e-3``,
``data.name=cifar10``, ``optimizer.learning_rates.sgd=0.1``) change single
fields; every value is checked against the field's type.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import json
import math
import pathlib
import sys
import typing
from typing import Any, Optional

# The learning-rate grid of the papers' CIFAR runs (REFERENCE §6).
PAPER_LR_GRID = (3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6, 1e-6)

# Fields that change how a run executes but not its result; they may differ
# between a run and its resumption.
RUNTIME_FIELDS = ('max_epochs_this_run', 'checkpoint_every_epochs',
                  'progress')


class ConfigError(ValueError):
  """A config value, file or override that cannot be used."""


@dataclasses.dataclass(slots=True)
class DataConfig:
  """Which data set, where it lives and how it is augmented."""

  name: str = 'digits'  # digits | cifar10 | cifar100 | synthetic | registered
  data_dir: str = ''  # CIFAR: the folder with the python archives
  augment: bool = False  # random crop (4 px padding) + horizontal flip
  # Synthetic data only (the shapes of the generated images).
  num_train: int = 256
  num_test: int = 128
  image_size: int = 8
  channels: int = 3
  num_classes: int = 10


@dataclasses.dataclass(slots=True)
class ModelConfig:
  """The network; ``None`` fields take the architecture's standard value."""

  name: str = 'cnn'  # cnn | mlp | resnet18 | resnet50 | vit | vit_s | vit_tiny
  width: Optional[int] = None  # base channels (ResNet 64, CNN 32, MLP 256)
  stem: str = 'cifar'  # ResNet: cifar (3x3 conv) | imagenet (7x7 + pool)
  batch_norm: bool = False  # cnn: BatchNorm after each convolution
  # ViT only.
  patch_size: Optional[int] = None
  image_size: Optional[int] = None  # resize inputs to this size first
  hidden_size: Optional[int] = None
  depth: Optional[int] = None
  num_heads: Optional[int] = None
  mlp_dim: Optional[int] = None


@dataclasses.dataclass(slots=True)
class OptimizerConfig:
  """The optimizer by name, and its hyperparameters.

  The learning rate of a run is ``learning_rate`` when it is set, else
  ``learning_rates[name]``: config files list one rate per optimizer, and
  ``optimizer.learning_rate=...`` on the command line sets it for all.
  """

  name: str = 'lion'
  learning_rate: Optional[float] = None
  learning_rates: dict[str, float] = dataclasses.field(default_factory=dict)
  # Non-empty: train once per rate and keep the best (see Config.lr_select).
  lr_grid: tuple[float, ...] = ()
  weight_decay: float = 0.1
  b1: Optional[float] = None  # None: the optimizer's default
  b2: Optional[float] = None
  momentum: float = 0.9  # sgd
  nesterov: bool = False  # sgd
  eps: float = 1e-8  # adamw
  # Storage of the first moment (Lion's m, AdamW's mu, SGD's trace):
  # None (the parameters' dtype), float32, bfloat16, or int8 (8-bit
  # blockwise, the Lion family only).
  mu_dtype: Optional[str] = None
  # Lion-K reshapers (lion_lp, lion_sparse_sign, ...).
  lp_p: float = 2.0
  sparse_threshold: float = 1e-4
  topk_fraction: float = 0.5
  huber_e: float = 1e-4
  tanh_beta: float = 1e4
  # distributed_lion: how the workers' signs are combined.
  aggregation: str = 'majority'  # majority | average


@dataclasses.dataclass(slots=True)
class ScheduleConfig:
  """The learning-rate schedule, in units of epochs."""

  name: str = 'cosine'  # constant | cosine | warmup_cosine
  warmup_epochs: int = 0
  final_fraction: float = 0.0  # cosine ends at final_fraction * lr


@dataclasses.dataclass(slots=True)
class ParallelConfig:
  """The devices a run uses (see :mod:`lionx.train.parallel`).

  The batch is sharded over a ``data`` mesh axis of ``num_devices``
  devices. ``mode='replicated'`` keeps a full copy of the parameters and
  optimizer state on every device; ``'fsdp'`` shards each of them along
  its largest axis divisible by the device count.
  """

  mode: str = 'replicated'  # replicated | fsdp
  # 0: every device (all hosts' after jax.distributed); the global batch
  # must divide by the device count.
  num_devices: int = 0


@dataclasses.dataclass(slots=True)
class Config:
  """One training run (or one comparison, or one learning-rate grid)."""

  seed: int = 0
  num_epochs: int = 30
  batch_size: int = 64
  eval_batch_size: int = 512
  # Logging epoch: 0 means the whole training set (exact f and its
  # gradient); N > 0 caps it at N batches of eval_batch_size.
  logging_max_batches: int = 0
  checkpoint_every_epochs: int = 5
  # Stop after this many epochs in this invocation (0: no limit); a later
  # invocation resumes. Used to simulate preemption.
  max_epochs_this_run: int = 0
  progress: bool = True
  lr_select: str = 'full_loss'  # grid winner: full_loss | test_accuracy
  compare_optimizers: tuple[str, ...] = ('lion', 'sgd', 'adamw')
  data: DataConfig = dataclasses.field(default_factory=DataConfig)
  model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
  optimizer: OptimizerConfig = dataclasses.field(
      default_factory=OptimizerConfig)
  schedule: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)
  parallel: ParallelConfig = dataclasses.field(default_factory=ParallelConfig)


LR_SELECT = ('full_loss', 'test_accuracy')
PARALLEL_MODES = ('replicated', 'fsdp')


def learning_rate(config: Config) -> float:
  """The run's learning rate (see :class:`OptimizerConfig`)."""
  opt = config.optimizer
  if opt.learning_rate is not None:
    return opt.learning_rate
  if opt.name not in opt.learning_rates:
    raise ConfigError(
        f'optimizer.learning_rate is not set and optimizer.learning_rates '
        f'{opt.learning_rates} has no entry for optimizer.name='
        f'{opt.name!r}; set one, e.g. optimizer.learning_rate=1e-3.')
  return opt.learning_rates[opt.name]


def copy(config: Config) -> Config:
  """A deep copy."""
  return from_dict(to_dict(config))


def to_dict(config: Any) -> dict[str, Any]:
  """The config as JSON-compatible nested dicts (tuples become lists)."""
  return json.loads(json.dumps(dataclasses.asdict(config)))


def identity(config: Config) -> dict[str, Any]:
  """The fields that decide a run's result (all but RUNTIME_FIELDS)."""
  out = to_dict(config)
  for name in RUNTIME_FIELDS:
    out.pop(name, None)
  return out


def from_dict(values: dict[str, Any], cls: type = Config) -> Any:
  """Builds ``cls`` from :func:`to_dict` output, checking every value."""
  hints = typing.get_type_hints(cls)
  names = {f.name for f in dataclasses.fields(cls)}
  unknown = set(values) - names
  if unknown:
    raise ConfigError(f'unknown config fields {sorted(unknown)}.')
  kwargs = {}
  for name, value in values.items():
    kind = hints[name]
    if dataclasses.is_dataclass(kind):
      kwargs[name] = from_dict(value, kind)
    else:
      kwargs[name] = _check_type(name, value, kind)
  return cls(**kwargs)


def _type_name(kind: Any) -> str:
  return getattr(kind, '__name__', None) or str(kind).replace('typing.', '')


def _check_type(path: str, value: Any, kind: Any) -> Any:
  """``value`` as ``kind`` (int widens to float), or ``ConfigError``."""
  origin, args = typing.get_origin(kind), typing.get_args(kind)
  if origin is typing.Union:  # Optional[X]
    if value is None:
      return None
    (inner,) = [a for a in args if a is not type(None)]
    return _check_type(path, value, inner)
  if origin is tuple:
    if not isinstance(value, (tuple, list)):
      value = (value,)
    return tuple(_check_type(f'{path}[{i}]', v, args[0])
                 for i, v in enumerate(value))
  if origin is dict:
    if not isinstance(value, dict):
      raise ConfigError(f'{path}={value!r}: expected a dict.')
    return {_check_type(f'{path} key', k, args[0]):
            _check_type(f'{path}.{k}', v, args[1]) for k, v in value.items()}
  if kind is float and isinstance(value, int) and not isinstance(value, bool):
    return float(value)
  if kind in (int, float) and isinstance(value, bool):
    raise ConfigError(f'{path}={value!r}: expected {_type_name(kind)}.')
  if not isinstance(value, kind):
    raise ConfigError(
        f'{path}={value!r}: expected {_type_name(kind)}, got '
        f'{type(value).__name__}.')
  return value


def _parse_value(text: str) -> Any:
  """A literal (number, bool, None, tuple, dict) or else the plain text."""
  lowered = text.strip().lower()
  if lowered in ('true', 'false'):
    return lowered == 'true'
  if lowered == 'none':
    return None
  if text.strip() == '':
    return ()
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    pass
  if ',' in text:
    return tuple(_parse_value(part) for part in text.split(','))
  return text


def apply_override(config: Config, item: str) -> None:
  """Applies one ``dotted.key=value`` override in place."""
  if '=' not in item:
    raise ConfigError(
        f'override {item!r}: expected key=value, e.g. '
        'optimizer.learning_rate=1e-3.')
  key, text = item.split('=', 1)
  parts = key.strip().split('.')
  obj: Any = config
  for i, part in enumerate(parts):
    path = '.'.join(parts[:i + 1])
    last = i == len(parts) - 1
    if isinstance(obj, dict):
      if not last:
        raise ConfigError(f'override {item!r}: {path} is not a group.')
      value = _parse_value(text)
      obj[part] = value  # checked by validate()
      return
    if not dataclasses.is_dataclass(obj) or part not in {
        f.name for f in dataclasses.fields(obj)}:
      raise ConfigError(
          f'override {item!r}: unknown config field {path!r}.')
    if last:
      kind = typing.get_type_hints(type(obj))[part]
      if dataclasses.is_dataclass(kind):
        raise ConfigError(
            f'override {item!r}: {path} is a group; set one of its fields.')
      setattr(obj, part, _check_type(path, _parse_value(text), kind))
    else:
      obj = getattr(obj, part)


def _positive(path: str, value: Any) -> None:
  if not (isinstance(value, (int, float)) and math.isfinite(value)
          and value > 0):
    raise ConfigError(f'{path}={value!r}: expected a positive number.')


def _non_negative(path: str, value: Any) -> None:
  if not (isinstance(value, (int, float)) and math.isfinite(value)
          and value >= 0):
    raise ConfigError(f'{path}={value!r}: expected a number >= 0.')


def _one_of(path: str, value: str, names: Any, hint: str = '') -> None:
  if value not in names:
    raise ConfigError(
        f'{path}={value!r} is not one of {tuple(sorted(names))}.{hint}')


def validate(config: Config) -> Config:
  """Checks types and values; returns the config or raises ConfigError."""
  # Late imports: the registries live next to their implementations.
  from lionx._src.distributed import AGGREGATIONS
  from lionx.train import data, models, optimizers, schedules
  if not isinstance(config, Config):
    raise ConfigError(
        f'get_config() returned {type(config).__name__}; expected '
        'lionx.train.config.Config.')
  config = from_dict(dataclasses.asdict(config))  # type check every field
  opt = config.optimizer
  _one_of('data.name', config.data.name, data.dataset_names(),
          ' ImageNet and other sets need a user-provided loader: see '
          'lionx.train.data.register_dataset.')
  _one_of('model.name', config.model.name, models.MODELS)
  _one_of('model.stem', config.model.stem, models.STEMS)
  _one_of('optimizer.name', opt.name, optimizers.OPTIMIZERS)
  for name in config.compare_optimizers:
    _one_of('compare_optimizers', name, optimizers.OPTIMIZERS)
  _one_of('schedule.name', config.schedule.name, schedules.SCHEDULES)
  _one_of('lr_select', config.lr_select, LR_SELECT)
  _one_of('optimizer.aggregation', opt.aggregation, AGGREGATIONS)
  if opt.mu_dtype is not None:
    _one_of('optimizer.mu_dtype', opt.mu_dtype, optimizers.MU_DTYPES)
  if opt.mu_dtype == 'int8' and opt.name not in optimizers.INT8_MOMENTUM:
    raise ConfigError(
        f"optimizer.mu_dtype='int8' with optimizer.name={opt.name!r}: "
        f'8-bit momentum is for the Lion family {optimizers.INT8_MOMENTUM}'
        '; use float32 or bfloat16.')
  _one_of('parallel.mode', config.parallel.mode, PARALLEL_MODES)
  if config.parallel.num_devices < 0:
    raise ConfigError(
        f'parallel.num_devices={config.parallel.num_devices}: expected a '
        'number of devices >= 1, or 0 for every device.')
  if opt.name == 'distributed_lion' and config.parallel.mode != 'replicated':
    raise ConfigError(
        f'optimizer.name={opt.name!r} with parallel.mode='
        f'{config.parallel.mode!r}: Distributed Lion keeps the parameters '
        'replicated and one momentum per device; use '
        "parallel.mode='replicated'.")
  if opt.learning_rate is not None:
    _positive('optimizer.learning_rate', opt.learning_rate)
  for name, value in opt.learning_rates.items():
    _one_of('optimizer.learning_rates key', name, optimizers.OPTIMIZERS)
    _positive(f'optimizer.learning_rates.{name}', value)
  for i, value in enumerate(opt.lr_grid):
    _positive(f'optimizer.lr_grid[{i}]', value)
  if not opt.lr_grid:
    learning_rate(config)  # raises if no rate is given for this optimizer
  _non_negative('optimizer.weight_decay', opt.weight_decay)
  for path in ('num_epochs', 'batch_size', 'eval_batch_size',
               'checkpoint_every_epochs'):
    _positive(path, getattr(config, path))
  for path in ('logging_max_batches', 'max_epochs_this_run'):
    _non_negative(path, getattr(config, path))
  _non_negative('schedule.warmup_epochs', config.schedule.warmup_epochs)
  if config.schedule.warmup_epochs >= config.num_epochs:
    raise ConfigError(
        f'schedule.warmup_epochs={config.schedule.warmup_epochs} must be '
        f'smaller than num_epochs={config.num_epochs}.')
  for path in ('data.num_train', 'data.num_test', 'data.image_size',
               'data.channels', 'data.num_classes'):
    _positive(path, getattr(config.data, path.split('.')[1]))
  for field in dataclasses.fields(config.model):
    value = getattr(config.model, field.name)
    if isinstance(value, int) and not isinstance(value, bool):
      _positive(f'model.{field.name}', value)
  return config


def load_config(path: str | pathlib.Path,
                overrides: tuple[str, ...] = ()) -> Config:
  """Runs ``get_config()`` of the file at ``path`` and applies overrides.

  The parent of the file's folder is put on ``sys.path`` while it loads,
  so ``configs/x.py`` can ``from configs import default``. Modules imported
  from that folder are forgotten afterwards, so that configs from other
  folders with the same names load cleanly.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise ConfigError(f'--config {path}: no such file; expected a Python '
                      'config file with get_config(), e.g. '
                      'configs/default.py.')
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
      config = module.get_config()
    except Exception as err:
      raise ConfigError(
          f'--config {path}: get_config() raised {type(err).__name__}: '
          f'{err}') from None
  finally:
    sys.path.remove(str(folder.parent))
    forget()
  if not isinstance(config, Config):
    raise ConfigError(
        f'--config {path}: get_config() returned {type(config).__name__}; '
        'expected lionx.train.config.Config.')
  for item in overrides:
    apply_override(config, item)
  return validate(config)
