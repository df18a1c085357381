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

  |\hat m_i - m_i| \le \frac{\sqrt{s\,|m_i|}}{127} + \frac{s}{254^2}.

State bytes per parameter: :math:`1 + 4/\text{block\_size}` plus the
padding of the last block of each leaf (1.016 for the default 256).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from lionx._src import checks
from lionx._src import interpolation as transforms
from lionx._src.norms import compute_dtype

_LEVELS = 127  # int8 codes run over [-127, 127].
DEFAULT_BLOCK_SIZE = 256


class QuantizedArray(NamedTuple):
  """One leaf of 8-bit blockwise momentum (see :mod:`quantized`)."""

  codes: chex.Array  # shape=(num_blocks, block_size), dtype=jnp.int8.
  scales: chex.Array  # shape=(num_blocks,), dtype=jnp.float32; max |m|.


class ScaleByLion8bitState(NamedTuple):
  """State of :func:`scale_by_lion_8bit`: the momentum's codes and scales.

  ``codes`` and ``scales`` each have the structure of the params, so that
  frameworks that rebuild the state tree (e.g. ``flax.nnx.Optimizer``) keep
  it as it is; leaf by leaf they are a :class:`QuantizedArray`.
  """

  count: chex.Array  # shape=(), dtype=jnp.int32.
  codes: optax.Updates  # per leaf: shape=(num_blocks, block_size), int8.
  scales: optax.Updates  # per leaf: shape=(num_blocks,), float32.


def _check_block_size(block_size: int) -> None:
  if isinstance(block_size, bool) or not isinstance(block_size, int):
    raise TypeError(f'block_size={block_size!r}: expected an int.')
  if block_size < 1:
    raise ValueError(f'block_size={block_size!r}: expected an int >= 1.')


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
  dequantizes to NaN rather than to a finite value.

  Args:
    x: a float array of any shape.
    block_size: entries per block (one float32 scale each).

  Returns:
    A :class:`QuantizedArray`.

  Example:
    >>> import jax.numpy as jnp
    >>> import lionx
    >>> q = lionx.quantize(jnp.array([1.0, -0.25, 0.0, 4.0]), block_size=2)
    >>> q.codes
    Array([[127, -64],
           [  0, 127]], dtype=int8)
    >>> q.scales
    Array([1., 4.], dtype=float32)
  """
  _check_block_size(block_size)
  return _encode(_blocks(jnp.asarray(x).astype(jnp.float32), block_size))


def _encode(blocks: jax.Array) -> QuantizedArray:
  """:func:`quantize` of an array already cut into (num_blocks, size)."""
  scales = jnp.max(jnp.abs(blocks), axis=1)
  scales = jnp.where(jnp.isfinite(scales), scales, jnp.nan)
  safe = jnp.where(scales > 0, scales, 1.0)[:, None]
  t = jnp.sqrt(jnp.abs(blocks) / safe)
  codes = jnp.round(_LEVELS * jnp.sign(blocks) * t)
  codes = jnp.where(jnp.isfinite(codes), codes, 0.0)
  return QuantizedArray(codes.astype(jnp.int8), scales)


def _decode(codes: jax.Array, scales: jax.Array) -> jax.Array:
  """:func:`dequantize` without the final reshape: (num_blocks, size)."""
  k = codes.astype(jnp.float32)
  return scales[:, None] * (k * jnp.abs(k)) * (1.0 / _LEVELS ** 2)


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
    >>> lionx.dequantize(lionx.quantize(x, block_size=2), x.shape)
    Array([ 1.  , -0.253...,  0.  ,  4.  ], dtype=float32)
  """
  size = math.prod(shape)
  x = _decode(q.codes, q.scales)
  return x.reshape(-1)[:size].reshape(shape).astype(dtype)


# Entries per pass of :func:`requantize`: 1 MiB of float32 temporaries.
CHUNK = 1 << 18


def requantize(q: QuantizedArray, g: jax.Array, b2: float,
               chunk: int = CHUNK) -> QuantizedArray:
  r"""``quantize(b2 * dequantize(q) + (1 - b2) * g)``, chunk by chunk.

  Equal to the one-shot expression up to float32 rounding (the compiler
  may contract its multiply-adds differently). A leaf of more than ``chunk``
  entries is done in a ``lax.scan`` over chunks of whole blocks that
  writes the codes in place, so that the float32 momentum is never
  materialised: XLA:CPU computes a block's maximum from a materialised
  input, and a fresh float32 temporary of the leaf's size costs a page
  fault per 4 KiB on every step.

  Args:
    q: the momentum's codes and scales.
    g: the gradient (any shape with ``q``'s number of entries or fewer).
    b2: the momentum's decay rate.
    chunk: entries per pass (rounded down to whole blocks, at least one).

  Returns:
    The new momentum's :class:`QuantizedArray`.
  """
  num_blocks, block_size = q.codes.shape
  flat = jnp.ravel(g).astype(jnp.float32)

  def new(codes, scales, g_blocks):
    m = b2 * _decode(codes, scales) + (1.0 - b2) * g_blocks
    return _encode(m)

  per = max(1, chunk // block_size)
  loops = (flat.size // block_size) // per if num_blocks > per else 0
  done = loops * per
  codes, scales = q.codes, q.scales
  if loops:
    def body(codes, i):
      lo = i * per
      g_blocks = jax.lax.dynamic_slice_in_dim(
          flat, lo * block_size, per * block_size).reshape(per, block_size)
      out = new(jax.lax.dynamic_slice_in_dim(codes, lo, per),
                jax.lax.dynamic_slice_in_dim(q.scales, lo, per), g_blocks)
      return jax.lax.dynamic_update_slice_in_dim(codes, out.codes, lo, 0), (
          out.scales)
    codes, head = jax.lax.scan(body, codes, jnp.arange(loops))
    scales = head.reshape(-1)
  if done < num_blocks:
    tail = new(codes[done:], q.scales[done:],
               _blocks(flat[done * block_size:], block_size))
    codes = codes.at[done:].set(tail.codes) if done else tail.codes
    scales = jnp.concatenate([scales, tail.scales]) if done else tail.scales
  return QuantizedArray(codes, scales)


def scale_by_lion_8bit(
    b1: float = 0.9,
    b2: float = 0.99,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> optax.GradientTransformation:
  r""":func:`scale_by_lion` with 8-bit blockwise momentum.

  Lines 4 and 6 of Algorithm 1 in Dong et al., with :math:`m` stored as
  :func:`quantize` codes (:math:`\hat m = ` :func:`dequantize` of them):

  .. math::

    \hat m_k &= \operatorname{dequantize}(\operatorname{quantize}(
                \beta_2 \hat m_{k-1} + (1 - \beta_2) g_k)) \\
    c_k &= \tfrac{\beta_1}{\beta_2}\, \hat m_k
           + \big(1 - \tfrac{\beta_1}{\beta_2}\big) g_k
         = \beta_1 \hat m_{k-1} + (1 - \beta_1) g_k
           + \tfrac{\beta_1}{\beta_2} (\hat m_k - m_k)

  where :math:`m_k = \beta_2 \hat m_{k-1} + (1 - \beta_2) g_k` before
  rounding. As in :func:`scale_by_lion`, :math:`c_k` is taken from the
  *new* momentum, so that the old codes are read once and overwritten in
  place (:func:`requantize`); the price is the last term, this step's
  quantization error, against the one already carried by
  :math:`\hat m_{k-1}`. Both orders disagree with float32 momentum on the
  sign of 1.5-2% of the coordinates of random data, the new one on about
  1% (relative) more of them (``tests/test_perf.py``). For a traced
  :math:`\beta`, :math:`\beta_2 = 0` or :math:`\beta_1 > 2\beta_2`,
  :math:`c_k` is the middle expression without the last term (and XLA
  copies the codes first).

  The arithmetic is float32. The state is a :class:`ScaleByLion8bitState`
  (int8 ``codes`` and float32 ``scales``, each a tree shaped like the
  params): :math:`1 + 4/\text{block\_size}` bytes per parameter plus
  padding, against 4 for float32 momentum. A non-finite gradient makes its
  whole block of momentum NaN (the block's scale is NaN), and with it that
  block of :math:`c_k`, so that it never turns into a silent
  :math:`\pm\eta` step. ``lionx.lion(..., mu_dtype=jnp.int8)`` uses this
  transform.

  Args:
    b1: interpolation weight :math:`\beta_1 \in [0, 1]`.
    b2: decay rate :math:`\beta_2 \in [0, 1]` of the momentum.
    block_size: entries per quantization block (each has a float32 scale).

  Returns:
    An :class:`optax.GradientTransformation`.

  Example:
    >>> import jax.numpy as jnp
    >>> import lionx
    >>> tx = lionx.scale_by_lion_8bit(b1=0.9, b2=0.99)
    >>> state = tx.init(jnp.zeros(3))
    >>> c, state = tx.update(jnp.array([1.0, -2.0, 0.0]), state)
    >>> c  # 0.1 * g, plus 0.9/0.99 of m_1's quantization error
    Array([ 0.10004002, -0.2       ,  0.        ], dtype=float32)
    >>> state.codes.dtype, state.codes.shape, state.scales.shape
    (dtype('int8'), (1, 256), (1,))

  References:
    Dettmers et al., `8-bit Optimizers via Block-wise Quantization
    <https://arxiv.org/abs/2110.02861>`_, 2022.
  """
  checks.in_range('b1', b1, 0.0, 1.0)
  checks.in_range('b2', b2, 0.0, 1.0)
  _check_block_size(block_size)
  from_new = transforms.c_from_new_coefficient(b1, b2)

  def init_fn(params):
    def blocks(p):
      return -(-math.prod(jnp.shape(p)) // block_size)
    return ScaleByLion8bitState(
        count=jnp.zeros([], jnp.int32),
        codes=jax.tree.map(
            lambda p: jnp.zeros((blocks(p), block_size), jnp.int8), params),
        scales=jax.tree.map(
            lambda p: jnp.zeros((blocks(p),), jnp.float32), params))

  def update_fn(updates, state, params=None):
    del params
    treedef = jax.tree.structure(updates)
    try:
      codes = treedef.flatten_up_to(state.codes)
      scales = treedef.flatten_up_to(state.scales)
    except (ValueError, TypeError):
      raise ValueError(
          f'updates has tree structure {treedef}, which does not match the '
          f'8-bit momentum {jax.tree.structure(state.codes)}.') from None

    def step(g, q):
      if (q.codes.ndim != 2 or q.codes.shape[1] != block_size
          or q.codes.shape[0] != -(-g.size // block_size)):
        raise ValueError(
            f'updates has a leaf of shape {g.shape} that does not match '
            f'its 8-bit momentum of codes shape {q.codes.shape}.')
      dtype = compute_dtype(g.dtype)
      g32 = g.astype(dtype)
      m_new = requantize(q, g32, b2)
      if from_new is None:
        c = transforms.interpolate(dequantize(q, g.shape, dtype), g32, b1)
      else:
        c = transforms.interpolate(
            dequantize(m_new, g.shape, dtype), g32, from_new)
      return c.astype(g.dtype), m_new

    pairs = [step(g, QuantizedArray(k, s)) for g, k, s in
             zip(treedef.flatten_up_to(updates), codes, scales)]
    c = treedef.unflatten([p[0] for p in pairs])
    return c, ScaleByLion8bitState(
        count=optax.safe_increment(state.count),
        codes=treedef.unflatten([p[1].codes for p in pairs]),
        scales=treedef.unflatten([p[1].scales for p in pairs]))

  return optax.GradientTransformation(init_fn, update_fn)
