r"""Learning-rate schedules by name, in optimizer steps.

* ``constant``: :math:`\eta_t = \eta`.
* ``cosine``: :math:`\eta_t = \eta\,(a + (1-a)\tfrac12(1+\cos(\pi t/T)))`,
  :math:`T` the total number of steps and :math:`a` the final fraction
  (the papers' CIFAR runs, REFERENCE §6).
* ``warmup_cosine``: linear from 0 to :math:`\eta` over :math:`W` steps, then
  the cosine over the remaining :math:`T - W` (the ImageNet schedule).

The ``schedule`` config section (:class:`ScheduleConfig`) lives here.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import optax

from lionx import checks
from lionx.train import fields
from lionx.train import registry

Schedule = Callable[[int], float]
# (peak rate, total steps T, warm-up W, final fraction a) -> schedule.
Factory = Callable[[float, int, int, float], Schedule]

#: ``schedule.name`` -> its factory.
SCHEDULES: registry.Registry = registry.Registry('schedule.name')
SCHEDULES.register(
    'constant', lambda lr, total, warmup, a: optax.constant_schedule(lr))
SCHEDULES.register('cosine', lambda lr, total, warmup, a: (
    optax.cosine_decay_schedule(lr, decay_steps=total, alpha=a)))
SCHEDULES.register('warmup_cosine', lambda lr, total, warmup, a: (
    optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=lr, warmup_steps=warmup,
        decay_steps=total, end_value=a * lr)))


@dataclasses.dataclass(slots=True)
class ScheduleConfig:
  """The learning-rate schedule (``schedule.*``).

  The warm-up is given in epochs (image tasks) or in steps; at most one of
  the two is non-zero.
  """

  name: str = 'cosine'  # constant | cosine | warmup_cosine
  warmup_epochs: int = 0
  warmup_steps: int = 0
  final_fraction: float = 0.0  # cosine ends at final_fraction * lr


def validate(config: ScheduleConfig) -> None:
  """Checks the names and ranges of a :class:`ScheduleConfig`."""
  SCHEDULES[config.name]  # raises ConfigError for an unknown name
  fields.non_negative('schedule.warmup_epochs', config.warmup_epochs)
  fields.non_negative('schedule.warmup_steps', config.warmup_steps)
  if config.warmup_epochs and config.warmup_steps:
    raise fields.ConfigError(
        f'schedule.warmup_epochs={config.warmup_epochs} and '
        f'schedule.warmup_steps={config.warmup_steps}: give at most one.')
  fields.fraction('schedule.final_fraction', config.final_fraction)


def warmup_steps(config: ScheduleConfig,
                 steps_per_epoch: int | None) -> int:
  """The warm-up in steps (``warmup_epochs`` needs epochs)."""
  if not config.warmup_epochs:
    return config.warmup_steps
  if steps_per_epoch is None:
    raise fields.ConfigError(
        f'schedule.warmup_epochs={config.warmup_epochs}: this data has no '
        'epochs; use schedule.warmup_steps.')
  return config.warmup_epochs * steps_per_epoch


def make_schedule(
    name: str,
    learning_rate: float,
    total_steps: int,
    warmup_steps: int = 0,
    final_fraction: float = 0.0,
) -> Schedule:
  """The schedule ``step -> learning rate`` named ``name``.

  Args:
    name: one of :data:`SCHEDULES`.
    learning_rate: the peak rate :math:`\\eta > 0`.
    total_steps: :math:`T`, the steps of the whole run.
    warmup_steps: :math:`W < T` (``warmup_cosine`` only).
    final_fraction: :math:`a \\in [0, 1]`, the end of the cosine as a
      fraction of :math:`\\eta`.

  Returns:
    An :class:`optax.Schedule`.

  Example:
    >>> from lionx.train.schedules import make_schedule
    >>> s = make_schedule('cosine', 1.0, total_steps=10)
    >>> float(s(0)), float(s(5)), float(s(10))
    (1.0, 0.5, 0.0)
  """
  factory = SCHEDULES[name]
  checks.positive('learning_rate', learning_rate)
  checks.step_count('total_steps', total_steps)
  checks.in_range('total_steps', total_steps, 1, math.inf)
  checks.step_count('warmup_steps', warmup_steps)
  if not warmup_steps < total_steps:
    raise ValueError(
        f'warmup_steps={warmup_steps!r}: expected 0 <= warmup_steps < '
        f'total_steps={total_steps}.')
  checks.in_range('final_fraction', final_fraction, 0.0, 1.0)
  return factory(learning_rate, total_steps, warmup_steps, final_fraction)
