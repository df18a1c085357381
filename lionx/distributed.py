"""Distributed Lion and its pieces (public API).

``distributed_lion`` (also :func:`lionx.distributed_lion`) is Distributed
Lion (Liu et al. 2024) inside :func:`jax.shard_map`; :func:`sign_vote` is its
vote on its own, and :func:`collective_bytes` counts, from compiled HLO, the
bytes each device hands to collectives.
"""

from lionx._src.distributed import DistributedLionState
from lionx._src.distributed import collective_bytes
from lionx._src.distributed import distributed_lion
from lionx._src.distributed import sign_vote

__all__ = (
    'DistributedLionState',
    'collective_bytes',
    'distributed_lion',
    'sign_vote',
)
