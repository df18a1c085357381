"""Issue 22: the rewritten 8-bit momentum step against the old formulas.

The reference below is the step of lionx 0.10 written out plainly (no
chunks, no fusion tricks): the block scale is ``jnp.max(jnp.abs(m))``, the
codes the square-root companding of ``m / s``, and ``c`` the interpolation
of the decoded old momentum with its rounding rule. The new code must give
the same numbers: bit for bit where the arithmetic is the same and XLA has
no choice (the block maximum, the encode), and within float32 rounding in
the step, where XLA may contract a multiply-add into one rounding in one
compiled program and not in another (codes then one apart, rarely).
"""

import re

import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lionx
from lionx._src import quantized

U = 2.0 ** -24
TINY = 2.0 ** -126


# --- the old step, plainly (lionx 0.10's formulas) ---

def _ref_encode(m):
  scales = jnp.max(jnp.abs(m), axis=1)
  scales = jnp.where(jnp.isfinite(scales), scales, jnp.nan)
  big = scales >= 1.0
  safe = jnp.where(scales > 0, scales, 1.0)
  a = jnp.where(big, 2.0 ** -64, 1.0)[:, None]
  b = jnp.where(big, 2.0 ** 64 / safe, 1.0 / safe)[:, None]
  t = jnp.sqrt((jnp.abs(m) * a) * b)
  codes = jnp.round(127 * t)
  codes = jnp.where(m < 0, -codes, codes)
  codes = jnp.where(jnp.isfinite(codes), codes, 0.0)
  return codes.astype(jnp.int8), scales


def _ref_decode(codes, scales):
  k = codes.astype(jnp.float32)
  return scales[:, None] * jnp.minimum((k * jnp.abs(k)) * (1.0 / 127 ** 2),
                                       1.0)


def _ref_interpolate(m, g, w, m_error):
  c = w * m + (1.0 - w) * g
  bound = (3 * U * abs(w) * jnp.abs(m) + 3 * U * abs(1 - w) * jnp.abs(g)
           + 4 * TINY * (1 + abs(w)) + abs(w) * m_error)
  c = jnp.where(jnp.isfinite(c), c, jnp.nan)
  return jnp.where(jnp.abs(c) <= bound, 0.0, c)


def _ref_step(codes, scales, g, b1, b2):
  """(c, codes, scales) of one leaf, the old way, in one piece."""
  nb, bs = codes.shape
  n = g.size
  flat = jnp.pad(jnp.ravel(g).astype(jnp.float32), (0, nb * bs - n))
  g32 = flat.reshape(nb, bs)
  m_old = _ref_decode(codes, scales)
  c = _ref_interpolate(m_old, g32, b1, 2 * U * jnp.abs(m_old) + TINY)
  new_codes, new_scales = _ref_encode(b2 * m_old + (1 - b2) * g32)
  return c.reshape(-1)[:n].reshape(g.shape), new_codes, new_scales


def _data(seed, n, nonfinite=False):
  rng = np.random.default_rng(seed)
  m = rng.standard_normal(n) * 10.0 ** rng.uniform(-4, 2, n)
  g = rng.standard_normal(n) * 10.0 ** rng.uniform(-4, 2, n)
  m[rng.random(n) < 0.1] = 0.0
  g[rng.random(n) < 0.1] = 0.0
  if nonfinite and n > 40:
    g[[3, 17, 40]] = [np.inf, np.nan, -np.inf]
  return m.astype(np.float32), g.astype(np.float32)


# --- the block maximum ---

@pytest.mark.parametrize('width', [1, 2, 7, 32, 64, 96, 256, 1024])
def test_block_absmax_is_the_old_max_bit_for_bit(width):
  rng = np.random.default_rng(width)
  x = (rng.standard_normal((40, width))
       * 10.0 ** rng.uniform(-45, 38, (40, width))).astype(np.float32)
  x[0] = 0.0
  x[1] = -0.0
  x[2, 0] = np.nan
  x[3, -1] = np.inf
  x[4, width // 2] = -np.inf
  x[5] = np.float32(np.finfo(np.float32).max) * np.sign(x[5] + 0.5)
  x[6, 0] = np.float32(1e-45)  # subnormal
  x[7] = -np.abs(x[7])
  got = jax.jit(quantized._block_absmax)(jnp.asarray(x))
  want = jax.jit(lambda x: jnp.max(jnp.abs(x), axis=1))(jnp.asarray(x))
  # Blocks without a NaN: the same bits (inf included).
  ok = ~np.isnan(x).any(axis=1)
  np.testing.assert_array_equal(np.asarray(got)[ok].view(np.uint32),
                                np.asarray(want)[ok].view(np.uint32))
  # A block with a NaN: NaN, wherever the NaN is (the reduction XLA:CPU
  # picks for jnp.max does not always return it).
  assert np.all(np.isnan(np.asarray(got)[~ok]))
  assert got[3] == np.inf and got[4] == np.inf


@pytest.mark.parametrize('block', [256, 64, 7, 1])
@pytest.mark.parametrize('size', [1000, 256, 5])
def test_quantize_is_the_old_encode_bit_for_bit(block, size):
  m, _ = _data(size + block, size)
  q = lionx.quantized.quantize(jnp.asarray(m), block)
  flat = np.pad(m, (0, (-size) % block)).reshape(-1, block)
  codes, scales = jax.jit(_ref_encode)(jnp.asarray(flat))
  np.testing.assert_array_equal(q.codes, codes)
  np.testing.assert_array_equal(q.scales, scales)


# --- the step: chunked (CPU) and fused (other backends) ---

def _both(q, g, b1, b2, chunk):
  """The step, jitted; Python betas stay Python numbers (as in lion)."""
  step = jax.jit(lambda q, g: quantized.lion_8bit_leaf(q, g, b1, b2, chunk))
  return step(q, g)


@pytest.mark.slow
@pytest.mark.parametrize('size,block,chunk', [
    (1000, 8, 64), (1003, 8, 64), (1024, 16, 256), (50, 8, 3),
    (3000, 256, quantized.CHUNK)])
def test_chunked_step_is_the_old_step(size, block, chunk):
  m, g = _data(size, size, nonfinite=True)
  q = lionx.quantized.quantize(jnp.asarray(m), block)
  for b1, b2 in ((0.9, 0.99), (0.95, 0.98), (1.0, 0.5), (0.0, 1.0)):
    c, new = _both(q, jnp.asarray(g), b1, b2, chunk)
    ref = jax.jit(_ref_step, static_argnums=(3, 4))(
        q.codes, q.scales, jnp.asarray(g), b1, b2)
    _close_to_reference(c, new, *ref, q, g)


def _close_to_reference(c, new, rc, rcodes, rscales, q, g):
  """Equal up to float32 rounding: XLA may contract multiply-adds.

  ``c`` within the rounding level of ``|m| + |g|`` (where one program may
  zero a c at that level and the other not), scales to a few ulps, codes
  at most one apart on at most 1% of the entries.
  """
  c, rc = np.asarray(c, np.float64), np.asarray(rc, np.float64)
  m = np.abs(np.asarray(_ref_decode(q.codes, q.scales), np.float64)
             ).ravel()[:c.size].reshape(c.shape)
  level = 8 * U * (m + np.abs(np.asarray(g, np.float64))) + 8 * TINY
  np.testing.assert_array_equal(np.isnan(c), np.isnan(rc))
  ok = ~np.isnan(c)
  assert np.all(np.abs(c - rc)[ok] <= level[ok])
  np.testing.assert_array_equal(np.isnan(new.scales), np.isnan(rscales))
  np.testing.assert_allclose(new.scales, rscales, rtol=4 * U, atol=0)
  diff = np.abs(np.asarray(new.codes, int) - np.asarray(rcodes, int))
  assert diff.max() <= 1 and np.mean(diff > 0) <= 0.01


@pytest.mark.slow
@hypothesis.settings(max_examples=15, deadline=None)
@hypothesis.given(st.integers(1, 2000), st.sampled_from([1, 7, 64, 256]),
                  st.sampled_from([0.0, 0.5, 0.9, 1.0]),
                  st.sampled_from([0.0, 0.5, 0.99, 1.0]),
                  st.integers(0, 2 ** 16))
def test_fused_step_is_the_old_step(size, block, b1, b2, seed):
  m, g = _data(seed, size, nonfinite=seed % 2 == 0)
  q = lionx.quantized.quantize(jnp.asarray(m), block)
  c, new = _both(q, jnp.asarray(g), b1, b2, None)
  ref = jax.jit(_ref_step, static_argnums=(3, 4))(
      q.codes, q.scales, jnp.asarray(g), b1, b2)
  _close_to_reference(c, new, *ref, q, g)


def test_fused_step_with_traced_betas_and_bf16_gradient():
  m, g = _data(5, 777)
  q = lionx.quantized.quantize(jnp.asarray(m), 64)
  gb = jnp.asarray(g, jnp.bfloat16)
  b1, b2 = jnp.float32(0.9), jnp.float32(0.99)
  c, new = jax.jit(lambda q, g, b1, b2: quantized.lion_8bit_leaf(
      q, g, b1, b2, None))(q, gb, b1, b2)
  assert c.dtype == jnp.bfloat16
  rc, rcodes, rscales = jax.jit(_ref_step)(q.codes, q.scales, gb, b1, b2)
  # c in bfloat16: compare at bfloat16's rounding of the reference.
  np.testing.assert_allclose(np.asarray(c, np.float32),
                             np.asarray(rc.astype(jnp.bfloat16), np.float32),
                             rtol=2 ** -8, atol=1e-30)
  np.testing.assert_allclose(new.scales, rscales, rtol=4 * U, atol=0)
  diff = np.abs(np.asarray(new.codes, int) - np.asarray(rcodes, int))
  assert diff.max() <= 1 and np.mean(diff > 0) <= 0.01


@pytest.fixture
def fused(monkeypatch):
  """lionx.lion(mu_dtype=jnp.int8) on the fused path, as on a GPU."""
  monkeypatch.setattr(quantized, 'LOOP_BACKENDS', ())


def _train(opt, params, grads):
  state = opt.init(params)
  step = jax.jit(lambda p, s, g: opt.update(g, s, p))
  out = []
  for g in grads:
    updates, state = step(params, state, g)
    params = optax.apply_updates(params, updates)
    out.append(params)
  return out, state


def _grads(n, steps, seed=0):
  rng = np.random.default_rng(seed)
  return [jnp.asarray(rng.standard_normal(n) * 1e-2, jnp.float32)
          for _ in range(steps)]


def test_fused_lion_follows_the_chunked_lion(monkeypatch):
  """Same gradients: the two shapes agree on almost every parameter."""
  n, steps = 5000, 20
  params = jnp.asarray(np.random.default_rng(1).standard_normal(n),
                       jnp.float32)
  grads = _grads(n, steps)
  opt = lionx.lion(learning_rate=1e-3, weight_decay=0.1, mu_dtype=jnp.int8)
  chunked, s1 = _train(opt, params, grads)
  monkeypatch.setattr(quantized, 'LOOP_BACKENDS', ())
  opt = lionx.lion(learning_rate=1e-3, weight_decay=0.1, mu_dtype=jnp.int8)
  fused_, s2 = _train(opt, params, grads)
  # A parameter differs only where c_k's sign flips at rounding level (a
  # code one apart): at most 2 lr from the other shape, and rarely.
  d = np.abs(np.asarray(chunked[-1]) - np.asarray(fused_[-1]))
  assert np.mean(d > 1e-6) <= 0.01 and d.max() <= 2 * steps * 1e-3
  np.testing.assert_allclose(s1[0].scales, s2[0].scales, rtol=1e-4)


def test_fused_resumes_a_chunked_state(fused):
  """The encoding is the same: a state from either shape resumes in the
  other, step for step as the old formulas say."""
  del fused
  m, g = _data(3, 3000)
  q = lionx.quantized.quantize(jnp.asarray(m), 256)
  c1, q1 = _both(q, jnp.asarray(g), 0.9, 0.99, 64 * 256)
  c2, q2 = _both(q1, jnp.asarray(g), 0.9, 0.99, None)
  ref1 = jax.jit(_ref_step, static_argnums=(3, 4))(
      q.codes, q.scales, jnp.asarray(g), 0.9, 0.99)
  _close_to_reference(c1, q1, *ref1, q, g)
  # The second step from the first's state (codes possibly one apart).
  ref2 = jax.jit(_ref_step, static_argnums=(3, 4))(
      q1.codes, q1.scales, jnp.asarray(g), 0.9, 0.99)
  _close_to_reference(c2, q2, *ref2, q1, g)


def test_fused_nonfinite_gradient_makes_nan(fused):
  del fused
  tx = lionx._src.quantized.scale_by_lion_8bit(block_size=2)
  state = tx.init(jnp.zeros(4))
  c, state = jax.jit(tx.update)(jnp.array([0.5, jnp.inf, -0.5, 1.0]), state)
  c = np.asarray(c)
  assert np.isnan(c[1]) and np.all(np.isfinite(c[[0, 2, 3]])), c
  c = np.asarray(jax.jit(tx.update)(jnp.ones(4), state)[0])
  assert np.all(np.isnan(c[:2])) and np.all(np.isfinite(c[2:])), c


def test_fused_complex_leaf_is_its_real_view_bit_for_bit(fused):
  del fused
  rng = np.random.default_rng(9)
  z = (rng.standard_normal((7, 40)) + 1j * rng.standard_normal((7, 40))
       ).astype(np.complex64)
  real = np.stack([z.real, z.imag], -1)
  tx = lionx._src.quantized.scale_by_lion_8bit(0.9, 0.99)
  sz, sr = tx.init(jnp.asarray(z)), tx.init(jnp.asarray(real))
  for k in range(3):
    gz = jnp.asarray(z * (k - 1.5) + 0.3j)
    uz, sz = jax.jit(tx.update)(gz, sz)
    ur, sr = jax.jit(tx.update)(jnp.stack([gz.real, gz.imag], -1), sr)
    np.testing.assert_array_equal(jnp.stack([uz.real, uz.imag], -1), ur)
  jax.tree.map(np.testing.assert_array_equal, sz, sr)


def test_fused_large_finite_gradients_step_by_eta(fused):
  del fused
  params = jnp.ones(300)
  opt = lionx.lion(learning_rate=0.1, weight_decay=0.0, mu_dtype=jnp.int8)
  state = opt.init(params)
  for g in (1e37, float(np.finfo(np.float32).max), -3e38):
    updates, state = jax.jit(opt.update)(jnp.full(300, g), state, params)
    np.testing.assert_array_equal(updates, np.float32(-0.1 * np.sign(g)))


@pytest.mark.skipif(jax.default_backend() != 'cpu',
                    reason='the fusion decisions of XLA:CPU')
def test_fused_step_compiles_to_plain_passes(fused):
  """No loop, and c is fused into the parameter update, not written out:
  the only full-size float32 result is the new parameters."""
  del fused
  n = 4 * 256 * 257
  opt = lionx.lion(learning_rate=1e-3, mu_dtype=jnp.int8)

  def step(params, state, grads):
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  params = jnp.ones(n)
  text = jax.jit(step, donate_argnums=(0, 1)).lower(
      params, opt.init(params), params).compile().as_text()
  entry = text[text.index('ENTRY'):]
  assert ' while(' not in entry and 'conditional(' not in entry
  outputs = re.findall(r'= f32\[([\d,]+)\]\S* (?:fusion|copy)\(', entry)
  sizes = [int(np.prod([int(d) for d in o.split(',')])) for o in outputs]
  assert sorted(sizes)[-1] == n and sorted(sizes)[-2] < n // 4, sizes


@pytest.mark.parametrize('loop', [('cpu',), ()])
def test_nan_in_a_large_leaf_makes_its_block_nan(monkeypatch, loop):
  """A regression: jnp.max over the blocks of a large leaf (XLA:CPU's
  vectorised reduction) returned 1.0 for a block of ones with a NaN, so
  that quantize and the old step dropped the NaN (its code became 0). The
  block maximum now always returns NaN there, on both shapes of the step.
  """
  monkeypatch.setattr(quantized, 'LOOP_BACKENDS', loop)
  x = np.ones((4000, 256), np.float32)
  x[2, 0] = np.nan
  x[100, 7] = np.nan
  x[3000, 255] = np.inf
  q = lionx.quantized.quantize(jnp.asarray(x.ravel()), 256)
  scales = np.asarray(q.scales)
  assert np.isnan(scales[[2, 100, 3000]]).all()
  assert np.all(scales[np.r_[0:2, 3:100, 101:3000, 3001:4000]] == 1.0)
  tx = lionx._src.quantized.scale_by_lion_8bit()
  state = tx.init(jnp.zeros(x.size))
  c, state = jax.jit(tx.update)(jnp.asarray(x.ravel()), state)
  scales = np.asarray(state.scales)
  assert np.isnan(scales[[2, 100, 3000]]).all()
  assert np.isfinite(np.delete(scales, [2, 100, 3000])).all()
  c = np.asarray(c).reshape(4000, 256)
  assert np.isnan(c[2, 0]) and np.isnan(c[100, 7]) and np.isnan(c[3000, 255])
  # The next step: the whole of each of those blocks is NaN.
  c, _ = jax.jit(tx.update)(jnp.ones(x.size), state)
  c = np.asarray(c).reshape(4000, 256)
  assert np.isnan(c[[2, 100, 3000]]).all()
  assert np.isfinite(np.delete(c, [2, 100, 3000], axis=0)).all()
