"""The learning-rate schedules at their boundaries, against their formulas
(lionx/train/schedules.py's module doc; REFERENCE §6)."""

import math

import pytest

from lionx.train import fields
from lionx.train.schedules import ScheduleConfig
from lionx.train.schedules import make_schedule
from lionx.train.schedules import validate
from lionx.train.schedules import warmup_steps


def _cosine(lr, a, t, total):
  """eta (a + (1 - a) (1 + cos(pi t / T)) / 2), flat at a eta after T."""
  t = min(t, total)
  return lr * (a + (1 - a) * 0.5 * (1 + math.cos(math.pi * t / total)))


def _warmup_cosine(lr, a, t, warm, total):
  """Linear from 0 to eta over W steps, then the cosine over T - W."""
  if t < warm:
    return lr * t / warm
  return _cosine(lr, a, t - warm, total - warm)


@pytest.mark.parametrize('a', [0.0, 0.25, 1.0])
def test_warmup_cosine_ends_at_its_final_fraction(a):
  lr, warm, total = 2.0, 4, 20
  s = make_schedule('warmup_cosine', lr, total, warmup_steps=warm,
                    final_fraction=a)
  for t in (0, 1, 3, 4, 5, 12, 19, 20, 25):
    assert float(s(t)) == pytest.approx(
        _warmup_cosine(lr, a, t, warm, total), rel=1e-6, abs=1e-7), t
  assert float(s(warm)) == pytest.approx(lr)
  assert float(s(total)) == pytest.approx(a * lr, abs=1e-7)


@pytest.mark.parametrize('a', [0.0, 0.3, 1.0])
def test_cosine_at_its_ends_and_past_them(a):
  lr, total = 0.5, 10
  s = make_schedule('cosine', lr, total, final_fraction=a)
  for t in (0, 5, 9, 10, 15):
    assert float(s(t)) == pytest.approx(_cosine(lr, a, t, total),
                                        rel=1e-6, abs=1e-7)


def test_cosine_ignores_the_warmup():
  s = make_schedule('cosine', 1.0, 10, warmup_steps=4, final_fraction=0.2)
  for t in (0, 2, 4, 10):
    assert float(s(t)) == pytest.approx(_cosine(1.0, 0.2, t, 10), rel=1e-6)


def test_constant_ignores_the_final_fraction_and_warmup():
  s = make_schedule('constant', 0.1, 5, warmup_steps=4, final_fraction=0.5)
  assert [float(s(t)) for t in (0, 3, 4, 5, 50)] == pytest.approx([0.1] * 5)


def test_edges_that_are_accepted():
  # T = 1, W = T - 1, a = 0 and a = 1: the ends of every range.
  assert float(make_schedule('cosine', 1.0, 1)(1)) == pytest.approx(0.0)
  s = make_schedule('warmup_cosine', 1.0, 5, warmup_steps=4)
  assert [float(s(t)) for t in (0, 2, 4, 5)] == pytest.approx(
      [0.0, 0.5, 1.0, 0.0], abs=1e-7)
  assert float(make_schedule('cosine', 1.0, 3, final_fraction=1.0)(3)) == 1.0
  assert float(make_schedule('warmup_cosine', 3.0, 2)(0)) == pytest.approx(
      3.0)  # W = 0: no warm-up


@pytest.mark.parametrize('kwargs,match', [
    ({'learning_rate': -1.0}, 'learning_rate=-1.0'),
    ({'learning_rate': math.nan}, 'learning_rate=nan'),
    ({'total_steps': -3}, 'total_steps=-3'),
    ({'warmup_steps': -1}, 'warmup_steps=-1'),
    ({'warmup_steps': 101}, 'warmup_steps=101'),
    ({'final_fraction': -0.1}, r'final_fraction=-0.1'),
    ({'final_fraction': 1.5}, 'final_fraction=1.5'),
    ({'name': 'step'}, "schedule.name='step' is not one of"),
    ({'name': 'cosine', 'learning_rate': 0.0},
     r'learning_rate=0.0 is outside \(0.0, inf\): expected a positive'),
    ({'name': 'cosine', 'total_steps': 0}, 'total_steps=0'),
    ({'name': 'cosine', 'warmup_steps': 100}, 'warmup_steps=100'),
    ({'name': 'cosine', 'final_fraction': 2.0}, 'final_fraction=2.0'),
])
def test_edges_that_are_refused(kwargs, match):
  args = dict(name='warmup_cosine', learning_rate=1.0, total_steps=100)
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    make_schedule(**args)


def test_warmup_in_steps_or_epochs():
  assert warmup_steps(ScheduleConfig(warmup_steps=7), None) == 7
  assert warmup_steps(ScheduleConfig(warmup_steps=7), 50) == 7
  assert warmup_steps(ScheduleConfig(warmup_epochs=3), 50) == 150
  assert warmup_steps(ScheduleConfig(), 50) == 0
  with pytest.raises(fields.ConfigError, match='warmup_epochs=2'):
    warmup_steps(ScheduleConfig(warmup_epochs=2), None)


@pytest.mark.parametrize('config,match', [
    (ScheduleConfig(name='linear'), "schedule.name='linear'"),
    (ScheduleConfig(warmup_epochs=-1), 'schedule.warmup_epochs=-1'),
    (ScheduleConfig(warmup_steps=-2), 'schedule.warmup_steps=-2'),
    (ScheduleConfig(warmup_epochs=1, warmup_steps=1),
     'give at most one'),
    (ScheduleConfig(final_fraction=1.01), 'schedule.final_fraction=1.01'),
])
def test_validate_refuses(config, match):
  with pytest.raises(fields.ConfigError, match=match):
    validate(config)


def test_validate_accepts_the_edges():
  for config in (ScheduleConfig(), ScheduleConfig(final_fraction=1.0),
                 ScheduleConfig(name='constant', warmup_steps=5),
                 ScheduleConfig(name='warmup_cosine', warmup_epochs=1)):
    validate(config)
