r"""Norms of pytrees, accumulated in float32 (or wider) whatever the dtype.

These are the building blocks of the reshapers and of :mod:`lionx.metrics`.
``None`` leaves are ignored and an empty tree has norm 0. A complex leaf
counts as its real and imaginary parts, two real coordinates each (its real
view, see :mod:`lionx._src.realview`), as it does in the optimizers.

**One scaling for every norm.** A norm over a *scope* (a leaf or the whole
tree) is taken of :math:`x / 2^e`, where :math:`2^e` is the power of two
just above the scope's largest magnitude, and multiplied back by
:math:`2^e`. Scaling by a power of two is exact, and it is done with two
normal factors, never with a reciprocal that could be subnormal and flush
to zero, so every norm is correct for entries up to the float32 maximum (it
is ``inf`` only when the norm itself exceeds it). A NaN anywhere in a scope
makes that scope's norm NaN; an ``inf`` (and no NaN) makes it ``inf``.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lionx._src import checks
from lionx._src.realview import view_as_real

PyTree = Any
Scalar = jax.Array


def compute_dtype(dtype: jnp.dtype) -> jnp.dtype:
  """The dtype lionx computes in: at least float32.

  Dtypes that JAX does not promote implicitly (the float8 family) compute
  in float32 too.
  """
  try:
    return jnp.promote_types(dtype, jnp.float32)
  except jax.dtypes.TypePromotionError:
    return jnp.dtype(jnp.float32)


def f32(x: jax.Array) -> jax.Array:
  """``x`` as an array in :func:`compute_dtype`.

  A NumPy 64-bit integer array is converted by NumPy first: JAX without
  x64 would truncate it to 32 bits (``2**40`` to 0).
  """
  if isinstance(x, (np.ndarray, np.generic)) and x.dtype.kind in 'iu' and (
      x.dtype.itemsize == 8):
    x = np.asarray(x, np.float64)
  x = jnp.asarray(x)
  return x.astype(compute_dtype(x.dtype))


def leaves(tree: PyTree) -> list[jax.Array]:
  """The leaves of ``tree`` (complex ones as real views), computed wide."""
  return [f32(view_as_real(x)) for x in jax.tree.leaves(tree)]


def tree_sum(values: list[jax.Array]) -> Scalar:
  """Sum of a list of scalars; 0 for an empty list."""
  return sum(values, jnp.zeros([], jnp.float32))


def tree_max(values: list[jax.Array]) -> Scalar:
  """Max of a list of scalars; 0 for an empty list."""
  return jnp.max(jnp.stack(values)) if values else jnp.zeros([], jnp.float32)


def _exp2(k: jax.Array, dtype: jnp.dtype) -> jax.Array:
  """Exactly :math:`2^k` for integer ``k`` in the normal range of dtype."""
  info = jnp.finfo(dtype)
  itype = jnp.int32 if jnp.dtype(dtype).itemsize == 4 else jnp.int64
  k = jnp.clip(k, info.minexp, info.maxexp - 1).astype(itype)
  bits = (k + (info.maxexp - 1)) << info.nmant
  return jax.lax.bitcast_convert_type(bits, dtype)


def exponent(scale: jax.Array) -> jax.Array:
  r""":math:`e` with :math:`2^{e-1} \le` ``scale`` :math:`< 2^e`.

  0 for a scale that is 0, ``inf`` or NaN, so that scaling leaves such a
  scope as it is.
  """
  _, e = jnp.frexp(scale)
  return jnp.where(jnp.isfinite(scale) & (scale > 0), e, 0)


def scale_pow2(x: jax.Array, e: jax.Array) -> jax.Array:
  r""":math:`x \cdot 2^{e}`, exactly, in two normal factors."""
  half = e // 2
  return x * _exp2(half, x.dtype) * _exp2(e - half, x.dtype)


def scaled(values: list[jax.Array]) -> tuple[list[jax.Array], jax.Array]:
  """``(values / 2^e, e)`` with :math:`2^e` just above their max magnitude.

  After scaling every magnitude is below 1 and the largest is at least
  1/2; entries more than :math:`2^{126}` times smaller than the largest
  may flush to 0, which no norm can see.
  """
  if not values:
    return values, jnp.zeros([], jnp.int32)
  scale = tree_max([jnp.max(jnp.abs(x), initial=0.0) for x in values])
  e = exponent(scale)
  return [scale_pow2(x, -e) for x in values], e


def tree_linf(tree: PyTree) -> Scalar:
  r""":math:`\|x\|_\infty = \max_i |x_i|` over all leaves.

  Example:
    >>> import jax.numpy as jnp
    >>> from lionx.metrics import tree_linf
    >>> tree_linf({'a': jnp.array([1.0, -3.0]), 'b': jnp.array([2.0])})
    Array(3., dtype=float32)
  """
  checks.numeric_leaves('tree', tree)
  return tree_max([jnp.max(jnp.abs(x), initial=0.0) for x in leaves(tree)])


def tree_l1(tree: PyTree) -> Scalar:
  r""":math:`\|x\|_1 = \sum_i |x_i|` over all leaves.

  Example:
    >>> import jax.numpy as jnp
    >>> from lionx.metrics import tree_l1
    >>> tree_l1({'a': jnp.array([1.0, -3.0]), 'b': jnp.array([2.0])})
    Array(6., dtype=float32)
  """
  checks.numeric_leaves('tree', tree)
  return _lp_of(leaves(tree), 1.0)


def _lp_of(values: list[jax.Array], p: float) -> Scalar:
  """The ℓp norm of the concatenation of ``values`` (see the module)."""
  if not values:
    return jnp.zeros([], jnp.float32)
  if math.isinf(p):
    return tree_max([jnp.max(jnp.abs(x), initial=0.0) for x in values])
  ys, e = scaled(values)
  if p == 1.0:
    total = tree_sum([jnp.sum(jnp.abs(y)) for y in ys])
    return scale_pow2(total, e)
  # Over the largest magnitude, whose term is then 1: for a large p the
  # powers of the others underflow, never the whole sum.
  top = tree_max([jnp.max(jnp.abs(y), initial=0.0) for y in ys])
  top = jnp.where((top > 0) & jnp.isfinite(top), top, 1.0)
  total = tree_sum([jnp.sum((jnp.abs(y) / top) ** p) for y in ys])
  return scale_pow2(top * total ** (1.0 / p), e)


def lp(x: jax.Array, p: float) -> Scalar:
  """The ℓp norm of one array, scaled by a power of two (see the module)."""
  return _lp_of([f32(view_as_real(x))], p)


def tree_lp(tree: PyTree, p: float) -> Scalar:
  r""":math:`\|x\|_p` of the concatenation of all leaves, :math:`p \ge 1`.

  Example:
    >>> import jax.numpy as jnp
    >>> from lionx._src.norms import tree_lp
    >>> tree_lp({'a': jnp.array([3.0]), 'b': jnp.array([4.0])}, 2.0)
    Array(5., dtype=float32)
    >>> tree_lp(jnp.array([2e38, 3e38]), 2.0)  # > float32 max: inf
    Array(inf, dtype=float32)
    >>> tree_lp(jnp.array([1e38, 1e38]), 2.0)
    Array(1.4142135e+38, dtype=float32)
  """
  checks.numeric_leaves('tree', tree)
  return _lp_of(leaves(tree), p)
