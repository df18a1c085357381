"""Cautious weight decay (Chen et al. 2025) against its formula."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lionx
from tests import reference


def test_hand_made_cases():
  # u and theta: agree, disagree, u = 0, theta = 0, both negative.
  u = jnp.array([1.0, 1.0, 0.0, -1.0, -1.0])
  theta = jnp.array([2.0, -2.0, 3.0, 0.0, -4.0])
  tx = lionx.add_decoupled_weight_decay(0.5, cautious_weight_decay=True)
  out, _ = tx.update(u, tx.init(theta), theta)
  # u + 0.5 * 1[u * theta >= 0] * theta, by hand:
  np.testing.assert_array_equal(out, [2.0, 1.0, 1.5, -1.0, -3.0])


def test_lion_with_cautious_weight_decay_is_the_formula():
  rng = np.random.default_rng(0)
  lr, wd, b1, b2 = 0.05, 0.3, 0.9, 0.99
  theta = rng.standard_normal(20).astype(np.float32)
  opt = lionx.lion(lr, b1, b2, weight_decay=wd, cautious_weight_decay=True)
  params, state = jnp.asarray(theta), None
  state = opt.init(params)
  m = np.zeros(20, np.float32)
  ref = theta.copy()
  for _ in range(30):
    g = rng.standard_normal(20).astype(np.float32)
    g[::5] = 0.0  # exact zeros: u = 0 there at the first step
    updates, state = jax.jit(opt.update)(jnp.asarray(g), state, params)
    params = optax.apply_updates(params, updates)
    u = np.sign(np.float32(b1) * m + np.float32(1 - b1) * g)
    ref = reference.cautious_weight_decay_step(ref, u, np.float32(lr),
                                               np.float32(wd))
    m = np.float32(b2) * m + np.float32(1 - b2) * g
  np.testing.assert_allclose(params, ref, rtol=1e-5, atol=1e-6)


def test_cautious_decay_leaves_theta_where_the_step_disagrees():
  """Unlike the plain decay, it does not pull a coordinate that the step
  is already moving away from zero: no box."""
  theta = jnp.array([10.0])
  plain = lionx.lion(0.1, weight_decay=1.0)
  cautious = lionx.lion(0.1, weight_decay=1.0, cautious_weight_decay=True)
  g = jnp.array([-1.0])  # the step moves theta up (away from 0)
  for opt, want in ((plain, 10.0 + 0.1 - 0.1 * 10.0), (cautious, 10.1)):
    updates, _ = opt.update(g, opt.init(theta), theta)
    np.testing.assert_allclose(optax.apply_updates(theta, updates), [want],
                               rtol=1e-6)


@pytest.mark.parametrize('factory', [
    lambda: lionx.lion_k(0.1, lionx.lp_reshaper(2.0),
                         cautious_weight_decay=True),
    lambda: lionx.cautious_lion(0.1, cautious_weight_decay=True),
])
def test_every_alias_takes_it(factory):
  opt = factory()
  params = jnp.array([1.0, -1.0, 2.0])
  updates, _ = opt.update(jnp.array([0.5, 0.5, -0.5]), opt.init(params),
                          params)
  assert jnp.all(jnp.isfinite(updates))


def test_bad_arguments():
  with pytest.raises(TypeError, match='cautious_weight_decay=1: expected a '
                     'bool'):
    lionx.add_decoupled_weight_decay(0.1, cautious_weight_decay=1)
  with pytest.raises(ValueError, match='implicit=True with '
                     'cautious_weight_decay=True'):
    lionx.add_decoupled_weight_decay(0.1, implicit=True, learning_rate=0.1,
                                     cautious_weight_decay=True)
  with pytest.raises(ValueError, match='implicit=True with'):
    lionx.lion_k(0.1, implicit=True, cautious_weight_decay=True)
