"""Pure-function diagnostics from the Lion papers (public API).

Every function is jit-compatible, accumulates in float32 (even for bfloat16
leaves) and ignores ``None`` leaves. Empty trees give 0, NaN inputs give NaN,
and an all-zero gradient has the norm ratio 0; see each docstring. A complex
entry counts as two real coordinates. For a weight-decay convention other
than ``'paper'``, pass ``lionx.effective_weight_decay(...)`` as
``weight_decay``.
"""

from lionx._src.metrics import BoxFeasibility
from lionx._src.metrics import NormRatio
from lionx._src.metrics import UpdateStats
from lionx._src.metrics import box_feasibility
from lionx._src.metrics import grad_norm_ratio
from lionx._src.metrics import kkt_residual
from lionx._src.metrics import lyapunov
from lionx._src.metrics import tree_l1
from lionx._src.metrics import tree_l2
from lionx._src.metrics import tree_linf
from lionx._src.metrics import tree_size
from lionx._src.metrics import update_stats

__all__ = (
    'BoxFeasibility',
    'NormRatio',
    'UpdateStats',
    'box_feasibility',
    'grad_norm_ratio',
    'kkt_residual',
    'lyapunov',
    'tree_l1',
    'tree_l2',
    'tree_linf',
    'tree_size',
    'update_stats',
)
