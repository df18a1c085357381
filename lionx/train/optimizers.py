r"""Optimizers by name: one registry row each, so one config runs them all.

=====================  ====================================================
name                   transform
=====================  ====================================================
``lion``               :func:`lionx.lion` (decoupled weight decay
                       :math:`\eta\lambda\theta`)
``lion_<reshaper>``    :func:`lionx.lion_k` with ``lionx.RESHAPERS
                       [<reshaper>]``: ``lion_lp``, ``lion_sparse_sign``,
                       ``lion_topk_sign``, ``lion_huber``, ``lion_tanh``
``lion_spectral``      :func:`lionx.lion_k` with
                       :func:`lionx.spectral_reshaper` (Muon as Lion-K)
``lion_cwd``           :func:`lionx.lion` with cautious weight decay (no
                       box: its constraint column is NaN)
``cautious_lion``      :func:`lionx.cautious_lion`
``sgd``                ``optax.add_decayed_weights(λ)`` then ``optax.sgd``
                       (PyTorch's ``SGD(weight_decay=λ)``; momentum 0
                       gives plain SGD)
``adamw``              ``optax.adamw`` (decoupled weight decay)
``muon``               ``optax.contrib.muon`` (no sign direction: its sign
                       agreement is NaN)
``distributed_lion``   :func:`lionx.distributed_lion`: one momentum per
                       device, sign votes (the harness runs its step in
                       ``jax.shard_map``)
=====================  ====================================================

``optimizer.decay='matrices'`` decays only kernels and embeddings
(:func:`matrices`; biases, norms' scales and positional tables keep their
values), in every row; ``optimizer.clip_norm`` clips the gradient to that
global norm first (:func:`clip_by_global_norm`, which records the pre-clip
norm and the clipped steps for the metrics).

``optimizer.compensation`` (``none``, ``int8`` or ``int16``) wraps the
run's optimizer in :func:`lionx.compensated`, which keeps a rounding
residual of that dtype for each bfloat16 / float16 parameter
(``model.param_dtype``), so that Lion's small steps are not lost to the
parameters' rounding; float32 parameters pass through it.

A row (:class:`OptimizerSpec`) holds everything about one optimizer: its
factory, the dataclass of its own hyperparameters (``optimizer.<name>.*``,
e.g. ``optimizer.lion_lp.p=1.5``), its default betas, whether it keeps
state per device, whether it takes 8-bit momentum and the weight-decay
conventions (``optimizer.weight_decay_convention``: ``paper``,
``independent`` or ``corrected``; see :func:`lionx.effective_weight_decay`),
how to read its direction and which Lion-K reshaper (if any) defines its
constraint. A new optimizer is one call to :func:`register`.

The ``optimizer`` config section (:class:`OptimizerConfig`) lives here.
The learning rate of a run is ``learning_rate`` when it is set, else
``learning_rates[name]``; its weight decay is ``weight_decays[name]`` when
there is one, else ``weight_decay``.

The *direction* is what the sign-agreement diagnostic compares with
:math:`\nabla f`: the first moment combined with a gradient :math:`g` as the
next step would combine it, :math:`c = \beta_1 m + (1-\beta_1) g` for Lion
and Adam (whose step has the sign of :math:`c`), :math:`c = \mu v + g` for
SGD with momentum (:math:`c = g` without), and for Distributed Lion the
mean of the workers' votes :math:`\frac1N\sum_i \operatorname{sign}(\beta_1
m_i + (1-\beta_1) g)`, whose sign is the majority vote.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

import lionx
from lionx.train import fields
from lionx.train import registry
from lionx.train import schedules

if TYPE_CHECKING:  # config.py imports this module: the type only
  from lionx.train.config import Config

PyTree = Any
Schedule = Callable[[Any], Any]

MU_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16,
             'int8': jnp.int8}
CONVENTIONS = ('paper', 'independent', 'corrected')
# optimizer.compensation -> the residual dtype of lionx.compensated.
COMPENSATIONS = {'none': None, 'int8': jnp.int8, 'int16': jnp.int16}
# Positional tables: not decayed under optimizer.decay='matrices'.
POSITIONAL = ('wpe', 'pos_embed')


def _key(entry: Any) -> str:
  return str(getattr(entry, 'key', getattr(entry, 'idx', entry)))


def matrices(params: PyTree) -> PyTree:
  """``optimizer.decay='matrices'``: True for kernels and embeddings, False
  for biases, norms' scales and positional tables (``wpe``, ``pos_embed``),
  as nanoGPT and big_vision decay.

  Example:
    >>> import jax.numpy as jnp
    >>> matrices({'fc': {'kernel': jnp.ones((2, 2)), 'bias': jnp.ones(2)},
    ...           'wpe': {'embedding': jnp.ones((4, 2))}})
    {'fc': {'bias': False, 'kernel': True}, 'wpe': {'embedding': False}}
  """
  def decayed(path: tuple[Any, ...], leaf: Any) -> bool:
    del leaf
    keys = [_key(k) for k in path]
    names = [k for k in keys if k not in ('value', 'raw_value')]
    return names[-1] == 'kernel' or (
        names[-1] == 'embedding' and not set(names) & set(POSITIONAL))
  return jax.tree_util.tree_map_with_path(decayed, params)


# optimizer.decay -> the mask of the decayed leaves (None: all of them).
DECAY = {'all': None, 'matrices': matrices}


class ClipState(NamedTuple):
  """:func:`clip_by_global_norm`'s record of the gradients it saw."""

  norm: jax.Array  # the last gradient's global l2 norm, before clipping
  clipped: jax.Array  # how many steps were clipped
  count: jax.Array  # how many steps it saw


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformation:
  r"""``optax.clip_by_global_norm`` that records the pre-clip norm and the
  clipped steps in its state (for the metrics), with the same update:
  :math:`g \leftarrow g \min(1, c / \|g\|_2)`.

  Example:
    >>> import jax.numpy as jnp
    >>> tx = clip_by_global_norm(1.0)
    >>> g, state = tx.update(jnp.array([3.0, 4.0]), tx.init(jnp.zeros(2)))
    >>> g, float(state.norm), int(state.clipped)
    (Array([0.6, 0.8], dtype=float32), 5.0, 1)
  """
  fields.positive('optimizer.clip_norm', max_norm)

  def init_fn(params: PyTree) -> ClipState:
    del params
    zero = jnp.zeros([], jnp.int32)
    return ClipState(jnp.zeros([], jnp.float32), zero, zero)

  def update_fn(updates, state, params=None):
    del params
    norm = optax.tree.norm(updates)
    keep = norm < max_norm
    updates = jax.tree.map(  # optax.clip_by_global_norm's arithmetic
        lambda g: jnp.where(keep, g, (g / norm.astype(g.dtype)) * max_norm),
        updates)
    return updates, ClipState(norm.astype(jnp.float32),
                              state.clipped + (~keep).astype(jnp.int32),
                              state.count + 1)

  return optax.GradientTransformation(init_fn, update_fn)


class Settings(NamedTuple):
  """One run's resolved optimizer hyperparameters (:func:`resolve`)."""

  name: str
  learning_rate: float  # the peak rate: the schedule's scale
  weight_decay: float
  b1: Optional[float]  # None for optimizers without betas
  b2: Optional[float]
  mu_dtype: Optional[jnp.dtype]
  hparams: Any  # the row's hyperparameter dataclass, or None
  convention: str  # weight_decay_convention (rows that take it)
  mask: Optional[Callable[[PyTree], PyTree]] = None  # the decayed leaves
  clip_norm: float = 0.0  # > 0: clip_by_global_norm before the optimizer


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
  """One registry row: how to build an optimizer and read its state.

  ``build(settings, schedule)`` returns the transform; ``direction(settings,
  opt_state, grads)`` its direction (module doc), or the field is None.
  """

  build: Callable[[Settings, Schedule], optax.GradientTransformation]
  # None: the optimizer has no sign-like direction (no sign agreement).
  direction: Optional[Callable[[Settings, PyTree, PyTree], PyTree]]
  hparams: Optional[type] = None  # dataclass of optimizer.<name>.*
  betas: Optional[tuple[float, float]] = None  # default (b1, b2)
  reshaper: Callable[[Settings], Optional[lionx.Reshaper]] = (
      lambda s: None)
  per_device: bool = False  # steps in shard_map on local gradients
  int8_momentum: bool = False  # takes optimizer.mu_dtype='int8'
  conventions: bool = False  # takes optimizer.weight_decay_convention
  # Whether its weight decay implies the box (or the reshaper's set); False
  # for cautious weight decay, which has no constraint.
  box: bool = True
  # Whether it takes optimizer.decay='matrices' (a mask of decayed leaves).
  masks: bool = True


OPTIMIZERS: registry.Registry = registry.Registry(
    'optimizer.name', ' A new optimizer is one call to '
    'lionx.train.optimizers.register.')


def register(name: str, spec: OptimizerSpec) -> None:
  """Makes ``optimizer.name=name`` build ``spec``.

  Register before the config is created (e.g. at the top of a config
  file), so that the config gets the row's ``optimizer.<name>`` section.
  """
  if not isinstance(name, str) or not name.isidentifier():
    raise ValueError(f'name={name!r}: expected an identifier.')
  if not isinstance(spec, OptimizerSpec):
    raise TypeError(f'spec={spec!r}: expected an OptimizerSpec.')
  OPTIMIZERS.register(name, spec)


def _default_hparams() -> dict[str, Any]:
  return {name: spec.hparams() for name, spec in OPTIMIZERS.items()
          if spec.hparams is not None}


@dataclasses.dataclass(slots=True)
class OptimizerConfig:
  """The optimizer by name and its hyperparameters (``optimizer.*``)."""

  name: str = 'lion'
  learning_rate: Optional[float] = None  # set: the rate of every optimizer
  learning_rates: dict[str, float] = dataclasses.field(default_factory=dict)
  weight_decay: float = 0.1  # unless weight_decays has the optimizer
  weight_decays: dict[str, float] = dataclasses.field(default_factory=dict)
  # paper | independent | corrected (lionx.effective_weight_decay); the
  # Lion family only.
  weight_decay_convention: str = 'paper'
  b1: Optional[float] = None  # None: the optimizer's default
  b2: Optional[float] = None
  # Storage of the first moment (Lion's m, AdamW's mu, SGD's trace):
  # None (the parameters' dtype), float32, bfloat16, or int8 (8-bit
  # blockwise, the optimizers whose row says int8_momentum).
  mu_dtype: Optional[str] = None
  # none | int8 | int16: lionx.compensated with that rounding residual for
  # low-precision parameters (model.param_dtype bfloat16 or float16).
  compensation: str = 'none'
  # Non-empty: train once per rate and keep the best (lionx.train.sweep).
  lr_grid: tuple[float, ...] = ()
  # The leaves weight decay applies to: all | matrices (kernels and
  # embeddings; not biases, norms' scales or positional tables).
  decay: str = 'all'
  # > 0: clip the gradient to this global l2 norm before the optimizer.
  clip_norm: float = 0.0
  # optimizer.<name>.*: each registered optimizer's own hyperparameters.
  hparams: dict[str, Any] = fields.dynamic(default_factory=_default_hparams)

  def __getattr__(self, name: str) -> Any:
    try:
      return object.__getattribute__(self, 'hparams')[name]
    except KeyError:
      raise AttributeError(
          f'OptimizerConfig has no field or optimizer section {name!r}.'
      ) from None


def spec(name: str) -> OptimizerSpec:
  """The registry row of ``name``."""
  return OPTIMIZERS[name]


def learning_rate(config: OptimizerConfig) -> float:
  """The run's peak learning rate (see the module doc)."""
  if config.learning_rate is not None:
    return config.learning_rate
  if config.name not in config.learning_rates:
    raise fields.ConfigError(
        f'optimizer.learning_rate is not set and optimizer.learning_rates '
        f'{config.learning_rates} has no entry for optimizer.name='
        f'{config.name!r}; set one, e.g. optimizer.learning_rate=1e-3.')
  return config.learning_rates[config.name]


def weight_decay(config: OptimizerConfig) -> float:
  """The run's weight decay (see the module doc)."""
  return config.weight_decays.get(config.name, config.weight_decay)


def validate(config: OptimizerConfig, *, need_rate: bool = True) -> None:
  """Checks names and ranges of an :class:`OptimizerConfig`."""
  row = spec(config.name)
  for table in ('learning_rates', 'weight_decays'):
    for name, value in getattr(config, table).items():
      fields.one_of(f'optimizer.{table} key', name, OPTIMIZERS)
      check = fields.positive if table == 'learning_rates' else (
          fields.non_negative)
      check(f'optimizer.{table}.{name}', value)
  if config.learning_rate is not None:
    fields.positive('optimizer.learning_rate', config.learning_rate)
  for i, value in enumerate(config.lr_grid):
    fields.positive(f'optimizer.lr_grid[{i}]', value)
  if need_rate and not config.lr_grid:
    learning_rate(config)  # raises if no rate is given for this optimizer
  fields.non_negative('optimizer.weight_decay', config.weight_decay)
  for beta in ('b1', 'b2'):
    value = getattr(config, beta)
    if value is not None:
      fields.fraction(f'optimizer.{beta}', value)
  fields.one_of('optimizer.weight_decay_convention',
                config.weight_decay_convention, CONVENTIONS)
  if config.weight_decay_convention != 'paper' and not row.conventions:
    takes = tuple(n for n, s in OPTIMIZERS.items() if s.conventions)
    raise fields.ConfigError(
        f'optimizer.weight_decay_convention='
        f'{config.weight_decay_convention!r} with optimizer.name='
        f'{config.name!r}: the conventions are for {takes}.')
  if config.mu_dtype is not None:
    fields.one_of('optimizer.mu_dtype', config.mu_dtype, MU_DTYPES)
  if config.mu_dtype == 'int8' and not row.int8_momentum:
    takes = tuple(n for n, s in OPTIMIZERS.items() if s.int8_momentum)
    raise fields.ConfigError(
        f"optimizer.mu_dtype='int8' with optimizer.name={config.name!r}: "
        f'8-bit momentum is for the Lion family {takes}; use float32 or '
        'bfloat16.')
  fields.one_of('optimizer.compensation', config.compensation,
                COMPENSATIONS)
  fields.one_of('optimizer.decay', config.decay, DECAY)
  if config.decay != 'all' and not row.masks:
    raise fields.ConfigError(
        f'optimizer.decay={config.decay!r} with optimizer.name='
        f'{config.name!r}: its transform decays some leaves it does not '
        "let a mask choose; use optimizer.decay='all'.")
  fields.non_negative('optimizer.clip_norm', config.clip_norm)
  if config.compensation != 'none' and row.per_device:
    raise fields.ConfigError(
        f'optimizer.compensation={config.compensation!r} with '
        f'optimizer.name={config.name!r}: a per-device optimizer keeps its '
        "own state layout; use optimizer.compensation='none'.")
  for name, section in config.hparams.items():
    check = getattr(section, 'validate', None)
    if callable(check):
      check(f'optimizer.{name}')


def resolve(config: OptimizerConfig) -> Settings:
  """The resolved :class:`Settings` of ``config`` (rates, betas, dtypes)."""
  row = spec(config.name)
  b1 = b2 = None
  if row.betas is not None:
    b1 = row.betas[0] if config.b1 is None else config.b1
    b2 = row.betas[1] if config.b2 is None else config.b2
  mu_dtype = None if config.mu_dtype is None else MU_DTYPES[config.mu_dtype]
  return Settings(config.name, learning_rate(config), weight_decay(config),
                  b1, b2, mu_dtype, config.hparams.get(config.name),
                  config.weight_decay_convention, DECAY[config.decay],
                  config.clip_norm)


def _decay(s: Settings) -> dict[str, Any]:
  """The weight-decay keywords of the Lion family's factories."""
  out = {'weight_decay': s.weight_decay,
         'weight_decay_convention': s.convention}
  if s.convention != 'paper':
    out['peak_learning_rate'] = s.learning_rate
  return out


class Optimizer(NamedTuple):
  """A built optimizer (:func:`make_optimizer`): the transform, the
  learning-rate schedule it steps with and the settings both came from."""

  tx: optax.GradientTransformation
  schedule: Schedule  # step -> learning rate
  settings: Settings

  @property
  def row(self) -> OptimizerSpec:
    return spec(self.settings.name)

  @property
  def clips(self) -> bool:
    """Whether the gradient is clipped first (its state has a ClipState)."""
    return self.settings.clip_norm > 0

  def direction(self, opt_state: PyTree, grads: PyTree) -> Optional[PyTree]:
    """The optimizer's direction for the gradient ``grads`` (module doc),
    or None for an optimizer without one."""
    if self.row.direction is None:
      return None
    return self.row.direction(self.settings, opt_state, grads)

  def reshaper(self) -> Optional[lionx.Reshaper]:
    """The Lion-K reshaper of the optimizer, or ``None`` (not Lion-K)."""
    return self.row.reshaper(self.settings)

  def box_weight_decay(self, step: Any) -> jax.Array:
    """The λ' of the box λ'‖θ‖∞ ≤ 1 after ``step`` updates: the weight
    decay under its convention (:func:`lionx.effective_weight_decay`).
    """
    s = self.settings
    if not self.row.conventions:
      return jnp.asarray(s.weight_decay, jnp.float32)
    return lionx.effective_weight_decay(
        count=step, learning_rate=self.schedule, **_decay(s))


def make_optimizer(config: Config, total_steps: int,
                   steps_per_epoch: Optional[int] = None) -> Optimizer:
  """The optimizer of a run of ``total_steps`` steps: its one owner.

  Reads ``config.optimizer`` (the name, the peak rate, the weight decay,
  the betas) and ``config.schedule`` (the warm-up in epochs needs
  ``steps_per_epoch``), builds the schedule and the registry row's
  transform (weight decay on the leaves of ``config.optimizer.decay``),
  after :func:`clip_by_global_norm` when ``config.optimizer.clip_norm`` is
  positive, wrapped in :func:`lionx.compensated` when
  ``config.optimizer.compensation`` is not ``none``.

  Example:
    >>> from lionx.train.config import Config
    >>> from lionx.train.optimizers import make_optimizer
    >>> import jax.numpy as jnp
    >>> config = Config()
    >>> config.optimizer.learning_rate = 0.1
    >>> config.optimizer.weight_decay = 0.0
    >>> config.schedule.name = 'constant'
    >>> opt = make_optimizer(config, total_steps=10)
    >>> params = jnp.array([1.0, -1.0])
    >>> updates, _ = opt.tx.update(jnp.array([2.0, -3.0]),
    ...                            opt.tx.init(params), params)
    >>> updates
    Array([-0.1,  0.1], dtype=float32)
  """
  settings = resolve(config.optimizer)
  s = config.schedule
  schedule = schedules.make_schedule(
      s.name, settings.learning_rate, total_steps=total_steps,
      warmup_steps=schedules.warmup_steps(s, steps_per_epoch),
      final_fraction=s.final_fraction)
  tx = spec(settings.name).build(settings, schedule)
  if settings.clip_norm:
    tx = optax.chain(clip_by_global_norm(settings.clip_norm), tx)
  residual = COMPENSATIONS[config.optimizer.compensation]
  if residual is not None:
    tx = lionx.compensated(tx, residual_dtype=residual)
  return Optimizer(tx, schedule, settings)


# --- reading states -----------------------------------------------------------


def find(state: PyTree, cls: Any) -> Any:
  """The single ``cls`` node (a class or tuple of them) in a state."""
  nodes = [x for x in jax.tree.leaves(
      state, is_leaf=lambda x: isinstance(x, cls)) if isinstance(x, cls)]
  if len(nodes) != 1:
    names = getattr(cls, '__name__', None) or ' or '.join(
        c.__name__ for c in cls)
    raise ValueError(
        f'expected one {names} in the optimizer state, found '
        f'{len(nodes)}.')
  return nodes[0]


def _interpolate(b1: float, mu: PyTree, grads: PyTree) -> PyTree:
  return jax.tree.map(lambda m, g: b1 * m + (1.0 - b1) * g, mu, grads)


def lion_momentum(state: PyTree, grads: PyTree) -> PyTree:
  """Lion's momentum, float or dequantized from 8 bits."""
  node = find(state, (lionx.ScaleByLionState, lionx.ScaleByLion8bitState))
  if isinstance(node, lionx.ScaleByLionState):
    return node.mu
  return jax.tree.map(
      lambda g, k, s: lionx.quantized.dequantize(
          lionx.quantized.QuantizedArray(k, s), g.shape),
      grads, node.codes, node.scales)


def lion_direction(s: Settings, state: PyTree, grads: PyTree) -> PyTree:
  return _interpolate(s.b1, lion_momentum(state, grads), grads)


def _sign(s: Settings) -> lionx.Reshaper:
  del s
  return lionx.sign_reshaper()


# --- the rows -----------------------------------------------------------------


def _lion(s: Settings, schedule: Schedule) -> optax.GradientTransformation:
  return lionx.lion(schedule, b1=s.b1, b2=s.b2, mu_dtype=s.mu_dtype,
                    **_decay(s), mask=s.mask)


def _cautious_lion(s: Settings,
                   schedule: Schedule) -> optax.GradientTransformation:
  return lionx.cautious_lion(schedule, b1=s.b1, b2=s.b2,
                             mu_dtype=s.mu_dtype, **_decay(s), mask=s.mask)


@dataclasses.dataclass(slots=True)
class LpHparams:
  """``optimizer.lion_lp.*``: :func:`lionx.lp_reshaper`."""

  p: float = 2.0
  scope: str = 'global'  # global | leaf

  def validate(self, path: str) -> None:
    if not self.p >= 1:
      raise fields.ConfigError(f'{path}.p={self.p!r}: expected p >= 1.')
    fields.one_of(f'{path}.scope', self.scope, ('global', 'leaf'))


@dataclasses.dataclass(slots=True)
class SparseSignHparams:
  """``optimizer.lion_sparse_sign.*``: the dead zone of the sign."""

  threshold: float = 1e-4

  def validate(self, path: str) -> None:
    fields.positive(f'{path}.threshold', self.threshold)


@dataclasses.dataclass(slots=True)
class TopkSignHparams:
  """``optimizer.lion_topk_sign.*``: the share of coordinates that move."""

  fraction: float = 0.5
  scope: str = 'leaf'  # leaf | global

  def validate(self, path: str) -> None:
    fields.positive(f'{path}.fraction', self.fraction)
    fields.fraction(f'{path}.fraction', self.fraction)
    fields.one_of(f'{path}.scope', self.scope, ('global', 'leaf'))


@dataclasses.dataclass(slots=True)
class HuberHparams:
  """``optimizer.lion_huber.*``: the width of the linear zone."""

  e: float = 1e-4

  def validate(self, path: str) -> None:
    fields.positive(f'{path}.e', self.e)


@dataclasses.dataclass(slots=True)
class TanhHparams:
  """``optimizer.lion_tanh.*``: the sharpness of the smooth sign."""

  beta: float = 1e4

  def validate(self, path: str) -> None:
    fields.positive(f'{path}.beta', self.beta)


@dataclasses.dataclass(slots=True)
class SpectralHparams:
  """``optimizer.lion_spectral.*``: :func:`lionx.spectral_reshaper`."""

  method: str = 'polar_express'  # polar_express | quintic
  steps: Optional[int] = None  # None: 9 (polar_express, >= 9) or 5 (quintic)

  def validate(self, path: str) -> None:
    fields.one_of(f'{path}.method', self.method,
                  ('polar_express', 'quintic'))
    if self.steps is not None:
      fields.positive(f'{path}.steps', self.steps)
      if self.method == 'polar_express' and self.steps < 9:
        raise fields.ConfigError(
            f"{path}.steps={self.steps} with {path}.method='polar_express': "
            "expected at least 9 (its 8 quintics and one Newton-Schulz "
            "polish), or method='quintic' for Muon's approximation.")


def _lion_k(make: Callable[[Any], lionx.Reshaper], hparams: type
            ) -> OptimizerSpec:
  def reshaper(s: Settings) -> lionx.Reshaper:
    return make(s.hparams)

  def build(s: Settings, schedule: Schedule) -> optax.GradientTransformation:
    return lionx.lion_k(schedule, reshaper(s), b1=s.b1, b2=s.b2,
                        mu_dtype=s.mu_dtype, **_decay(s), mask=s.mask)
  return OptimizerSpec(build, lion_direction, hparams, (0.9, 0.99),
                       reshaper, int8_momentum=True, conventions=True)


@dataclasses.dataclass(slots=True)
class SgdHparams:
  """``optimizer.sgd.*``: heavy-ball momentum (0: plain SGD)."""

  momentum: float = 0.9
  nesterov: bool = False

  def validate(self, path: str) -> None:
    fields.fraction(f'{path}.momentum', self.momentum)


def _sgd(s: Settings, schedule: Schedule) -> optax.GradientTransformation:
  momentum = s.hparams.momentum or None
  return optax.chain(
      optax.add_decayed_weights(s.weight_decay, s.mask),
      optax.sgd(schedule, momentum=momentum, nesterov=s.hparams.nesterov,
                accumulator_dtype=s.mu_dtype))


def _sgd_direction(s: Settings, state: PyTree, grads: PyTree) -> PyTree:
  mu = s.hparams.momentum
  if not mu:
    return grads
  trace = find(state, optax.TraceState).trace
  c = jax.tree.map(lambda v, g: mu * v + g, trace, grads)
  if s.hparams.nesterov:
    c = jax.tree.map(lambda c, g: mu * c + g, c, grads)
  return c


@dataclasses.dataclass(slots=True)
class AdamwHparams:
  """``optimizer.adamw.*``."""

  eps: float = 1e-8

  def validate(self, path: str) -> None:
    fields.positive(f'{path}.eps', self.eps)


def _adamw(s: Settings, schedule: Schedule) -> optax.GradientTransformation:
  return optax.adamw(schedule, b1=s.b1, b2=s.b2, eps=s.hparams.eps,
                     weight_decay=s.weight_decay, mu_dtype=s.mu_dtype,
                     mask=s.mask)


def _adam_direction(s: Settings, state: PyTree, grads: PyTree) -> PyTree:
  return _interpolate(s.b1, find(state, optax.ScaleByAdamState).mu, grads)


@dataclasses.dataclass(slots=True)
class DistributedLionHparams:
  """``optimizer.distributed_lion.*``: how the workers' signs combine."""

  aggregation: str = 'majority'  # majority | average

  def validate(self, path: str) -> None:
    fields.one_of(f'{path}.aggregation', self.aggregation,
                  ('majority', 'average'))


def _distributed_lion(s: Settings,
                      schedule: Schedule) -> optax.GradientTransformation:
  return lionx.distributed_lion(
      schedule, b1=s.b1, b2=s.b2, mu_dtype=s.mu_dtype,
      aggregation=s.hparams.aggregation, **_decay(s), mask=s.mask)


def _distributed_direction(s: Settings, state: PyTree,
                           grads: PyTree) -> PyTree:
  mu = find(state, lionx.DistributedLionState).mu  # (workers, *shape)
  return jax.tree.map(
      lambda m, g: jnp.mean(jnp.sign(s.b1 * m + (1.0 - s.b1) * g[None]), 0),
      mu, grads)


register('lion', OptimizerSpec(_lion, lion_direction, None, (0.9, 0.99),
                               _sign, int8_momentum=True, conventions=True))
register('lion_lp', _lion_k(
    lambda h: lionx.lp_reshaper(h.p, h.scope), LpHparams))
register('lion_sparse_sign', _lion_k(
    lambda h: lionx.sparse_sign_reshaper(h.threshold), SparseSignHparams))
register('lion_topk_sign', _lion_k(
    lambda h: lionx.topk_sign_reshaper(fraction=h.fraction, scope=h.scope),
    TopkSignHparams))
register('lion_huber', _lion_k(
    lambda h: lionx.huber_reshaper(h.e), HuberHparams))
register('lion_tanh', _lion_k(
    lambda h: lionx.tanh_reshaper(h.beta), TanhHparams))
register('lion_spectral', _lion_k(
    lambda h: lionx.spectral_reshaper(h.method, h.steps), SpectralHparams))


def _lion_cwd(s: Settings, schedule: Schedule) -> optax.GradientTransformation:
  return lionx.lion(schedule, b1=s.b1, b2=s.b2, mu_dtype=s.mu_dtype,
                    cautious_weight_decay=True, **_decay(s), mask=s.mask)


register('lion_cwd', OptimizerSpec(
    _lion_cwd, lion_direction, None, (0.9, 0.99), _sign,
    int8_momentum=True, conventions=True, box=False))
register('cautious_lion', OptimizerSpec(
    _cautious_lion, lion_direction, None, (0.95, 0.98), _sign,
    int8_momentum=True, conventions=True))
register('sgd', OptimizerSpec(_sgd, _sgd_direction, SgdHparams))
register('adamw', OptimizerSpec(_adamw, _adam_direction, AdamwHparams,
                                (0.9, 0.999)))
@dataclasses.dataclass(slots=True)
class MuonHparams:
  """``optimizer.muon.*``: ``optax.contrib.muon`` (matrices by Newton-Schulz,
  the other leaves by AdamW; both decay with the run's weight decay)."""

  beta: float = 0.95
  ns_steps: int = 5

  def validate(self, path: str) -> None:
    fields.fraction(f'{path}.beta', self.beta)
    fields.positive(f'{path}.ns_steps', self.ns_steps)


def _muon(s: Settings, schedule: Schedule) -> optax.GradientTransformation:
  return optax.contrib.muon(
      schedule, ns_steps=s.hparams.ns_steps, beta=s.hparams.beta,
      weight_decay=s.weight_decay, adam_weight_decay=s.weight_decay,
      mu_dtype=s.mu_dtype)


# optax.contrib.muon's AdamW part (every leaf that is not a matrix) decays
# all its leaves: no mask.
register('muon', OptimizerSpec(_muon, None, MuonHparams, masks=False))
register('distributed_lion', OptimizerSpec(
    _distributed_lion, _distributed_direction, DistributedLionHparams,
    (0.9, 0.99), _sign, per_device=True, conventions=True))
