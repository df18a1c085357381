r"""Lion's interpolation :math:`c = w m + (1 - w) g`, shared by the momenta.

Both the float momentum of :func:`lionx.scale_by_lion` and the 8-bit one of
``scale_by_lion(mu_dtype=jnp.int8)`` build :math:`c_k` with these helpers. This
module imports no other lionx transform, so that neither depends on the
other.

**The rounding rule.** Whatever form computes :math:`c_k`, its sign must be
Algorithm 1's wherever :math:`|c_k|` is above rounding level, and where
Algorithm 1's :math:`c_k` is exactly 0 there must be no step. So
:func:`interpolate` takes a bound on the error of the momentum it is given,
adds the rounding of its own arithmetic, and returns 0 wherever
:math:`|c|` is within that bound: an exact 0 can only come out as 0, and a
:math:`c` that is not zeroed has the sign of the exact one. The bounds
count every rounding of the arithmetic as written; a fused multiply-add
(which XLA may form) only removes roundings, so they hold either way.
"""

from __future__ import annotations

from typing import Any, Optional

import chex
import jax
import jax.numpy as jnp

from lionx._src import checks


def unit_roundoff(dtype: Any) -> float:
  r""":math:`u = \epsilon/2`, the relative rounding error of ``dtype``."""
  return float(jnp.finfo(jnp.dtype(dtype)).eps) / 2.0


def _static(w: Any) -> Optional[float]:
  if isinstance(w, (int, float)) and not isinstance(w, bool):
    return float(w)
  return None


def interpolate(
    m: jax.Array,
    g: jax.Array,
    w: chex.Numeric,
    *,
    m_error: Optional[chex.Numeric] = None,
    m_error_linear: Optional[tuple[float, float, float]] = None,
) -> jax.Array:
  r"""``w m + (1 - w) g``: NaN where not finite, 0 within its error bound.

  ``m`` and ``g`` are arrays of one float dtype (the compute dtype, float32
  or wider); ``w`` is a number or a traced scalar. With :math:`u` the unit
  roundoff and :math:`t` the smallest normal number of that dtype, the
  result is 0 wherever

  .. math::

    |c| \le 3u\,(|w||m| + |1 - w||g|) + |w|\,e_m + 4t(1 + |w|),

  the bound on :math:`|c - (w m^* + (1 - w) g)|` when :math:`m` is within
  ``m_error`` :math:`= e_m` of the exact momentum :math:`m^*`, including
  the representation error of ``w``, and products flushed to zero below
  :math:`t`. Every non-finite entry is NaN (so no reshaper can turn it into
  a finite step). A Python ``w > 1`` is applied to halves, so that
  :math:`w m` cannot overflow where the result does not.

  Args:
    m: the momentum (or a stand-in for it), in the compute dtype.
    g: the gradient, same shape and dtype.
    w: the weight of ``m``.
    m_error: a bound (scalar or array like ``m``, :math:`\ge 0`) on
      :math:`|m - m^*|`; ``None`` means ``m`` is exact.
    m_error_linear: ``(a, b, e)``, Python numbers, for the bound
      :math:`|m - m^*| \le a|m| + b|g| + e` (added to ``m_error``); with a
      Python ``w`` it folds into the coefficients of the bound, so that the
      compiled step computes one bound :math:`\alpha|m| + \beta|g| +
      \gamma`.

  Returns:
    :math:`c`, in the dtype of ``m`` and ``g``.
  """
  dtype = jnp.result_type(m, g)
  u, tiny = unit_roundoff(dtype), float(jnp.finfo(dtype).tiny)
  static = _static(w)
  if static is not None and static > 1.0:
    # Halves: |w m / 2| <= max and the exact sum is at most max / 2.
    c = 2.0 * ((0.5 * static) * m + (0.5 * (1.0 - static)) * g)
  else:
    c = w * m + (1.0 - w) * g
  if static is not None:
    aw, a1w = abs(static), abs(1.0 - static)
  else:
    aw, a1w = jnp.abs(w), jnp.abs(1.0 - w)
  alpha, beta, gamma = 3.0 * u * aw, 3.0 * u * a1w, 4.0 * tiny * (1.0 + aw)
  if m_error_linear is not None:
    em, eg, e0 = m_error_linear
    alpha, beta, gamma = alpha + aw * em, beta + aw * eg, gamma + aw * e0
  bound = alpha * jnp.abs(m) + beta * jnp.abs(g) + gamma
  if m_error is not None:
    bound = bound + aw * m_error
  # NaN first: an inf makes the bound inf, and must not become a 0.
  c = jnp.where(jnp.isfinite(c), c, jnp.nan)
  return jnp.where(jnp.abs(c) <= bound, jnp.zeros_like(c), c)


def momentum_error_linear(
    b2: float,
    compute_dtype: Any,
    storage_dtype: Any,
) -> tuple[float, float, float]:
  r"""``(a, b, e)``: the error of a stored :math:`m_k` is :math:`\le a|m_k|
  + b|g_k| + e`, from :math:`m_k` itself.

  :math:`m_k = \beta_2 m_{k-1} + (1 - \beta_2) g_k` computed in
  ``compute_dtype`` (unit roundoff :math:`u`) and stored in
  ``storage_dtype`` (:math:`u_s`, 0 if it is the compute dtype) differs
  from the exact value by at most
  :math:`3u(\beta_2|m_{k-1}| + (1-\beta_2)|g_k|) + u_s|m_k|` plus
  underflow. Since :math:`\beta_2|m_{k-1}| \le |m_k| + (1-\beta_2)|g_k|`
  up to that error, without reading :math:`m_{k-1}`:

  .. math::

    a = 4u + 1.01\,u_s, \quad b = 7u(1 - \beta_2), \quad e = 2t + s_s,

  :math:`t` the compute dtype's smallest normal and :math:`s_s` half the
  storage dtype's smallest subnormal spacing.
  """
  dtype = jnp.dtype(compute_dtype)
  u, tiny = unit_roundoff(dtype), float(jnp.finfo(dtype).tiny)
  storage = jnp.dtype(storage_dtype)
  if storage == dtype:
    u_s, sub = 0.0, 0.0
  else:
    u_s = unit_roundoff(storage)
    sub = float(jnp.finfo(storage).smallest_subnormal) / 2.0
  return 4.0 * u + 1.01 * u_s, 7.0 * u * (1.0 - b2), 2.0 * tiny + sub


def momentum_error(
    m_new: jax.Array,
    g: jax.Array,
    b2: float,
    storage_dtype: Any,
) -> jax.Array:
  """:func:`momentum_error_linear` evaluated: a bound array like ``m_new``.

  ``m_new`` (the stored :math:`m_k`) and ``g`` are in the compute dtype.
  """
  a, b, e = momentum_error_linear(
      b2, jnp.result_type(m_new, g), storage_dtype)
  return a * jnp.abs(m_new) + b * jnp.abs(g) + e


def c_from_new_coefficient(b1, b2) -> Optional[float]:
  """a with c_k = a m_k + (1 - a) g_k, or None where that is not used.

  Only for known (not traced) betas with 0 < b1 / b2 <= 2, so that rounding
  is not amplified; b1 == b2 gives c_k = m_k.
  """
  b1, b2 = checks.concrete_float(b1), checks.concrete_float(b2)
  if b1 is None or b2 is None or b2 == 0.0 or b1 > 2.0 * b2:
    return None
  return b1 / b2
