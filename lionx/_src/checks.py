"""Argument checks shared by the public factories.

Each check names the argument, the value and what was expected. A number
is a real scalar (a Python, NumPy or JAX int or float, bfloat16 included);
``bool`` is not a number, and neither is a type such as ``jnp.bfloat16``.

* A traced value (inside ``jax.jit`` or ``optax.inject_hyperparams``) is
  accepted unchecked wherever the argument is a hyperparameter that may be
  traced: it is only known at run time. Arguments that fix the compiled
  program (e.g. the reshapers' parameters) refuse it: see
  :func:`concrete_number`.
* A schedule (a callable of the step count) is accepted only where the
  argument says ``schedule=True``; it must take one positional argument,
  and what it returns is checked when it is called (:func:`scheduled`).
"""

from __future__ import annotations

import inspect
import math
import numbers
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np


# optax.inject_hyperparams casts hyperparameters to the params' dtype.
_HINT = (' (with complex params, pass hyperparam_dtype=jnp.float32 to '
         'optax.inject_hyperparams)')


def _kind(value: Any) -> Optional[str]:
  """Why ``value`` is not a number: 'a type', 'a dtype', ... or None."""
  if isinstance(value, type):
    return f'the type {getattr(value, "__name__", value)}'
  if isinstance(value, np.dtype):
    return f'the dtype {value}'
  if isinstance(value, (bool, np.bool_)):
    return 'a bool'
  if value is None:
    return 'None'
  if isinstance(value, (str, bytes)):
    return 'a string'
  return None


def one_argument(value: Callable[..., Any]) -> Optional[str]:
  """Why ``value`` cannot be called with one argument, or None."""
  try:
    signature = inspect.signature(value)
  except (TypeError, ValueError):  # e.g. some builtins: cannot tell.
    return None
  try:
    signature.bind(0)
  except TypeError:
    return f'a callable with signature {signature}'
  return None


def _check_schedule(value: Callable[..., Any]) -> Optional[str]:
  """Why ``value`` cannot be called as ``schedule(count)``, or None."""
  bad = one_argument(value)
  return None if bad is None else f'{bad}, not schedule(count)'



def concrete_float(value: Any, *, schedule: bool = False) -> float | None:
  """The value as a Python float; ``None`` if traced (or a schedule).

  Raises ``TypeError`` (without the argument's name; :func:`in_range` adds
  it) for anything that is not a real scalar: a type or dtype, a bool, a
  complex number, an array with a shape, a string, and a callable unless
  ``schedule`` (then one that cannot be called with the count).
  """
  expected = 'a real number or a schedule' if schedule else 'a real number'
  if isinstance(value, jax.core.Tracer):
    if jnp.issubdtype(value.dtype, jnp.complexfloating):
      raise TypeError(f'expected {expected}, got dtype {value.dtype}{_HINT}')
    return None
  kind = _kind(value)
  if kind is not None:
    raise TypeError(f'expected {expected}, got {kind}')
  if callable(value):
    if not schedule:
      raise TypeError(f'expected {expected}, got a callable')
    bad = _check_schedule(value)
    if bad is not None:
      raise TypeError(f'expected {expected}, got {bad}')
    return None
  try:
    array = np.asarray(value)
  except Exception as err:  # e.g. a tracer inside a container.
    raise TypeError(f'expected {expected}, got {value!r}') from err
  if array.shape != ():
    raise TypeError(f'expected {expected} (a scalar), got shape {array.shape}')
  dtype = array.dtype
  if dtype == np.bool_ or not (jnp.issubdtype(dtype, jnp.integer)
                               or jnp.issubdtype(dtype, jnp.floating)):
    hint = _HINT if jnp.issubdtype(dtype, jnp.complexfloating) else ''
    raise TypeError(f'expected {expected}, got dtype {dtype}{hint}')
  return float(array)


def _scalar(name: str, value: Any, schedule: bool) -> float | None:
  try:
    return concrete_float(value, schedule=schedule)
  except TypeError as err:
    raise TypeError(f'{name}={value!r}: {err}.') from None


def _own_name(name: Any) -> None:
  if not isinstance(name, str):
    raise TypeError(f'name={name!r}: expected the argument\'s name, a str.')


def in_range(
    name: str, value: Any, low: float, high: float, *,
    low_open: bool = False, high_open: bool = False, schedule: bool = False,
) -> None:
  """Raises ``ValueError`` unless ``low <= value <= high`` (or open ends).

  ``TypeError`` if ``value`` is not a real scalar (a bool, a string, an
  array with a shape, a type ...). Traced values, and schedules where
  ``schedule=True``, are not checked.

  Example:
    >>> from lionx.checks import in_range
    >>> in_range('b1', 0.9, 0.0, 1.0)
    >>> in_range('b1', 1.5, 0.0, 1.0)
    Traceback (most recent call last):
    ...
    ValueError: b1=1.5 is outside [0.0, 1.0]: expected a number between 0 and 1.
  """
  _own_name(name)
  for bound, what in ((low, 'low'), (high, 'high')):
    if isinstance(bound, bool) or not isinstance(bound, numbers.Real):
      raise TypeError(f'{what}={bound!r}: expected a real number.')
  if not low <= high:
    raise ValueError(f'low={low!r}, high={high!r}: expected low <= high.')
  x = _scalar(name, value, schedule)
  if x is None:
    return
  too_low = x <= low if low_open else x < low
  too_high = x >= high if high_open else x > high
  if math.isnan(x) or too_low or too_high:
    left = '(' if low_open else '['
    right = ')' if high_open else ']'
    raise ValueError(f'{name}={value!r} is outside {left}{low}, {high}'
                     f'{right}: expected {_words(low, high, low_open)}.')


def _words(low: float, high: float, low_open: bool) -> str:
  if high == math.inf:
    return f'a number {">" if low_open else ">="} {low:g}' if low else (
        'a positive number' if low_open else 'a number >= 0')
  return f'a number between {low:g} and {high:g}'


def non_negative(name: str, value: Any, *, schedule: bool = False) -> None:
  """Raises ``ValueError`` unless ``0 <= value < inf``.

  Example:
    >>> from lionx.checks import non_negative
    >>> non_negative('weight_decay', -0.1)
    Traceback (most recent call last):
    ...
    ValueError: weight_decay=-0.1 is outside [0.0, inf): expected a number >= 0.
  """
  in_range(name, value, 0.0, math.inf, high_open=True, schedule=schedule)


def positive(name: str, value: Any, *, schedule: bool = False) -> None:
  """Raises ``ValueError`` unless ``0 < value < inf``.

  Example:
    >>> from lionx.checks import positive
    >>> positive('learning_rate', 0)
    Traceback (most recent call last):
    ...
    ValueError: learning_rate=0 is outside (0.0, inf): expected a positive number.
  """
  in_range(name, value, 0.0, math.inf, low_open=True, high_open=True,
           schedule=schedule)


_MAX_COUNT = 2 ** 31 - 1


def step_count(name: str, value: Any) -> None:
  """Raises unless ``value`` is an integer step count ``>= 0``.

  A Python or NumPy int, or an integer array of shape () (traced too, as
  an optimizer state's ``count`` is); a float, even 2.0, is refused: a
  schedule read at a fractional step is not a step of the optimizer.

  Example:
    >>> from lionx.checks import step_count
    >>> step_count('count', 2.0)
    Traceback (most recent call last):
    ...
    TypeError: count=2.0: expected an integer step count (a Python int or an integer array of shape ()), got a float.
  """
  _own_name(name)
  if isinstance(value, int) and not isinstance(value, bool):
    if not 0 <= value <= _MAX_COUNT:
      raise ValueError(f'{name}={value!r}: expected a step count >= 0 and '
                       f'<= {_MAX_COUNT} (optax counts are int32).')
    return
  kind = _kind(value)
  if isinstance(value, float):
    kind = 'a float'
  dtype = leaf_dtype(value) if kind is None else None
  if isinstance(value, jax.core.Tracer):
    dtype = value.dtype
  if dtype is None or dtype == np.bool_ or not jnp.issubdtype(
      dtype, jnp.integer) or np.shape(value) != ():
    got = kind or (f'dtype {dtype}' if dtype is not None
                   else type(value).__name__)
    if dtype is not None and np.shape(value) != ():
      got = f'shape {np.shape(value)}'
    raise TypeError(
        f'{name}={value!r}: expected an integer step count (a Python int '
        f'or an integer array of shape ()), got {got}.')
  if not isinstance(value, jax.core.Tracer) and int(np.asarray(value)) < 0:
    raise ValueError(f'{name}={value!r}: expected a step count >= 0.')


def concrete_number(name: str, value: Any) -> float:
  """``value`` as a Python float; a traced value is refused.

  For parameters that fix the compiled program, such as a reshaper's
  :math:`p`: they must be known when the optimizer is built.
  """
  if isinstance(value, jax.core.Tracer):
    raise TypeError(
        f'{name}={value!r}: expected a Python or NumPy number, not a traced '
        'value: this parameter fixes the compiled program, so build one '
        'transformation per value instead of tracing it.')
  x = _scalar(name, value, False)
  assert x is not None
  return x


def scheduled(name: str, value: Any, count: Any) -> Any:
  """``value(count)`` if ``value`` is a schedule, else ``value``.

  What a schedule returns must be a real scalar; the error names the
  argument otherwise.
  """
  if not callable(value):
    return value
  out = value(count)
  dtype = leaf_dtype(out)  # None for None, lists, strings ...
  real = dtype is not None and dtype != np.bool_ and (
      jnp.issubdtype(dtype, jnp.integer)
      or jnp.issubdtype(dtype, jnp.floating))
  if not real or np.shape(out) != ():
    raise TypeError(
        f'{name}={value!r} returned {out!r} at step {count!r}; expected a '
        'schedule that returns a real scalar.')
  return out


def dtype(name: str, value: Any, expected: str) -> np.dtype:
  """``value`` as a dtype. None, a number or an array is not one
  (``jnp.dtype`` reads None as float64 and takes an array's dtype, which
  JAX deprecates)."""
  if value is not None and not isinstance(
      value, (bool, int, float, complex, np.number, np.ndarray, jax.Array)):
    try:
      return jnp.dtype(value)
    except TypeError:
      pass
  raise TypeError(f'{name}={value!r}: expected {expected}')


def one_of(name: str, value: Any, choices: tuple[str, ...]) -> None:
  """Raises ``ValueError`` unless ``value`` is one of the strings ``choices``.

  Example:
    >>> from lionx.checks import one_of
    >>> one_of('scope', 'layer', ('global', 'leaf'))
    Traceback (most recent call last):
    ...
    ValueError: scope='layer' is not one of ('global', 'leaf').
  """
  _own_name(name)
  if (not isinstance(choices, tuple) or not choices
      or not all(isinstance(c, str) for c in choices)):
    raise TypeError(f'choices={choices!r}: expected a non-empty tuple of '
                    'str.')
  if not isinstance(value, str) or value not in choices:
    raise ValueError(f'{name}={value!r} is not one of {choices}.')


def same_structure(name: str, tree: Any, reference: Any, what: str) -> None:
  """Raises ``ValueError`` unless ``tree`` matches ``reference`` leaf by leaf.

  Structures and leaf shapes must be equal, so that nothing is broadcast.
  """
  got, expected = jax.tree.structure(tree), jax.tree.structure(reference)
  if got != expected:
    raise ValueError(
        f'{name} has tree structure {got}, but {what} has {expected}.')
  for a, b in zip(jax.tree.leaves(tree), jax.tree.leaves(reference)):
    if np.shape(a) != np.shape(b):
      raise ValueError(
          f'{name} has a leaf of shape {np.shape(a)} where {what} has '
          f'shape {np.shape(b)}; lionx never broadcasts.')
    if _is_complex(a) != _is_complex(b):
      raise ValueError(
          f'{name} has a leaf of dtype {leaf_dtype(a)} where {what} has '
          f'dtype {leaf_dtype(b)}: a complex leaf is two real coordinates, '
          'so it pairs with a complex leaf only.')


def _is_complex(leaf: Any) -> bool:
  dtype = leaf_dtype(leaf)
  return dtype is not None and jnp.issubdtype(dtype, jnp.complexfloating)


def leaf_dtype(leaf: Any) -> Optional[np.dtype]:
  """The dtype of a numeric leaf (an array or a number), else ``None``.

  Strings, bytes, objects and arrays of them are not numeric.
  """
  if isinstance(leaf, (jax.Array, jax.core.Tracer)):
    return leaf.dtype
  if isinstance(leaf, (bool, int, float, complex, np.generic, np.ndarray)):
    try:
      dtype = np.asarray(leaf).dtype
    except (OverflowError, ValueError):
      return None
    if dtype == np.bool_ or jnp.issubdtype(dtype, jnp.number):
      return dtype
  return None


def _where(path: Any) -> str:
  return jax.tree_util.keystr(path) or '(the root)'


def _not_numeric(name: str, path: Any, leaf: Any) -> TypeError:
  return TypeError(
      f'{name} has a leaf at {_where(path)} that is not a numeric array: '
      f'{type(leaf).__name__} {leaf!r:.60}; expected a pytree of arrays.')


def numeric_leaves(name: str, tree: Any) -> None:
  """Raises ``TypeError`` unless every leaf is a numeric array or number.

  For the diagnostics, which take integer and bool leaves as numbers.
  """
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    if leaf_dtype(leaf) is None:
      raise _not_numeric(name, path, leaf)


def inexact_leaves(name: str, tree: Any) -> None:
  """Raises ``TypeError`` unless every leaf is a float or complex array.

  lionx optimizes real coordinates: an integer or bool leaf has no
  gradient, and a :math:`\\pm\\eta` step cast back to an integer is
  truncated (``optax.lion`` moves ``2`` by ``0.998`` to ``2``), so such
  leaves are refused rather than silently cast.
  """
  paths = jax.tree_util.tree_flatten_with_path(tree)[0]
  for path, leaf in paths:
    dtype = leaf_dtype(leaf)
    if dtype is None:
      raise _not_numeric(name, path, leaf)
    if not jnp.issubdtype(dtype, jnp.inexact):
      raise TypeError(
          f'{name} has a leaf at {_where(path)} of dtype {dtype}; lionx '
          'optimizes float (or complex) leaves only. Keep integer and bool '
          'state out of the optimized tree, e.g. with nnx.Optimizer(..., '
          'wrt=nnx.Param) or optax.masked.')
