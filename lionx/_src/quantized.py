r"""8-bit blockwise momentum for Lion, as in bitsandbytes' 8-bit Lion.

The momentum of each leaf is flattened, padded to a multiple of
``block_size`` and cut into blocks. Each block keeps one float32 scale
:math:`s = \max_i |m_i|` and one int8 code per entry. The code is the
square-root companding of :math:`m / s` (a closed-form stand-in for
bitsandbytes' non-linear "dynamic" map: fine steps near 0, where most
momentum entries are):

.. math::

  q_i = \operatorname{round}\!\Big(127\, \operatorname{sign}(m_i)
        \sqrt{|m_i| / s}\Big), \qquad
  \hat m_i = s\, \frac{q_i |q_i|}{127^2}.

With :math:`t = \sqrt{|m|/s}` and :math:`|\hat t - t| \le 1/254`, the error
of one round trip is bounded entry by entry:

.. math::

  |\hat m_i - m_i| \le \frac{\sqrt{s\,|m_i|}}{127} + \frac{s}{254^2}
  + 2^{-126}.

The last term is the smallest normal float32: XLA:CPU flushes subnormal
results to zero, so values below it cannot be told from 0. The bound holds
for every finite input up to the float32 maximum: :math:`|m|/s` is formed
with per-block powers of two that neither overflow nor flush, and
:math:`\hat m` as :math:`s` times a factor in :math:`[0, 1]`.

State bytes per parameter: :math:`1 + 4/\text{block\_size}` plus the
padding of the last block of each leaf (1.016 for the default 256).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Optional

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from lionx._src import checks
from lionx._src import interpolation
from lionx._src.realview import tree_view_as_complex
from lionx._src.realview import tree_view_as_real
from lionx._src.realview import view_as_real

_LEVELS = 127  # int8 codes run over [-127, 127].
_INV_LEVELS2 = 1.0 / _LEVELS ** 2
_U = 2.0 ** -24  # float32 unit roundoff.
_TINY = 2.0 ** -126  # smallest normal float32.
DEFAULT_BLOCK_SIZE = 256
# Entries per pass of the chunked step: 1 MiB of float32 per temporary.
CHUNK = 1 << 18
# Backends on which lion_8bit_leaf walks a leaf in chunks by default (see
# its docstring); elsewhere it takes the fused path. Read at trace time.
LOOP_BACKENDS = ('cpu',)


class QuantizedArray(NamedTuple):
  """One leaf of 8-bit blockwise momentum (see :func:`quantize`)."""

  codes: chex.Array  # shape=(num_blocks, block_size), dtype=jnp.int8.
  scales: chex.Array  # shape=(num_blocks,), dtype=jnp.float32; max |m|.


class ScaleByLion8bitState(NamedTuple):
  """State of ``scale_by_lion(mu_dtype=jnp.int8)``: the momentum's codes
  and scales.

  ``codes`` and ``scales`` each have the structure of the params, so that
  frameworks that rebuild the state tree (e.g. ``flax.nnx.Optimizer``) keep
  it as it is; leaf by leaf they are a :class:`QuantizedArray` (of the
  real view, shape ``s + (2,)``, of a complex leaf of shape ``s``).
  """

  count: chex.Array  # shape=(), dtype=jnp.int32.
  codes: optax.Updates  # per leaf: shape=(num_blocks, block_size), int8.
  scales: optax.Updates  # per leaf: shape=(num_blocks,), float32.


_MAX_BLOCK = 2 ** 31 - 1  # blocks are indexed with int32.


def _check_block_size(block_size: int) -> None:
  if isinstance(block_size, bool) or not isinstance(block_size, int):
    raise TypeError(f'block_size={block_size!r}: expected an int.')
  if not 1 <= block_size <= _MAX_BLOCK:
    raise ValueError(f'block_size={block_size!r}: expected an int >= 1 '
                     f'and <= {_MAX_BLOCK}.')


def _num_blocks(size: int, block_size: int) -> int:
  return -(-size // block_size)


def _blocks(x: jax.Array, block_size: int) -> jax.Array:
  """``x`` flattened, zero-padded and reshaped to (num_blocks, block_size)."""
  flat = jnp.ravel(x)
  pad = (-flat.size) % block_size
  if pad:
    flat = jnp.pad(flat, (0, pad))
  return flat.reshape(-1, block_size)


def quantize(x: jax.Array, block_size: int = DEFAULT_BLOCK_SIZE
             ) -> QuantizedArray:
  r"""Blockwise int8 codes of ``x`` (square-root companding, absmax scale).

  .. math::

    s = \max_{i \in \text{block}} |x_i|, \qquad
    q_i = \operatorname{round}(127\,\operatorname{sign}(x_i)
          \sqrt{|x_i|/s})

  A block whose maximum is not finite gets a NaN scale, so that it
  dequantizes to NaN rather than to a finite value. Any finite input, up
  to the float32 maximum, keeps the round-trip error bound
  :math:`|\hat x_i - x_i| \le \sqrt{s|x_i|}/127 + s/254^2`.

  Args:
    x: a real float array of any shape.
    block_size: entries per block (one float32 scale each).

  Returns:
    A :class:`QuantizedArray`.

  Example:
    >>> import jax.numpy as jnp
    >>> import lionx
    >>> q = lionx.quantized.quantize(jnp.array([1.0, -0.25, 0.0, 4.0]), block_size=2)
    >>> q.codes
    Array([[127, -64],
           [  0, 127]], dtype=int8)
    >>> q.scales
    Array([1., 4.], dtype=float32)
  """
  _check_block_size(block_size)
  dtype = checks.leaf_dtype(x)
  if dtype is None:
    raise TypeError(f'x={x!r:.60}: expected a real float array.')
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(
        f'x has dtype {x.dtype}; expected a real float array (pass the real '
        'view stack([z.real, z.imag], -1) of a complex one).')
  return _encode(_blocks(x.astype(jnp.float32), block_size))


# Width down to which :func:`_block_absmax` halves a block element-wise.
_TREE_WIDTH = 32


def _block_absmax(m: jax.Array) -> jax.Array:
  """max |m| over axis 1 of (num_blocks, size), exactly; NaN if any is.

  A row reduction of XLA:CPU (jax 0.10) runs near 1 GB/s, 3 to 5 times
  slower than one pass over memory. So the rows are first halved
  element-wise, in one fused loop, down to ``_TREE_WIDTH`` entries: the
  maximum of two halves of ``|m|``'s bits as int32 (for floats >= 0 the
  integer order is the float order, and a NaN's bits exceed every other
  value's, so that a NaN wins), and only then reduced.
  """
  x = jax.lax.bitcast_convert_type(jnp.abs(m), jnp.int32)
  while x.shape[1] > _TREE_WIDTH and x.shape[1] % 2 == 0:
    half = x.shape[1] // 2
    x = jnp.maximum(x[:, :half], x[:, half:])
  return jax.lax.bitcast_convert_type(jnp.max(x, axis=1), jnp.float32)


def _encode(m: jax.Array) -> QuantizedArray:
  """:func:`quantize` of an array already cut into (num_blocks, size)."""
  scales = _block_absmax(m)
  scales = jnp.where(jnp.isfinite(scales), scales, jnp.nan)
  # |m| / s as (|m| a) b with per-block powers of two, so that neither
  # factor overflows or flushes to zero for any finite s (a reciprocal
  # 1/s is subnormal, hence 0 on XLA:CPU, once s >= 2^126).
  big = scales >= 1.0
  safe = jnp.where(scales > 0, scales, 1.0)
  a = jnp.where(big, 2.0 ** -64, 1.0)[:, None]
  b = jnp.where(big, 2.0 ** 64 / safe, 1.0 / safe)[:, None]
  t = jnp.sqrt((jnp.abs(m) * a) * b)
  codes = jnp.round(_LEVELS * t)
  codes = jnp.where(m < 0, -codes, codes)
  codes = jnp.where(jnp.isfinite(codes), codes, 0.0)
  return QuantizedArray(codes.astype(jnp.int8), scales)


def _decode(codes: jax.Array, scales: jax.Array) -> jax.Array:
  """:func:`dequantize` without the final reshape: (num_blocks, size)."""
  k = codes.astype(jnp.float32)
  # s times a factor in [0, 1]: it cannot overflow for any finite s.
  w = jnp.minimum((k * jnp.abs(k)) * _INV_LEVELS2, 1.0)
  return scales[:, None] * w


def dequantize(q: QuantizedArray, shape, dtype=jnp.float32) -> jax.Array:
  r""":math:`\hat x_i = s\, q_i |q_i| / 127^2`, reshaped to ``shape``.

  Args:
    q: a :class:`QuantizedArray`.
    shape: the shape of the original array.
    dtype: the dtype of the result.

  Returns:
    The dequantized array.

  Example:
    >>> import jax.numpy as jnp
    >>> import lionx
    >>> x = jnp.array([1.0, -0.25, 0.0, 4.0])
    >>> lionx.quantized.dequantize(lionx.quantized.quantize(x, block_size=2), x.shape)
    Array([ 1.  , -0.253...,  0.  ,  4.  ], dtype=float32)
  """
  if not isinstance(q, QuantizedArray):
    raise TypeError(f'q={q!r:.60}: expected a lionx.quantized.QuantizedArray (from '
                    'lionx.quantized.quantize).')
  if not isinstance(shape, (tuple, list)) or not all(
      isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 0
      for n in shape):
    raise TypeError(f'shape={shape!r}: expected a tuple of ints >= 0.')
  size = math.prod(shape)
  num_blocks, block_size = jnp.shape(q.codes)
  if _num_blocks(size, block_size) != num_blocks:
    raise ValueError(
        f'shape={tuple(shape)!r} has {size} entries; q holds {num_blocks} '
        f'blocks of {block_size}, i.e. {(num_blocks - 1) * block_size + 1} '
        f'to {num_blocks * block_size} entries.')
  expected = 'a float dtype.'
  if not jnp.issubdtype(checks.dtype('dtype', dtype, expected), jnp.floating):
    raise TypeError(f'dtype={dtype!r}: expected {expected}')
  x = _decode(q.codes, q.scales)
  return x.reshape(-1)[:size].reshape(shape).astype(dtype)


def _load(codes, scales, flat, lo, per, valid):
  """The old momentum and the gradient of blocks [lo, lo + per), float32.

  Both come out of a ``lax.cond`` (whose two branches are the same), so
  that XLA materialises them once, in a chunk-sized buffer: every later
  reader of the chunk reads these, and the in-place writes of the new codes
  and of :math:`c` into the buffers they were read from need no copy. (A
  plain slice would be fused, and recomputed, into each reader, and XLA
  would then copy the whole buffer to keep the old values alive.) The
  slices are taken inside the branches, fused into the decode, rather than
  copied out first.
  """
  block_size = codes.shape[1]

  def load(codes, scales, flat, lo):
    ck = jax.lax.dynamic_slice_in_dim(codes, lo, per)
    sk = jax.lax.dynamic_slice_in_dim(scales, lo, per)
    g = jax.lax.dynamic_slice_in_dim(flat, lo * block_size, valid).astype(
        jnp.float32)
    if valid < per * block_size:
      g = jnp.pad(g, (0, per * block_size - valid))
    return _decode(ck, sk), g.reshape(per, block_size)

  # A traced predicate (the branches are the same whatever its value).
  return jax.lax.cond(scales[0] == scales[0], load, load, codes, scales,
                      flat, lo)


def _chunk(codes, scales, flat, lo, per, valid, b1, b2):
  """One pass over blocks [lo, lo + per): c into ``flat``, m_k into codes."""
  m_old, g = _load(codes, scales, flat, lo, per, valid)
  # Line 4 of Algorithm 1 from the old momentum; the decode's two roundings
  # are its error, so that c at rounding level comes out as 0.
  c = interpolation.interpolate(
      m_old, g, b1, m_error=(2.0 * _U) * jnp.abs(m_old) + _TINY)
  new = _encode(b2 * m_old + (1.0 - b2) * g)
  codes = jax.lax.dynamic_update_slice_in_dim(codes, new.codes, lo, 0)
  c = c.reshape(-1)
  if valid < c.size:
    c = c[:valid]
  flat = jax.lax.dynamic_update_slice_in_dim(
      flat, c.astype(flat.dtype), lo * codes.shape[1], 0)
  return codes, flat, new.scales


def _fused_leaf(q: QuantizedArray, g: jax.Array, b1: chex.Numeric,
                b2: chex.Numeric) -> tuple[jax.Array, QuantizedArray]:
  """:func:`lion_8bit_leaf` as plain array code, for XLA to fuse.

  Three element-wise passes, with no loop: the new block scales (a fused
  reduction, :func:`_block_absmax`, reading the old codes and the
  gradient), the new codes (written over the old ones) and :math:`c`,
  which XLA fuses into its consumer (in ``lionx.lion``, the parameter
  update) rather than writing it out. The formulas are those of
  :func:`_chunk`.
  """
  codes, scales = q.codes, q.scales
  num_blocks, block_size = codes.shape
  shape, n = g.shape, g.size
  flat = jnp.ravel(g).astype(jnp.float32)
  pad = num_blocks * block_size - n
  if pad:
    flat = jnp.pad(flat, (0, pad))
  g32 = flat.reshape(num_blocks, block_size)
  m_old = _decode(codes, scales)
  c = interpolation.interpolate(
      m_old, g32, b1, m_error=(2.0 * _U) * jnp.abs(m_old) + _TINY)
  c = c.reshape(-1)
  if pad:
    c = c[:n]
  new = _encode(b2 * m_old + (1.0 - b2) * g32)
  return c.reshape(shape).astype(g.dtype), new


def lion_8bit_leaf(q: QuantizedArray, g: jax.Array, b1: chex.Numeric,
                   b2: chex.Numeric, chunk: Optional[int] = -1
                   ) -> tuple[jax.Array, QuantizedArray]:
  r""":math:`(c_k, m_k)` of one real leaf.

  .. math::

    c_k = \beta_1 \hat m_{k-1} + (1 - \beta_1) g_k, \qquad
    \hat m_k = \operatorname{dequantize}(\operatorname{quantize}(
      \beta_2 \hat m_{k-1} + (1 - \beta_2) g_k))

  Two shapes of the same formulas (their results agree up to float32
  rounding: XLA may contract a multiply-add into one rounding in one and
  not in the other, so that a code may come out one apart, rarely):

  * chunked (``chunk`` an int; by default on the backends of
    ``LOOP_BACKENDS``, i.e. CPU): the leaf is walked in chunks of whole
    blocks (at most ``chunk`` entries, at least one block; a ``lax.scan``
    when there is more than one). Each chunk reads its old codes and its
    gradient once, writes :math:`c_k` over its gradient (the gradient's
    buffer, in the gradient's dtype) and its new codes over the old ones:
    no copy of the codes and no float32 temporary of the leaf's size
    (when the gradient's buffer may be overwritten; XLA copies an input
    of the jitted step that is not donated first).
  * fused (``chunk=None``; by default on GPU and TPU): plain array code
    (:func:`_fused_leaf`), three passes that XLA fuses, :math:`c_k` fused
    into its consumer. XLA:CPU, which makes no multi-output fusion, then
    copies the codes once (the consumer of :math:`c_k` reads the old
    codes, the new ones are written in place): 1 byte a parameter, against
    the chunked shape's copy of a non-donated gradient (4 bytes).

  :math:`c_k` carries no quantization error of :math:`m_k`. It is 0
  wherever it is within float32 rounding (the decode's and its own) of 0,
  and NaN wherever it is not finite.

  Args:
    q: the momentum's codes and scales.
    g: the gradient, a real float array with ``q``'s number of blocks.
    b1: :math:`\beta_1` (a number or a traced scalar).
    b2: :math:`\beta_2` (a number or a traced scalar).
    chunk: entries per pass of the chunked shape; ``None`` for the fused
      shape; ``-1`` (default) picks by ``jax.default_backend()`` at trace
      time: ``CHUNK`` on the backends of ``LOOP_BACKENDS``, else ``None``.

  Returns:
    :math:`c_k` (shape and dtype of ``g``) and the new
    :class:`QuantizedArray`.
  """
  codes, scales = q.codes, q.scales
  num_blocks, block_size = codes.shape
  if not num_blocks:  # an empty leaf: nothing to do.
    return g, q
  if chunk == -1:
    chunk = CHUNK if jax.default_backend() in LOOP_BACKENDS else None
  if chunk is None:
    return _fused_leaf(q, g, b1, b2)
  shape, n = g.shape, g.size
  flat = jnp.ravel(g)
  per = max(1, chunk // block_size)
  loops = (n // block_size) // per if num_blocks > per else 0
  done = loops * per
  new_scales = []
  if loops:
    def body(carry, i):
      codes, flat = carry
      codes, flat, s = _chunk(codes, scales, flat, i * per, per,
                              per * block_size, b1, b2)
      return (codes, flat), s
    (codes, flat), s = jax.lax.scan(body, (codes, flat), jnp.arange(loops))
    new_scales.append(s.reshape(-1))
  if done < num_blocks:
    codes, flat, s = _chunk(codes, scales, flat, done, num_blocks - done,
                            n - done * block_size, b1, b2)
    new_scales.append(s)
  scales = (new_scales[0] if len(new_scales) == 1
            else jnp.concatenate(new_scales))
  return flat.reshape(shape), QuantizedArray(codes, scales)


def scale_by_lion_8bit(
    b1: float = 0.9,
    b2: float = 0.99,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> optax.GradientTransformation:
  r""":func:`scale_by_lion` with 8-bit blockwise momentum.

  Public as ``lionx.scale_by_lion(b1, b2, mu_dtype=jnp.int8)`` (block size
  256); ``lionx.scale_by_lion_8bit`` is deprecated.

  Lines 4 and 6 of Algorithm 1 in Dong et al., with :math:`m` stored as
  :func:`quantize` codes (:math:`\hat m = ` :func:`dequantize` of them):

  .. math::

    c_k &= \beta_1 \hat m_{k-1} + (1 - \beta_1) g_k \\
    \hat m_k &= \operatorname{dequantize}(\operatorname{quantize}(
                \beta_2 \hat m_{k-1} + (1 - \beta_2) g_k))

  :math:`c_k` is computed in this (textbook) order from the *old* codes,
  so its sign is that of Algorithm 1 on the stored momentum wherever
  :math:`|c_k|` is above float32 rounding level, and it is 0 where that
  :math:`c_k` is exactly 0 (e.g. :math:`\beta_1 = 1` at the first step).
  On CPU, one chunked pass per leaf reads the old codes once, writes
  :math:`c_k` over the gradient's buffer and the new codes in place
  (``lion_8bit_leaf``): neither the codes nor a float32 momentum is
  ever copied at the leaf's size. On other backends (picked by
  ``jax.default_backend()`` when the step is traced) the same arithmetic
  runs as plain array code that XLA fuses, :math:`c_k` into its consumer,
  with no loop (see ``lion_8bit_leaf``); the results are the same up to
  float32 rounding.

  The arithmetic is float32, and every finite input up to the float32
  maximum keeps the round-trip error bound of :func:`quantize` (no
  overflow to NaN).
  The state is a :class:`ScaleByLion8bitState` (int8 ``codes`` and float32
  ``scales``, each a tree shaped like the params):
  :math:`1 + 4/\text{block\_size}` bytes per parameter plus padding,
  against 4 for float32 momentum. A non-finite gradient entry makes
  :math:`c_k` NaN there, and its whole block of momentum NaN from then on
  (the block's scale is NaN), so that it never turns into a silent
  :math:`\pm\eta` step. A complex leaf counts as two real coordinates: its
  codes are those of its real view ``stack([re, im], -1)``, and its
  :math:`c_k` is, bit for bit, that of the real view, returned complex.
  ``lionx.lion(..., mu_dtype=jnp.int8)`` uses this transform. The codes
  keep a leaf's number of blocks, not its shape: ``update`` checks the
  updates' shapes against ``params`` when they are given (as in
  ``lionx.lion``), and only the number of blocks otherwise.

  Args:
    b1: interpolation weight :math:`\beta_1 \in [0, 1]`.
    b2: decay rate :math:`\beta_2 \in [0, 1]` of the momentum.
    block_size: entries per quantization block (each has a float32 scale).

  Returns:
    An :class:`optax.GradientTransformation`.

  Example:
    >>> import jax.numpy as jnp
    >>> import lionx
    >>> tx = lionx.scale_by_lion(b1=0.9, b2=0.99, mu_dtype=jnp.int8)
    >>> state = tx.init(jnp.zeros(3))
    >>> c, state = tx.update(jnp.array([1.0, -2.0, 0.0]), state)
    >>> c  # (1 - b1) g, as m_0 = 0
    Array([ 0.1, -0.2,  0. ], dtype=float32)
    >>> state.codes.dtype, state.codes.shape, state.scales.shape
    (dtype('int8'), (1, 256), (1,))

  References:
    Dettmers et al., `8-bit Optimizers via Block-wise Quantization
    <https://arxiv.org/abs/2110.02861>`_, 2022.
  """
  checks.in_range('b1', b1, 0.0, 1.0)
  checks.in_range('b2', b2, 0.0, 1.0)
  _check_block_size(block_size)

  def init_fn(params):
    checks.inexact_leaves('params', params)

    def blocks(p):
      return _num_blocks(math.prod(jnp.shape(view_as_real(p))), block_size)

    return ScaleByLion8bitState(
        count=jnp.zeros([], jnp.int32),
        codes=jax.tree.map(
            lambda p: jnp.zeros((blocks(p), block_size), jnp.int8), params),
        scales=jax.tree.map(
            lambda p: jnp.zeros((blocks(p),), jnp.float32), params))

  def update_fn(updates, state, params=None):
    checks.inexact_leaves('updates', updates)
    if params is not None:
      # The codes only tell the number of blocks: a leaf of another shape
      # with as many blocks is caught against the params, when given.
      checks.same_structure('updates', updates, params, 'params')
    updates = jax.tree.map(jnp.asarray, updates)
    treedef = jax.tree.structure(updates)
    try:
      codes = treedef.flatten_up_to(state.codes)
      scales = treedef.flatten_up_to(state.scales)
    except (ValueError, TypeError):
      raise ValueError(
          f'updates has tree structure {treedef}, which does not match the '
          f'8-bit momentum {jax.tree.structure(state.codes)}.') from None

    def step(g: Any, q: QuantizedArray):
      if (q.codes.ndim != 2 or q.codes.shape[1] != block_size
          or q.codes.shape[0] != _num_blocks(g.size, block_size)):
        raise ValueError(
            f'updates has a leaf of shape {g.shape} that does not match '
            f'its 8-bit momentum of codes shape {q.codes.shape}.')
      return lion_8bit_leaf(q, g, b1, b2)

    real = treedef.flatten_up_to(tree_view_as_real(updates))
    pairs = [step(g, QuantizedArray(k, s))
             for g, k, s in zip(real, codes, scales)]
    c = tree_view_as_complex(treedef.unflatten([p[0] for p in pairs]),
                             updates)
    return c, ScaleByLion8bitState(
        count=optax.safe_increment(state.count),
        codes=treedef.unflatten([p[1].codes for p in pairs]),
        scales=treedef.unflatten([p[1].scales for p in pairs]))

  return optax.GradientTransformation(init_fn, update_fn)
