"""Invariants from the theory, over arbitrary gradient sequences (hypothesis)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given
from hypothesis import strategies as st

import lionx

D = 8
STEPS = 30


def _run_all(opt, theta0, grads):
  """All iterates theta_0 .. theta_K of ``opt`` (jitted scan)."""
  def step(carry, g):
    params, state = carry
    updates, state = opt.update(g, state, params)
    params = optax.apply_updates(params, updates)
    return (params, state), params

  _, thetas = jax.lax.scan(step, (theta0, opt.init(theta0)), grads)
  return np.concatenate([np.asarray(theta0)[None], np.asarray(thetas)])


# Gradients of every size and sign, including heavy outliers and exact zeros.
gradients = st.integers(0, 2 ** 31 - 1).map(
    lambda seed: np.random.default_rng(seed).standard_normal((STEPS, D))
    * np.random.default_rng(seed + 1).choice([0.0, 1e-6, 1.0, 1e4], (STEPS, D)))
params = st.tuples(st.floats(0.01, 10.0), st.floats(0.001, 1.0),
                   st.floats(0.0, 1.0), st.floats(0.0, 1.0))


@pytest.mark.slow
@given(gradients, params, st.integers(0, 2 ** 31 - 1))
def test_theorem2i_box_is_invariant(grads, hp, seed):
  """||theta_0||_inf <= 1/lam and eta lam <= 1 => ||theta_k||_inf <= 1/lam."""
  lam, eta_lam, b1, b2 = hp
  eta = eta_lam / lam
  theta0 = np.random.default_rng(seed).uniform(-1, 1, D) / lam
  thetas = _run_all(lionx.lion(eta, b1, b2, weight_decay=lam), jnp.asarray(theta0, jnp.float32),
                    jnp.asarray(grads, jnp.float32))
  assert np.max(np.abs(thetas)) * lam <= 1 + 1e-5


@pytest.mark.slow
@given(gradients, st.sampled_from([1.5, 2.0, 3.0]), st.floats(0.05, 1.0),
       st.integers(0, 2 ** 31 - 1))
def test_lp_ball_is_invariant(grads, p, eta_lam, seed):
  """Lion-lp keeps ||lam theta||_q <= 1, 1/p + 1/q = 1."""
  lam = 0.5
  q = p / (p - 1)
  theta0 = np.random.default_rng(seed).standard_normal(D)
  theta0 /= lam * np.sum(np.abs(theta0) ** q) ** (1 / q)
  thetas = _run_all(lionx.lion_k(eta_lam / lam, lionx.lp_reshaper(p),
                                 weight_decay=lam),
                    jnp.asarray(theta0, jnp.float32),
                    jnp.asarray(grads, jnp.float32))
  norms = np.sum(np.abs(lam * thetas) ** q, axis=1) ** (1 / q)
  assert np.all(norms <= 1 + 1e-5)


@pytest.mark.slow
@given(gradients, st.floats(0.01, 0.5), st.floats(1.5, 50.0),
       st.integers(0, 2 ** 31 - 1))
def test_infeasible_excess_shrinks_by_one_minus_eta_lam(grads, eta_lam, blow,
                                                         seed):
  """||theta_{k+1}||_inf - 1/lam <= (1 - eta lam)(||theta_k||_inf - 1/lam)."""
  lam = 0.2
  theta0 = np.random.default_rng(seed).uniform(-1, 1, D) * blow / lam
  theta0[0] = blow / lam
  thetas = _run_all(lionx.lion(eta_lam / lam, weight_decay=lam),
                    jnp.asarray(theta0, jnp.float32),
                    jnp.asarray(grads, jnp.float32))
  excess = np.max(np.abs(thetas), axis=1) - 1 / lam
  for k in range(STEPS):
    if excess[k] > 0:
      bound = (1 - eta_lam) * excess[k]
      assert excess[k + 1] <= bound + 1e-5 * blow / lam


@pytest.mark.slow
@given(gradients, st.floats(0.01, 0.5), st.integers(0, 2 ** 31 - 1))
def test_implicit_excess_shrinks_by_one_plus_eta_lam(grads, eta_lam, seed):
  """Implicit scheme: dist to the box shrinks by 1/(1 + eta lam) (Thm 4.1)."""
  lam = 0.2
  theta0 = np.random.default_rng(seed).uniform(-30, 30, D) / lam
  thetas = _run_all(lionx.lion_k(eta_lam / lam, weight_decay=lam,
                                 implicit=True),
                    jnp.asarray(theta0, jnp.float32),
                    jnp.asarray(grads, jnp.float32))
  excess = np.max(np.abs(thetas), axis=1) - 1 / lam
  for k in range(STEPS):
    if excess[k] > 0:
      assert excess[k + 1] <= excess[k] / (1 + eta_lam) + 1e-3


@pytest.mark.slow
@given(gradients, st.integers(0, 2 ** 31 - 1))
def test_step_size_is_exactly_eta_without_decay(grads, seed):
  """Without weight decay every coordinate moves by 0 or +-eta."""
  theta0 = np.random.default_rng(seed).standard_normal(D)
  thetas = _run_all(lionx.lion(0.125, weight_decay=0.0),
                    jnp.asarray(theta0, jnp.float32),
                    jnp.asarray(grads, jnp.float32))
  steps = np.abs(np.diff(thetas, axis=0))
  near = np.isclose(steps, 0.125, atol=1e-5) | (steps == 0)
  assert np.all(near)
