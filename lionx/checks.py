"""The argument checks of lionx's factories (public API).

Each names the argument, the value and what was expected, in one line,
and raises ``TypeError`` for a value of the wrong kind and ``ValueError``
for one out of range. The harness's configs (as ``ConfigError``) and the
reproductions use them too; so may your own transforms.

Example:
  >>> import lionx.checks
  >>> lionx.checks.positive('learning_rate', 3e-4)
  >>> lionx.checks.one_of('scope', 'leaf', ('global', 'leaf'))
"""

from lionx._src.checks import in_range
from lionx._src.checks import non_negative
from lionx._src.checks import one_of
from lionx._src.checks import positive
from lionx._src.checks import step_count

__all__ = (
    'in_range',
    'non_negative',
    'one_of',
    'positive',
    'step_count',
)
