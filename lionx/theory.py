"""The rates and schedules of Lion's convergence theory (public API).

Plain Python/NumPy functions from Dong, Li, Lin, *Convergence Rate Analysis
of LION*: the schedule of Theorem 2, the bounds of Theorem 2, Corollary 3,
Theorem 4 and Corollary 5, the empirical rate constant of its Appendix
A.1.2, and AdamW-to-Lion starting points.
"""

from lionx._src.theory import Corollary3Constants
from lionx._src.theory import LionStart
from lionx._src.theory import PaperSchedule
from lionx._src.theory import Theorem2Terms
from lionx._src.theory import corollary3_bound
from lionx._src.theory import corollary3_constants
from lionx._src.theory import corollary5_bound
from lionx._src.theory import empirical_rate_constant
from lionx._src.theory import lion_from_adamw
from lionx._src.theory import paper_schedule
from lionx._src.theory import theorem2_bound
from lionx._src.theory import theorem2_terms
from lionx._src.theory import theorem4_bound

__all__ = (
    'Corollary3Constants',
    'LionStart',
    'PaperSchedule',
    'Theorem2Terms',
    'corollary3_bound',
    'corollary3_constants',
    'corollary5_bound',
    'empirical_rate_constant',
    'lion_from_adamw',
    'paper_schedule',
    'theorem2_bound',
    'theorem2_terms',
    'theorem4_bound',
)
