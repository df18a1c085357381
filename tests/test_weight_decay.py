"""``add_decoupled_weight_decay``'s state and errors.

The decay itself (conventions, implicit scheme, cautious mask, exact zeros)
is checked against the papers' formulas in ``test_conformance.py``,
``test_cautious_weight_decay.py`` and ``test_exact_zeros.py``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lionx


def test_count_is_an_int32_scalar_that_indexes_the_schedule():
  tx = lionx.add_decoupled_weight_decay(lambda count: 0.5 * count)
  params = jnp.array([2.0, -4.0])
  state = tx.init(params)
  assert state.count.dtype == jnp.int32 and state.count.shape == ()
  update = jax.jit(tx.update)
  for k in range(3):
    u, state = update(jnp.zeros(2), state, params)
    # lambda_k = 0.5 k at the k-th update (counted from 0).
    np.testing.assert_allclose(u, 0.5 * k * np.array([2.0, -4.0]))
    assert int(state.count) == k + 1 and state.count.dtype == jnp.int32


def test_errors_name_the_argument():
  with pytest.raises(ValueError, match=r'^learning_rate=-1'):
    lionx.add_decoupled_weight_decay(0.1, learning_rate=-1.0)
  with pytest.raises(ValueError, match=r'^weight_decay=-0.5'):
    lionx.add_decoupled_weight_decay(-0.5)
  tx = lionx.add_decoupled_weight_decay(0.1)
  params = {'w': jnp.ones(2)}
  state = tx.init(params)
  with pytest.raises(ValueError, match=r'^updates has tree structure .*, '
                     r'but params has'):
    tx.update({'v': jnp.ones(2)}, state, params)
  with pytest.raises(ValueError, match=r'^updates has a leaf of shape '
                     r'\(3,\) where params has shape \(2,\)'):
    tx.update({'w': jnp.ones(3)}, state, params)
  with pytest.raises(ValueError, match=r'^params=None'):
    tx.update({'w': jnp.ones(2)}, state)
  with pytest.raises(TypeError, match='params'):
    tx.init({'w': jnp.ones(2, jnp.int32)})


# --- issue 23: the learning rate as an array (item 1), count (item 6) ---


@pytest.mark.parametrize('convention', ['independent', 'corrected'])
def test_inject_hyperparams_needs_the_peak(convention):
  """The issue's example: the injected learning rate is the array eta_t;
  taken as eta_peak it turned the parameters into NaN where the schedule
  reached 0. Now the peak is required, by name, with the fix shown."""
  import optax  # pylint: disable=g-import-not-at-top
  schedule = optax.cosine_decay_schedule(1e-2, 10)
  opt = optax.inject_hyperparams(lionx.lion)(
      learning_rate=schedule, weight_decay=0.1,
      weight_decay_convention=convention)
  with pytest.raises(ValueError, match=(
      r"^peak_learning_rate=None: weight_decay_convention='"
      + convention + r"' needs peak_learning_rate= when the learning rate "
      r'is an array.*Fix: pass the peak.*peak_learning_rate=1e-3')):
    opt.init(jnp.ones(3))
  # With the peak: the paper's decay of each convention, by hand.
  opt = optax.inject_hyperparams(lionx.lion)(
      learning_rate=schedule, weight_decay=0.1,
      weight_decay_convention=convention, peak_learning_rate=1e-2)
  params = jnp.ones(3)
  state = opt.init(params)
  step = jax.jit(opt.update)
  theta = np.ones(3)
  for t in range(12):  # past the schedule's end, where eta_t = 0
    updates, state = step(jnp.ones(3), state, params)
    params = optax.apply_updates(params, updates)
    eta = float(schedule(t))
    lam = 0.1 / 1e-2 if convention == 'independent' else 0.1 * eta / 1e-2
    theta = theta - eta * (1.0 + lam * theta)  # c > 0: sign(c) = 1
  assert np.all(np.isfinite(np.asarray(params)))
  np.testing.assert_allclose(params, theta, rtol=1e-5)


def test_an_array_learning_rate_needs_the_peak_everywhere():
  for build in (
      lambda: lionx.add_decoupled_weight_decay(
          0.1, learning_rate=jnp.asarray(1e-3),
          weight_decay_convention='independent'),
      lambda: lionx.effective_weight_decay(
          0.1, weight_decay_convention='corrected',
          learning_rate=np.asarray(1e-3)),
      lambda: jax.jit(lambda lr: lionx.effective_weight_decay(
          0.1, weight_decay_convention='independent', learning_rate=lr))(
              1e-3)):
    with pytest.raises(ValueError, match='^peak_learning_rate=None'):
      build()
  # A Python or NumPy number is the peak itself, as before.
  assert float(lionx.effective_weight_decay(
      0.1, weight_decay_convention='independent',
      learning_rate=np.float32(0.5))) == pytest.approx(0.2)
  assert float(lionx.effective_weight_decay(
      0.1, weight_decay_convention='independent',
      learning_rate=jnp.asarray(0.5), peak_learning_rate=0.25)) == (
          pytest.approx(0.4))


@pytest.mark.parametrize('count,error', [
    (1.5, TypeError), (2.0, TypeError), (np.float32(1.0), TypeError),
    (jnp.asarray(1.0), TypeError), (True, TypeError), (-1, ValueError),
    (jnp.asarray([1, 2]), TypeError), (2 ** 31, ValueError)])
def test_effective_weight_decay_count_is_an_integer(count, error):
  with pytest.raises(error, match=r'^count=.*(integer|step count)'):
    lionx.effective_weight_decay(0.1, count=count)


def test_effective_weight_decay_takes_integer_counts():
  schedule = lambda count: 0.1 * (count + 1)
  for count in (3, np.int64(3), jnp.asarray(3, jnp.int32), np.asarray(3)):
    assert float(lionx.effective_weight_decay(schedule, count)) == (
        pytest.approx(0.4))
  traced = jax.jit(lambda c: lionx.effective_weight_decay(schedule, c))
  assert float(traced(jnp.asarray(3))) == pytest.approx(0.4)
