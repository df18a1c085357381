r"""The jit-compiled steps of a run, for any task.

* :func:`create_train_state`: the model, ``nnx.Optimizer(model, tx,
  wrt=nnx.Param)`` and the learning-rate schedule, placed on a mesh;
* :func:`make_train_step`: one optimizer step on a training batch, with the
  model and optimizer donated; it returns the loss **on the device**, so
  that the loop never waits for it;
* :func:`logging_pass`: with the parameters frozen and the model in eval
  mode (BatchNorm on running statistics), the exact :math:`f(\theta)`,
  :math:`\nabla f(\theta)` and the task's training metrics over the
  logging batches (:mod:`lionx.train.tasks.base` defines the weighting); the
  gradient is float32 and summed in float32 whatever ``model.param_dtype``
  (it is taken at the stored values promoted to float32);
* :func:`evaluate`: the task's held-out metrics.

With several devices every batch is sharded over the mesh (evaluation
batches padded with ``mask`` 0) and every step is waited for: XLA:CPU can
deadlock when many steps with collectives are in flight.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterator, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh

import lionx
from lionx.train import optimizers
from lionx.train import parallel
from lionx.train.config import Config
from lionx.train.tasks import base


class TrainState(NamedTuple):
  """A model, its ``nnx.Optimizer`` and the optimizer they were built with
  (:class:`lionx.train.optimizers.Optimizer`: transform, schedule,
  settings)."""

  model: nnx.Module
  optimizer: nnx.Optimizer
  built: optimizers.Optimizer

  @property
  def schedule(self) -> optax.Schedule:
    return self.built.schedule


def count_params(model: nnx.Module) -> int:
  """d: the number of trainable parameters (``nnx.Param``) of ``model``."""
  return lionx.metrics.tree_size(nnx.state(model, nnx.Param))


def create_train_state(config: Config, task: base.Task, spec: Any,
                       total_steps: int, steps_per_epoch: Optional[int],
                       mesh: Optional[Mesh] = None) -> TrainState:
  """The model, ``nnx.Optimizer(model, tx, wrt=nnx.Param)`` and schedule.

  The optimizer comes from :func:`lionx.train.optimizers.make_optimizer`.
  With a ``mesh`` (:func:`lionx.train.parallel.make_mesh`) the state is
  placed on it as ``config.parallel.mode`` says (an optimizer whose row
  says ``per_device`` gets one momentum per device).

  Example:
    >>> from lionx.train import config as config_lib, steps, tasks
    >>> config = config_lib.Config()
    >>> config.optimizer.learning_rate = 1e-3
    >>> task = tasks.get_task(config.task)
    >>> state = steps.create_train_state(
    ...     config, task, task.input_spec(config), 10, 10)
    >>> steps.count_params(state.model)
    151306
  """
  built = optimizers.make_optimizer(config, total_steps, steps_per_epoch)
  model = task.create_model(config, spec, seed=config.seed)
  optimizer = nnx.Optimizer(model, built.tx, wrt=nnx.Param)
  if mesh is not None:
    parallel.shard_train_state(model, optimizer, mesh, config.parallel.mode,
                               per_device=built.row.per_device)
  return TrainState(model, optimizer, built)


def eval_view(model: nnx.Module) -> nnx.Module:
  """``model`` in eval mode (BatchNorm on running statistics, no dropout);
  it shares the model's arrays."""
  return nnx.view(model, use_running_average=True, deterministic=True,
                  raise_if_not_found=False)


def make_train_step(task: base.Task, mesh: Mesh, state: TrainState,
                    accum_steps: int = 1) -> parallel.TrainStep:
  """``step(model, optimizer, batch) -> loss`` for ``task``, on ``mesh``
  (in ``jax.shard_map`` for an optimizer whose row says ``per_device``),
  the gradient averaged over ``accum_steps`` micro-batches."""
  return parallel.make_train_step(mesh, state.model, state.optimizer,
                                  mean_loss(task),
                                  per_device=state.built.row.per_device,
                                  accum_steps=accum_steps)


@functools.lru_cache(maxsize=None)
def mean_loss(task: base.Task) -> Callable[..., jax.Array]:
  """``(model, batch) -> the mean training loss`` of ``task`` (one per task,
  so that the compiled step is shared)."""
  def loss(model, batch):
    return task.loss(model, batch).loss
  return loss


def _padded(batches: Iterator[base.Batch],
            mesh: Optional[Mesh]) -> Iterator[base.Batch]:
  for batch in batches:
    if mesh is not None:
      batch = parallel.put_batch(parallel.pad_batch(batch, mesh.size), mesh)
    yield batch


def _add(totals: Any, values: Any) -> Any:
  return jax.tree.map(jnp.add, totals, values)


def _float32_params(model: nnx.Module) -> nnx.Module:
  """``model``, or a copy whose bfloat16 / float16 parameters are float32.

  The values are the same (exactly); the gradient with respect to the
  copy is the float32 one, not its rounding to the parameters' dtype.
  """
  def low(x: jax.Array) -> bool:
    return jnp.issubdtype(x.dtype, jnp.floating) and x.dtype.itemsize < 4

  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  if not any(low(x) for x in jax.tree.leaves(params)):
    return model
  params = jax.tree.map(
      lambda x: x.astype(jnp.float32) if low(x) else x, params)
  return nnx.merge(graphdef, params, rest)


@functools.lru_cache(maxsize=None)
def _logging_contribution(task: base.Task):
  def contribution(model, batch):
    model = _float32_params(model)

    def weighted(model):
      out = task.loss(model, batch)
      return out.loss * out.weight, out
    (total, out), grads = nnx.value_and_grad(weighted, has_aux=True)(model)
    return {'loss': total, 'weight': out.weight, 'metrics': out.metrics,
            'grads': nnx.as_pure(grads)}
  return contribution


@functools.lru_cache(maxsize=None)
def _logging_step(task: base.Task):
  contribution = _logging_contribution(task)

  @nnx.jit(donate_argnums=1)
  def step(model, totals, batch):
    return _add(totals, contribution(model, batch))
  return step


class LoggingPass(NamedTuple):
  """What the logging pass measured at the current parameters."""

  loss: float  # f(theta)
  grads: Any  # the gradient of f, a pure pytree shaped like the params
  metrics: dict[str, float]  # the task's training metrics (sum / count)


def _zeros_like_output(fn, *args) -> Any:
  shapes = nnx.eval_shape(fn, *args)
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def _means(sums: dict[str, tuple[Any, Any]]) -> dict[str, float]:
  return {k: float(s / c) if float(c) else float('nan')
          for k, (s, c) in sums.items()}


def logging_pass(task: base.Task, view: nnx.Module,
                 batches: Iterator[base.Batch],
                 mesh: Optional[Mesh] = None) -> LoggingPass:
  r""":math:`f(\theta)`, :math:`\nabla f(\theta)` and the task's training
  metrics over ``batches`` (see :mod:`lionx.train.tasks.base`)."""
  step = _logging_step(task)
  totals = None
  wait = mesh is not None and mesh.size > 1
  for batch in _padded(batches, mesh):
    if totals is None:
      totals = _zeros_like_output(_logging_contribution(task), view, batch)
    totals = step(view, totals, batch)
    if wait:  # no collectives left in flight (XLA:CPU can deadlock)
      jax.block_until_ready(totals)
  if totals is None:
    raise ValueError(f'task {task.name!r} gave no logging batches.')
  weight = totals['weight']
  grads = jax.tree.map(lambda g: g / weight, totals['grads'])
  return LoggingPass(float(totals['loss'] / weight), grads,
                     _means(totals['metrics']))


@functools.lru_cache(maxsize=None)
def _eval_step(task: base.Task):
  @nnx.jit
  def step(model, batch):
    return task.evaluate(model, batch)
  return step


def evaluate(task: base.Task, view: nnx.Module,
             batches: Iterator[base.Batch],
             mesh: Optional[Mesh] = None) -> dict[str, float]:
  """The task's held-out metrics (each a mean over its entries)."""
  step = _eval_step(task)
  totals = None
  for batch in _padded(batches, mesh):
    values = step(view, batch)
    totals = values if totals is None else _add(totals, values)
  if totals is None:
    raise ValueError(f'task {task.name!r} gave no held-out batches.')
  return _means(totals)
