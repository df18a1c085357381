"""Choosing a thing by name: one small registry type for the harness.

Tasks, data sets, models, optimizers and schedules are each a
:class:`Registry`: a read-only mapping from the names a config field takes
to their entries, filled by explicit :meth:`Registry.register` calls (in the
module that defines the entries, or in a config file for a user's own).
An unknown name raises :class:`~lionx.train.fields.ConfigError` naming the
field, the value and the names it could be.

Example:
  >>> from lionx.train.registry import Registry
  >>> colours = Registry('model.colour')
  >>> _ = colours.register('red', 0xff0000)
  >>> colours['red'] == 0xff0000, 'red' in colours, list(colours)
  (True, True, ['red'])
  >>> colours['blue']
  Traceback (most recent call last):
  ...
  lionx.train.fields.ConfigError: model.colour='blue' is not one of ('red',).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from lionx.train.fields import ConfigError


class Registry(Mapping):
  """Names of one config field (``field``) and their entries."""

  def __init__(self, field: str, hint: str = ''):
    """``hint`` is appended to the unknown-name error (how to add one)."""
    self.field = field
    self._hint = hint
    self._entries: dict[str, Any] = {}

  def register(self, name: str, entry: Any) -> Any:
    """Makes ``field=name`` choose ``entry`` (replacing an earlier one);
    returns ``entry``."""
    if not isinstance(name, str) or not name:
      raise ValueError(
          f'{self.field}: name={name!r}: expected a non-empty string.')
    self._entries[name] = entry
    return entry

  def unregister(self, name: str) -> Any:
    """Removes ``name``; returns its entry."""
    entry = self[name]
    del self._entries[name]
    return entry

  def names(self) -> tuple[str, ...]:
    """The registered names, sorted."""
    return tuple(sorted(self._entries))

  def __getitem__(self, name: str) -> Any:
    if not isinstance(name, str) or name not in self._entries:
      raise ConfigError(
          f'{self.field}={name!r} is not one of {self.names()}.{self._hint}')
    return self._entries[name]

  def get(self, name: str, default: Any = None) -> Any:
    """The entry of ``name``, or ``default`` (no error)."""
    return self._entries.get(name, default)

  def __contains__(self, name: object) -> bool:
    return name in self._entries

  def __iter__(self) -> Iterator[str]:
    return iter(self._entries)

  def __len__(self) -> int:
    return len(self._entries)

  def __repr__(self) -> str:
    return f'Registry({self.field!r}: {", ".join(self.names())})'
