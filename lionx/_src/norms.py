"""Norms of pytrees, accumulated in float32 (or wider) whatever the dtype.

These are the building blocks of the reshapers and of :mod:`lionx.metrics`.
``None`` leaves are ignored and an empty tree has norm 0.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

PyTree = Any
Scalar = jax.Array


def compute_dtype(dtype: jnp.dtype) -> jnp.dtype:
  """The dtype lionx computes in: at least float32."""
  return jnp.promote_types(dtype, jnp.float32)


def f32(x: jax.Array) -> jax.Array:
  """``x`` as an array in :func:`compute_dtype`."""
  x = jnp.asarray(x)
  return x.astype(compute_dtype(x.dtype))


def leaves(tree: PyTree) -> list[jax.Array]:
  """The leaves of ``tree`` in :func:`compute_dtype`."""
  return [f32(x) for x in jax.tree.leaves(tree)]


def tree_sum(values: list[jax.Array]) -> Scalar:
  """Sum of a list of scalars; 0 for an empty list."""
  return sum(values, jnp.zeros([], jnp.float32))


def tree_max(values: list[jax.Array]) -> Scalar:
  """Max of a list of scalars; 0 for an empty list."""
  return jnp.max(jnp.stack(values)) if values else jnp.zeros([], jnp.float32)


def tree_linf(tree: PyTree) -> Scalar:
  r""":math:`\|x\|_\infty = \max_i |x_i|` over all leaves.

  Example:
    >>> import jax.numpy as jnp
    >>> from lionx.metrics import tree_linf
    >>> tree_linf({'a': jnp.array([1.0, -3.0]), 'b': jnp.array([2.0])})
    Array(3., dtype=float32)
  """
  return tree_max([jnp.max(jnp.abs(x), initial=0.0) for x in leaves(tree)])


def tree_l1(tree: PyTree) -> Scalar:
  r""":math:`\|x\|_1 = \sum_i |x_i|` over all leaves.

  Example:
    >>> import jax.numpy as jnp
    >>> from lionx.metrics import tree_l1
    >>> tree_l1({'a': jnp.array([1.0, -3.0]), 'b': jnp.array([2.0])})
    Array(6., dtype=float32)
  """
  return tree_sum([jnp.sum(jnp.abs(x)) for x in leaves(tree)])


def lp(x: jax.Array, p: float) -> Scalar:
  """The ℓp norm of one array, scaled by its max so it cannot overflow."""
  scale = jnp.max(jnp.abs(x), initial=0.0)
  if math.isinf(p):
    return scale
  safe = jnp.where(scale > 0, scale, 1.0)
  return scale * jnp.sum((jnp.abs(x) / safe) ** p) ** (1.0 / p)


def tree_lp(tree: PyTree, p: float) -> Scalar:
  r""":math:`\|x\|_p` of the concatenation of all leaves, :math:`p \ge 1`.

  Example:
    >>> import jax.numpy as jnp
    >>> from lionx._src.norms import tree_lp
    >>> tree_lp({'a': jnp.array([3.0]), 'b': jnp.array([4.0])}, 2.0)
    Array(5., dtype=float32)
  """
  norms = [lp(x, p) for x in leaves(tree)]
  if not norms:
    return jnp.zeros([], jnp.float32)
  return lp(jnp.stack(norms), p)
