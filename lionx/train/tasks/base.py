r"""What a task supplies to the task-agnostic training loop.

A :class:`Task` is the unit of extension of the harness: the model, the
loss, the evaluation metrics, the data, and the batches of the logging
pass. The loop (:mod:`lionx.train.experiment`), checkpoints, diagnostics,
resume and refusals never look inside a batch; they only call the methods
below. A new task is a new module in :mod:`lionx.train.tasks` that calls
:func:`register_task` (:mod:`lionx.train.tasks` registers the built-in
ones), or a call to :func:`register_task` in a config file.

**The objective.** :meth:`Task.loss` returns the batch's mean loss and its
weight :math:`w` (the number of examples, or tokens, the mean is over; 0 for
padding). The loop trains on the mean; the *logging pass* accumulates over
its batches :math:`b`

.. math::

  f(\theta) = \frac{\sum_b w_b \ell_b(\theta)}{\sum_b w_b}, \qquad
  \nabla f(\theta) = \frac{\sum_b w_b \nabla\ell_b(\theta)}{\sum_b w_b},

which is the exact mean over the examples (tokens) of the logging batches
when :math:`\ell_b` is the mean over the real entries of batch :math:`b`.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any, ClassVar, Iterator, NamedTuple, Optional

import jax
from flax import nnx

from lionx.train import registry

if TYPE_CHECKING:  # config.py imports this module: the type only
  from lionx.train.config import Config

Batch = dict[str, Any]
# name -> (sum, count): the loop reports sum / count accumulated over batches.
Metrics = dict[str, tuple[jax.Array, jax.Array]]


class LossOutput(NamedTuple):
  """The loss of one batch (see the module doc)."""

  loss: jax.Array  # shape=(), float32; the mean over the batch's entries.
  weight: jax.Array  # shape=(), float32; how many entries the mean is over.
  metrics: Metrics  # extra training-split metrics, e.g. train_accuracy.


class Task(abc.ABC):
  """A kind of training problem; see the module doc.

  Attributes:
    name: the value of ``config.task`` (a class attribute, as all below).
    data_config: the dataclass of the config's ``data`` section for this
      task.
    model_config: the dataclass of its ``model`` section.
    panels: extra figure panels, ``(metrics key, title)``.
    summary: extra summary columns, ``(metrics key, header)``; keys ending
      in ``accuracy`` are shown as percentages.
    held_out: the name of the split behind ``val_loss`` (e.g. ``'test'``).
  """

  name: ClassVar[str]
  data_config: ClassVar[type]
  model_config: ClassVar[type]
  panels: ClassVar[tuple[tuple[str, str], ...]] = ()
  summary: ClassVar[tuple[tuple[str, str], ...]] = ()
  held_out: ClassVar[str] = 'validation'

  @abc.abstractmethod
  def validate(self, config: Config) -> None:
    """Checks the ``data`` and ``model`` sections (raises ConfigError)."""

  @abc.abstractmethod
  def input_spec(self, config: Config) -> Optional[Any]:
    """What :meth:`create_model` needs, from the config alone (or None)."""

  @abc.abstractmethod
  def load_data(self, config: Config) -> Any:
    """The data of ``config.data``, loaded (may be shared between runs)."""

  @abc.abstractmethod
  def data_spec(self, data: Any) -> Any:
    """The input spec of loaded data."""

  @abc.abstractmethod
  def create_model(self, config: Config, spec: Any, seed: int) -> nnx.Module:
    """The model of ``config.model`` for inputs of ``spec``."""

  @abc.abstractmethod
  def describe(self, config: Config, data: Any) -> str:
    """One line: the model and the data (sizes), for the log."""

  @abc.abstractmethod
  def steps_per_epoch(self, config: Config, data: Any) -> Optional[int]:
    """Training batches per epoch, or None when the data has no epochs."""

  @abc.abstractmethod
  def train_batch(self, config: Config, data: Any, step: int) -> Batch:
    """Training batch ``step`` (0-based): a function of (seed, step)."""

  @abc.abstractmethod
  def logging_batches(self, config: Config, data: Any) -> Iterator[Batch]:
    """The batches of the logging pass over the training split."""

  @abc.abstractmethod
  def held_out_batches(self, config: Config, data: Any) -> Iterator[Batch]:
    """The batches of the held-out evaluation."""

  @abc.abstractmethod
  def loss(self, model: nnx.Module, batch: Batch) -> LossOutput:
    """The mean loss of a batch, its weight and training metrics."""

  @abc.abstractmethod
  def evaluate(self, model: nnx.Module, batch: Batch) -> Metrics:
    """Held-out metrics of a batch; must include ``'val_loss'``."""

  def data_order(self) -> str:
    """How training batches are drawn; recorded in checkpoints."""
    return 'numpy default_rng keyed by (seed, step)'

  def provenance(self, config: Config, data: Any) -> dict[str, Any]:
    """Facts about the data worth recording beside the run."""
    del config, data
    return {}

  def fingerprint(self, config: Config, data: Any) -> dict[str, str]:
    """Digests of the data (:mod:`lionx.train.data.fingerprint`), saved in
    each checkpoint: a resume on data whose digests differ is refused
    unless ``--allow-data-change``. Empty: nothing is checked."""
    del config, data
    return {}


TASKS: registry.Registry = registry.Registry(
    'task', ' A new task is a call to lionx.train.tasks.register_task.')


def register_task(task: Task) -> Task:
  """Makes ``config.task=task.name`` run ``task``; returns it."""
  if not isinstance(task, Task):
    raise TypeError(f'task={task!r}: expected a lionx.train.tasks.Task.')
  if not isinstance(getattr(task, 'name', None), str) or not task.name:
    raise ValueError(f'task.name={getattr(task, "name", None)!r}: expected '
                     'a non-empty string.')
  return TASKS.register(task.name, task)


def get_task(name: str) -> Task:
  """The registered task called ``name``."""
  return TASKS[name]
