"""lionx: the Lion optimizer family as composable Optax transforms.

The pieces chain as ``scale_by_lion -> reshaper (∇K) -> [cautious] ->
add_decoupled_weight_decay -> learning rate``; :func:`lion`, :func:`lion_k`
and :func:`cautious_lion` are ready-made chains. Submodules:
:mod:`lionx.metrics` (diagnostics), :mod:`lionx.theory` (the convergence
theory), :mod:`lionx.distributed` (Distributed Lion's vote and byte
counts) and :mod:`lionx.quantized` (8-bit codes, compensated parameters).
"""

import warnings as _warnings

from lionx._src.alias import DEFAULT_WEIGHT_DECAY
from lionx._src.alias import cautious_lion
from lionx._src.alias import lion
from lionx._src.alias import lion_k
from lionx._src.compensated import CompensatedState
from lionx._src.compensated import compensated
from lionx._src.distributed import DistributedLionState
from lionx._src.distributed import distributed_lion
from lionx._src.quantized import ScaleByLion8bitState
from lionx._src.reshapers import RESHAPERS
from lionx._src.reshapers import Reshaper
from lionx._src.reshapers import huber_reshaper
from lionx._src.reshapers import lp_reshaper
from lionx._src.reshapers import sign_reshaper
from lionx._src.reshapers import sparse_sign_reshaper
from lionx._src.reshapers import tanh_reshaper
from lionx._src.reshapers import topk_sign_reshaper
from lionx._src.spectral import spectral_reshaper
from lionx._src.transforms import CautiousState
from lionx._src.transforms import ScaleByLionState
from lionx._src.transforms import WeightDecayState
from lionx._src.transforms import add_decoupled_weight_decay
from lionx._src.transforms import cautious
from lionx._src.transforms import effective_weight_decay
from lionx._src.transforms import scale_by_lion
from lionx import checks
from lionx import distributed
from lionx import metrics
from lionx import quantized
from lionx import theory

__version__ = '0.3.2'

# Old top-level names, deprecated in 0.3 and removed in 0.4:
# name -> (where it lives now, the replacement to name in the warning).
_DEPRECATED = {
    'collective_bytes': (distributed, 'lionx.distributed.collective_bytes'),
    'sign_vote': (distributed, 'lionx.distributed.sign_vote'),
    'QuantizedArray': (quantized, 'lionx.quantized.QuantizedArray'),
    'quantize': (quantized, 'lionx.quantized.quantize'),
    'dequantize': (quantized, 'lionx.quantized.dequantize'),
    'compensated_params': (quantized,
                           'lionx.quantized.compensated_params'),
    'scale_by_lion_8bit': (
        None, 'lionx.scale_by_lion(b1, b2, mu_dtype=jnp.int8) (the same '
        'transform and state, with block_size=256)'),
}


def __getattr__(name: str):
  """The deprecated names, with a ``DeprecationWarning`` naming the new."""
  if name not in _DEPRECATED:
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
  module, replacement = _DEPRECATED[name]
  _warnings.warn(
      f'lionx.{name} is deprecated since lionx 0.3 and will be removed in '
      f'0.4: use {replacement}.', DeprecationWarning, stacklevel=2)
  if module is None:
    from lionx._src.quantized import scale_by_lion_8bit
    return scale_by_lion_8bit
  return getattr(module, name)

__all__ = (
    'DEFAULT_WEIGHT_DECAY',
    'CompensatedState',
    'DistributedLionState',
    'RESHAPERS',
    'ScaleByLion8bitState',
    'CautiousState',
    'Reshaper',
    'ScaleByLionState',
    'WeightDecayState',
    'add_decoupled_weight_decay',
    'cautious',
    'cautious_lion',
    'compensated',
    'distributed_lion',
    'effective_weight_decay',
    'huber_reshaper',
    'lion',
    'lion_k',
    'checks',
    'distributed',
    'metrics',
    'quantized',
    'theory',
    'lp_reshaper',
    'scale_by_lion',
    'sign_reshaper',
    'sparse_sign_reshaper',
    'spectral_reshaper',
    'tanh_reshaper',
    'topk_sign_reshaper',
)
