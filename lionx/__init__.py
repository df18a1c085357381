"""lionx: the Lion optimizer family as composable Optax transforms.

The pieces chain as ``scale_by_lion -> reshaper (∇K) -> [cautious] ->
add_decoupled_weight_decay -> learning rate``; :func:`lion`, :func:`lion_k`
and :func:`cautious_lion` are ready-made chains.
"""

from lionx._src.alias import DEFAULT_WEIGHT_DECAY
from lionx._src.alias import cautious_lion
from lionx._src.alias import lion
from lionx._src.alias import lion_k
from lionx._src.compensated import CompensatedState
from lionx._src.compensated import compensated
from lionx._src.compensated import compensated_params
from lionx._src.distributed import DistributedLionState
from lionx._src.distributed import collective_bytes
from lionx._src.distributed import distributed_lion
from lionx._src.distributed import sign_vote
from lionx._src.quantized import QuantizedArray
from lionx._src.quantized import ScaleByLion8bitState
from lionx._src.quantized import dequantize
from lionx._src.quantized import quantize
from lionx._src.quantized import scale_by_lion_8bit
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
from lionx import metrics
from lionx import theory

__version__ = '0.2.0'

__all__ = (
    'DEFAULT_WEIGHT_DECAY',
    'CompensatedState',
    'DistributedLionState',
    'QuantizedArray',
    'RESHAPERS',
    'ScaleByLion8bitState',
    'CautiousState',
    'Reshaper',
    'ScaleByLionState',
    'WeightDecayState',
    'add_decoupled_weight_decay',
    'cautious',
    'cautious_lion',
    'collective_bytes',
    'compensated',
    'compensated_params',
    'dequantize',
    'distributed_lion',
    'effective_weight_decay',
    'huber_reshaper',
    'lion',
    'lion_k',
    'metrics',
    'theory',
    'lp_reshaper',
    'quantize',
    'scale_by_lion',
    'scale_by_lion_8bit',
    'sign_reshaper',
    'sign_vote',
    'sparse_sign_reshaper',
    'spectral_reshaper',
    'tanh_reshaper',
    'topk_sign_reshaper',
)
