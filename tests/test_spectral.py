"""The spectral reshaper against NumPy's SVD, and its constraint from theory.

Muon is Lion-K with K = the nuclear norm (arXiv 2506.15054): the step is
the polar factor U V^T of c, and sigma_max(lambda theta) <= 1 is invariant.
"""

import chex
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import lionx
from lionx._src import spectral


def _matrix(rng, n, m, kappa):
  """A random n x m matrix with singular values from 1 down to 1/kappa."""
  r = min(n, m)
  u, _ = np.linalg.qr(rng.standard_normal((n, r)))
  v, _ = np.linalg.qr(rng.standard_normal((m, r)))
  return (u * np.geomspace(1.0, 1.0 / kappa, r)) @ v.T


def _polar(c):
  """U V^T from NumPy's SVD (the reference)."""
  u, _, vt = np.linalg.svd(np.asarray(c, np.float64), full_matrices=False)
  return u @ vt


@pytest.mark.parametrize('shape', [(32, 64), (64, 32), (96, 96)])
@pytest.mark.parametrize('kappa', [2.0, 10.0, 100.0])
def test_newton_schulz_agrees_with_the_svd(shape, kappa):
  c = _matrix(np.random.default_rng(0), *shape, kappa) * 7.0
  got = spectral.orthogonalize(jnp.asarray(c, jnp.float32))
  assert np.linalg.norm(np.asarray(got) - _polar(c), 2) < 1e-4
  # The cubic iteration never overshoots: no singular value above 1.
  assert np.linalg.svd(np.asarray(got, np.float64),
                       compute_uv=False).max() <= 1 + 1e-5


def test_the_quintic_is_fast_and_inaccurate_as_documented():
  c = _matrix(np.random.default_rng(1), 64, 128, 10.0)
  got = np.asarray(spectral.orthogonalize(jnp.asarray(c, jnp.float32),
                                          'quintic'), np.float64)
  s = np.linalg.svd(got, compute_uv=False)
  # The docstring: singular values in about [0.7, 1.2].
  assert 0.6 < s.min() < 0.8 and 1.0 < s.max() < 1.25
  assert 0.1 < np.linalg.norm(got - _polar(c), 2) < 0.5
  # More steps of the cubic iteration are closer than fewer.
  few = spectral.orthogonalize(jnp.asarray(c, jnp.float32), steps=5)
  assert np.linalg.norm(np.asarray(few) - _polar(c), 2) > 1e-2


def test_leaves_of_other_ranks_and_conv_kernels():
  rng = np.random.default_rng(2)
  kernel = rng.standard_normal((3, 3, 4, 8)).astype(np.float32)
  tree = {'kernel': kernel, 'bias': np.array([-2.0, 0.0, 3.0], np.float32),
          'scale': np.float32(-0.5)}
  r = lionx.spectral_reshaper()
  out, _ = r.update(jax.tree.map(jnp.asarray, tree), r.init(None))
  np.testing.assert_array_equal(out['bias'], [-1.0, 0.0, 1.0])
  assert float(out['scale']) == -1.0
  # fan-in x fan-out: (3 * 3 * 4, 8)
  want = _polar(kernel.reshape(36, 8)).reshape(kernel.shape)
  np.testing.assert_allclose(out['kernel'], want, atol=1e-4)


def test_zero_nan_inf_and_dtypes():
  r = lionx.spectral_reshaper()
  zero, _ = r.update(jnp.zeros((3, 4)), r.init(None))
  np.testing.assert_array_equal(zero, np.zeros((3, 4)))
  bad = np.ones((3, 4), np.float32)
  for value in (np.nan, np.inf):
    bad[1, 2] = value
    out, _ = r.update(jnp.asarray(bad), r.init(None))
    assert np.all(np.isnan(out))  # never a finite step
  c = _matrix(np.random.default_rng(3), 8, 16, 3.0)
  half, _ = r.update(jnp.asarray(c, jnp.bfloat16), r.init(None))
  assert half.dtype == jnp.bfloat16
  full = spectral.orthogonalize(jnp.asarray(c, jnp.bfloat16))  # float32
  np.testing.assert_array_equal(half, full.astype(jnp.bfloat16))
  # Huge entries do not overflow the normalisation.
  big = spectral.orthogonalize(jnp.asarray(c * 1e37, jnp.float32))
  np.testing.assert_allclose(big, _polar(c), atol=1e-4)


def test_constraint_k_and_conjugate():
  rng = np.random.default_rng(4)
  w = rng.standard_normal((5, 3)).astype(np.float32)
  b = rng.standard_normal(4).astype(np.float32)
  tree = {'w': jnp.asarray(w), 'b': jnp.asarray(b)}
  r = lionx.spectral_reshaper()
  lam = 0.25
  want = lam * max(np.linalg.norm(w, 2), np.abs(b).max())
  assert float(r.constraint(tree, lam)) == pytest.approx(want, rel=1e-5)
  nuclear = np.linalg.svd(w, compute_uv=False).sum()
  assert float(r.k(tree)) == pytest.approx(nuclear + np.abs(b).sum(),
                                           rel=1e-5)
  inside = jax.tree.map(lambda x: x / (2 * want / lam), tree)
  assert float(r.conjugate(inside)) == 0.0
  assert float(r.conjugate(jax.tree.map(lambda x: 10 * x, tree))) == np.inf
  feas = lionx.metrics.box_feasibility(tree, lam, reshaper=r)
  assert float(feas.linf_scaled) == pytest.approx(want, rel=1e-5)


def test_jit_and_nnx_optimizer():
  model = nnx.Linear(6, 4, rngs=nnx.Rngs(0))
  opt = nnx.Optimizer(model, lionx.lion_k(0.01, lionx.spectral_reshaper(),
                                          weight_decay=0.1), wrt=nnx.Param)

  x = jnp.asarray(np.random.default_rng(6).standard_normal((8, 6)),
                  jnp.float32)

  @nnx.jit
  def step(model, opt):
    grads = nnx.grad(lambda m: jnp.sum(m(x) ** 2))(model)
    opt.update(model, grads)

  before = np.asarray(model.kernel[...])
  step(model, opt)
  moved = np.asarray(model.kernel[...]) - 0.999 * before  # minus the decay
  # The (full-rank) step is -eta U V^T: all its singular values are eta.
  np.testing.assert_allclose(np.linalg.svd(moved, compute_uv=False), 0.01,
                             rtol=1e-3)


@hypothesis.given(
    seed=st.integers(0, 2 ** 16), eta_lam=st.floats(0.01, 1.0),
    start=st.floats(0.0, 1.0), b1=st.floats(0.0, 1.0),
    shape=st.sampled_from([(4, 6), (6, 4), (5, 5), (3, 2, 4)]))
@hypothesis.settings(max_examples=25)
def test_the_spectral_ball_is_invariant(seed, eta_lam, start, b1, shape):
  rng = np.random.default_rng(seed)
  lam = 0.5
  theta = rng.standard_normal(shape)
  matrix = theta.reshape(-1, shape[-1])
  theta = theta * start / (lam * np.linalg.norm(matrix, 2))  # feasible
  opt = lionx.lion_k(eta_lam / lam, lionx.spectral_reshaper(), b1=b1,
                     b2=0.99, weight_decay=lam)
  params = jnp.asarray(theta, jnp.float32)
  state = opt.init(params)
  for _ in range(6):
    grads = jnp.asarray(rng.standard_normal(shape) * 10, jnp.float32)
    updates, state = opt.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    sigma = np.linalg.norm(np.asarray(params, np.float64).reshape(
        -1, shape[-1]), 2)
    assert lam * sigma <= 1 + 1e-5


@hypothesis.given(seed=st.integers(0, 2 ** 16), eta_lam=st.floats(0.01, 0.9),
                  excess=st.floats(0.5, 20.0))
@hypothesis.settings(max_examples=25)
def test_the_excess_contracts_from_outside(seed, eta_lam, excess):
  """||lam th'||_2 - 1 <= (1 - eta lam)(||lam th||_2 - 1)."""
  rng = np.random.default_rng(seed)
  lam = 2.0
  theta = rng.standard_normal((5, 3))
  theta *= (1 + excess) / (lam * np.linalg.norm(theta, 2))
  opt = lionx.lion_k(eta_lam / lam, lionx.spectral_reshaper(),
                     weight_decay=lam)
  params = jnp.asarray(theta, jnp.float32)
  state = opt.init(params)
  for _ in range(4):
    before = lam * np.linalg.norm(np.asarray(params, np.float64), 2)
    grads = jnp.asarray(rng.standard_normal((5, 3)), jnp.float32)
    updates, state = opt.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    after = lam * np.linalg.norm(np.asarray(params, np.float64), 2)
    assert after - 1 <= (1 - eta_lam) * (before - 1) + 1e-5 * before


@pytest.mark.parametrize('kwargs,error,match', [
    ({'method': 'svd'}, ValueError, "method='svd' is not one of"),
    ({'steps': 0}, ValueError, 'steps=0: expected a Python int >= 1'),
    ({'steps': 2.5}, TypeError, 'steps=2.5: expected a Python int'),
    ({'steps': True}, TypeError, 'steps=True: expected a Python int'),
])
def test_bad_arguments(kwargs, error, match):
  with pytest.raises(error, match=match):
    lionx.spectral_reshaper(**kwargs)


def test_complex_and_integer_leaves_are_refused():
  r = lionx.spectral_reshaper()
  with pytest.raises(TypeError, match='spectral reshaper refuses complex'):
    r.update(jnp.ones((2, 3), jnp.complex64), r.init(None))
  with pytest.raises(TypeError, match='float .or complex. leaves only'):
    r.update(jnp.ones((2, 3), jnp.int32), r.init(None))


def test_chex_variants_jit_and_eager():
  c = jnp.asarray(_matrix(np.random.default_rng(5), 4, 7, 5.0), jnp.float32)
  eager = spectral.orthogonalize(c)
  chex.assert_trees_all_close(jax.jit(spectral.orthogonalize)(c), eager,
                              atol=1e-6)


# --- issue 27: exactly on a boundary ---


def test_spectral_output_is_on_the_boundary_and_its_conjugate_is_zero():
  """grad K(C) = UV^T has sigma_max = 1 (and sign of a vector has
  ||.||_inf = 1): the boundary of dom K*. Newton-Schulz in float32 lands
  on it only up to rounding, often just above 1, so K* must allow that
  slack (and reject a point outside by more than rounding)."""
  r = lionx.spectral_reshaper()
  rng = np.random.default_rng(0)
  above = 0
  for _ in range(12):
    x = {'a': jnp.asarray(rng.standard_normal((8, 5)), jnp.float32),
         'c': jnp.asarray(rng.standard_normal((3, 3, 4)), jnp.float32),
         'b': jnp.asarray(rng.standard_normal(4), jnp.float32)}
    y = r.grad_k(x)
    # The reference: singular values of each matrix are all 1 (to the
    # iteration's accuracy), the vector's entries +-1.
    for leaf in (y['a'], y['c'].reshape(-1, 4)):
      s = np.linalg.svd(np.asarray(leaf, np.float64), compute_uv=False)
      np.testing.assert_allclose(s, 1.0, atol=1e-5)
    np.testing.assert_array_equal(np.abs(y['b']), 1.0)
    gauge = float(r.gauge(y))
    assert abs(gauge - 1) < 1e-5
    above += gauge > 1
    assert float(r.conjugate(y)) == 0.0, gauge
    out = jax.tree.map(lambda v: v * (1 + 1e-3), y)
    assert float(r.conjugate(out)) == np.inf
  assert above > 0  # the slack is exercised


def test_spectral_constraint_at_boundary_points():
  """constraint(params, lam) = max(lam sigma_max, lam ||vector||_inf): 1
  on the boundary, where K*(lam params) = 0."""
  r = lionx.spectral_reshaper()
  rot = np.array([[0.6, -0.8], [0.8, 0.6]])  # orthogonal: sigma = (1, 1)
  for lam in (0.25, 0.1, 3.0):
    params = {'w': jnp.asarray(rot / lam, jnp.float32),
              'k': jnp.asarray(np.diag([1.0, 0.5, 0.25])[None] / lam,
                               jnp.float32),
              'b': jnp.asarray([0.5 / lam, -1.0 / lam], jnp.float32)}
    c = float(r.constraint(params, lam))
    assert abs(c - 1) < 1e-6, c
    scaled = jax.tree.map(lambda t, lam=lam: lam * t, params)
    assert float(r.conjugate(scaled)) == 0.0
    assert float(r.conjugate(jax.tree.map(lambda t: 1.001 * t, scaled))
                 ) == np.inf
