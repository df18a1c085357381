"""Complex leaves as pairs of real coordinates.

lionx treats a complex leaf of shape ``s`` as its *real view*, the real
leaf ``stack([z.real, z.imag], -1)`` of shape ``s + (2,)`` (PyTorch's
``view_as_real``): every transformation computes on that view and returns
the complex leaf rebuilt from it, so that the update of a complex leaf is,
bit for bit, the update of its real view, and NaN in one part never spreads
to the other.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from lionx._src import checks

PyTree = Any


def is_complex(x: Any) -> bool:
  """Whether ``x`` is a complex array (or scalar); False for non-numbers
  (which the argument checks then refuse by name)."""
  dtype = checks.leaf_dtype(x)
  return dtype is not None and jnp.issubdtype(dtype, jnp.complexfloating)


def real_dtype(dtype: Any) -> jnp.dtype:
  """The dtype of the parts of ``dtype`` (itself when it is real)."""
  dtype = jnp.dtype(dtype)
  if jnp.issubdtype(dtype, jnp.complexfloating):
    return jnp.finfo(dtype).dtype
  return dtype


def complex_dtype(dtype: Any) -> jnp.dtype:
  """The complex dtype whose parts are ``dtype`` (float32 -> complex64)."""
  dtype = jnp.dtype(dtype)
  if dtype == jnp.float32:
    return jnp.dtype(jnp.complex64)
  if dtype == jnp.float64:
    return jnp.dtype(jnp.complex128)
  raise TypeError(
      f'{dtype} has no complex counterpart; complex leaves need float32 or '
      'float64 parts.')


def view_as_real(x: jax.Array) -> jax.Array:
  """``stack([x.real, x.imag], -1)`` for a complex ``x``; else ``x``."""
  if not is_complex(x):
    return x
  return jnp.stack([jnp.real(x), jnp.imag(x)], axis=-1)


def view_as_complex(x: jax.Array, like: Any) -> jax.Array:
  """The inverse of :func:`view_as_real` when ``like`` is complex."""
  if not is_complex(like):
    return x
  return jax.lax.complex(x[..., 0], x[..., 1])


def tree_view_as_real(tree: PyTree) -> PyTree:
  """:func:`view_as_real` on every leaf."""
  return jax.tree.map(view_as_real, tree)


def tree_view_as_complex(tree: PyTree, like: PyTree) -> PyTree:
  """:func:`view_as_complex` on every leaf, as the leaves of ``like``."""
  return jax.tree.map(view_as_complex, tree, like)


def on_real_view(fn: Callable[..., jax.Array]) -> Callable[..., jax.Array]:
  """``fn`` of arrays, applied to the real views; complex like the first."""
  def wrapped(x, *rest):
    out = fn(view_as_real(x), *(view_as_real(r) for r in rest))
    return view_as_complex(out, x)
  return wrapped


def _barrier_complex(real: PyTree, like: PyTree) -> PyTree:
  """``real`` with its leaves that come from complex ones materialised.

  An optimization barrier keeps XLA from fusing the conversion into the
  arithmetic, so that the arithmetic compiles exactly as for a real leaf:
  XLA contracts ``a * b + c`` into fused multiply-adds, and which products
  it fuses depends on the surrounding fusion.
  """
  leaves, treedef = jax.tree.flatten(real)
  flags = [is_complex(x) for x in treedef.flatten_up_to(like)]
  picked = [x for x, f in zip(leaves, flags) if f]
  if not picked:
    return real
  picked = iter(jax.lax.optimization_barrier(picked))
  return treedef.unflatten(
      [next(picked) if f else x for x, f in zip(leaves, flags)])


def real_view_transformation(
    tx: optax.GradientTransformation,
) -> optax.GradientTransformationExtraArgs:
  """``tx`` run on the real views of complex leaves, end to end.

  ``init`` and ``update`` hand ``tx`` the real views of the params and the
  updates, so its state holds real views too, and the updates come back
  complex. The views are materialised on both sides of ``tx`` (see
  :func:`_barrier_complex`), so ``tx`` compiles as for real leaves and a
  complex leaf's update is its real view's bit for bit. Real leaves pass
  through untouched, so for a real tree this is ``tx`` itself.
  """
  tx = optax.with_extra_args_support(tx)

  def init_fn(params):
    return tx.init(tree_view_as_real(params))

  def update_fn(updates, state, params=None, **extra_args):
    real_updates = _barrier_complex(tree_view_as_real(updates), updates)
    real_params = None
    if params is not None:
      real_params = _barrier_complex(tree_view_as_real(params), params)
    out, state = tx.update(real_updates, state, real_params, **extra_args)
    out = _barrier_complex(out, updates)
    return tree_view_as_complex(out, updates), state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
