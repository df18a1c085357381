"""lionx.checks: lionx's one family of argument checks.

The reference is plain interval arithmetic on Python floats, written from
the docstrings: a check passes exactly when the number is in the interval.
"""

from __future__ import annotations

import math

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lionx
from lionx import checks
from lionx._src import checks as src_checks
from lionx.train import fields


def _inside(x: float, low: float, high: float, low_open: bool,
            high_open: bool) -> bool:
  above = x > low if low_open else x >= low
  below = x < high if high_open else x <= high
  return above and below  # False for NaN


_NUMBERS = st.floats(allow_nan=True, allow_infinity=True, width=64)


@hypothesis.given(x=_NUMBERS, low=st.floats(-10, 10), width=st.floats(0, 10),
                  low_open=st.booleans(), high_open=st.booleans())
def test_in_range_is_interval_membership(x, low, width, low_open, high_open):
  high = low + width
  ok = _inside(x, low, high, low_open, high_open)
  try:
    checks.in_range('v', x, low, high, low_open=low_open,
                    high_open=high_open)
    passed = True
  except ValueError as err:
    passed = False
    assert str(err).startswith(f'v={x!r} is outside '), err
  assert passed == ok


@pytest.mark.parametrize('value', [
    3, 3.0, np.float32(3.0), np.int64(3), jnp.asarray(3.0),
    jnp.asarray(3, jnp.bfloat16)])
def test_every_kind_of_number_is_read(value):
  checks.positive('v', value)
  with pytest.raises(ValueError, match='is outside'):
    checks.in_range('v', value, 4.0, 5.0)


@pytest.mark.parametrize('check,value,bad', [
    (checks.positive, 0.0, '(0.0, inf): expected a positive number'),
    (checks.positive, math.inf, '(0.0, inf)'),
    (checks.non_negative, -1e-9, '[0.0, inf): expected a number >= 0'),
    (checks.non_negative, math.nan, 'is outside'),
])
def test_positive_and_non_negative(check, value, bad):
  with pytest.raises(ValueError) as err:
    check('lr', value)
  assert str(err.value).startswith(f'lr={value!r} is outside ')
  assert bad in str(err.value)


@pytest.mark.parametrize('value,got', [
    (True, 'a bool'), ('0.1', 'a string'), (None, 'None'),
    (np.ones(2), 'shape (2,)'), (1 + 2j, 'dtype complex'),
    (jnp.float32, 'the type'), (lambda c: 0.1, 'a callable')])
def test_not_a_number_is_a_type_error(value, got):
  with pytest.raises(TypeError, match='v=') as err:
    checks.positive('v', value)
  assert got in str(err.value)


def test_schedules_only_where_allowed():
  checks.positive('lr', lambda count: 0.1, schedule=True)
  with pytest.raises(TypeError, match='not schedule'):
    checks.positive('lr', lambda: 0.1, schedule=True)


def test_step_count():
  checks.step_count('count', 0)
  checks.step_count('count', np.int32(7))
  with pytest.raises(TypeError, match='got a float'):
    checks.step_count('count', 2.0)
  with pytest.raises(ValueError, match='count=-1'):
    checks.step_count('count', -1)


_TOP = 2 ** 31 - 1  # optax's count is int32


@pytest.mark.parametrize('value', [
    0, _TOP, np.int32(0), np.int64(_TOP), np.uint8(3), jnp.asarray(0),
    jnp.asarray(5, jnp.int32)], ids=repr)
def test_step_count_takes_every_integer_count_up_to_int32(value):
  checks.step_count('count', value)
  jax.jit(lambda c: checks.step_count('count', c))(jnp.asarray(value))


@pytest.mark.parametrize('value,match', [
    (_TOP + 1, 'count=2147483648: expected a step count >= 0 and <= '
     '2147483647'),
    (-1, 'count=-1: expected a step count >= 0'),
    (np.int32(-1), r'count=np.int32\(-1\): expected a step count >= 0'),
    (jnp.asarray(-3), 'expected a step count >= 0'),
])
def test_step_count_refuses_counts_out_of_range(value, match):
  with pytest.raises(ValueError, match=match):
    checks.step_count('count', value)


# What each refusal says it got (after "expected an integer step count (a
# Python int or an integer array of shape ()), got ...").
@pytest.mark.parametrize('value,got', [
    (True, 'a bool'), (np.bool_(True), 'a bool'), (None, 'None'),
    ('3', 'a string'), (int, 'the type int'),
    (np.dtype('int32'), 'the dtype int32'), (2.0, 'a float'),
    (np.float32(2.0), 'dtype float32'), (jnp.asarray(1.0), 'dtype float32'),
    (np.arange(2), r'shape \(2,\)'), (jnp.zeros((1,), jnp.int32),
                                      r'shape \(1,\)'),
    pytest.param(object(), 'object', id='object'),
], ids=repr)
def test_step_count_says_what_it_got(value, got):
  with pytest.raises(TypeError, match=(
      r'expected an integer step count \(a Python int or an integer array '
      rf'of shape \(\)\), got {got}\.$')):
    checks.step_count('count', value)


def test_step_count_of_a_traced_float_says_its_dtype():
  with pytest.raises(TypeError, match=r'got dtype float32\.'):
    jax.jit(lambda c: checks.step_count('count', c))(jnp.asarray(1.0))


def test_concrete_number_is_a_python_float():
  for value, expected in ((2, 2.0), (np.float32(0.5), 0.5), (np.int8(-3), -3.0),
                          (jnp.asarray(1.5), 1.5)):
    out = src_checks.concrete_number('p', value)
    assert type(out) is float and out == expected


@pytest.mark.parametrize('value,got', [
    (lambda count: 1.0, 'expected a real number, got a callable'),
    ('x', 'expected a real number, got a string'),
    (np.ones(2), r'expected a real number \(a scalar\), got shape \(2,\)'),
    (1 + 2j, 'expected a real number, got dtype complex128'),
], ids=['schedule', 'string', 'array', 'complex'])
def test_concrete_number_names_the_argument_and_refuses_schedules(value, got):
  with pytest.raises(TypeError, match=rf'^p=.*: {got}'):
    src_checks.concrete_number('p', value)


def test_concrete_number_refuses_a_traced_value():
  with pytest.raises(TypeError, match='p=.*not a traced value'):
    jax.jit(lambda x: src_checks.concrete_number('p', x))(1.0)


@pytest.mark.parametrize('low,low_open,value,words', [
    (0.0, True, 0.0, 'a positive number'),
    (0.0, False, -1.0, 'a number >= 0'),
    (2.0, True, 2.0, 'a number > 2'),
    (2.0, False, 1.0, 'a number >= 2'),
    (-1.0, False, -3.0, 'a number >= -1'),
])
def test_half_lines_are_said_in_words(low, low_open, value, words):
  with pytest.raises(ValueError, match=rf': expected {words}\.$'):
    checks.in_range('x', value, low, math.inf, low_open=low_open)


@pytest.mark.parametrize('out', [
    0.5, 2, np.float32(0.5), np.int32(3), jnp.asarray(0.5),
    jnp.asarray(2, jnp.int32)], ids=repr)
def test_scheduled_calls_a_schedule_that_returns_a_real_scalar(out):
  assert src_checks.scheduled('lr', lambda count: out, 7) is out
  assert src_checks.scheduled('lr', 0.25, 7) == 0.25  # a constant as it is


@pytest.mark.parametrize('out', [
    True, np.bool_(False), 1j, jnp.asarray(1j), jnp.ones(2), [0.5],
    (0.1, 0.2), 'x', None], ids=repr)
def test_scheduled_refuses_a_schedule_that_returns_no_real_scalar(out):
  with pytest.raises(TypeError, match=(
      r'^lr=<function .*> returned .* at step 7; expected a schedule that '
      r'returns a real scalar\.$')):
    src_checks.scheduled('lr', lambda count: out, 7)


@pytest.mark.parametrize('tree,where,what', [
    ({'a': {'b': 'x'}}, r"\['a'\]\['b'\]", "str 'x'"),
    ('x', r'\(the root\)', "str 'x'"),
    ([jnp.ones(1), object()], r'\[1\]', 'object <object object at'),
], ids=['nested', 'root', 'list'])
def test_a_non_numeric_leaf_is_named_by_its_path_and_type(tree, where, what):
  for check in (src_checks.numeric_leaves, src_checks.inexact_leaves):
    with pytest.raises(TypeError, match=(
        rf'^params has a leaf at {where} that is not a numeric array: '
        rf'{what}.*; expected a pytree of arrays\.$')):
      check('params', tree)


@pytest.mark.parametrize('tree,where,dtype', [
    (jnp.arange(3), r'\(the root\)', 'int32'),
    ({'a': jnp.ones(2, bool)}, r"\['a'\]", 'bool'),
], ids=['root', 'nested'])
def test_an_integer_or_bool_leaf_is_named_by_its_path(tree, where, dtype):
  with pytest.raises(TypeError, match=(
      rf'^params has a leaf at {where} of dtype {dtype}; lionx optimizes '
      r'float \(or complex\) leaves only\.')):
    src_checks.inexact_leaves('params', tree)


def test_one_of():
  checks.one_of('scope', 'leaf', ('global', 'leaf'))
  with pytest.raises(ValueError, match=r"scope='layer' is not one of"):
    checks.one_of('scope', 'layer', ('global', 'leaf'))
  with pytest.raises(ValueError, match='scope=1 is not one of'):
    checks.one_of('scope', 1, ('global', 'leaf'))


@pytest.mark.parametrize('call,match', [
    (lambda: checks.positive(3, 1.0), 'name=3: expected'),
    (lambda: checks.in_range('v', 1.0, 2.0, 1.0), 'expected low <= high'),
    (lambda: checks.in_range('v', 1.0, math.nan, 1.0),
     'expected low <= high'),
    (lambda: checks.in_range('v', 1.0, '0', 1.0), "low='0': expected"),
    (lambda: checks.in_range('v', 1.0, 0.0, True), 'high=True: expected'),
    (lambda: checks.one_of('v', 'a', ['a']), r"choices=\['a'\]: expected"),
    (lambda: checks.one_of('v', 'a', ()), r'choices=\(\): expected'),
    (lambda: checks.step_count(None, 1), 'name=None: expected'),
])
def test_the_checks_refuse_bad_arguments_of_their_own(call, match):
  with pytest.raises((TypeError, ValueError), match=match):
    call()


def test_the_harness_and_the_core_give_the_same_words():
  with pytest.raises(ValueError) as core:
    checks.in_range('optimizer.b1', 1.5, 0.0, 1.0)
  with pytest.raises(fields.ConfigError) as config:
    fields.fraction('optimizer.b1', 1.5)
  assert str(core.value) == str(config.value)
  with pytest.raises(fields.ConfigError, match=r'\. Did you mean'):
    fields.one_of('optimizer.name', 'lamb', ('lion', 'adamw'),
                  ' Did you mean lion?')


def test_public():
  assert lionx.checks is checks
  assert set(checks.__all__) == {
      'in_range', 'non_negative', 'one_of', 'positive', 'step_count'}
