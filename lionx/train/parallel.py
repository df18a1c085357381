r"""Data parallelism on ``jax.sharding``: a ``data`` mesh axis over devices.

The harness runs the same step on 1 or :math:`N` devices
(:func:`make_train_step`); ``parallel.num_devices`` picks :math:`N`
(0: every device). The global batch is sharded along its first axis,
``P('data')``: each device takes ``batch_size / N`` examples
(:func:`put_batch`). The state is placed by :func:`shard_train_state`:

* ``mode='replicated'``: every parameter, BatchNorm statistic and
  optimizer state is replicated, ``P()``. The step is one ``jax.jit``
  program on global arrays (GSPMD): XLA all-reduces the gradient, and
  BatchNorm's batch statistics are those of the *global* batch, so
  :math:`N` devices compute what one device computes on the same global
  batch, up to float rounding.
* ``mode='fsdp'``: each leaf of the model and optimizer state is sharded
  along its largest axis whose size divides by :math:`N`
  (:func:`fsdp_spec`); leaves without one (scalars, a 10-class bias on 8
  devices) stay replicated. A parameter and its Lion momentum have the same
  shape, hence the same sharding, so the optimizer bytes per device fall as
  about :math:`1/N` (:func:`bytes_per_device`). XLA gathers each parameter
  where it is used and reduce-scatters its gradient.
* ``per_device=True`` (``distributed_lion``): the step runs in
  :func:`jax.shard_map`. Each device differentiates the loss of its own
  batch shard with respect to ``jax.lax.pcast(params, 'data',
  to='varying')``, so no gradient is all-reduced; only the optimizer's sign
  votes cross devices. Parameters and BatchNorm statistics are replicated;
  the momentum has a leading device axis, ``(N, *shape)`` sharded
  ``P('data')``. BatchNorm normalizes with each device's *own* batch
  statistics (as PyTorch DDP without SyncBatchNorm) and the running
  statistics are averaged over the devices after every step (a ``pmean`` of
  a few numbers), so every device keeps the same model. With one device it
  is the ``lion`` step.

With several devices every step is waited for (``jax.block_until_ready``):
XLA:CPU can deadlock when many steps with collectives are in flight, and
on accelerators the loop reads each loss anyway.

Several hosts: after ``jax.distributed.initialize`` (``lionx-train
--coordinator ...``), ``jax.devices()`` lists every process's devices and
``num_devices=0`` spans them all. Each process computes the same global
batch (same data, same seed) and hands over only its own devices' slices
(``jax.make_array_from_callback``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import lionx
from lionx.train import fields

AXIS = 'data'
MODES = ('replicated', 'fsdp')


@dataclasses.dataclass(slots=True)
class ParallelConfig:
  """The devices a run uses (``parallel.*``; see the module doc)."""

  mode: str = 'replicated'  # replicated | fsdp
  # 0: every device (all hosts' after jax.distributed); the global batch
  # must divide by the device count.
  num_devices: int = 0


def validate(config: ParallelConfig) -> None:
  """Checks a :class:`ParallelConfig`."""
  fields.one_of('parallel.mode', config.mode, MODES)
  if config.num_devices < 0:
    raise fields.ConfigError(
        f'parallel.num_devices={config.num_devices}: expected a number of '
        'devices >= 1, or 0 for every device.')

LossFn = Callable[[nnx.Module, dict[str, jax.Array]], jax.Array]


def select_devices(num_devices: int = 0) -> list[jax.Device]:
  """The first ``num_devices`` of ``jax.devices()`` (0: all of them)."""
  if (not isinstance(num_devices, int) or isinstance(num_devices, bool)
      or num_devices < 0):
    raise ValueError(
        f'parallel.num_devices={num_devices!r}: expected a number of '
        'devices >= 1, or 0 for every device.')
  available = jax.devices()
  if num_devices > len(available):
    raise ValueError(
        f'parallel.num_devices={num_devices}: only {len(available)} '
        f'{available[0].platform} device(s) are available. On a CPU, '
        'simulate more by starting Python with XLA_FLAGS='
        f'--xla_force_host_platform_device_count={num_devices}.')
  if jax.process_count() > 1 and num_devices not in (0, len(available)):
    raise ValueError(
        f'parallel.num_devices={num_devices} with {jax.process_count()} '
        f'processes: a multi-host run uses all {len(available)} devices; '
        'set parallel.num_devices=0.')
  return available[:num_devices or len(available)]


def make_mesh(num_devices: int = 0) -> Mesh:
  """A 1-D mesh with axis ``'data'`` over :func:`select_devices`.

  Its axis type is ``Auto``: jit partitions the program itself (GSPMD).

  Example:
    >>> from lionx.train import parallel
    >>> mesh = parallel.make_mesh(1)
    >>> mesh.axis_names, mesh.size
    (('data',), 1)
  """
  devices = select_devices(num_devices)
  return Mesh(np.array(devices), (AXIS,), axis_types=(AxisType.Auto,))


def check_divisible(path: str, size: int, mesh: Mesh,
                    num_devices: int) -> None:
  """Raises unless the global batch ``size`` splits evenly over ``mesh``."""
  if size % mesh.size:
    raise ValueError(
        f'{path}={size} is not a multiple of the {mesh.size} devices of '
        f'parallel.num_devices={num_devices}: each device takes an equal '
        f'share of the global batch; choose a multiple of {mesh.size} or '
        'another parallel.num_devices.')


def fsdp_spec(shape: Sequence[int], num_devices: int) -> P:
  """Shards the largest axis whose size divides by ``num_devices``.

  Ties go to the first such axis; without one (or with one device) the
  leaf is replicated, ``P()``.

  Example:
    >>> from lionx.train.parallel import fsdp_spec
    >>> fsdp_spec((3, 3, 32, 64), 8), fsdp_spec((10,), 8)
    (P(None, None, None, 'data'), P())
  """
  if num_devices == 1:
    return P()
  axes = [i for i, size in enumerate(shape)
          if size >= num_devices and size % num_devices == 0]
  if not axes:
    return P()
  axis = max(axes, key=lambda i: (shape[i], -i))
  return P(*[AXIS if i == axis else None for i in range(len(shape))])


def global_array(value: Any, sharding: NamedSharding) -> jax.Array:
  """``value`` (the same on every process) as an array with ``sharding``.

  Each process builds only its own devices' slices, so this also works
  when the mesh spans several hosts.
  """
  host = np.asarray(value)
  return jax.make_array_from_callback(host.shape, sharding,
                                      lambda index: host[index])


def put_batch(batch: dict[str, Any], mesh: Mesh) -> dict[str, jax.Array]:
  """The global batch, sharded along its first axis over ``mesh``."""
  sharding = NamedSharding(mesh, P(AXIS))
  out = {}
  for key, value in batch.items():
    if isinstance(value, jax.Array) and value.sharding == sharding:
      out[key] = value
      continue
    size = np.shape(value)[0]
    if size % mesh.size:
      raise ValueError(
          f'batch[{key!r}] has {size} rows, not a multiple of the '
          f'{mesh.size} devices of the mesh.')
    out[key] = global_array(value, sharding)
  return out


def pad_batch(batch: dict[str, np.ndarray],
              multiple: int) -> dict[str, np.ndarray]:
  """Pads an evaluation batch to a multiple of rows with ``mask`` 0."""
  size = len(batch['mask'])
  fill = -size % multiple
  if not fill:
    return batch
  return {key: np.concatenate(
      [value, np.zeros((fill,) + value.shape[1:], value.dtype)])
          for key, value in batch.items()}


def _in_momentum(path: tuple[Any, ...]) -> bool:
  """Whether ``path`` (in ``nnx.state(optimizer)``) is under ``mu``."""
  keys = [getattr(k, 'key', getattr(k, 'name', None)) for k in path[:2]]
  return keys == ['opt_state', 'mu']


def _per_worker(x: jax.Array, workers: int) -> np.ndarray:
  """The momentum ``(1, *shape)`` of ``init``, once for every worker."""
  if x.shape[0] == workers:
    return np.asarray(x)
  if x.shape[0] != 1:
    raise ValueError(
        f'a momentum leaf of shape {x.shape}: expected a leading worker '
        f'axis of 1 (from init) or {workers} (the devices).')
  return np.broadcast_to(np.asarray(x), (workers,) + x.shape[1:])


def shard_train_state(model: nnx.Module, optimizer: nnx.Optimizer,
                      mesh: Mesh, mode: str = 'replicated', *,
                      per_device: bool = False) -> None:
  """Places the model and optimizer state on ``mesh``, in place.

  Args:
    model: the model (parameters, BatchNorm statistics).
    optimizer: its ``nnx.Optimizer``.
    mesh: a mesh from :func:`make_mesh`.
    mode: ``'replicated'`` or ``'fsdp'`` (see the module doc).
    per_device: the optimizer is :func:`lionx.distributed_lion`: its
      momentum gets a leading axis of one entry per device, ``P('data')``
      (everything else is replicated).
  """
  if mode not in MODES:
    raise ValueError(f'parallel.mode={mode!r} is not one of {MODES}.')
  workers = mesh.size
  if per_device:
    if mode != 'replicated':
      raise ValueError(
          f"parallel.mode={mode!r} with a per-device optimizer: expected "
          "'replicated'.")
    if not isinstance(optimizer.opt_state, lionx.DistributedLionState):
      raise TypeError(
          f'per_device=True needs the state of lionx.distributed_lion; the '
          f'optimizer holds a {type(optimizer.opt_state).__name__}.')

  def place(path, x, in_optimizer):
    if per_device and in_optimizer and _in_momentum(path):
      return global_array(_per_worker(x, workers),
                          NamedSharding(mesh, P(AXIS)))
    spec = fsdp_spec(x.shape, workers) if mode == 'fsdp' else P()
    return global_array(x, NamedSharding(mesh, spec))

  for obj, in_optimizer in ((model, False), (optimizer, True)):
    state = jax.tree_util.tree_map_with_path(
        functools.partial(place, in_optimizer=in_optimizer), nnx.state(obj))
    nnx.update(obj, state)


def bytes_per_device(tree: Any) -> dict[jax.Device, int]:
  """The bytes of ``tree``'s arrays held by each (addressable) device.

  Example:
    >>> import jax.numpy as jnp
    >>> from lionx.train.parallel import bytes_per_device
    >>> list(bytes_per_device({'w': jnp.zeros((4, 2))}).values())
    [32]
  """
  out: dict[jax.Device, int] = {}
  for leaf in jax.tree.leaves(tree):
    for shard in leaf.addressable_shards:
      size = math.prod(shard.data.shape) * leaf.dtype.itemsize
      out[shard.device] = out.get(shard.device, 0) + size
  return out


def _is_varying(x: jax.Array) -> bool:
  """Whether ``x`` differs between the devices of ``AXIS`` (shard_map)."""
  try:
    return AXIS in jax.typeof(x).mat.varying
  except AttributeError:  # another JAX version: assume it may differ.
    return True


def value_and_grad(loss_fn: LossFn, model: nnx.Module, batch: Any,
                   accum_steps: int = 1) -> tuple[jax.Array, Any]:
  """``nnx.value_and_grad(loss_fn)(model, batch)``, over ``accum_steps``
  equal micro-batches (the batch's leading axis, split in order) in a
  ``lax.scan``: memory holds one micro-batch's activations, the gradients
  are summed in float32 and averaged, as are the losses. A model's other
  state (BatchNorm's statistics) is updated micro-batch by micro-batch.

  Example:
    >>> import jax.numpy as jnp, numpy as np
    >>> from flax import nnx
    >>> model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
    >>> loss_fn = lambda m, b: jnp.mean((m(b['x']) - b['y']) ** 2)
    >>> batch = {'x': np.arange(16.0).reshape(8, 2) / 8,
    ...          'y': np.ones((8, 1))}
    >>> one, g1 = value_and_grad(loss_fn, model, batch)
    >>> four, g4 = value_and_grad(loss_fn, model, batch, 4)
    >>> bool(jnp.allclose(one, four)), bool(jnp.allclose(
    ...     g1['kernel'].value, g4['kernel'].value))
    (True, True)
  """
  if accum_steps == 1:
    return nnx.value_and_grad(loss_fn)(model, batch)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  micro = jax.tree.map(
      lambda x: x.reshape(accum_steps, x.shape[0] // accum_steps,
                          *x.shape[1:]), batch)

  def body(carry, piece):
    loss_sum, grad_sum, params, rest = carry  # in the carry: traced here
    local = nnx.merge(graphdef, params, rest)
    loss, grads = nnx.value_and_grad(loss_fn)(local, piece)
    grad_sum = jax.tree.map(lambda a, g: a + g.astype(jnp.float32),
                            grad_sum, grads)
    return (loss_sum + loss.astype(jnp.float32), grad_sum, params,
            nnx.state(local, nnx.Not(nnx.Param))), None

  zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, jnp.float32), params)
  (loss, grads, _, rest), _ = jax.lax.scan(
      body, (jnp.zeros([], jnp.float32), zeros, params, rest), micro)
  nnx.update(model, rest)
  grads = jax.tree.map(lambda g, x: (g / accum_steps).astype(x.dtype),
                       grads, params)
  return loss / accum_steps, grads


@functools.lru_cache(maxsize=32)
def step_program(graphdef, treedef, loss_fn: LossFn,
                shardings: tuple[NamedSharding, ...], mesh: Mesh,
                accum_steps: int = 1):
  """The GSPMD train step: one jit program on global arrays, which XLA
  partitions (also lowered from shapes alone for the memory estimate)."""
  def step(leaves, batch):
    model, optimizer = nnx.merge(graphdef, treedef.unflatten(leaves))
    loss, grads = value_and_grad(loss_fn, model, batch, accum_steps)
    optimizer.update(model, grads)
    return jax.tree.leaves(nnx.state((model, optimizer))), loss

  return jax.jit(
      step, donate_argnums=0,
      in_shardings=(list(shardings), NamedSharding(mesh, P(AXIS))),
      out_shardings=(list(shardings), NamedSharding(mesh, P())))


@functools.lru_cache(maxsize=32)
def _per_device_step(graphdef, treedef, loss_fn: LossFn,
                     specs: tuple[P, ...], mesh: Mesh,
                     accum_steps: int = 1):
  """A shard_map program: each device steps on its own gradient."""
  def worker(leaves, batch):
    model, optimizer = nnx.merge(graphdef, treedef.unflatten(leaves))
    # A copy of the model whose parameters vary over the devices, so that
    # the gradient is this device's own (not all-reduced).
    model_def, params, rest = nnx.split(model, nnx.Param, ...)
    local = nnx.merge(model_def, jax.tree.map(
        lambda x: jax.lax.pcast(x, AXIS, to='varying'), params), rest)
    loss, grads = value_and_grad(loss_fn, local, batch, accum_steps)
    rest = nnx.state(local, nnx.Not(nnx.Param))
    # BatchNorm's running statistics: the mean over the devices.
    rest = jax.tree.map(
        lambda x: jax.lax.pmean(x, AXIS)
        if _is_varying(x) and jnp.issubdtype(x.dtype, jnp.inexact) else x,
        rest)
    nnx.update(model, rest)
    optimizer.update(model, grads)
    loss = jax.lax.pmean(loss, AXIS)
    return jax.tree.leaves(nnx.state((model, optimizer))), loss

  mapped = jax.shard_map(
      worker, mesh=mesh, in_specs=(list(specs), P(AXIS)),
      out_specs=(list(specs), P()))
  return jax.jit(mapped, donate_argnums=0)


class TrainStep:
  """``step(model, optimizer, batch) -> loss`` on a mesh, in place.

  Made by :func:`make_train_step`; one compiled program per model,
  optimizer, loss and placement.
  """

  def __init__(self, mesh: Mesh, model: nnx.Module,
               optimizer: nnx.Optimizer, loss_fn: LossFn,
               per_device: bool = False, accum_steps: int = 1):
    graphdef, state = nnx.split((model, optimizer))
    leaves, self._treedef = jax.tree.flatten(state)
    self.mesh = mesh
    for leaf in leaves:
      sharding = getattr(leaf, 'sharding', None)
      if (not isinstance(sharding, NamedSharding)
          or sharding.mesh != mesh):
        raise ValueError(
            f'a state leaf of shape {leaf.shape} is placed on {sharding}, '
            'not on the mesh: call shard_train_state(model, optimizer, '
            'mesh, ...) first.')
    if per_device:
      specs = tuple(leaf.sharding.spec for leaf in leaves)
      self._fn = _per_device_step(graphdef, self._treedef, loss_fn, specs,
                                  mesh, accum_steps)
    else:
      shardings = tuple(leaf.sharding for leaf in leaves)
      self._fn = step_program(graphdef, self._treedef, loss_fn, shardings,
                             mesh, accum_steps)

  def __call__(self, model: nnx.Module, optimizer: nnx.Optimizer,
               batch: dict[str, Any]) -> jax.Array:
    leaves = jax.tree.leaves(nnx.state((model, optimizer)))
    leaves, loss = self._fn(leaves, put_batch(batch, self.mesh))
    nnx.update((model, optimizer), self._treedef.unflatten(leaves))
    if self.mesh.size > 1:
      jax.block_until_ready((leaves, loss))
    return loss


def make_train_step(mesh: Mesh, model: nnx.Module,
                    optimizer: nnx.Optimizer, loss_fn: LossFn, *,
                    per_device: bool = False,
                    accum_steps: int = 1) -> TrainStep:
  """The training step of :func:`shard_train_state`'s placement.

  Args:
    mesh: the mesh the state was placed on.
    model: the model, placed by :func:`shard_train_state`.
    optimizer: its optimizer, placed likewise.
    loss_fn: ``loss_fn(model, batch) -> scalar``, the mean loss of a batch.
    per_device: run the update in ``jax.shard_map`` on each device's own
      gradient (``lionx.distributed_lion``); else one GSPMD program.
    accum_steps: average the gradient over this many micro-batches of the
      batch (:func:`value_and_grad`) before the one update.

  Returns:
    A :class:`TrainStep`: ``step(model, optimizer, batch) -> loss`` updates
    ``model`` and ``optimizer`` in place (their old buffers are donated).

  Example:
    >>> import jax.numpy as jnp, numpy as np, optax
    >>> from flax import nnx
    >>> from lionx.train import parallel
    >>> mesh = parallel.make_mesh(1)
    >>> model = nnx.Linear(3, 1, rngs=nnx.Rngs(0))
    >>> optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)
    >>> parallel.shard_train_state(model, optimizer, mesh)
    >>> def loss_fn(model, batch):
    ...   return jnp.mean((model(batch['x']) - batch['y']) ** 2)
    >>> step = parallel.make_train_step(mesh, model, optimizer, loss_fn)
    >>> batch = {'x': np.ones((4, 3), np.float32),
    ...          'y': np.zeros((4, 1), np.float32)}
    >>> first = step(model, optimizer, batch)
    >>> bool(step(model, optimizer, batch) < first)
    True
  """
  return TrainStep(mesh, model, optimizer, loss_fn, per_device, accum_steps)
