"""Pure-function diagnostics from the Lion papers (public API).

Every function is jit-compatible and accumulates in float32.
"""

from lionx._src.norms import tree_l1
from lionx._src.norms import tree_linf

__all__ = (
    'tree_l1',
    'tree_linf',
)
