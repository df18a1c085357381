r"""The storage dtype of a model's parameters: ``model.param_dtype``.

``float32`` (the default), ``bfloat16`` or ``float16``. A model is built in
float32 as always (same initialisers, same seed) and each floating
``nnx.Param`` is then rounded to nearest in ``param_dtype``; BatchNorm's
running statistics stay float32. Only the storage changes: every layer
promotes its low-precision parameters to the float32 of its inputs, so
the forward pass computes in float32, and the gradient of a bfloat16
parameter is bfloat16 (the float32 cotangent rounded). Lion's
:math:`\pm\eta` steps are below half a bfloat16 ulp in the usual regime,
so low-precision parameters train with ``optimizer.compensation`` (a
rounding residual per parameter, :func:`lionx.compensated`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from lionx.train import fields

PARAM_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16,
                'float16': jnp.float16}


def validate(path: str, name: Any) -> None:
  """Checks a ``param_dtype`` field (``path`` names it in the error)."""
  fields.one_of(path, name, PARAM_DTYPES)


def cast_params(model: nnx.Module, name: str) -> nnx.Module:
  """Stores every floating ``nnx.Param`` of ``model`` in ``name``'s dtype.

  In place; returns ``model``. ``float32`` changes nothing.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from lionx.train.models import precision
    >>> model = precision.cast_params(nnx.Linear(2, 3, rngs=nnx.Rngs(0)),
    ...                               'bfloat16')
    >>> model.kernel.dtype, model(jnp.ones((1, 2))).dtype
    (dtype(bfloat16), dtype('float32'))
  """
  if name not in PARAM_DTYPES:
    raise ValueError(
        f'model.param_dtype={name!r} is not one of {tuple(PARAM_DTYPES)}.')
  if name == 'float32':
    return model
  dtype = PARAM_DTYPES[name]

  def cast(x: jax.Array) -> jax.Array:
    if jnp.issubdtype(x.dtype, jnp.floating):
      return x.astype(dtype)
    return x

  nnx.update(model, jax.tree.map(cast, nnx.state(model, nnx.Param)))
  return model
