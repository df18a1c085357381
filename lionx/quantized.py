"""Low-precision internals: 8-bit codes and compensated parameters (public API).

8-bit momentum is ``lionx.scale_by_lion(..., mu_dtype=jnp.int8)`` (or
``lionx.lion(..., mu_dtype=jnp.int8)``); its codes are those of
:func:`quantize` (blockwise absmax with square-root companding), read back by
:func:`dequantize`. :func:`compensated_params` gives the precise parameters
of ``lionx.compensated``.
"""

from lionx._src.compensated import compensated_params
from lionx._src.quantized import QuantizedArray
from lionx._src.quantized import dequantize
from lionx._src.quantized import quantize

__all__ = (
    'QuantizedArray',
    'compensated_params',
    'dequantize',
    'quantize',
)
