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
def test_polar_express_agrees_with_the_svd(shape, kappa):
  c = _matrix(np.random.default_rng(0), *shape, kappa) * 7.0
  got = spectral.orthogonalize(jnp.asarray(c, jnp.float32))
  assert np.linalg.norm(np.asarray(got) - _polar(c), 2) < 1e-4
  # The Newton-Schulz polish never overshoots: no singular value above 1.
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
  # Fewer quintic steps are further from U V^T.
  few = spectral.orthogonalize(jnp.asarray(c, jnp.float32), 'quintic', 2)
  assert np.linalg.norm(np.asarray(few) - _polar(c), 2) > 0.3


# --- issue 23: exact at real sizes (item 2) ---


def _spectrum(kind, r, rng):
  """Singular values with condition number 100, largest 1."""
  if kind == 'flat':  # every one 1 but one at 0.01: the example
    s = np.ones(r)
    s[-1] = 0.01
  elif kind == 'geometric':
    s = np.geomspace(1.0, 0.01, r)
  elif kind == 'two-level':
    s = np.where(np.arange(r) < r // 2, 1.0, 0.01)
  else:  # random in [0.01, 1], both ends present
    s = np.concatenate([[1.0, 0.01], rng.uniform(0.01, 1.0, r - 2)])
  return s


@pytest.fixture
def one_blas_thread():
  """NumPy's LAPACK on one thread: on a loaded shared CPU, OpenBLAS's
  threads make an SVD of 256 x 1024 30x slower (4.2 s against 0.14 s)."""
  try:
    from threadpoolctl import threadpool_limits  # pylint: disable=all
  except ImportError:  # not a dependency: only slower without it
    yield
    return
  with threadpool_limits(limits=1, user_api='blas'):
    yield


def _hadamard(n):
  h = np.ones((1, 1))
  while h.shape[0] < n:
    h = np.block([[h, h], [h, -h]])
  return h


def _orthogonal(rng, n):
  """A dense random n x n orthogonal matrix (n a power of 2), float64:
  two Hadamard matrices with random signs and row orders (cheaper than a
  QR, whose float64 LAPACK is slow on the shared CPU)."""
  h = _hadamard(n) / np.sqrt(n)
  a = h[rng.permutation(n)] * rng.choice([-1.0, 1.0], n)
  b = h[rng.permutation(n)] * rng.choice([-1.0, 1.0], n)
  return a @ b


def _with_polar(rng, n, m, s):
  """(C, its polar factor Q) with the singular values s: C = P Q with P =
  W diag(s) W^T positive definite and Q with orthonormal rows (or
  columns), so that Q is U V^T exactly."""
  k, big = min(n, m), max(n, m)
  blocks = [_orthogonal(rng, k) for _ in range(big // k)]
  q = np.concatenate(blocks, axis=1) / np.sqrt(big // k)  # k x big
  w = _orthogonal(rng, k)
  c = (w * s) @ (w.T @ q)
  return (c, q) if n <= m else (c.T, q.T)


def _schatten8(d):
  """||(D D^T)^2||_F^(1/4) >= ||D||_2, in float64 (an upper bound that
  costs two products, not an SVD)."""
  d = np.asarray(d, np.float64)
  gram = d @ d.T if d.shape[0] <= d.shape[1] else d.T @ d
  return float(np.linalg.norm(gram @ gram) ** 0.25)


@pytest.mark.parametrize('shape', [(256, 256), (256, 1024), (1024, 256)])
def test_the_accuracy_targets_at_256(shape, one_blas_thread):
  """||out - U V^T||_2 <= 1e-3 for kappa <= 100 and every singular value
  of the output in [0, 1 + 1e-3], against NumPy's SVD in float64 of the
  float32 input. The old 20-step Newton-Schulz from ||C||_F: 1.0e-2 on
  the flat spectrum at 256 x 256."""
  rng = np.random.default_rng(sum(shape))
  f = jax.jit(spectral.orthogonalize)
  for kind in ('flat', 'geometric', 'two-level', 'random'):
    c, _ = _with_polar(rng, *shape, _spectrum(kind, min(shape), rng))
    c32 = np.asarray(c * 3.0, np.float32)
    out = np.asarray(f(jnp.asarray(c32)), np.float64)
    err = np.linalg.norm(out - _polar(c32), 2)
    top = np.linalg.svd(out, compute_uv=False).max()
    assert err <= 1e-3 and top <= 1 + 1e-3, (shape, kind, err, top)


@pytest.mark.parametrize('shape,kinds', [
    ((1024, 1024), ('flat', 'geometric', 'random')),
    ((1024, 4096), ('flat',)),
])
def test_the_accuracy_targets_at_1024(shape, kinds, one_blas_thread):
  """As above at 1024 (old: 0.195 on the flat spectrum), against the
  polar factor known by construction (an SVD of 1024 x 4096 takes most of
  a minute on the shared CPU), with an upper bound of the spectral norm:
  ||out||_2 <= 1 + ||out - Q||_2, so one bound checks both targets."""
  rng = np.random.default_rng(sum(shape))
  f = jax.jit(spectral.orthogonalize)
  for kind in kinds:
    c, q = _with_polar(rng, *shape, _spectrum(kind, min(shape), rng))
    out = np.asarray(f(jnp.asarray(c, jnp.float32)), np.float64)
    err = _schatten8(out - q)
    assert err <= 1e-3, (shape, kind, err)


def _remez_alternation(coefficients, lower, upper):
  """The extrema of 1 - p on [lower, upper]: the ends and p's critical
  points inside (p' = a + 3b x^2 + 5c x^4 = 0)."""
  a, b, c = coefficients
  roots = np.roots([5 * c, 0, 3 * b, 0, a])
  inside = sorted(r.real for r in roots
                  if abs(r.imag) < 1e-12 and lower < r.real < upper)
  return np.array([lower, *inside, upper])


def test_the_polar_express_polynomials_are_the_optimal_quintics():
  """Each p_t = a x + b x^3 + c x^5 is the best odd quintic approximation
  of 1 on [l_t, u_t] (Amsel et al. 2025): by Chebyshev's equioscillation
  theorem, 1 - p takes its largest magnitude E_t at 4 points with
  alternating signs; and l_{t+1} = p_t(l_t), u_{t+1} = 2 - l_{t+1}."""
  lower, upper = spectral.POLAR_EXPRESS_LOWER, 1.0
  for t, coefficients in enumerate(spectral.POLAR_EXPRESS):
    p = np.polynomial.Polynomial([0, coefficients[0], 0, coefficients[1], 0,
                                  coefficients[2]])
    grid = np.linspace(lower, upper, 200_001)
    worst = np.max(np.abs(1 - p(grid)))
    points = _remez_alternation(coefficients, lower, upper)
    errors = 1 - p(points)
    if worst > 1e-9:  # before convergence: a clean alternation
      assert len(points) == 4, (t, points)
      np.testing.assert_allclose(np.abs(errors), worst, rtol=1e-6)
      assert np.all(np.sign(errors) == [1, -1, 1, -1]), (t, errors)
    lower = p(lower)
    upper = 2 - lower
  assert 1 - lower < 1e-10  # every value in [3e-4, 1] ends at 1


def test_huge_inputs_give_a_step():
  """Issue 23, item 3: no reciprocal that flushes to zero."""
  r = lionx.spectral_reshaper()
  out = np.asarray(r.grad_k(jnp.array([[2.0 ** 127, 0.0], [0.0, 1.0]])))
  assert out[0, 0] == 1.0  # was all zeros
  q, _ = np.linalg.qr(np.random.default_rng(7).standard_normal((6, 6)))
  for scale in (2.0 ** 127, 3e38 / np.abs(q).max(), 1e-30):
    c = np.asarray(q * scale, np.float32)
    got = np.asarray(r.grad_k(jnp.asarray(c)), np.float64)
    np.testing.assert_allclose(got, _polar(c), atol=1e-5)


def test_steps_and_the_deprecated_method():
  c = jnp.asarray(_matrix(np.random.default_rng(8), 8, 12, 50.0),
                  jnp.float32)
  base = lionx.spectral_reshaper()
  assert base.name == 'spectral(polar_express, 9 steps)'
  with pytest.warns(DeprecationWarning, match="method='polar_express'"):
    old = lionx.spectral_reshaper('newton_schulz')
  np.testing.assert_array_equal(old.grad_k(c), base.grad_k(c))
  more = lionx.spectral_reshaper(steps=12)
  np.testing.assert_allclose(more.grad_k(c), _polar(c), atol=1e-5)
  with pytest.raises(ValueError, match=r"steps=5: expected a Python int >= 9"
                     r".*method='quintic'"):
    lionx.spectral_reshaper(steps=5)


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


@pytest.mark.slow
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


@pytest.mark.slow
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
    ({'steps': 0}, ValueError, 'steps=0: expected a Python int >= 9'),
    ({'steps': 0, 'method': 'quintic'}, ValueError,
     'steps=0: expected a Python int >= 1'),
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
                              atol=1e-5)


# --- issue 23: stacked layers (item 4) ---

MDN = optax.contrib.MuonDimensionNumbers


@pytest.mark.compiled_as_users
def test_stacked_layers_are_matrices_each():
  """(L, d_in, d_out) with MuonDimensionNumbers(1, 2): L polar factors and
  L constraints; without it one (L d_in) x d_out matrix."""
  rng = np.random.default_rng(11)
  w = rng.standard_normal((3, 5, 4)).astype(np.float32)
  w[1] *= 10.0
  tree = {'w': jnp.asarray(w), 'b': jnp.asarray(rng.standard_normal(4),
                                                jnp.float32)}
  dims = {'w': MDN(reduction_axis=1, output_axis=2), 'b': None}
  r = lionx.spectral_reshaper(weight_dimension_numbers=dims)
  out, _ = r.update(tree, r.init(tree))
  for layer in range(3):
    np.testing.assert_allclose(out['w'][layer], _polar(w[layer]), atol=1e-5)
  np.testing.assert_array_equal(out['b'], np.sign(tree['b']))
  whole = lionx.spectral_reshaper().grad_k(tree)['w']
  np.testing.assert_allclose(whole.reshape(15, 4), _polar(w.reshape(15, 4)),
                             atol=1e-5)
  assert np.abs(np.asarray(whole) - np.asarray(out['w'])).max() > 0.1
  lam = 0.05
  sigma = [np.linalg.norm(w[layer].astype(np.float64), 2)
           for layer in range(3)]
  per = r.matrix_constraints(tree, lam)
  assert per['w'].shape == (3,) and per['b'].shape == ()
  np.testing.assert_allclose(per['w'], lam * np.array(sigma), rtol=1e-5)
  np.testing.assert_allclose(per['b'], lam * np.abs(tree['b']).max(),
                             rtol=1e-6)
  want = lam * max(max(sigma), float(np.abs(tree['b']).max()))
  assert float(r.constraint(tree, lam)) == pytest.approx(want, rel=1e-5)
  nuclear = sum(np.linalg.svd(w[layer].astype(np.float64),
                              compute_uv=False).sum() for layer in range(3))
  assert float(r.k(tree)) == pytest.approx(
      nuclear + np.abs(tree['b']).sum(), rel=1e-5)


def test_dimension_numbers_any_axes_and_a_callable():
  rng = np.random.default_rng(12)
  w = rng.standard_normal((4, 3, 6)).astype(np.float32)  # (d_in, L, d_out)
  r = lionx.spectral_reshaper(weight_dimension_numbers=MDN(0, 2))
  out = np.asarray(r.grad_k(jnp.asarray(w)))
  for layer in range(3):
    np.testing.assert_allclose(out[:, layer], _polar(w[:, layer]),
                               atol=1e-5)
  kernel = rng.standard_normal((3, 3, 2, 5)).astype(np.float32)
  conv = lionx.spectral_reshaper(
      weight_dimension_numbers=lambda p: jax.tree.map(
          lambda x: MDN((0, 1, 2), 3) if x.ndim == 4 else None, p))
  got = conv.grad_k({'k': jnp.asarray(kernel), 'm': jnp.ones((2, 2))})
  np.testing.assert_allclose(got['k'], lionx.spectral_reshaper().grad_k(
      jnp.asarray(kernel)), atol=1e-6)  # the default rule for kernels
  np.testing.assert_array_equal(got['m'], np.ones((2, 2)))  # None: sign
  # A prefix: one MuonDimensionNumbers for a whole subtree.
  sub = lionx.spectral_reshaper(weight_dimension_numbers={'a': MDN(1, 2)})
  tree = {'a': {'x': jnp.asarray(w), 'y': jnp.asarray(w)}}
  out = sub.grad_k(tree)
  np.testing.assert_allclose(out['a']['y'][2], _polar(w[2]), atol=1e-5)


@pytest.mark.parametrize('dims,error,match', [
    ({'w': MDN(1, 1), 'b': None}, ValueError, 'repeats an axis'),
    ({'w': MDN(0, 3), 'b': None}, ValueError,
     r"output_axis=3 is out of range.*\(2, 3\)"),
    ({'w': MDN((), 1), 'b': None}, TypeError, 'reduction_axis=\\(\\)'),
    ({'w': MDN(0.0, 1), 'b': None}, TypeError, 'reduction_axis=0.0'),
    ({'w': 'rows'}, TypeError, "leaf at \\['w'\\] that is 'rows'"),
    ({'v': None}, ValueError, 'not a prefix of the updates'),
    (MDN(0, 1), ValueError, r"at \['b'\].*rank >= 2"),
    (jnp.float32, TypeError, 'got a type'),
    (lambda: None, TypeError, 'not schedule|signature'),
])
def test_bad_dimension_numbers(dims, error, match):
  tree = {'w': jnp.ones((2, 3)), 'b': jnp.ones(3)}
  with pytest.raises(error, match=match) as info:
    r = lionx.spectral_reshaper(weight_dimension_numbers=dims)
    r.update(tree, r.init(tree))
  assert 'weight_dimension_numbers' in str(info.value)


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
