"""Lion's interpolation :math:`c = w m + (1 - w) g`, shared by the momenta.

Both the float momentum of :func:`lionx.scale_by_lion` and the 8-bit one of
:func:`lionx.scale_by_lion_8bit` build :math:`c_k` with these helpers. This
module imports no other lionx transform, so that neither depends on the
other.
"""

from __future__ import annotations

from typing import Optional

import chex
import jax
import jax.numpy as jnp

from lionx._src import checks


def interpolate(m: jax.Array, g: jax.Array, w: chex.Numeric) -> jax.Array:
  """``w m + (1 - w) g``, with every non-finite entry made NaN."""
  c = w * m + (1.0 - w) * g
  return jnp.where(jnp.isfinite(c), c, jnp.nan)


def c_from_new_coefficient(b1, b2) -> Optional[float]:
  """a with c_k = a m_k + (1 - a) g_k, or None where that is not used.

  Only for known (not traced) betas with 0 < b1 / b2 <= 2, so that rounding
  is not amplified; b1 == b2 gives c_k = m_k.
  """
  b1, b2 = checks.concrete_float(b1), checks.concrete_float(b2)
  if b1 is None or b2 is None or b2 == 0.0 or b1 > 2.0 * b2:
    return None
  return b1 / b2
