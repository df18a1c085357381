"""``scale_by_lion``'s state and inputs: what its docstring promises.

The values of c_k and m_k are checked against Algorithm 1 elsewhere
(``test_conformance.py``, ``test_exact_zeros.py``, ``test_perf.py``); here
the state (count, momentum dtype and shape), the inputs it accepts and the
errors it raises.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lionx
from tests import reference


def test_count_is_an_int32_scalar_that_counts_updates():
  tx = lionx.scale_by_lion()
  state = tx.init({'w': jnp.ones(3)})
  assert state.count.dtype == jnp.int32 and state.count.shape == ()
  assert int(state.count) == 0
  update = jax.jit(tx.update)
  for k in range(1, 4):
    _, state = update({'w': jnp.ones(3)}, state)
    assert int(state.count) == k and state.count.dtype == jnp.int32
  # As optax's: it saturates instead of wrapping around.
  full = state._replace(count=jnp.asarray(np.iinfo(np.int32).max, jnp.int32))
  _, state = update({'w': jnp.ones(3)}, full)
  assert int(state.count) == np.iinfo(np.int32).max


@pytest.mark.parametrize('param_dtype,mu_dtype,stored', [
    (jnp.float32, None, jnp.float32),
    (jnp.bfloat16, None, jnp.bfloat16),
    (jnp.float16, None, jnp.float16),
    (jnp.float32, jnp.bfloat16, jnp.bfloat16),
    (jnp.bfloat16, jnp.float32, jnp.float32),
    (jnp.complex64, None, jnp.float32),
    (jnp.complex64, jnp.bfloat16, jnp.bfloat16),
])
def test_momentum_dtype_and_shape(param_dtype, mu_dtype, stored):
  params = {'a': jnp.zeros((2, 3), param_dtype), 'b': jnp.zeros((), param_dtype)}
  tx = lionx.scale_by_lion(mu_dtype=mu_dtype)
  state = tx.init(params)
  real = jnp.issubdtype(param_dtype, jnp.complexfloating)
  for name, p in params.items():
    mu = state.mu[name]
    assert mu.dtype == stored
    assert mu.shape == (p.shape + (2,) if real else p.shape)
    np.testing.assert_array_equal(np.asarray(mu, np.float32), 0.0)
  grads = jax.tree.map(lambda p: jnp.ones_like(p) * (1 - 2j if real else 1),
                       params)
  c, state = tx.update(grads, state)
  for name, p in params.items():
    assert c[name].dtype == p.dtype and c[name].shape == p.shape
    assert state.mu[name].dtype == stored


def test_python_numbers_are_gradients_too():
  tx = lionx.scale_by_lion(0.9, 0.99)
  state = tx.init({'w': jnp.zeros(()), 'v': jnp.zeros(())})
  c, state = tx.update({'w': 2.0, 'v': -1.0}, state)
  _, m = reference.lion_step(0.0, 0.0, np.array([2.0, -1.0]), 0.0, 0.9,
                             0.99, 0.0)
  np.testing.assert_allclose([c['w'], c['v']], [0.2, -0.1], rtol=1e-6)
  np.testing.assert_allclose([state.mu['w'], state.mu['v']], m, rtol=1e-6)


def test_updates_of_another_structure_are_refused():
  tx = lionx.scale_by_lion()
  state = tx.init({'w': jnp.zeros(3)})
  with pytest.raises(ValueError, match=r'updates.*the momentum'):
    tx.update({'v': jnp.zeros(3)}, state)
  with pytest.raises(ValueError, match=r'updates.*the momentum'):
    tx.update([jnp.zeros(3)], state)


def test_integer_leaves_are_refused_by_name():
  tx = lionx.scale_by_lion()
  with pytest.raises(TypeError, match='params'):
    tx.init({'w': jnp.zeros(3, jnp.int32)})
  state = tx.init({'w': jnp.zeros(3)})
  with pytest.raises(TypeError, match='updates'):
    tx.update({'w': jnp.zeros(3, jnp.int32)}, state)


@pytest.mark.parametrize('b1,b2', [(0.9, 0.99), (0.95, 0.98), (0.9, 0.5),
                                   (0.61, 0.3), (0.3, 0.0), (1.0, 1.0)])
def test_chained_with_sign_is_optax_lion(b1, b2):
  """With the sign reshaper and the learning rate, optax.lion's updates
  wherever c_k is above rounding level (random data: everywhere)."""
  rng = np.random.default_rng(0)
  params = jnp.asarray(rng.standard_normal((4, 5)), jnp.float32)
  ours = optax.chain(lionx.scale_by_lion(b1, b2), lionx.sign_reshaper(),
                     optax.scale_by_learning_rate(0.1))
  theirs = optax.lion(0.1, b1, b2, weight_decay=0.0)
  s1, s2 = ours.init(params), theirs.init(params)
  for _ in range(5):
    g = jnp.asarray(rng.standard_normal((4, 5)), jnp.float32)
    u1, s1 = ours.update(g, s1, params)
    u2, s2 = theirs.update(g, s2, params)
    np.testing.assert_array_equal(u1, u2)
  np.testing.assert_array_equal(s1[0].mu, s2[0].mu)


@pytest.mark.parametrize('mu_dtype', [None, jnp.bfloat16])
@pytest.mark.parametrize('b1,b2,ratio', [
    (0.75, 0.99, 3.0), (0.5, 0.9, 1.0), (0.875, 0.999, 7.0),
    (0.5, 0.7, 1.0), (0.75, 0.8, 3.0)])
def test_no_step_where_algorithm1_c_is_exactly_zero(b1, b2, ratio, mu_dtype):
  """g = -b1 / (1 - b1) m exactly: Algorithm 1's c_k is 0, while the stored
  m_k (which c is taken from) is rounded. No coordinate may move."""
  rng = np.random.default_rng(int(ratio * 10 + b2 * 1000))
  # Short mantissas, so that ratio * m is exact in float32 (and m in bf16).
  m = (rng.integers(1, 2 ** 7, 4096) * 2.0 ** rng.integers(-60, 60, 4096)
       * rng.choice([-1.0, 1.0], 4096)).astype(np.float32)
  g = (-ratio * m).astype(np.float32)
  assert np.all(b1 * m.astype(np.float64) + (1 - b1) * g == 0.0)
  tx = optax.chain(lionx.scale_by_lion(b1, b2, mu_dtype=mu_dtype),
                   lionx.sign_reshaper())
  state = tx.init(jnp.zeros(4096))
  state = (state[0]._replace(mu=jnp.asarray(m, state[0].mu.dtype)),
           state[1])
  step, state = jax.jit(tx.update)(jnp.asarray(g), state)
  np.testing.assert_array_equal(step, 0.0)
  # The momentum is rounded on many coordinates (the case being tested).
  exact = b2 * m.astype(np.float64) + (1 - b2) * g.astype(np.float64)
  stored = np.asarray(jnp.asarray(state[0].mu, jnp.float32), np.float64)
  assert np.mean(stored != exact) > 0.5


@pytest.mark.parametrize('mu_dtype', [None, jnp.bfloat16])
@pytest.mark.parametrize('grad_dtype', [jnp.float32, jnp.bfloat16])
def test_float32_arithmetic_also_under_x64(mu_dtype, grad_dtype):
  """With jax_enable_x64, float32 and bfloat16 gradients still compute in
  float32: the same bits as without it."""
  rng = np.random.default_rng(5)
  gs = [rng.standard_normal(64) * 10.0 ** rng.uniform(-5, 5, 64)
        for _ in range(4)]

  def run():
    tx = lionx.scale_by_lion(0.9, 0.99, mu_dtype=mu_dtype)
    state = tx.init(jnp.zeros(64, grad_dtype))
    out = []
    for g in gs:
      c, state = tx.update(jnp.asarray(g, grad_dtype), state)
      out += [np.asarray(c.astype(jnp.float32)),
              np.asarray(state.mu.astype(jnp.float32))]
      assert c.dtype == grad_dtype
    return out

  plain = run()
  with jax.enable_x64(True):
    wide = run()
  for a, b in zip(plain, wide, strict=True):
    np.testing.assert_array_equal(a, b)


@pytest.mark.compiled_as_users
@pytest.mark.parametrize('b,ratio', [(0.9, 9.0), (0.99, 99.0), (0.8, 4.0)])
def test_no_step_where_c_is_far_below_rounding_level(b, ratio):
  """b1 = b2 = b and g = -b / (1 - b) m: Algorithm 1's c_k (= m_k) is about
  1e-16 |m|, far below float32's resolution of |m|, while the float32 m_k
  is rounding noise of about 1e-8 |m|. Its sign is noise: no step."""
  rng = np.random.default_rng(int(ratio))
  m = (rng.integers(1, 2 ** 7, 4096) * 2.0 ** rng.integers(-60, 60, 4096)
       * rng.choice([-1.0, 1.0], 4096)).astype(np.float32)
  g = (-ratio * m).astype(np.float32)
  exact = b * m.astype(np.float64) + (1 - b) * g.astype(np.float64)
  assert np.all(np.abs(exact) <= 1e-14 * np.abs(m))
  tx = optax.chain(lionx.scale_by_lion(b, b), lionx.sign_reshaper())
  state = tx.init(jnp.zeros(4096))
  state = (state[0]._replace(mu=jnp.asarray(m)), state[1])
  step, state = jax.jit(tx.update)(jnp.asarray(g), state)
  np.testing.assert_array_equal(step, 0.0)
  assert np.mean(np.asarray(state[0].mu) != 0) > 0.5  # noise is there
