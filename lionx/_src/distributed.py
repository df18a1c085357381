r"""Distributed Lion (Liu et al. 2024): per-worker momentum, low-bit votes.

Each of :math:`N` workers (the devices along a mesh axis, e.g. ``'data'``)
keeps its own momentum and sends only the sign of its step; the workers
agree on one update and their parameters stay bit-identical. Everything runs
inside :func:`jax.shard_map`; no gradient is ever all-reduced.

* :func:`lionx.distributed.sign_vote` is the new piece: it aggregates the
  workers' signs :math:`\delta_i \in \{-1, 0, +1\}` over a mesh axis, 2
  bits a coordinate.
* :func:`lionx.distributed_lion` chains it with lionx's building blocks:
  ``scale_by_lion -> sign_reshaper -> sign_vote ->
  add_decoupled_weight_decay -> learning rate``.
* :func:`lionx.distributed.collective_bytes` reads, from compiled HLO, the
  bytes that each device hands to collectives, to check the communication.
"""

from __future__ import annotations

import re
from typing import NamedTuple, Optional

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

from lionx._src import checks
from lionx._src.alias import DEFAULT_WEIGHT_DECAY
from lionx._src.alias import _learning_rate
from lionx._src.alias import _weight_decay
from lionx._src.realview import real_view_transformation
from lionx._src.realview import view_as_complex
from lionx._src.realview import view_as_real
from lionx._src.reshapers import sign_reshaper
from lionx._src.transforms import Mask
from lionx._src.transforms import check_mu_dtype
from lionx._src.transforms import scale_by_lion

AGGREGATIONS = ('majority', 'average')
COMMUNICATIONS = ('all_to_all', 'all_gather')

# A vote is 2 bits: 0 -> 0, 1 -> +1, 2 -> -1, 3 -> NaN (a non-finite step).
_ZERO, _PLUS, _MINUS, _NAN = 0, 1, 2, 3
_PER_BYTE = 4


def _encode(x: jax.Array) -> jax.Array:
  """The 2-bit code of sign(x) as uint8 (NaN -> 3)."""
  code = jnp.where(x > 0, _PLUS, jnp.where(x < 0, _MINUS, _ZERO))
  return jnp.where(jnp.isnan(x), _NAN, code).astype(jnp.uint8)


def _pack(codes: jax.Array) -> jax.Array:
  """uint8[..., 4k] codes -> uint8[..., k] bytes, 4 codes a byte."""
  quads = codes.reshape(*codes.shape[:-1], -1, _PER_BYTE)
  shifts = jnp.arange(_PER_BYTE, dtype=jnp.uint8) * 2
  return jnp.bitwise_or.reduce(quads << shifts, axis=-1).astype(jnp.uint8)


def _unpack(packed: jax.Array) -> jax.Array:
  """The inverse of :func:`_pack`."""
  shifts = jnp.arange(_PER_BYTE, dtype=jnp.uint8) * 2
  codes = (packed[..., None] >> shifts) & jnp.uint8(3)
  return codes.reshape(*packed.shape[:-1], -1)


def _tally(codes: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Codes uint8[N, n] of N workers -> (sum of votes int32[n], any NaN)."""
  total = (jnp.sum(codes == _PLUS, axis=0, dtype=jnp.int32)
           - jnp.sum(codes == _MINUS, axis=0, dtype=jnp.int32))
  return total, jnp.any(codes == _NAN, axis=0)


def _axis_size(axis_name: str) -> int:
  try:
    return jax.lax.axis_size(axis_name)
  except NameError:
    raise ValueError(
        f'axis_name={axis_name!r} is not a mapped axis here: call update '
        'inside jax.shard_map over a mesh with that axis, with each '
        "worker's local gradient.") from None


def _aggregate(codes: jax.Array, axis_name: str, aggregation: str,
               communication: str) -> jax.Array:
  """This worker's codes uint8[d] -> the agreed step float32[d]."""
  workers = _axis_size(axis_name)
  d = codes.shape[0]
  block = _PER_BYTE * (workers if communication == 'all_to_all' else 1)
  codes = jnp.pad(codes, (0, -d % block))
  packed = _pack(codes)
  if communication == 'all_gather':
    # Every worker receives all N packed vectors and tallies them itself.
    every = jax.lax.all_gather(packed, axis_name, to='invarying')
    total, nan = _tally(_unpack(every))
    if aggregation == 'majority':
      step = jnp.sign(total).astype(jnp.float32)
    else:
      step = total.astype(jnp.float32) / workers
  else:
    # Reduce-scatter of the votes: worker j tallies the j-th chunk...
    chunks = jax.lax.all_to_all(
        packed.reshape(workers, -1), axis_name, 0, 0, tiled=True)
    total, nan = _tally(_unpack(chunks))
    # ... then all-gather of the tallied chunks.
    if aggregation == 'majority':
      mine = _pack(_encode(jnp.where(nan, jnp.nan, total)))
      agreed = _unpack(jax.lax.all_gather(
          mine, axis_name, tiled=True, to='invarying'))
      step = ((agreed == _PLUS).astype(jnp.float32)
              - (agreed == _MINUS).astype(jnp.float32))
      nan = agreed == _NAN
    else:
      dtype = jnp.int8 if workers < 128 else jnp.int32
      sentinel = jnp.iinfo(dtype).min  # |sum| <= N never reaches it.
      mine = jnp.where(nan, sentinel, total).astype(dtype)
      agreed = jax.lax.all_gather(
          mine, axis_name, tiled=True, to='invarying')
      nan = agreed == sentinel
      step = agreed.astype(jnp.float32) / workers
  return jnp.where(nan, jnp.nan, step)[:d]


def sign_vote(
    axis_name: str = 'data',
    aggregation: str = 'majority',
    *,
    communication: str = 'all_to_all',
) -> optax.GradientTransformation:
  r"""Aggregates the workers' signs over a mesh axis (Distributed Lion).

  Run ``update`` inside :func:`jax.shard_map` over ``axis_name``. Each of
  the :math:`N` workers passes its own :math:`\delta_i` (normally
  :math:`\operatorname{sign}(c_i)`; any input counts by its sign) and all
  receive the same

  .. math::

    \Delta = \operatorname{sign}\Big(\sum_{i=1}^N \delta_i\Big)
    \quad\text{(majority)}\qquad\text{or}\qquad
    \Delta = \frac{1}{N}\sum_{i=1}^N \delta_i \quad\text{(average)}.

  A vote is ternary and travels as 2 bits (4 a byte): :math:`-1`, :math:`0`
  and :math:`+1`, plus NaN for a non-finite step. So
  :math:`\operatorname{sign}(0) = 0` holds exactly: a worker whose
  :math:`c_i = 0` abstains, and a coordinate that every worker leaves still
  (e.g. an unused embedding row) does not drift. **Ties**: with an even
  :math:`N` the majority can be a tie, :math:`\sum_i\delta_i = 0`; then
  :math:`\Delta = \operatorname{sign}(0) = 0` and that coordinate only
  decays. A NaN vote from any worker makes that coordinate of
  :math:`\Delta` NaN on every worker, so the workers stay identical.

  ``communication`` picks the collectives (:math:`d` coordinates, bytes per
  worker handed to collectives):

  * ``'all_to_all'`` (default): a reduce-scatter of the votes
    (``all_to_all``, :math:`d/4`) in which worker :math:`j` tallies the
    :math:`j`-th chunk, then an ``all_gather`` of the tallied chunks:
    :math:`d/(4N)` (majority, 2 bits) or :math:`d/N` (average, int8 sums;
    int32 from :math:`N \ge 128`). The traffic does not grow with
    :math:`N`, like a ring all-reduce with 2-bit instead of 32-bit values.
  * ``'all_gather'``: one ``all_gather`` of the packed votes (:math:`d/4`);
    every worker tallies all :math:`N`. One collective, but each worker
    receives :math:`(N-1)d/4` bytes and tallies :math:`N d` votes.

  An fp32 gradient all-reduce hands :math:`4d` bytes to its collective.

  Args:
    axis_name: the mesh axis along which the workers are laid out.
    aggregation: ``'majority'`` or ``'average'``.
    communication: ``'all_to_all'`` or ``'all_gather'``.

  Returns:
    A stateless :class:`optax.GradientTransformation`.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from jax.sharding import PartitionSpec as P
    >>> import lionx
    >>> mesh = jax.make_mesh((1,), ('data',), devices=jax.devices()[:1])
    >>> vote = lionx.distributed.sign_vote('data')
    >>> f = jax.shard_map(lambda d: vote.update(d, vote.init(d))[0],
    ...                   mesh=mesh, in_specs=P(), out_specs=P())
    >>> f(jnp.array([-1.0, 0.0, 1.0]))  # one worker: its own signs
    Array([-1.,  0.,  1.], dtype=float32)

  References:
    Liu et al., `Communication Efficient Distributed Training with
    Distributed Lion <https://arxiv.org/abs/2404.00438>`_, 2024.
  """
  if not isinstance(axis_name, str) or not axis_name:
    raise TypeError(
        f'axis_name={axis_name!r}: expected the name of a mesh axis (str).')
  checks.one_of('aggregation', aggregation, AGGREGATIONS)
  checks.one_of('communication', communication, COMMUNICATIONS)

  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    del params
    leaves, treedef = jax.tree.flatten(updates)
    if not leaves:
      _axis_size(axis_name)
      return updates, state
    real = [view_as_real(x) for x in leaves]  # complex: two votes.
    codes = jnp.concatenate([_encode(jnp.ravel(x)) for x in real])
    step = _aggregate(codes, axis_name, aggregation, communication)
    out, start = [], 0
    for x, r in zip(leaves, real):
      piece = step[start:start + r.size].reshape(r.shape)
      out.append(view_as_complex(piece.astype(r.dtype), x))
      start += r.size
    return treedef.unflatten(out), state

  return optax.GradientTransformation(init_fn, update_fn)


class DistributedLionState(NamedTuple):
  """State of :func:`distributed_lion`.

  ``count`` is the same on every worker (replicated, ``P()``); ``mu`` is
  each worker's own momentum, never communicated: inside ``shard_map``
  every leaf has a leading axis of size 1, outside it has size :math:`N`,
  sharded ``P(axis_name)``, and ``mu[...][i]`` is worker :math:`i`'s.
  :meth:`partition_specs` gives these specs for ``shard_map``.
  """

  count: chex.Array  # shape=(), dtype=jnp.int32; indexes the schedules.
  mu: optax.Updates  # shaped (workers, *param.shape), dtype=mu_dtype.

  @staticmethod
  def partition_specs(axis_name: str = 'data') -> 'DistributedLionState':
    """The ``shard_map`` specs of the state: a prefix of its tree."""
    return DistributedLionState(count=P(), mu=P(axis_name))


def distributed_lion(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.99,
    mu_dtype: Optional[jnp.dtype] = None,
    weight_decay: optax.ScalarOrSchedule = DEFAULT_WEIGHT_DECAY,
    mask: Optional[Mask] = None,
    *,
    axis_name: str = 'data',
    aggregation: str = 'majority',
    communication: str = 'all_to_all',
    weight_decay_convention: str = 'paper',
    peak_learning_rate: Optional[float] = None,
    cautious_weight_decay: bool = False,
) -> optax.GradientTransformation:
  r"""Distributed Lion: each worker votes with the sign of its own step.

  With :math:`N` workers along ``axis_name``, worker :math:`i` holding its
  momentum :math:`m_i` and its local gradient :math:`g_i`:

  .. math::

    \delta_i &= \operatorname{sign}(\beta_1 m_i + (1-\beta_1) g_i) \\
    \Delta &= \operatorname{sign}\big(\textstyle\sum_i \delta_i\big)
      \ \text{(majority)} \quad\text{or}\quad
      \tfrac{1}{N}\textstyle\sum_i \delta_i \ \text{(average)} \\
    \theta &\leftarrow \theta - \eta\,(\Delta + \lambda\theta) \\
    m_i &\leftarrow \beta_2 m_i + (1-\beta_2) g_i

  It is ``scale_by_lion -> sign_reshaper -> sign_vote ->
  add_decoupled_weight_decay -> learning rate`` with the momentum kept per
  worker. Call ``init`` and ``update`` inside :func:`jax.shard_map` over
  ``axis_name``, with the parameters replicated (``P()``), the batch
  sharded (``P(axis_name)``) and the state as
  ``DistributedLionState.partition_specs(axis_name)``. Give ``update`` the
  worker's *local* gradient: differentiate with respect to
  ``jax.lax.pcast(params, axis_name, to='varying')``, since ``jax.grad``
  with respect to replicated params inside ``shard_map`` all-reduces the
  gradient (an all-reduced gradient is rejected with an error). Only the
  votes cross devices, 2 bits a coordinate (see
  :func:`lionx.distributed.sign_vote` for the collectives, the tie rule
  :math:`\operatorname{sign}(0) = 0` and NaN); the parameters stay
  bit-identical on every worker. With one worker it is
  :func:`lion`.

  Use it when the gradient all-reduce dominates the step time:
  bandwidth-bound clusters, many workers on a slow interconnect. The
  positional order is :func:`lion`'s (optax's), and so are the weight-decay
  conventions and the treatment of complex leaves (two real coordinates,
  two votes). The momentum is a float dtype: 8-bit momentum
  (``mu_dtype=jnp.int8``) is refused. Do not wrap
  it in ``optax.apply_if_finite``: each worker would check only its own
  gradient, and the workers could disagree; a NaN vote already reaches every
  worker as a NaN step.

  Args:
    learning_rate: :math:`\eta \ge 0`, a scalar or a schedule.
    b1: :math:`\beta_1 \in [0, 1]`.
    b2: :math:`\beta_2 \in [0, 1]`.
    mu_dtype: storage dtype of the momentum, a float dtype or ``None``
      (the parameters' dtype).
    weight_decay: :math:`\lambda \ge 0`, a scalar or a schedule.
    mask: which leaves get weight decay (see
      :func:`add_decoupled_weight_decay`).
    axis_name: the mesh axis of the workers.
    aggregation: ``'majority'`` (the paper's default) or ``'average'``.
    communication: ``'all_to_all'`` or ``'all_gather'`` (see
      :func:`lionx.distributed.sign_vote`).
    weight_decay_convention: ``'paper'``, ``'independent'`` or
      ``'corrected'`` (see :func:`lion`).
    peak_learning_rate: :math:`\eta_{\text{peak}}` for the conventions
      other than ``'paper'`` when ``learning_rate`` is a schedule or an
      array.
    cautious_weight_decay: decay only where the agreed step and
      :math:`\theta` agree in sign (see :func:`add_decoupled_weight_decay`).

  Returns:
    An :class:`optax.GradientTransformation`.

  Example:
    >>> import jax, jax.numpy as jnp, optax
    >>> from jax.sharding import NamedSharding, PartitionSpec as P
    >>> import lionx
    >>> n = jax.device_count()
    >>> mesh = jax.make_mesh((n,), ('data',))
    >>> opt = lionx.distributed_lion(0.1, weight_decay=0.0)
    >>> specs = lionx.DistributedLionState.partition_specs('data')
    >>> def step(params, state, x):  # x: this worker's batch
    ...   local = jax.lax.pcast(params, 'data', to='varying')
    ...   loss = lambda p: jnp.sum((p - x.mean(0)) ** 2)
    ...   grads = jax.grad(loss)(local)  # this worker's gradient only
    ...   updates, state = opt.update(grads, state, params)
    ...   return optax.apply_updates(params, updates), state
    >>> step = jax.jit(jax.shard_map(
    ...     step, mesh=mesh, in_specs=(P(), specs, P('data')),
    ...     out_specs=(P(), specs)))
    >>> init = jax.jit(jax.shard_map(
    ...     opt.init, mesh=mesh, in_specs=P(), out_specs=specs))
    >>> params = jnp.zeros(2)
    >>> state = init(params)
    >>> state.mu.shape == (n, 2)  # one momentum per worker
    True
    >>> x = jax.device_put(jnp.tile(jnp.array([[1.0, -1.0]]), (n, 1)),
    ...                    NamedSharding(mesh, P('data')))
    >>> params, state = step(params, state, x)
    >>> params  # every worker votes the same way
    Array([ 0.1, -0.1], dtype=float32)

  References:
    Liu et al., `Communication Efficient Distributed Training with
    Distributed Lion <https://arxiv.org/abs/2404.00438>`_, 2024.
  """
  checks.non_negative('learning_rate', learning_rate, schedule=True)
  if check_mu_dtype(mu_dtype) == jnp.int8:
    raise ValueError(
        f'mu_dtype={mu_dtype!r}: distributed_lion keeps a float momentum '
        'per worker; 8-bit momentum is not supported here. Use a float '
        'dtype (e.g. jnp.bfloat16) or None.')
  inner = optax.chain(
      scale_by_lion(b1=b1, b2=b2, mu_dtype=mu_dtype),
      sign_reshaper(),
      sign_vote(axis_name, aggregation, communication=communication),
      _weight_decay(weight_decay, mask, learning_rate,
                    weight_decay_convention=weight_decay_convention,
                    peak_learning_rate=peak_learning_rate,
                    cautious_weight_decay=cautious_weight_decay),
      _learning_rate(learning_rate),
  )

  def init_fn(params):
    mu = optax.tree_utils.tree_get(inner.init(params), 'mu')
    return DistributedLionState(
        count=jnp.zeros([], jnp.int32),
        mu=jax.tree.map(lambda x: x[None], mu))

  def update_fn(updates, state, params=None):
    if not isinstance(state, DistributedLionState):
      raise TypeError(
          f'state is a {type(state).__name__}; expected the '
          'DistributedLionState made by init.')
    if params is None:
      raise ValueError('params=None: distributed_lion needs the params.')
    _check_local(updates, axis_name)
    mu = jax.tree.map(_drop_worker_axis, state.mu)
    # The chain's own state, rebuilt from the shared count and this
    # worker's momentum (the inits below are dead code once replaced).
    inner_state = optax.tree_utils.tree_set(
        inner.init(params), count=state.count, mu=mu)
    updates, inner_state = inner.update(updates, inner_state, params)
    mu = optax.tree_utils.tree_get(inner_state, 'mu')
    return updates, DistributedLionState(
        count=optax.safe_increment(state.count),
        mu=jax.tree.map(lambda x: x[None], mu))

  return real_view_transformation(
      optax.GradientTransformation(init_fn, update_fn))


def _varying_axes(x) -> Optional[frozenset]:
  """The mesh axes ``x`` varies over (shard_map's check_vma types)."""
  try:
    return frozenset(jax.typeof(x).mat.varying)
  except AttributeError:  # another JAX version: no check.
    return None


def _check_local(grads, axis_name: str) -> None:
  """Raises if the gradients are invariant: already all-reduced."""
  _axis_size(axis_name)
  on = _varying_axes(jax.lax.axis_index(axis_name))
  if not on or axis_name not in on:  # check_vma=False: types unknown.
    return
  for g in jax.tree.leaves(grads):
    if axis_name not in _varying_axes(g):
      raise ValueError(
          f'updates has a leaf {jax.typeof(g).str_short()} that is the '
          f'same on every worker of {axis_name!r}: it was all-reduced, '
          'which Distributed Lion exists to avoid. Inside shard_map, '
          'jax.grad with respect to replicated params sums the gradient '
          'over the axis; differentiate with respect to '
          f'jax.lax.pcast(params, {axis_name!r}, to="varying") to get each '
          "worker's local gradient.")


def _drop_worker_axis(x: jax.Array) -> jax.Array:
  if jnp.ndim(x) == 0 or jnp.shape(x)[0] != 1:
    raise ValueError(
        f'state.mu has a leaf of shape {jnp.shape(x)}; expected a leading '
        'worker axis of size 1: run init and update inside jax.shard_map '
        'with DistributedLionState.partition_specs(axis_name).')
  return x[0]


# Bytes per element of the HLO element types.
_HLO_BYTES = {
    'pred': 1, 's4': 0.5, 'u4': 0.5, 's8': 1, 'u8': 1, 'f8e4m3fn': 1,
    'f8e5m2': 1, 's16': 2, 'u16': 2, 'f16': 2, 'bf16': 2, 's32': 4, 'u32': 4,
    'f32': 4, 's64': 8, 'u64': 8, 'f64': 8, 'c64': 8, 'c128': 16,
}
COLLECTIVES = ('all-reduce', 'all-gather', 'all-to-all', 'reduce-scatter',
               'collective-permute', 'collective-broadcast')
_ARRAY = re.compile(r'\b([a-z]+[0-9a-z]*)\[([0-9,]*)\]')
_INSTRUCTION = re.compile(
    r'^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*?)\s+([a-z][\w\-]*)\((.*)$')


def _shape_bytes(shape: str) -> float:
  total = 0.0
  for dtype, dims in _ARRAY.findall(shape):
    if dtype in _HLO_BYTES:
      total += _HLO_BYTES[dtype] * int(np.prod(
          [int(n) for n in dims.split(',') if n]))
  return total


def collective_bytes(hlo_text: str) -> dict[str, int]:
  """Bytes each device hands to collectives, by kind, from HLO text.

  For every collective instruction (``all-reduce``, ``all-gather``,
  ``all-to-all``, ``reduce-scatter``, ``collective-permute``, and their
  async ``-start`` forms) the sizes of its operands are summed; the operands'
  shapes are looked up where they are defined. Pass
  ``jax.jit(f).lower(...).compile().as_text()`` of an SPMD program (e.g. a
  ``shard_map``), whose shapes are per device.

  Args:
    hlo_text: the text of an HLO module.

  Returns:
    ``{kind: bytes}`` for the kinds present, plus ``'total'``.

  Example:
    >>> import lionx
    >>> hlo = '''
    ...   %p = f32[10]{0} parameter(0)
    ...   %ar = f32[10]{0} all-reduce(%p), to_apply=%add
    ... '''
    >>> lionx.distributed.collective_bytes(hlo)
    {'all-reduce': 40, 'total': 40}
  """
  if not isinstance(hlo_text, str):
    hint = ' (decode it first)' if isinstance(hlo_text, bytes) else ''
    raise TypeError(
        f'hlo_text={hlo_text!r:.60}: expected the text of an HLO module, a '
        f'str{hint}, e.g. jax.jit(f).lower(...).compile().as_text().')
  shapes: dict[str, str] = {}
  calls = []
  for line in hlo_text.splitlines():
    match = _INSTRUCTION.match(line)
    if not match:
      continue
    name, shape, opcode, rest = match.groups()
    shapes[name] = shape
    kind = opcode[:-len('-start')] if opcode.endswith('-start') else opcode
    if kind in COLLECTIVES:
      calls.append((kind, shape, rest))
  out: dict[str, float] = {}
  for kind, shape, rest in calls:
    operands = _operands(rest)
    if any('[' in op for op in operands):  # shapes printed inline.
      size = sum(_shape_bytes(op) for op in operands)
    else:
      missing = [op for op in operands if op.lstrip('%') not in shapes]
      if missing:
        raise ValueError(
            f'hlo_text: operands {missing} of a {kind} are not defined in '
            'the text; pass the whole module.')
      size = sum(_shape_bytes(shapes[op.lstrip('%')]) for op in operands)
    out[kind] = out.get(kind, 0) + size
  result = {k: int(v) for k, v in out.items()}
  result['total'] = int(sum(out.values()))
  return result


def _operands(rest: str) -> list[str]:
  """The operand list at the start of ``rest`` (after the opening paren)."""
  depth, end = 1, 0
  for end, char in enumerate(rest):
    depth += {'(': 1, ')': -1}.get(char, 0)
    if depth == 0:
      break
  inner = re.sub(r'/\*.*?\*/', '', rest[:end])
  parts, depth, current = [], 0, ''
  for char in inner:
    if char in '([{':
      depth += 1
    elif char in ')]}':
      depth -= 1
    if char == ',' and depth == 0:
      parts.append(current.strip())
      current = ''
    else:
      current += char
  if current.strip():
    parts.append(current.strip())
  # Inline form "f32[10]{0} %p": keep the shape; else the name.
  return [p.split()[0] if '[' in p else p.split()[-1] for p in parts]
