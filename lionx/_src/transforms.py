"""Lion's momentum, decoupled weight decay and the cautious mask."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Union

import chex
import jax
import jax.numpy as jnp
import optax

from lionx._src import checks
from lionx._src import quantized
from lionx._src.interpolation import c_from_new_coefficient
from lionx._src.interpolation import interpolate
from lionx._src.norms import compute_dtype

Mask = Union[Any, Callable[[optax.Params], Any]]


class ScaleByLionState(NamedTuple):
  """State of :func:`scale_by_lion`."""

  count: chex.Array  # shape=(), dtype=jnp.int32.
  mu: optax.Updates  # the momentum m, shaped like params, dtype=mu_dtype.


def scale_by_lion(
    b1: float = 0.9,
    b2: float = 0.99,
    mu_dtype: Optional[jnp.dtype] = None,
) -> optax.GradientTransformation:
  r"""Keeps Lion's momentum and emits the interpolation :math:`c_k`.

  This is lines 4 and 6 of Algorithm 1 in Dong et al.; the sign (or any
  :math:`\nabla K`) is applied by a reshaper that follows in the chain.

  .. math::

    c_k &= \beta_1 m_{k-1} + (1 - \beta_1) g_k \\
    m_k &= \beta_2 m_{k-1} + (1 - \beta_2) g_k

  The arithmetic is done in float32 (or wider) whatever the storage dtype;
  :math:`c_k` comes out in the gradient's dtype and :math:`m_k` in
  ``mu_dtype``. Wherever :math:`c_k` is not finite (an Inf or NaN in the
  gradient or in the momentum) it is emitted as NaN, so that no reshaper can
  turn it into a finite step: a bad gradient shows up as NaN parameters,
  never as a silent :math:`\pm\eta` move. Wrap the optimizer in
  :func:`optax.apply_if_finite` to skip such steps instead.

  **No copy of the momentum.** Written as above, :math:`m_{k-1}` is read by
  two loops (the one that builds :math:`c_k` into the parameter update, and
  the one that overwrites :math:`m` in place), so XLA copies the whole
  buffer first; ``optax.lion`` compiles to such a copy. Here, when
  :math:`\beta_1, \beta_2` are known numbers and
  :math:`0 < \beta_1 \le 2\beta_2`, :math:`c_k` is taken from the stored
  *new* momentum, which equals the line above in exact arithmetic:

  .. math::

    c_k = \tfrac{\beta_1}{\beta_2}\, m_k
          + \big(1 - \tfrac{\beta_1}{\beta_2}\big) g_k

  so :math:`m_{k-1}` is read once and updated in place. :math:`m_k` is
  bit-for-bit the same. With float32 momentum, :math:`c_k` differs by at
  most :math:`16u(|m_{k-1}| + |g_k|)`, :math:`u = 2^{-24}`, so
  :math:`\operatorname{sign}(c_k)` can only differ where :math:`|c_k|` is
  at float32 rounding level; ``tests/test_perf.py`` checks this, and that
  the sign-flip rate on random data stays below 1e-6. With a narrower
  ``mu_dtype`` (bfloat16), Algorithm 1 is not computed exactly either way:
  the textbook order uses the rounded :math:`m_{k-1}`, this one the rounded
  :math:`m_k`; they differ only where :math:`|c_k| \lesssim 2^{-8}|m|`
  (about 1e-4 of the coordinates of random data), and both disagree with
  float32 momentum on about 8e-4 of them. With a traced :math:`\beta`
  (``optax.inject_hyperparams``), :math:`\beta_2 = 0` or
  :math:`\beta_1 > 2\beta_2` (where rounding would be amplified), the
  first line is used as written.

  Args:
    b1: interpolation weight :math:`\beta_1 \in [0, 1]` of the momentum in
      :math:`c_k`.
    b2: decay rate :math:`\beta_2 \in [0, 1]` of the momentum.
    mu_dtype: storage dtype of the momentum, e.g. ``jnp.bfloat16``; ``None``
      stores it in the parameters' dtype; ``jnp.int8`` gives 8-bit
      blockwise momentum (:func:`scale_by_lion_8bit`).

  Returns:
    An :class:`optax.GradientTransformation`.

  Example:
    >>> import jax.numpy as jnp
    >>> import lionx
    >>> tx = lionx.scale_by_lion(b1=0.9, b2=0.99)
    >>> state = tx.init(jnp.zeros(3))
    >>> c, state = tx.update(jnp.array([1.0, -2.0, 0.0]), state)
    >>> c
    Array([ 0.1, -0.2,  0. ], dtype=float32)
    >>> state.mu
    Array([ 0.01, -0.02,  0.  ], dtype=float32)

  References:
    Chen et al., `Symbolic Discovery of Optimization Algorithms
    <https://arxiv.org/abs/2302.06675>`_, 2023.
    Dong, Li, Lin, `Convergence Rate Analysis of LION`, Algorithm 1.
  """
  checks.in_range('b1', b1, 0.0, 1.0)
  checks.in_range('b2', b2, 0.0, 1.0)
  if mu_dtype is not None:
    mu_dtype = jnp.dtype(mu_dtype)
    if mu_dtype == jnp.int8:
      return quantized.scale_by_lion_8bit(b1, b2)
    if not jnp.issubdtype(mu_dtype, jnp.floating):
      raise TypeError(
          f'mu_dtype={mu_dtype!r}: expected a float dtype, jnp.int8 (8-bit '
          'blockwise momentum) or None.')
  from_new = c_from_new_coefficient(b1, b2)

  def init_fn(params):
    mu = jax.tree.map(
        lambda p: jnp.zeros(jnp.shape(p), mu_dtype or jnp.result_type(p)),
        params)
    return ScaleByLionState(count=jnp.zeros([], jnp.int32), mu=mu)

  def update_fn(updates, state, params=None):
    del params
    checks.same_structure('updates', updates, state.mu, 'the momentum')

    def step(g, m):
      dtype = compute_dtype(g.dtype)
      g32, m32 = g.astype(dtype), m.astype(dtype)
      m_new = b2 * m32 + (1.0 - b2) * g32
      m_new = m_new.astype(m.dtype)
      if from_new is not None:
        # c from the stored m_k: the old momentum is read once, so XLA
        # updates it in place with no copy (see the docstring).
        c = interpolate(m_new.astype(dtype), g32, from_new)
      else:
        c = interpolate(m32, g32, b1)
      return c.astype(g.dtype), m_new

    out = jax.tree.map(step, updates, state.mu)
    treedef = jax.tree.structure(updates)
    pairs = treedef.flatten_up_to(out)
    c = treedef.unflatten([p[0] for p in pairs])
    mu = treedef.unflatten([p[1] for p in pairs])
    count = optax.safe_increment(state.count)
    return c, ScaleByLionState(count=count, mu=mu)

  return optax.GradientTransformation(init_fn, update_fn)


class WeightDecayState(NamedTuple):
  """State of :func:`add_decoupled_weight_decay`."""

  count: chex.Array  # shape=(), dtype=jnp.int32; indexes the schedules.


def _value(x: optax.ScalarOrSchedule, count: chex.Array) -> chex.Numeric:
  return x(count) if callable(x) else x


def check_mask(mask: Mask, params: optax.Params) -> Any:
  """The mask as a tree of bools that is a prefix of ``params``."""
  tree = mask(params) if callable(mask) else mask
  try:
    jax.tree.map(lambda m, _: m, tree, params)
  except (ValueError, TypeError) as err:
    raise ValueError(
        f'mask has tree structure {jax.tree.structure(tree)}, which is not '
        f'a prefix of the params structure {jax.tree.structure(params)}: '
        f'{err}') from None
  for leaf in jax.tree.leaves(tree):
    if not isinstance(leaf, (bool, jnp.bool_)):
      raise TypeError(f'mask has a leaf {leaf!r}; expected Python bools.')
  return tree


def add_decoupled_weight_decay(
    weight_decay: optax.ScalarOrSchedule = 1e-3,
    mask: Optional[Mask] = None,
    *,
    implicit: bool = False,
    learning_rate: Optional[optax.ScalarOrSchedule] = None,
) -> optax.GradientTransformation:
  r"""Adds :math:`\lambda\theta` to the update before the learning rate.

  With the learning rate applied last, the step is the paper's
  :math:`\theta \leftarrow \theta - \eta(\nabla K(c) + \lambda\theta)`, and
  Lion then solves :math:`\min f` subject to
  :math:`\|\theta\|_\infty \le 1/\lambda`.

  .. math::

    u \leftarrow u + \lambda \theta
    \qquad\text{or, with ``implicit=True``,}\qquad
    u \leftarrow \frac{u + \lambda\theta}{1 + \eta\lambda}

  The implicit form is scheme (15) of Chen et al. 2023b,
  :math:`\theta_{t+1} = \theta_t - \eta(\nabla K - \lambda\theta_{t+1})`
  solved for :math:`\theta_{t+1}`: the explicit step with
  :math:`\eta' = \eta / (1 + \eta\lambda)`. It needs ``learning_rate``.

  Args:
    weight_decay: :math:`\lambda \ge 0`, a scalar or a schedule.
    mask: a tree of bools with the structure of (a prefix of) the params, or
      a callable returning one; ``False`` leaves get no decay.
    implicit: use the implicit scheme.
    learning_rate: :math:`\eta`, the same scalar or schedule that the chain
      applies last; only used (and required) when ``implicit=True``.

  Returns:
    An :class:`optax.GradientTransformation`.

  Example:
    >>> import jax.numpy as jnp
    >>> import lionx
    >>> tx = lionx.add_decoupled_weight_decay(0.5)
    >>> params = jnp.array([2.0, -4.0])
    >>> u, _ = tx.update(jnp.ones(2), tx.init(params), params)
    >>> u
    Array([ 2., -1.], dtype=float32)
  """
  checks.non_negative('weight_decay', weight_decay)
  if not isinstance(implicit, bool):
    raise TypeError(f'implicit={implicit!r}: expected a bool.')
  if implicit:
    if learning_rate is None:
      raise ValueError(
          'learning_rate=None: implicit=True needs the learning rate.')
    checks.non_negative('learning_rate', learning_rate)

  def init_fn(params):
    if mask is not None:
      check_mask(mask, params)
    return WeightDecayState(count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError(
          'params=None: add_decoupled_weight_decay needs the params.')
    checks.same_structure('updates', updates, params, 'params')
    lam = _value(weight_decay, state.count)
    scale = 1.0
    if implicit:
      scale = 1.0 / (1.0 + _value(learning_rate, state.count) * lam)

    def decay(u, p):
      dtype = compute_dtype(u.dtype)
      out = (u.astype(dtype) + lam * p.astype(dtype)) * scale
      return out.astype(u.dtype)

    updates = jax.tree.map(decay, updates, params)
    return updates, WeightDecayState(count=optax.safe_increment(state.count))

  tx = optax.GradientTransformation(init_fn, update_fn)
  if mask is None:
    return tx
  masked = optax.masked(tx, mask)

  def masked_init(params):
    check_mask(mask, params)
    return masked.init(params)

  return optax.GradientTransformation(masked_init, masked.update)


class CautiousState(NamedTuple):
  """State of :func:`cautious`: the wrapped transformation's state."""

  inner_state: optax.OptState


def cautious(
    inner: optax.GradientTransformation,
) -> optax.GradientTransformation:
  r"""Keeps only the coordinates where ``inner``'s step agrees with ``g``.

  With :math:`u` the output of ``inner`` and :math:`g` the incoming gradient
  (both in the descent-sign convention, where the step is :math:`-\eta u`),
  per tensor of :math:`n` entries:

  .. math::

    \phi = \mathbb{1}[u \odot g > 0], \qquad
    u \leftarrow \frac{n}{\sum_i \phi_i + 1}\, (u \odot \phi)

  Put weight decay after this transform, so that it is not masked.

  Args:
    inner: the transformation whose output is masked, e.g.
      ``optax.chain(lionx.scale_by_lion(), lionx.sign_reshaper())``.

  Returns:
    An :class:`optax.GradientTransformation`.

  Example:
    >>> import jax.numpy as jnp
    >>> import lionx
    >>> tx = lionx.cautious(lionx.sign_reshaper())
    >>> u, _ = tx.update(jnp.array([3.0, -1.0, 0.0]), tx.init(jnp.zeros(3)))
    >>> u  # n / (sum(phi) + 1) = 3 / 3
    Array([ 1., -1.,  0.], dtype=float32)

  References:
    Liang, Chen, Liu, Liu, `Cautious Optimizers: Improving Training with One
    Line of Code <https://arxiv.org/abs/2411.16085>`_, 2024.
  """
  inner = optax.with_extra_args_support(inner)

  def init_fn(params):
    return CautiousState(inner_state=inner.init(params))

  def update_fn(grads, state, params=None, **extra_args):
    updates, inner_state = inner.update(
        grads, state.inner_state, params, **extra_args)
    checks.same_structure('updates', updates, grads, 'the gradients')

    def mask(u, g):
      dtype = compute_dtype(u.dtype)
      u32 = u.astype(dtype)
      agree = u32 * g.astype(dtype)
      rescale = u.size / (jnp.sum(agree > 0, dtype=dtype) + 1.0)
      # Written with <= so that NaN (which fails every comparison) stays NaN.
      return (jnp.where(agree <= 0, 0.0, u32) * rescale).astype(u.dtype)

    return jax.tree.map(mask, updates, grads), CautiousState(inner_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
