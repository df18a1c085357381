r"""Low-precision parameters with a rounding residual: :func:`compensated`.

A bfloat16 (or float16) parameter :math:`\theta` is kept together with an
integer residual :math:`r`, so that the *precise* value is

.. math::

  \bar\theta = \theta + r\,q(\theta), \qquad
  q(\theta) = \operatorname{ulp}(\theta)\, 2^{-b},

with :math:`b` the residual's bits (8 for int8). :math:`q` is a power of two
and :math:`\theta` has 8 (bfloat16) or 11 (float16) significant bits, so
:math:`\bar\theta` is exact in float32: bfloat16 + int8 is a float with a
16-bit significand, and :math:`|r q| \le \operatorname{ulp}(\theta)/2`.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Optional

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from lionx._src import checks

PyTree = Any

# dtype -> (stored significand bits without the implicit one, smallest
# normal exponent). Leaves of other dtypes pass through untouched.
_LOW_PRECISION = {
    jnp.dtype(jnp.bfloat16): (7, -126),
    jnp.dtype(jnp.float16): (10, -14),
}
_RESIDUALS = (jnp.dtype(jnp.int8), jnp.dtype(jnp.int16))
_F32_SIGNIFICAND = 24


class CompensatedState(NamedTuple):
  """State of :func:`compensated`."""

  count: chex.Array  # shape=(), dtype=jnp.uint32; steps taken (mod 2^32).
  key: chex.Array  # shape=(2,), dtype=jnp.uint32; the dither's PRNG key.
  # Per leaf: the residual r (shape of the param, residual_dtype) for a
  # bfloat16 / float16 param, None for any other leaf.
  residual: PyTree
  inner_state: optax.OptState  # the inner transformation's state.


def _is_low(x: Any) -> bool:
  return jnp.dtype(jnp.result_type(x)) in _LOW_PRECISION


def _exponent(hi: jax.Array, bits: int) -> jax.Array:
  """log2 q(hi) as an int32 (see :func:`_quantum`)."""
  mant, emin = _LOW_PRECISION[jnp.dtype(hi.dtype)]
  raw = jax.lax.bitcast_convert_type(hi, jnp.uint16).astype(jnp.int32)
  exponent = ((raw >> mant) & ((1 << (15 - mant)) - 1)) - (2 ** (14 - mant)
                                                            - 1)
  return jnp.maximum(jnp.maximum(exponent, emin) - mant - bits, -126)


def _power_of_two(e: jax.Array) -> jax.Array:
  """2^e as float32 for an int32 e in [-126, 127], exactly."""
  return jax.lax.bitcast_convert_type((e + 127) << 23, jnp.float32)


def _quantum(hi: jax.Array, bits: int) -> jax.Array:
  r""":math:`q(\theta) = \operatorname{ulp}(\theta) 2^{-b}`, float32, exact.

  The exponent of a zero or subnormal :math:`\theta` counts as the smallest
  normal one, and :math:`q` is never below the smallest normal float32 (so
  no arithmetic with it is flushed to zero).
  """
  return _power_of_two(_exponent(hi, bits))


def _next_up(hi: jax.Array) -> jax.Array:
  """The next representable value above ``hi`` (finite ``hi``), same dtype."""
  raw = jax.lax.bitcast_convert_type(hi, jnp.uint16)
  negative = (raw >> 15) == 1
  magnitude_zero = (raw & 0x7FFF) == 0
  up = jnp.where(negative, raw - 1, raw + 1)
  up = jnp.where(magnitude_zero, jnp.uint16(1), up)  # +-0 -> tiny positive
  return jax.lax.bitcast_convert_type(up.astype(jnp.uint16), hi.dtype)


def precise(param: jax.Array, residual: Optional[jax.Array]) -> jax.Array:
  r"""The precise value :math:`\theta + r\,q(\theta)` of one leaf, float32.

  A leaf without a residual (``None``) is returned as it is.
  """
  if residual is None:
    return param
  bits = 8 * jnp.dtype(residual.dtype).itemsize
  return (param.astype(jnp.float32)
          + residual.astype(jnp.float32) * _quantum(param, bits))


# floor(2^32 / golden ratio): the step of the dither's Weyl sequence.
_WEYL = 2654435769


def _fmix32(h: jax.Array) -> jax.Array:
  """MurmurHash3's 32-bit finaliser: a bijection of uint32 that mixes bits."""
  h = h ^ (h >> 16)
  h = h * jnp.uint32(0x85EBCA6B)
  h = h ^ (h >> 13)
  h = h * jnp.uint32(0xC2B2AE35)
  return h ^ (h >> 16)


def dither(key: chex.Array, leaf: int, count: chex.Array, shape
           ) -> jax.Array:
  r"""Uniform numbers in [0, 1), one per entry, for step ``count``.

  :math:`u_k = \operatorname{frac}(b + k\varphi^{-1})`, with :math:`b` a
  hash of the entry's index, the leaf's index and ``key`` (the same every
  step) and :math:`k` the step. Over the seeds each :math:`u_k` is uniform,
  so each rounding is unbiased, and successive :math:`u_k` of one entry
  form a Weyl sequence, whose rounding errors partly cancel instead of
  adding up as a random walk. 24-bit resolution, exact in float32; a hash
  instead of a counter-based PRNG keeps it to a few integer operations.
  """
  salt = _fmix32(key[0] ^ _fmix32(key[1] + jnp.uint32(leaf)))
  index = jax.lax.iota(jnp.uint32, math.prod(shape)).reshape(shape)
  base = _fmix32(index * jnp.uint32(0x9E3779B1) + salt)
  step = count.astype(jnp.uint32) * jnp.uint32(_WEYL)
  return ((base + step) >> 8).astype(jnp.float32) * 2.0 ** -24


def split(
    target: jax.Array,
    param: jax.Array,
    residual_dtype: Any,
    u: jax.Array,
    update_dtype: Any = jnp.float32,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  r"""(update, new param, new residual) that store float32 ``target``.

  The new parameter is ``target`` rounded to nearest in ``param``'s dtype,
  and the residual :math:`x = (\text{target} - \theta')/q(\theta')` is
  rounded stochastically, to :math:`\lfloor x + u \rfloor` with ``u``
  uniform in [0, 1) (:func:`dither`): up with probability its fractional
  part, so that its expected value is exact. The update (in
  ``update_dtype``, the gradient's) is :math:`\theta' - \theta`, exact
  whenever it is representable (always for a float32 update; for a
  bfloat16 one unless a parameter moves by more than about :math:`2^8` of
  its ulps in one step), so that ``optax.apply_updates`` lands on
  :math:`\theta'`.
  """
  dtype = param.dtype
  bits = 8 * jnp.dtype(residual_dtype).itemsize
  top = 2 ** (bits - 1)
  hi = target.astype(dtype)
  e = _exponent(hi, bits)
  # (target - hi) / q, exactly: a product by the power of two 1 / q.
  r = jnp.floor((target - hi.astype(jnp.float32)) * _power_of_two(-e) + u)
  # r = 2^(b-1) lies at the midpoint above hi: store it as the next value
  # up with the matching negative residual (the same precise value).
  over = r >= top
  hi_up = _next_up(hi)
  e_up = _exponent(hi_up, bits)
  r_up = (hi.astype(jnp.float32) + top * _power_of_two(e)
          - hi_up.astype(jnp.float32)) * _power_of_two(-e_up)
  hi = jnp.where(over, hi_up, hi)
  r = jnp.where(over, r_up, r)
  r = jnp.where(jnp.isfinite(r), jnp.clip(r, -top, top - 1), 0.0)
  update = (hi.astype(jnp.float32) - param.astype(jnp.float32)).astype(
      update_dtype)
  return update, hi, r.astype(residual_dtype)


def compensated(
    inner: optax.GradientTransformation,
    residual_dtype: Any = jnp.int8,
    *,
    seed: int = 0,
) -> optax.GradientTransformationExtraArgs:
  r"""Trains bfloat16 / float16 parameters as if they were precise.

  Each low-precision parameter :math:`\theta` keeps an integer residual
  :math:`r` (``residual_dtype``, int8 by default) in the state, so that the
  precise value :math:`\bar\theta = \theta + r\,q(\theta)`, with
  :math:`q(\theta) = \operatorname{ulp}(\theta)/2^{b}` (:math:`b` the
  residual's bits), carries :math:`8 + b` significant bits for bfloat16.
  Each step:

  .. math::

    u, s' &= \text{inner.update}(g_{32}, s, \bar\theta) \\
    \theta' &= \operatorname{round\_to\_nearest}(\bar\theta + u), \qquad
    r' = \operatorname{round\_stochastic}\Big(
         \frac{\bar\theta + u - \theta'}{q(\theta')}\Big)

  and the emitted update (in the gradient's dtype) is
  :math:`\theta' - \theta`, on which ``optax.apply_updates`` lands each
  parameter exactly. The inner transformation sees the precise (float32)
  parameters and float32 gradients :math:`g_{32}`, so its state (e.g.
  Lion's momentum) and its updates are those of a float32 run (optax
  chains keep updates in the gradient's dtype: with bfloat16 gradients the
  weight-decay term of a Lion step would be rounded to bfloat16). The
  residual is
  rounded *stochastically*, without bias: a Lion step of
  :math:`\eta = 10^{-4}` on :math:`|\theta| \approx 0.05` is below half a
  bfloat16 ulp, so plain bfloat16 parameters never move, and a
  round-to-nearest residual piles up its error over thousands of steps.
  The rounding is deterministic given ``seed``: the PRNG key lives in the
  state, so a resumed run is bit-identical.

  Leaves that are not bfloat16 or float16 (float32, float64, complex) pass
  through: the inner transformation gets them as they are, their updates
  are the inner's, and they hold no residual (``None``). Use it under
  ``jax.jit``, ``optax.inject_hyperparams``, ``optax.MultiSteps`` and
  ``optax.apply_if_finite`` (a skipped step leaves parameters, residuals
  and the inner state unchanged), and with ``flax.nnx.Optimizer``.

  Args:
    inner: any optax transformation, e.g. ``lionx.lion(...)`` or
      ``optax.adamw(...)``.
    residual_dtype: ``jnp.int8`` (bfloat16 + int8: 3 bytes a parameter,
      a 16-bit significand) or ``jnp.int16`` (bfloat16 only: float32's
      24-bit significand).
    seed: seed of the PRNG key of the stochastic rounding.

  Returns:
    An :class:`optax.GradientTransformationExtraArgs`; ``update`` needs
    ``params``.

  Example:
    >>> import jax, jax.numpy as jnp, optax
    >>> import lionx
    >>> params = jnp.full(4, 0.05, jnp.bfloat16)
    >>> opt = lionx.compensated(lionx.lion(learning_rate=1e-4,
    ...                                    weight_decay=0.0))
    >>> state = opt.init(params)
    >>> for _ in range(10):  # ten steps of -1e-4, each below half an ulp
    ...   updates, state = opt.update(jnp.ones(4, jnp.bfloat16), state,
    ...                               params)
    ...   params = optax.apply_updates(params, updates)
    >>> params  # 0.049 rounded to bfloat16
    Array([0.0490723, 0.0490723, 0.0490723, 0.0490723], dtype=bfloat16)
    >>> lionx.quantized.compensated_params(params, state)  # the precise values
    Array([0.049..., 0.049..., 0.049..., 0.049...], dtype=float32)

  References:
    Zamirai et al., `Revisiting BFloat16 Training
    <https://arxiv.org/abs/2010.06192>`_, 2020 (stochastic rounding and
    Kahan-compensated bfloat16 weights). FlashOptim's "24-bit master
    weights" keep an 8-bit correction of bfloat16 weights in the same way.
  """
  if not isinstance(inner, optax.GradientTransformation):
    raise TypeError(
        f'inner={inner!r}: expected an optax.GradientTransformation such as '
        'lionx.lion(...) or optax.adamw(...).')
  residual_dtype = checks.dtype('residual_dtype', residual_dtype,
                                'jnp.int8 or jnp.int16.')
  if residual_dtype not in _RESIDUALS:
    raise ValueError(
        f'residual_dtype={residual_dtype}: expected jnp.int8 or jnp.int16.')
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
    raise TypeError(f'seed={seed!r}: expected a Python int.')
  if not -2 ** 63 <= seed < 2 ** 63:
    raise ValueError(f'seed={seed!r}: expected an int64, in [-2**63, '
                     '2**63).')
  bits = 8 * residual_dtype.itemsize
  inner = optax.with_extra_args_support(inner)

  def check_leaf(p):
    dtype = jnp.dtype(jnp.result_type(p))
    if dtype in _LOW_PRECISION:
      mant = _LOW_PRECISION[dtype][0]
      if mant + 1 + bits > _F32_SIGNIFICAND:
        raise ValueError(
            f'residual_dtype={residual_dtype} with {dtype} params needs a '
            f'{mant + 1 + bits}-bit significand, more than float32 holds; '
            'use jnp.int8.')

  def init_fn(params):
    checks.inexact_leaves('params', params)
    for p in jax.tree.leaves(params):
      check_leaf(p)
    residual = jax.tree.map(
        lambda p: jnp.zeros(jnp.shape(p), residual_dtype) if _is_low(p)
        else None, params)
    full = jax.tree.map(precise, params, residual)
    return CompensatedState(
        count=jnp.zeros([], jnp.uint32), key=jax.random.PRNGKey(seed),
        residual=residual, inner_state=inner.init(full))

  def update_fn(updates, state, params=None, **extra_args):
    if params is None:
      raise ValueError(
          'params=None: lionx.compensated needs the params in update() to '
          'keep their rounding residuals.')
    checks.inexact_leaves('updates', updates)
    checks.same_structure('updates', updates, params, 'params')
    _check_residuals(params, state.residual)
    full = jax.tree.map(precise, params, state.residual)
    grads = jax.tree.map(
        lambda g, p: g.astype(jnp.float32) if _is_low(p) else g,
        updates, params)
    inner_updates, inner_state = inner.update(
        grads, state.inner_state, full, **extra_args)
    count = state.count + jnp.uint32(1)
    leaves, treedef = jax.tree.flatten(params)
    grads_leaves = treedef.flatten_up_to(updates)
    outs = []
    for i, (p, u, f, r) in enumerate(zip(
        leaves, treedef.flatten_up_to(inner_updates),
        treedef.flatten_up_to(full), treedef.flatten_up_to(state.residual))):
      if r is None:
        outs.append((u, None))
        continue
      g = grads_leaves[i]
      update, _, new_r = split(f + u.astype(jnp.float32), p, residual_dtype,
                               dither(state.key, i, count, jnp.shape(p)),
                               jnp.result_type(g))
      outs.append((update, new_r))
    new_updates = treedef.unflatten([o[0] for o in outs])
    residual = treedef.unflatten([o[1] for o in outs])
    return new_updates, CompensatedState(count, state.key, residual,
                                         inner_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def compensated_params(params: PyTree, state: Any) -> PyTree:
  r"""The precise parameters :math:`\theta + r\,q(\theta)` (float32).

  Finds the :class:`CompensatedState` in ``state`` (also inside a chain,
  ``optax.MultiSteps``, ``optax.apply_if_finite`` or
  ``optax.inject_hyperparams``), e.g. to evaluate or checkpoint the precise
  values. Leaves without a residual are returned as they are.

  Args:
    params: the stored (low-precision) parameters.
    state: the optimizer state holding a :class:`CompensatedState`.

  Returns:
    A tree like ``params``.
  """
  found = []

  def visit(node):
    if isinstance(node, CompensatedState):
      found.append(node)
      return True
    return False

  jax.tree.leaves(state, is_leaf=visit)
  if len(found) != 1:
    raise ValueError(
        f'state holds {len(found)} CompensatedState nodes; expected exactly '
        'one (the state of lionx.compensated).')
  _check_residuals(params, found[0].residual)
  return jax.tree.map(precise, params, found[0].residual)


def _check_residuals(params: PyTree, residual: PyTree) -> None:
  """Raises unless ``params`` are the params whose residuals these are:
  the same structure, and a bfloat16/float16 leaf of the residual's shape
  wherever there is a residual."""
  checks.inexact_leaves('params', params)
  treedef = jax.tree.structure(params)
  try:
    residuals = treedef.flatten_up_to(residual)
    # A params leaf where the residuals have a subtree: not a match.
    if any(r is not None and not isinstance(r, (jax.Array, np.ndarray))
           for r in residuals):
      raise ValueError
  except (ValueError, TypeError):
    made_for = jax.tree.structure(residual, is_leaf=lambda r: r is None)
    raise ValueError(
        f'params has tree structure {treedef}, but the state holds the '
        f'residuals of {made_for}.') from None
  for p, r in zip(treedef.flatten_up_to(params), residuals):
    if r is None:
      if _is_low(p):
        raise ValueError(
            f'params has a {jnp.result_type(p)} leaf of shape '
            f'{jnp.shape(p)} where the state holds no residual: pass the '
            'params the state was made for.')
    elif not _is_low(p) or jnp.shape(p) != jnp.shape(r):
      raise ValueError(
          f'params has a {jnp.result_type(p)} leaf of shape {jnp.shape(p)} '
          f'where the state holds the residual of a bfloat16/float16 leaf '
          f'of shape {jnp.shape(r)}: pass the params the state was made '
          'for.')
