"""Argument checks shared by the public factories.

Each check names the argument, the value and what was expected. Values that
are traced (inside ``jax.jit`` or ``optax.inject_hyperparams``) or schedules
are not checked: they are only known at run time.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np


def concrete_float(value: Any) -> float | None:
  """The value as a Python float, or ``None`` if it is traced or callable."""
  if callable(value) or isinstance(value, jax.core.Tracer):
    return None
  if isinstance(value, (bool, np.bool_)) or value is None:
    raise TypeError(f'expected a real number, got {value!r}')
  try:
    array = np.asarray(value)
  except Exception as err:  # e.g. a tracer inside a container.
    raise TypeError(f'expected a real number, got {value!r}') from err
  if array.shape != () or not np.issubdtype(array.dtype, np.number):
    raise TypeError(f'expected a real scalar, got {value!r}')
  return float(array)


def _scalar(name: str, value: Any) -> float | None:
  try:
    return concrete_float(value)
  except TypeError as err:
    raise TypeError(f'{name}={value!r}: {err}') from None


def in_range(
    name: str, value: Any, low: float, high: float, *,
    low_open: bool = False, high_open: bool = False,
) -> None:
  """Raises ``ValueError`` unless ``low <= value <= high`` (or open ends)."""
  x = _scalar(name, value)
  if x is None:
    return
  too_low = x <= low if low_open else x < low
  too_high = x >= high if high_open else x > high
  if math.isnan(x) or too_low or too_high:
    left = '(' if low_open else '['
    right = ')' if high_open else ']'
    raise ValueError(
        f'{name}={value!r} is outside {left}{low}, {high}{right}.')


def non_negative(name: str, value: Any) -> None:
  """Raises ``ValueError`` unless ``value >= 0`` (schedules are not checked)."""
  in_range(name, value, 0.0, math.inf)


def positive(name: str, value: Any) -> None:
  """Raises ``ValueError`` unless ``value > 0``."""
  in_range(name, value, 0.0, math.inf, low_open=True)


def one_of(name: str, value: Any, choices: tuple[str, ...]) -> None:
  if value not in choices:
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
