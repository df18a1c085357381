"""A non-finite gradient never moves a parameter by a silent finite step."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests.test_alias import OPTIMIZERS


@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(OPTIMIZERS))
@pytest.mark.parametrize('bad', [np.nan, np.inf, -np.inf])
def test_default_makes_the_coordinate_nan(name, bad):
  opt = OPTIMIZERS[name](0.1)
  params = jnp.array([1.0, 2.0, 3.0])
  state = opt.init(params)
  step = jax.jit(opt.update)
  grads = jnp.array([0.5, bad, -0.5])
  updates, state = step(grads, state, params)
  assert np.isnan(updates[1]), updates
  # The poisoned momentum keeps the coordinate NaN; it never turns into +-eta.
  updates, state = step(jnp.array([0.5, 1.0, -0.5]), state, params)
  assert np.isnan(updates[1]), updates


@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(OPTIMIZERS))
@pytest.mark.parametrize('bad', [np.nan, np.inf])
def test_apply_if_finite_skips_params_and_momentum(name, bad):
  opt = optax.apply_if_finite(OPTIMIZERS[name](0.1), max_consecutive_errors=5)
  params = jnp.array([1.0, 2.0, 3.0])
  state = opt.init(params)
  step = jax.jit(opt.update)
  updates, state = step(jnp.array([0.5, 0.1, -0.5]), state, params)
  params = optax.apply_updates(params, updates)
  before = jax.tree.map(np.asarray, state.inner_state)
  updates, state = step(jnp.array([0.5, bad, -0.5]), state, params)
  np.testing.assert_array_equal(updates, 0.0)
  for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(state.inner_state)):
    np.testing.assert_array_equal(a, b)
  assert int(state.notfinite_count) == 1
