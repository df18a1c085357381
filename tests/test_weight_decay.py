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
