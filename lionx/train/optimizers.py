r"""Optimizers by name, so that one config runs Lion, SGD or AdamW.

=====================  ====================================================
name                   transform
=====================  ====================================================
``lion``               :func:`lionx.lion` (decoupled weight decay
                       :math:`\eta\lambda\theta`)
``lion_<reshaper>``    :func:`lionx.lion_k` with ``lionx.RESHAPERS
                       [<reshaper>]``: ``lion_lp``, ``lion_sparse_sign``,
                       ``lion_topk_sign``, ``lion_huber``, ``lion_tanh``
``cautious_lion``      :func:`lionx.cautious_lion`
``sgd``                ``optax.add_decayed_weights(λ)`` then ``optax.sgd``
                       (PyTorch's ``SGD(weight_decay=λ)``; momentum 0
                       gives plain SGD)
``adamw``              ``optax.adamw`` (decoupled weight decay)
``distributed_lion``   :func:`lionx.distributed_lion` with
                       ``optimizer.aggregation`` (``majority`` or
                       ``average``): one momentum per device, sign votes
                       (the harness runs its step in ``jax.shard_map``)
=====================  ====================================================

``optimizer.mu_dtype`` sets the storage of the first moment: Lion's
:math:`m` (``int8`` gives :func:`lionx.scale_by_lion_8bit`, for the
optimizers in :data:`INT8_MOMENTUM`), AdamW's ``mu_dtype`` and SGD's
``accumulator_dtype``.

Each entry also says how to read the optimizer's *direction* from its
state, for the sign-agreement diagnostic of the logging epoch: the first
moment combined with a gradient :math:`g` as the next step would combine
it, :math:`c = \beta_1 m + (1-\beta_1) g` for Lion and Adam (whose step has
the sign of :math:`c`), :math:`c = \mu v + g` for SGD with momentum (and
:math:`c = g` without). For Distributed Lion it is the mean of the
workers' votes :math:`\frac1N\sum_i \operatorname{sign}(\beta_1 m_i +
(1-\beta_1) g)`, whose sign is the majority vote (and which is the
``average`` step itself).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

import lionx
from lionx._src.transforms import interpolate
from lionx.train.config import OptimizerConfig

PyTree = Any
Schedule = Callable[[Any], Any]

# Keyword arguments of each Lion-K reshaper, from the config.
_RESHAPER_ARGS: dict[str, Callable[[OptimizerConfig], dict[str, Any]]] = {
    'sign': lambda c: {},
    'lp': lambda c: {'p': c.lp_p},
    'sparse_sign': lambda c: {'threshold': c.sparse_threshold},
    'topk_sign': lambda c: {'fraction': c.topk_fraction},
    'huber': lambda c: {'e': c.huber_e},
    'tanh': lambda c: {'beta': c.tanh_beta},
}

MU_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16,
             'int8': jnp.int8}

_DEFAULT_BETAS = {'lion': (0.9, 0.99), 'cautious_lion': (0.95, 0.98),
                  'adamw': (0.9, 0.999)}


class OptimizerSpec(NamedTuple):
  """How to build an optimizer and read its direction."""

  build: Callable[[OptimizerConfig, Schedule], optax.GradientTransformation]
  direction: Callable[[OptimizerConfig, PyTree, PyTree], PyTree]
  reshaper: Callable[[OptimizerConfig], Optional[lionx.Reshaper]]


def betas(config: OptimizerConfig, family: str) -> tuple[float, float]:
  """``(b1, b2)``: the config's, or the family's defaults."""
  b1, b2 = _DEFAULT_BETAS[family]
  return (b1 if config.b1 is None else config.b1,
          b2 if config.b2 is None else config.b2)


def mu_dtype(config: OptimizerConfig) -> Optional[jnp.dtype]:
  """The jnp dtype of ``config.mu_dtype`` (``None`` stays ``None``)."""
  return None if config.mu_dtype is None else MU_DTYPES[config.mu_dtype]


def _find(state: PyTree, cls: Any) -> Any:
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


def _lion_momentum(state: PyTree, grads: PyTree) -> PyTree:
  """Lion's momentum, float32 or dequantized from 8 bits."""
  node = _find(state, (lionx.ScaleByLionState, lionx.ScaleByLion8bitState))
  if isinstance(node, lionx.ScaleByLionState):
    return node.mu
  return jax.tree.map(
      lambda g, k, s: lionx.dequantize(lionx.QuantizedArray(k, s), g.shape),
      grads, node.codes, node.scales)


def _interpolate(b1: float, mu: PyTree, grads: PyTree) -> PyTree:
  return jax.tree.map(lambda m, g: interpolate(m, g, b1), mu, grads)


def _lion_direction(family: str):
  def direction(config, state, grads):
    b1, _ = betas(config, family)
    return _interpolate(b1, _lion_momentum(state, grads), grads)
  return direction


def _lion_k(key: str) -> OptimizerSpec:
  def reshaper(config):
    return lionx.RESHAPERS[key](**_RESHAPER_ARGS[key](config))

  def build(config, schedule):
    b1, b2 = betas(config, 'lion')
    return lionx.lion_k(schedule, reshaper(config), b1=b1, b2=b2,
                        weight_decay=config.weight_decay,
                        mu_dtype=mu_dtype(config))
  return OptimizerSpec(build, _lion_direction('lion'), reshaper)


def _lion(config, schedule):
  b1, b2 = betas(config, 'lion')
  return lionx.lion(schedule, b1=b1, b2=b2, weight_decay=config.weight_decay,
                    mu_dtype=mu_dtype(config))


def _cautious_lion(config, schedule):
  b1, b2 = betas(config, 'cautious_lion')
  return lionx.cautious_lion(schedule, b1=b1, b2=b2,
                             weight_decay=config.weight_decay,
                             mu_dtype=mu_dtype(config))


def _sgd(config, schedule):
  momentum = config.momentum or None
  return optax.chain(
      optax.add_decayed_weights(config.weight_decay),
      optax.sgd(schedule, momentum=momentum, nesterov=config.nesterov,
                accumulator_dtype=mu_dtype(config)))


def _sgd_direction(config, state, grads):
  if not config.momentum:
    return grads
  trace = _find(state, optax.TraceState).trace
  mu = config.momentum
  c = jax.tree.map(lambda v, g: mu * v + g, trace, grads)
  if config.nesterov:
    c = jax.tree.map(lambda c, g: mu * c + g, c, grads)
  return c


def _adamw(config, schedule):
  b1, b2 = betas(config, 'adamw')
  return optax.adamw(schedule, b1=b1, b2=b2, eps=config.eps,
                     weight_decay=config.weight_decay,
                     mu_dtype=mu_dtype(config))


def _adam_direction(config, state, grads):
  b1, _ = betas(config, 'adamw')
  return _interpolate(b1, _find(state, optax.ScaleByAdamState).mu, grads)


def _distributed_lion(config, schedule):
  b1, b2 = betas(config, 'lion')
  return lionx.distributed_lion(
      schedule, b1=b1, b2=b2, weight_decay=config.weight_decay,
      aggregation=config.aggregation, mu_dtype=mu_dtype(config))


def _distributed_direction(config, state, grads):
  b1, _ = betas(config, 'lion')
  mu = _find(state, lionx.DistributedLionState).mu  # (workers, *shape)
  return jax.tree.map(
      lambda m, g: jnp.mean(jnp.sign(interpolate(m, g[None], b1)), 0),
      mu, grads)


def _no_reshaper(config):
  del config
  return None


OPTIMIZERS: dict[str, OptimizerSpec] = {
    'lion': OptimizerSpec(_lion, _lion_direction('lion'),
                          lambda c: lionx.sign_reshaper()),
    **{f'lion_{key}': _lion_k(key) for key in _RESHAPER_ARGS
       if key != 'sign'},
    'cautious_lion': OptimizerSpec(
        _cautious_lion, _lion_direction('cautious_lion'),
        lambda c: lionx.sign_reshaper()),
    'sgd': OptimizerSpec(_sgd, _sgd_direction, _no_reshaper),
    'adamw': OptimizerSpec(_adamw, _adam_direction, _no_reshaper),
    'distributed_lion': OptimizerSpec(
        _distributed_lion, _distributed_direction,
        lambda c: lionx.sign_reshaper()),
}

# Optimizers that take optimizer.mu_dtype='int8' (8-bit blockwise m).
INT8_MOMENTUM = ('lion', *(f'lion_{key}' for key in _RESHAPER_ARGS
                           if key != 'sign'), 'cautious_lion')

# Optimizers whose update runs inside jax.shard_map on each device's own
# gradient (see lionx.train.parallel).
PER_DEVICE = ('distributed_lion',)


def _spec(name: str) -> OptimizerSpec:
  if name not in OPTIMIZERS:
    raise ValueError(
        f'optimizer.name={name!r} is not one of {tuple(OPTIMIZERS)}.')
  return OPTIMIZERS[name]


def make_optimizer(config: OptimizerConfig,
                   schedule: Schedule) -> optax.GradientTransformation:
  """The optax transform named ``config.name``, stepping with ``schedule``.

  Example:
    >>> import jax.numpy as jnp
    >>> from lionx.train.config import OptimizerConfig
    >>> from lionx.train.optimizers import make_optimizer
    >>> tx = make_optimizer(OptimizerConfig(name='lion', weight_decay=0.0),
    ...                     lambda step: 0.1)
    >>> params = jnp.array([1.0, -1.0])
    >>> updates, _ = tx.update(jnp.array([2.0, -3.0]), tx.init(params),
    ...                        params)
    >>> updates
    Array([-0.1,  0.1], dtype=float32)
  """
  return _spec(config.name).build(config, schedule)


def direction(config: OptimizerConfig, opt_state: PyTree,
              grads: PyTree) -> PyTree:
  """The optimizer's direction for the gradient ``grads`` (see module doc)."""
  return _spec(config.name).direction(config, opt_state, grads)


def reshaper(config: OptimizerConfig) -> Optional[lionx.Reshaper]:
  """The Lion-K reshaper of ``config.name``, or ``None`` (not Lion)."""
  return _spec(config.name).reshaper(config)
