"""8-bit blockwise momentum (lionx.scale_by_lion_8bit, mu_dtype=jnp.int8).

* the round-trip error bound, for every finite input up to the float32
  maximum and down to the smallest normal (issue 11, defect 6);
* c_k in textbook order from the stored (old) momentum: its sign is
  Algorithm 1's above rounding level, and where Algorithm 1's c_k is 0
  there is no step, for every legal (b1, b2) (issue 11, defect 2);
* complex leaves are two real coordinates, bit for bit (capability 11);
* one chunked pass per leaf: chunk sizes agree, and the compiled step
  copies neither the codes nor a float32 momentum;
* 8-bit Lion follows float32 Lion; non-finite gradients; nnx.Optimizer.
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

U = 2.0 ** -24  # float32 unit roundoff
TINY = 2.0 ** -126  # smallest normal float32
F32_MAX = float(np.finfo(np.float32).max)


def _lion8(learning_rate=1e-3, **kwargs):
  kwargs.setdefault('weight_decay', 0.0)
  return lionx.lion(learning_rate=learning_rate, mu_dtype=jnp.int8, **kwargs)


def _reference_roundtrip_bound(x, block):
  """sqrt(s |x|) / 127 + s / 254^2 + 2^-126, s the block's max |x| (f64)."""
  flat = np.abs(np.ravel(x).astype(np.float64))
  pad = (-flat.size) % block
  blocks = np.pad(flat, (0, pad)).reshape(-1, block)
  s = blocks.max(axis=1, keepdims=True)
  bound = np.sqrt(s * blocks) / 127 + s / 254 ** 2 + TINY
  return bound.ravel()[:flat.size].reshape(np.shape(x))


def _dequantize64(codes, scales):
  """s q |q| / 127^2 in float64, from the stored codes and scales."""
  k = np.asarray(codes, np.float64)
  return np.asarray(scales, np.float64)[:, None] * k * np.abs(k) / 127 ** 2


def _check_bound(x, block):
  q = lionx.quantized.quantize(x, block)
  assert q.codes.dtype == jnp.int8 and q.codes.shape[1] == block
  assert int(jnp.max(jnp.abs(q.codes.astype(jnp.int32)))) <= 127
  back = np.asarray(lionx.quantized.dequantize(q, x.shape), np.float64)
  assert np.all(np.isfinite(back))
  bound = _reference_roundtrip_bound(x, block)
  x64 = np.asarray(x, np.float64)
  # The bound, plus float32 rounding of the arithmetic.
  assert np.all(np.abs(back - x64) <= bound * (1 + 1e-5) + 8 * U * np.abs(x64))
  return q, back


@pytest.mark.slow
@pytest.mark.parametrize('block', [256, 64, 7])
@pytest.mark.parametrize('shape', [(1000,), (3, 5, 17), (256,)])
def test_quantize_error_bound(block, shape):
  rng = np.random.default_rng(6)
  x = (rng.standard_t(2, shape) * 10.0 ** rng.uniform(-4, 2, shape)
       ).astype(np.float32)
  q, back = _check_bound(x, block)
  # Signs and zeros survive; the largest entry of a block is exact.
  assert np.all(np.sign(back) == np.sign(x) * (back != 0))
  blocks = np.pad(np.abs(np.ravel(x)), (0, (-x.size) % block))
  np.testing.assert_array_equal(q.scales, blocks.reshape(-1, block).max(1))


@pytest.mark.slow
@pytest.mark.parametrize('scale', [1e37, 3e38, F32_MAX, 2.0 ** 126, 1e34,
                                   1e-37, 2.0 ** -125, TINY])
def test_quantize_error_bound_at_extreme_scales(scale):
  """Defect 6: no overflow to NaN or 0 codes for large finite values."""
  rng = np.random.default_rng(7)
  x = rng.uniform(-1, 1, 600) * 10.0 ** rng.uniform(-6, 0, 600)
  x[::97] = 1.0  # each block reaches the scale
  x = np.clip(x * scale, -F32_MAX, F32_MAX).astype(np.float32)
  q, back = _check_bound(x, 64)
  normal = np.asarray(q.scales) >= 2.0 ** -120
  assert np.all(np.abs(np.asarray(q.codes, int)).max(axis=1)[normal] == 127)
  if scale >= 1.0:
    np.testing.assert_array_equal(np.sign(back)[np.abs(x) > 1e-4 * scale],
                                  np.sign(x)[np.abs(x) > 1e-4 * scale])


def test_quantize_subnormals_flush_within_the_bound():
  x = np.array([1e-40, -3e-39, 0.0, 1e-45, TINY, -TINY / 2], np.float32)
  _check_bound(x, 3)


def test_quantize_zeros_and_nonfinite():
  q = lionx.quantized.quantize(jnp.zeros(10), 4)
  np.testing.assert_array_equal(lionx.quantized.dequantize(q, (10,)), 0.0)
  x = jnp.array([1.0, jnp.nan, 2.0, 3.0, jnp.inf, 1.0, 0.5, 0.25])
  back = np.asarray(lionx.quantized.dequantize(lionx.quantized.quantize(x, 4), (8,)))
  assert np.all(np.isnan(back))  # both blocks hold a non-finite entry
  back = np.asarray(lionx.quantized.dequantize(lionx.quantized.quantize(x[5:], 4), (3,)))
  assert np.all(np.isfinite(back))


@pytest.mark.parametrize('bad,err', [(0, ValueError), (-3, ValueError),
                                     (2.5, TypeError), (True, TypeError)])
def test_bad_block_size(bad, err):
  with pytest.raises(err, match='block_size'):
    lionx.quantized.quantize(jnp.ones(4), bad)
  with pytest.raises(err, match='block_size'):
    lionx._src.quantized.scale_by_lion_8bit(block_size=bad)


def test_bad_8bit_input():
  tx = lionx._src.quantized.scale_by_lion_8bit()
  state = tx.init({'a': jnp.zeros(3)})
  with pytest.raises(ValueError, match='tree structure'):
    tx.update({'b': jnp.zeros(3)}, state)
  with pytest.raises(ValueError, match='shape'):
    tx.update({'a': jnp.zeros(300)}, state)
  with pytest.raises(ValueError, match='b1'):
    lionx._src.quantized.scale_by_lion_8bit(b1=1.5)
  with pytest.raises(TypeError, match='mu_dtype'):
    lionx.scale_by_lion(mu_dtype=jnp.int32)
  with pytest.raises(TypeError, match='x has dtype complex64'):
    lionx.quantized.quantize(jnp.ones(4, jnp.complex64))
  with pytest.raises(TypeError, match='int32'):
    tx.init({'a': jnp.zeros(3, jnp.int32)})


def _state_with(m, block):
  """A ScaleByLion8bitState holding quantize(m) (the stored momentum)."""
  tx = lionx._src.quantized.scale_by_lion_8bit(block_size=block)
  q = lionx.quantized.quantize(m, block)
  return tx.init(jnp.zeros_like(m))._replace(codes=q.codes, scales=q.scales)


_BETA = st.one_of(st.sampled_from([0.0, 1.0, 0.5, 0.9, 0.99]),
                  st.floats(0.0, 1.0))


@pytest.mark.slow
@hypothesis.settings(max_examples=30)
@hypothesis.given(_BETA, _BETA, st.booleans(), st.integers(0, 2 ** 16))
def test_c_is_algorithm1_on_the_stored_momentum(b1, b2, same, seed):
  """Defect 2, for every legal (b1, b2): b1 = b2, b1 > b2, 0 and 1."""
  if same:
    b2 = b1
  rng = np.random.default_rng(seed)
  n, block = 1000, 64
  m = (rng.standard_normal(n) * 10.0 ** rng.uniform(-3, 1, n))
  m[rng.random(n) < 0.2] = 0.0  # momentum exactly 0 (sparse gradients)
  g = rng.standard_normal(n) * 10.0 ** rng.uniform(-3, 1, n)
  g[rng.random(n) < 0.3] = 0.0  # exact zeros in the gradient
  g[:64] = 0.0
  m[:64] = 0.0  # one whole block of exact zeros
  m, g = m.astype(np.float32), g.astype(np.float32)
  state = _state_with(jnp.asarray(m), block)
  tx = lionx._src.quantized.scale_by_lion_8bit(b1, b2, block_size=block)
  c, new = jax.jit(tx.update)(jnp.asarray(g), state)
  c = np.asarray(c, np.float64)
  m_hat = _dequantize64(state.codes, state.scales).ravel()[:n]
  g64 = g.astype(np.float64)
  exact = b1 * m_hat + (1 - b1) * g64
  level = 8 * U * (np.abs(m_hat) + np.abs(g64)) + 8 * TINY
  assert np.all(c[exact == 0] == 0)
  clear = np.abs(exact) > level
  np.testing.assert_array_equal(np.sign(c[clear]), np.sign(exact[clear]))
  assert np.all(np.abs(c - exact) <= level)
  # The new momentum is line 6 on the stored one, requantized.
  m_new = b2 * m_hat + (1 - b2) * g64
  back = _dequantize64(new.codes, new.scales).ravel()[:n]
  bound = _reference_roundtrip_bound(m_new, block)
  assert np.all(np.abs(back - m_new) <= bound * (1 + 1e-5)
                + 16 * U * (np.abs(m_hat) + np.abs(g64)))


def test_b1_equal_1_makes_no_first_step():
  """Algorithm 1 with b1 = 1 gives c_1 = m_0 = 0: no step (defect 2)."""
  params = jnp.zeros(5000)
  opt = _lion8(b1=1.0, b2=0.99)
  g = jax.random.normal(jax.random.PRNGKey(0), (5000,))
  updates, state = jax.jit(opt.update)(g, opt.init(params), params)
  np.testing.assert_array_equal(updates, 0.0)
  # The second step follows the (8-bit) momentum of the first gradient.
  updates, _ = jax.jit(opt.update)(jnp.zeros(5000), state, params)
  m1 = np.asarray(lionx.quantized.dequantize(lionx.quantized.QuantizedArray(
      state[0].codes, state[0].scales), (5000,)))
  np.testing.assert_array_equal(np.sign(updates), -1e-3 * 0 - np.sign(m1))


@pytest.mark.slow
@pytest.mark.parametrize('g', [1e37, 3e38, F32_MAX, -1e37])
def test_large_finite_gradients_step_by_eta(g):
  """Defect 6: g = 1e37 gives -eta with 8-bit momentum, as with float32."""
  params = jnp.ones(300)
  for mu_dtype in (jnp.float32, jnp.int8):
    opt = lionx.lion(learning_rate=0.1, weight_decay=0.0, mu_dtype=mu_dtype)
    state = opt.init(params)
    for _ in range(3):
      updates, state = jax.jit(opt.update)(jnp.full(300, g), state, params)
      np.testing.assert_array_equal(updates, np.float32(-0.1 * np.sign(g)))


@pytest.mark.slow
def test_complex_leaf_is_its_real_view_bit_for_bit():
  """Capability 11: a complex64 leaf steps as stack([re, im], -1)."""
  rng = np.random.default_rng(9)
  z = (rng.standard_normal((7, 40)) + 1j * rng.standard_normal((7, 40))
       ).astype(np.complex64)
  real = np.stack([z.real, z.imag], -1)
  for tx in (lionx._src.quantized.scale_by_lion_8bit(0.9, 0.99), _lion8(0.05)):
    sz, sr = tx.init(jnp.asarray(z)), tx.init(jnp.asarray(real))
    pz, pr = jnp.asarray(z), jnp.asarray(real)
    for k in range(4):
      gz = jnp.asarray(z * (k - 1.5) + 0.3j)
      gr = jnp.stack([gz.real, gz.imag], -1)
      uz, sz = jax.jit(tx.update)(gz, sz, pz)
      ur, sr = jax.jit(tx.update)(gr, sr, pr)
      assert uz.dtype == jnp.complex64
      np.testing.assert_array_equal(jnp.stack([uz.real, uz.imag], -1), ur)
    jax.tree.map(np.testing.assert_array_equal, sz, sr)


@pytest.mark.slow
@pytest.mark.parametrize('size,block,chunk', [
    (1000, 8, 64),      # 15 chunks of 8 blocks, a 5-block tail
    (1003, 8, 64),      # and a padded last block
    (1024, 16, 256),    # no tail
    (96, 8, 1000),      # one pass
    (50, 8, 3),         # chunk smaller than a block: one block per pass
])
def test_chunks_equal_one_pass(size, block, chunk):
  """The scan over chunks gives the same c and codes as one pass."""
  rng = np.random.default_rng(size + chunk)
  m = jnp.asarray(rng.standard_normal(size) * rng.lognormal(size=size),
                  jnp.float32)
  g = jnp.asarray(rng.standard_normal(size), jnp.float32)
  q = lionx.quantized.quantize(m, block)
  step = jax.jit(lambda q, g, chunk: quantized.lion_8bit_leaf(
      q, g, 0.9, 0.99, chunk), static_argnums=2)
  c1, q1 = step(q, g, 1 << 20)
  c2, q2 = step(q, g, chunk)
  # Equal up to float32 rounding (XLA may contract multiply-adds
  # differently in the two programs).
  np.testing.assert_allclose(c1, c2, rtol=4 * U, atol=0)
  np.testing.assert_allclose(q1.scales, q2.scales, rtol=4 * U, atol=0)
  diff = np.abs(np.asarray(q1.codes, int) - np.asarray(q2.codes, int))
  assert diff.max() <= 1 and np.mean(diff > 0) <= 0.01
  # And the one pass is quantize(b2 m + (1 - b2) g).
  expected = lionx.quantized.quantize(0.99 * lionx.quantized.dequantize(q, (size,)) + 0.01 * g,
                            block)
  np.testing.assert_allclose(q1.scales, expected.scales, rtol=1e-6)
  diff = np.abs(np.asarray(q1.codes, int) - np.asarray(expected.codes, int))
  assert diff.max() <= 1 and np.mean(diff > 0) <= 0.01


def _compiled_step(opt, n):
  def step(params, state, grads):
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state
  params = jnp.ones(n)
  return jax.jit(step, donate_argnums=(0, 1)).lower(
      params, opt.init(params), params).compile().as_text()


@pytest.mark.slow
@pytest.mark.skipif(jax.default_backend() != 'cpu',
                    reason='the copy decisions of XLA:CPU')
def test_compiled_8bit_step_copies_no_codes_and_no_f32_momentum():
  """One pass: codes in place, c over the gradient, no momentum copy."""
  n = 4 * quantized.CHUNK + 1000
  text = _compiled_step(_lion8(), n)
  assert not re.search(r'= s8\[\d+,\d+\]\S* copy\(', text)
  entry = text[text.index('ENTRY'):]
  outputs = re.findall(r'= f32\[([\d,]+)\]\S* (?:fusion|copy)\(', entry)
  sizes = sorted(int(np.prod([int(d) for d in o.split(',')]))
                 for o in outputs)
  # Full size: the new params, and c over a copy of the gradient (an
  # input of this jitted step that it may not overwrite; a gradient made
  # inside a training step is overwritten in place).
  assert sizes[-2:] == [n, n] and sizes[-3:-2] < [n // 4], sizes
  # With the gradient made inside the step, no copy is left at all.
  opt = _lion8()

  def train_step(params, state, x):
    grads = jax.grad(lambda p: jnp.sum(jnp.sin(p * x)))(params)
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  params = jnp.ones(n)
  text = jax.jit(train_step, donate_argnums=(0, 1)).lower(
      params, opt.init(params), params).compile().as_text()
  assert not re.search(r'= (s8|f32)\[[\d,]+\]\S* copy\(', text)


@pytest.mark.slow
def test_8bit_lion_follows_fp32_lion():
  """Same gradients: the steps agree on almost every coordinate."""
  rng = np.random.default_rng(7)
  n, steps = 1 << 14, 100
  drift = 0.3 * rng.standard_normal(n)
  params = jnp.zeros(n)
  opts = {k: lionx.lion(learning_rate=1e-3, weight_decay=0.0, mu_dtype=k)
          for k in (jnp.float32, jnp.int8)}
  states = {k: o.init(params) for k, o in opts.items()}
  updates = {k: jax.jit(o.update) for k, o in opts.items()}
  agree = []
  for _ in range(steps):
    g = jnp.asarray(drift + rng.standard_normal(n), jnp.float32)
    out = {}
    for k in opts:
      out[k], states[k] = updates[k](g, states[k], params)
    agree.append(float(jnp.mean(out[jnp.float32] == out[jnp.int8])))
  assert np.mean(agree[10:]) >= 0.98, np.mean(agree[10:])
  m32 = states[jnp.float32][0].mu
  s8 = states[jnp.int8][0]
  m8 = lionx.quantized.dequantize(lionx.quantized.QuantizedArray(s8.codes, s8.scales), (n,))
  rel = float(jnp.linalg.norm(m8 - m32) / jnp.linalg.norm(m32))
  assert rel <= 0.05, rel


def test_traced_betas():
  """inject_hyperparams: traced b1, b2 give the same steps."""
  rng = np.random.default_rng(8)
  params = jnp.zeros(700)
  plain = _lion8(b1=0.9, b2=0.95)
  injected = optax.inject_hyperparams(lionx.lion, static_args=('mu_dtype',))(
      learning_rate=1e-3, b1=0.9, b2=0.95, weight_decay=0.0,
      mu_dtype=jnp.int8)
  sp, si = plain.init(params), injected.init(params)
  for _ in range(3):
    g = jnp.asarray(rng.standard_normal(700), jnp.float32)
    up, sp = jax.jit(plain.update)(g, sp, params)
    ui, si = jax.jit(injected.update)(g, si, params)
    np.testing.assert_array_equal(up, ui)


@pytest.mark.parametrize('make', [
    lambda: _lion8(0.05, weight_decay=1e-3),
    lambda: lionx.lion_k(learning_rate=0.05, reshaper=lionx.huber_reshaper(
        0.1), mu_dtype=jnp.int8),
    lambda: lionx.cautious_lion(learning_rate=0.05, mu_dtype=jnp.int8),
])
def test_8bit_converges_on_a_parabola(make):
  target = jnp.array([1.0, -2.0, 0.5])
  opt = make()
  params = jnp.zeros(3)
  state = opt.init(params)

  @jax.jit
  def step(params, state):
    grads = jax.grad(lambda p: jnp.sum((p - target) ** 2))(params)
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  for _ in range(300):
    params, state = step(params, state)
  np.testing.assert_allclose(params, target, atol=0.1)


def test_8bit_nonfinite_gradient_makes_nan():
  tx = lionx._src.quantized.scale_by_lion_8bit(block_size=2)
  state = tx.init(jnp.zeros(4))
  c, state = jax.jit(tx.update)(jnp.array([0.5, jnp.inf, -0.5, 1.0]), state)
  c = np.asarray(c)
  # c is NaN where Algorithm 1's is not finite ...
  assert np.isnan(c[1]) and np.all(np.isfinite(c[[0, 2, 3]])), c
  # ... and from then on the whole block [0, 1] of momentum is NaN.
  c = np.asarray(jax.jit(tx.update)(jnp.ones(4), state)[0])
  assert np.all(np.isnan(c[:2])) and np.all(np.isfinite(c[2:])), c
  opt = _lion8(0.1)
  params = jnp.array([1.0, 2.0, 3.0])
  updates, _ = jax.jit(opt.update)(
      jnp.array([0.5, jnp.inf, -0.5]), opt.init(params), params)
  assert np.isnan(updates[1])
  skip = optax.apply_if_finite(_lion8(0.1), 3)
  state = skip.init(params)
  updates, state = skip.update(jnp.array([0.5, jnp.nan, 1.0]), state, params)
  np.testing.assert_array_equal(updates, 0.0)


@pytest.mark.slow
def test_8bit_in_flax_nnx_optimizer():
  """nnx.Optimizer rebuilds the state tree each update; it must survive."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  x = jax.random.normal(jax.random.PRNGKey(0), (16, 300))
  losses = {}
  for mu_dtype in (jnp.float32, jnp.int8):
    model = nnx.Linear(300, 2, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(
        model, lionx.lion(learning_rate=1e-3, mu_dtype=mu_dtype),
        wrt=nnx.Param)
    for _ in range(5):
      loss, grads = nnx.value_and_grad(lambda m: jnp.mean(m(x) ** 2))(model)
      optimizer.update(model, grads)
    losses[mu_dtype] = float(loss)
  np.testing.assert_allclose(losses[jnp.int8], losses[jnp.float32],
                             rtol=1e-2)
  codes = nnx.as_pure(optimizer.opt_state)[0].codes
  assert codes['kernel'].dtype == jnp.int8


# --- issue 27: documented state after non-finite input ---


def _scales_reference(m, block):
  """quantize's docstring: s = max |m| over each block; a block whose
  maximum is not finite gets a NaN scale (float64, from the blocks)."""
  flat = np.ravel(np.asarray(m, np.float64))
  flat = np.pad(flat, (0, (-flat.size) % block)).reshape(-1, block)
  s = np.max(np.abs(flat), axis=1)
  return np.where(np.isfinite(s), s, np.nan)


@pytest.mark.parametrize('bad', [np.nan, np.inf, -np.inf])
def test_quantize_stores_a_nan_scale_for_a_nonfinite_block(bad):
  x = np.array([1.0, bad, 2.0, -3.0, 0.0, 0.0, 0.5], np.float32)
  q = lionx.quantized.quantize(jnp.asarray(x), 2)
  scales = np.asarray(q.scales)
  assert scales.dtype == np.float32 and scales.shape == (4,)
  assert np.isnan(scales[0])  # NaN, not inf, even for an inf entry
  np.testing.assert_array_equal(scales[1:], [3.0, 0.0, 0.5])
  np.testing.assert_array_equal(scales, _scales_reference(x, 2))
  assert q.codes.dtype == jnp.int8 and q.codes.shape == (4, 2)


@pytest.mark.parametrize('bad', [np.nan, np.inf, -np.inf])
def test_8bit_state_scales_after_a_nonfinite_gradient(bad):
  """scale_by_lion_8bit's docstring: a non-finite gradient entry makes its
  whole block of momentum NaN from then on -- the block's stored scale is
  NaN -- and leaves every other block's scale max |m_k| of that block."""
  b1, b2, block = 0.9, 0.99, 4
  tx = lionx._src.quantized.scale_by_lion_8bit(b1=b1, b2=b2, block_size=block)
  rng = np.random.default_rng(0)
  g1 = rng.standard_normal(10).astype(np.float32)
  g1[5] = bad  # in block 1 (entries 4..7)
  state = tx.init(jnp.zeros(10))
  step = jax.jit(tx.update)
  _, state = step(jnp.asarray(g1), state)
  scales = np.asarray(state.scales)
  assert scales.dtype == np.float32 and scales.shape == (3,)
  m1 = (1 - b2) * g1.astype(np.float64)  # m_0 = 0
  expected = _scales_reference(m1, block)
  assert np.isnan(scales[1]) and np.all(np.isfinite(scales[[0, 2]]))
  np.testing.assert_allclose(scales[[0, 2]], expected[[0, 2]], rtol=1e-6)
  # The next, finite, gradient: block 1's scale stays NaN; the others are
  # max |b2 m_hat + (1 - b2) g| with m_hat the stored momentum.
  codes = np.asarray(state.codes, np.float64)
  m_hat = (scales[:, None].astype(np.float64) * codes * np.abs(codes)
           / 127 ** 2).reshape(-1)[:10]
  g2 = rng.standard_normal(10).astype(np.float32)
  _, state = step(jnp.asarray(g2), state)
  scales = np.asarray(state.scales)
  assert np.isnan(scales[1]) and np.all(np.isfinite(scales[[0, 2]]))
  expected = _scales_reference(b2 * m_hat + (1 - b2) * g2, block)
  np.testing.assert_allclose(scales[[0, 2]], expected[[0, 2]], rtol=1e-6)


def test_8bit_state_of_lion_after_a_nonfinite_gradient():
  """The same stored state inside lionx.lion(..., mu_dtype=jnp.int8)."""
  opt = _lion8(0.1)
  params = {'w': jnp.ones(300), 'b': jnp.ones(3)}
  grads = {'w': jnp.ones(300).at[260].set(jnp.inf), 'b': jnp.ones(3)}
  _, state = jax.jit(opt.update)(grads, opt.init(params), params)
  found = [s for s in jax.tree.leaves(
      state, is_leaf=lambda s: isinstance(s, quantized.ScaleByLion8bitState))
           if isinstance(s, quantized.ScaleByLion8bitState)]
  assert len(found) == 1
  w = np.asarray(found[0].scales['w'])
  assert w.shape == (2,)  # 300 entries in blocks of 256
  assert np.isnan(w[1])
  np.testing.assert_allclose(w[0], 0.01, rtol=1e-6)  # (1 - b2) * 1
  np.testing.assert_allclose(found[0].scales['b'], [0.01], rtol=1e-6)
