"""Typed config sections: checking, overriding and serialising dataclasses.

The bottom layer of the harness's configs; of lionx it imports only the
argument checks of the core (:mod:`lionx.checks`).
Every config section is a dataclass whose type hints are the truth:

* :func:`check` walks a section and raises :class:`ConfigError` for any
  value whose type does not match its field (``int`` widens to ``float``;
  ``bool`` is never a number);
* :func:`override` applies one ``dotted.key=value`` override, parsing the
  text **as the field's type** (``data.data_dir=2024`` is the string
  ``'2024'``; ``num_epochs=2.5`` is refused);
* :func:`to_dict` gives JSON-ready nested dicts.

A section may hold *dynamic sections* (e.g. one hyperparameter dataclass
per registered optimizer) in a field made with :func:`dynamic`: a dict of
dataclasses whose keys are walked, overridden and serialised as if they
were fields of the section itself.
"""

from __future__ import annotations

import ast
import dataclasses
import math
import typing
from typing import Any, Callable, Iterable

from lionx import checks


class ConfigError(ValueError):
  """A config value, file or override that cannot be used."""


def dynamic(**kwargs: Any) -> Any:
  """A field holding a dict of dynamic sections (see the module doc)."""
  return dataclasses.field(metadata={'sections': True}, **kwargs)


def _is_dynamic(field: dataclasses.Field) -> bool:
  return bool(field.metadata.get('sections'))


def _hints(obj: Any) -> dict[str, Any]:
  hints = typing.get_type_hints(type(obj))
  return {f.name: hints[f.name] for f in dataclasses.fields(obj)
          if not _is_dynamic(f)}


def sections(obj: Any) -> dict[str, Any]:
  """The dynamic sections of the dataclass ``obj`` by name."""
  out = {}
  if not dataclasses.is_dataclass(obj):
    return out
  for field in dataclasses.fields(obj):
    if _is_dynamic(field):
      out.update(getattr(obj, field.name))
  return out


def type_name(kind: Any) -> str:
  return getattr(kind, '__name__', None) or str(kind).replace('typing.', '')


def check_value(path: str, value: Any, kind: Any) -> Any:
  """``value`` as ``kind`` (int widens to float), or ``ConfigError``."""
  origin, args = typing.get_origin(kind), typing.get_args(kind)
  if origin is typing.Union:  # Optional[X]
    if value is None:
      return None
    (inner,) = [a for a in args if a is not type(None)]
    return check_value(path, value, inner)
  if origin is tuple:
    if not isinstance(value, (tuple, list)):
      raise ConfigError(f'{path}={value!r}: expected a tuple.')
    return tuple(check_value(f'{path}[{i}]', v, args[0])
                 for i, v in enumerate(value))
  if origin is dict:
    if not isinstance(value, dict):
      raise ConfigError(f'{path}={value!r}: expected a dict.')
    return {check_value(f'{path} key', k, args[0]):
            check_value(f'{path}.{k}', v, args[1])
            for k, v in value.items()}
  if kind is Any:
    return value
  if kind in (int, float) and isinstance(value, bool):
    raise ConfigError(f'{path}={value!r}: expected {type_name(kind)}.')
  if kind is float and isinstance(value, int):
    return float(value)
  if not isinstance(value, kind):
    raise ConfigError(
        f'{path}={value!r}: expected {type_name(kind)}, got '
        f'{type(value).__name__}.')
  return value


def check(obj: Any, path: str = '') -> None:
  """Type-checks every field of the dataclass ``obj``, in place."""
  prefix = f'{path}.' if path else ''
  for name, kind in _hints(obj).items():
    value = getattr(obj, name)
    if dataclasses.is_dataclass(kind) or dataclasses.is_dataclass(value):
      if not dataclasses.is_dataclass(value):
        raise ConfigError(
            f'{prefix}{name}={value!r}: expected a {type_name(kind)} '
            'section.')
      check(value, prefix + name)
    else:
      setattr(obj, name, check_value(prefix + name, value, kind))
  for name, section in sections(obj).items():
    check(section, prefix + name)


def to_dict(obj: Any) -> dict[str, Any]:
  """``obj`` as JSON-ready nested dicts (tuples become lists)."""
  out = {}
  for field in dataclasses.fields(obj):
    if not _is_dynamic(field):
      out[field.name] = _plain(getattr(obj, field.name))
  for name, section in sections(obj).items():
    out[name] = to_dict(section)
  return out


def _plain(value: Any) -> Any:
  if dataclasses.is_dataclass(value):
    return to_dict(value)
  if isinstance(value, (tuple, list)):
    return [_plain(v) for v in value]
  if isinstance(value, dict):
    return {k: _plain(v) for k, v in value.items()}
  return value


def _split_items(text: str) -> list[str]:
  text = text.strip()
  if text[:1] in '([' and text[-1:] in ')]':
    text = text[1:-1]
  return [part.strip() for part in text.split(',') if part.strip()]


def parse(path: str, text: str, kind: Any) -> Any:
  """The override text ``text`` read as a value of type ``kind``."""
  origin, args = typing.get_origin(kind), typing.get_args(kind)
  stripped = text.strip()
  if origin is typing.Union:
    if stripped.lower() == 'none':
      return None
    (inner,) = [a for a in args if a is not type(None)]
    return parse(path, text, inner)
  if origin is tuple:
    return tuple(parse(f'{path}[{i}]', part, args[0])
                 for i, part in enumerate(_split_items(text)))
  if origin is dict:
    try:
      value = ast.literal_eval(stripped)
    except (ValueError, SyntaxError):
      value = None
    if not isinstance(value, dict):
      raise ConfigError(
          f'{path}={text!r}: expected a dict such as {{"lion": 1e-3}}, or '
          f'set one entry with {path}.<key>=<value>.')
    return check_value(path, value, kind)
  if kind is bool:
    if stripped.lower() in ('true', 'false'):
      return stripped.lower() == 'true'
    raise ConfigError(f'{path}={text!r}: expected bool (true or false).')
  if kind is int:
    try:
      return int(stripped)
    except ValueError:
      raise ConfigError(f'{path}={text!r}: expected int.') from None
  if kind is float:
    try:
      return float(stripped)
    except ValueError:
      raise ConfigError(f'{path}={text!r}: expected float.') from None
  if kind is str:
    return text
  raise ConfigError(f'{path}: fields of type {type_name(kind)} cannot be '
                    'set from the command line.')


def override(root: Any, item: str) -> None:
  """Applies one ``dotted.key=value`` override to ``root``, in place."""
  if '=' not in item:
    raise ConfigError(
        f'override {item!r}: expected key=value, e.g. '
        'optimizer.learning_rate=1e-3.')
  key, text = item.split('=', 1)
  parts = key.strip().split('.')
  obj: Any = root
  for i, part in enumerate(parts):
    path = '.'.join(parts[:i + 1])
    last = i == len(parts) - 1
    if isinstance(obj, dict):
      if not last:
        raise ConfigError(f'override {item!r}: {path} is not a group.')
      kind = typing.get_args(kind)[1]
      obj[part] = parse(path, text, kind)
      return
    hints = _hints(obj) if dataclasses.is_dataclass(obj) else {}
    groups = sections(obj)
    if part in groups:
      if last:
        raise ConfigError(
            f'override {item!r}: {path} is a group; set one of its fields.')
      obj = groups[part]
      continue
    if part not in hints:
      known = sorted(set(hints) | set(groups))
      raise ConfigError(
          f'override {item!r}: unknown config field {path!r} (known here: '
          f'{", ".join(known)}).')
    kind = hints[part]
    value = getattr(obj, part)
    if dataclasses.is_dataclass(kind) or dataclasses.is_dataclass(value):
      if last:
        raise ConfigError(
            f'override {item!r}: {path} is a group; set one of its fields.')
      obj = value
    elif last:
      setattr(obj, part, parse(path, text, kind))
    elif typing.get_origin(kind) is dict:
      obj = value
    else:
      raise ConfigError(f'override {item!r}: {path} is not a group.')


# --- value checks -----------------------------------------------------------
# lionx's one family of checks (lionx.checks), raising ConfigError.


def _as_config_error(check: Callable[..., None], *args: Any,
                     **kwargs: Any) -> None:
  try:
    check(*args, **kwargs)
  except (TypeError, ValueError) as err:
    raise ConfigError(str(err)) from None


def in_range(path: str, value: Any, low: float, high: float, *,
             low_open: bool = False, high_open: bool = False) -> None:
  """Raises :class:`ConfigError` unless ``value`` is a real number in
  ``[low, high]`` (``low_open``/``high_open`` exclude an end).

  Example:
    >>> from lionx.train import fields
    >>> fields.in_range('model.dropout', 1.5, 0.0, 1.0)
    Traceback (most recent call last):
    ...
    lionx.train.fields.ConfigError: model.dropout=1.5 is outside [0.0, 1.0]: expected a number between 0 and 1.
  """
  _as_config_error(checks.in_range, path, value, low, high,
                   low_open=low_open, high_open=high_open)


def positive(path: str, value: Any) -> None:
  """Raises :class:`ConfigError` unless ``0 < value < inf``."""
  in_range(path, value, 0.0, math.inf, low_open=True, high_open=True)


def non_negative(path: str, value: Any) -> None:
  """Raises :class:`ConfigError` unless ``0 <= value < inf``."""
  in_range(path, value, 0.0, math.inf, high_open=True)


def fraction(path: str, value: Any) -> None:
  """Raises :class:`ConfigError` unless ``0 <= value <= 1``."""
  in_range(path, value, 0.0, 1.0)


def one_of(path: str, value: Any, names: Iterable[str],
           hint: str = '') -> None:
  """Raises :class:`ConfigError` unless ``value`` is one of ``names``."""
  try:
    checks.one_of(path, value, tuple(sorted(names)))
  except ValueError as err:
    raise ConfigError(f'{err}{hint}') from None


def positive_ints(section: Any, prefix: str,
                  skip: Callable[[str], bool] = lambda name: False) -> None:
  """Every int field of ``section`` (not bools, not ``None``) is > 0."""
  for field in dataclasses.fields(section):
    value = getattr(section, field.name)
    if (isinstance(value, int) and not isinstance(value, bool)
        and not skip(field.name)):
      positive(f'{prefix}.{field.name}', value)
