"""Each reshaper against its row of Table 2 of Chen, Liu, Liang, Liu, on
hand-computed vectors."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lionx
from tests import reference


def _apply(reshaper, x):
  return reshaper.update(x, reshaper.init(x))[0]


def test_sign():
  x = jnp.array([-3.0, 0.0, 0.2, -0.0])
  np.testing.assert_array_equal(_apply(lionx.sign_reshaper(), x),
                                [-1.0, 0.0, 1.0, 0.0])


def test_lp_global_hand_computed():
  # p = 2: x / ||x||_2 over the whole tree, ||(3, 4, 0, 12)|| = 13.
  tree = {'a': jnp.array([3.0, -4.0]), 'b': jnp.array([0.0, 12.0])}
  out = _apply(lionx.lp_reshaper(2), tree)
  np.testing.assert_allclose(out['a'], [3 / 13, -4 / 13], rtol=1e-6)
  np.testing.assert_allclose(out['b'], [0.0, 12 / 13], rtol=1e-6)


def test_lp_leaf_hand_computed():
  tree = {'a': jnp.array([3.0, -4.0]), 'b': jnp.array([0.0, 12.0])}
  out = _apply(lionx.lp_reshaper(2, 'leaf'), tree)
  np.testing.assert_allclose(out['a'], [0.6, -0.8], rtol=1e-6)
  np.testing.assert_allclose(out['b'], [0.0, 1.0], rtol=1e-6)


def test_lp_p3_hand_computed():
  # p = 3, x = (1, -2): ||x||_3^2 = 9^(2/3); grad = sign(x) x^2 / 9^(2/3).
  out = _apply(lionx.lp_reshaper(3), jnp.array([1.0, -2.0]))
  np.testing.assert_allclose(out, np.array([1.0, -4.0]) / 9 ** (2 / 3),
                             rtol=1e-6)


@pytest.mark.parametrize('p', [1.0, 1.5, 2.0, 4.0, 7.0])
def test_lp_matches_reference(p):
  x = np.random.default_rng(0).standard_normal(50).astype(np.float32)
  np.testing.assert_allclose(_apply(lionx.lp_reshaper(p), jnp.asarray(x)),
                             reference.lp_grad(x.astype(np.float64), p),
                             rtol=2e-5, atol=1e-7)


def test_lp_p1_is_sign_and_zero_is_zero():
  x = jnp.array([-2.0, 0.5, 0.0])
  np.testing.assert_array_equal(_apply(lionx.lp_reshaper(1), x), [-1, 1, 0])
  np.testing.assert_array_equal(_apply(lionx.lp_reshaper(2), jnp.zeros(3)), 0)


def test_lp_no_overflow():
  out = _apply(lionx.lp_reshaper(4), jnp.array([1e30, -1e30]))
  np.testing.assert_allclose(out, [2 ** -0.75, -(2 ** -0.75)], rtol=1e-5)


def test_sparse_sign():
  x = jnp.array([-2.0, -0.5, 0.1, 0.5, 0.51])
  np.testing.assert_array_equal(_apply(lionx.sparse_sign_reshaper(0.5), x),
                                [-1, 0, 0, 0, 1])


def test_topk_leaf_and_global():
  tree = {'a': jnp.array([-3.0, 0.1, 2.0]), 'b': jnp.array([0.5, -4.0])}
  leaf = _apply(lionx.topk_sign_reshaper(1), tree)
  np.testing.assert_array_equal(leaf['a'], [-1, 0, 0])
  np.testing.assert_array_equal(leaf['b'], [0, -1])
  glob = _apply(lionx.topk_sign_reshaper(2, scope='global'), tree)
  np.testing.assert_array_equal(glob['a'], [-1, 0, 0])
  np.testing.assert_array_equal(glob['b'], [0, -1])
  frac = _apply(lionx.topk_sign_reshaper(fraction=0.5), tree)
  np.testing.assert_array_equal(frac['a'], [-1, 0, 1])  # ceil(1.5) = 2
  np.testing.assert_array_equal(frac['b'], [0, -1])


def test_topk_exactly_k_on_ties():
  out = _apply(lionx.topk_sign_reshaper(2), jnp.ones(5))
  assert int(jnp.sum(out)) == 2


def test_huber():
  x = jnp.array([-5.0, -1.0, 0.0, 0.5, 2.0, 9.0])
  np.testing.assert_allclose(_apply(lionx.huber_reshaper(2.0), x),
                             [-1, -0.5, 0, 0.25, 1, 1])


def test_tanh():
  x = jnp.array([-1.0, 0.0, 0.25])
  np.testing.assert_allclose(_apply(lionx.tanh_reshaper(2.0), x),
                             np.tanh(2.0 * np.array([-1.0, 0.0, 0.25])),
                             rtol=1e-6)


CONSTRAINTS = [
    # (reshaper, theta, lam, expected gauge of lam * theta)
    (lionx.sign_reshaper(), [4.0, -8.0], 0.1, 0.8),
    (lionx.sparse_sign_reshaper(0.1), [4.0, -8.0], 0.1, 0.8),
    (lionx.huber_reshaper(1.0), [4.0, -8.0], 0.1, 0.8),
    (lionx.tanh_reshaper(1.0), [4.0, -8.0], 0.1, 0.8),
    # p = 2 -> q = 2: ||(0.3, 0.4)||_2 = 0.5.
    (lionx.lp_reshaper(2), [3.0, 4.0], 0.1, 0.5),
    # p = 3 -> q = 1.5: (0.3^1.5 + 0.4^1.5)^(2/3).
    (lionx.lp_reshaper(3), [3.0, 4.0], 0.1,
     (0.3 ** 1.5 + 0.4 ** 1.5) ** (2 / 3)),
    # p = 1 -> q = inf.
    (lionx.lp_reshaper(1), [3.0, 4.0], 0.1, 0.4),
    # top-k with k = 1: max(||y||_inf, ||y||_1 / 1) = 0.7.
    (lionx.topk_sign_reshaper(1), [3.0, 4.0], 0.1, 0.7),
    (lionx.topk_sign_reshaper(2), [3.0, 4.0], 0.1, 0.4),
]


@pytest.mark.parametrize('reshaper,theta,lam,expected', CONSTRAINTS)
def test_constraint(reshaper, theta, lam, expected):
  got = reshaper.constraint(jnp.array(theta), lam)
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_constraint_over_tree_and_bf16():
  tree = {'a': jnp.array([1.0, -3.0], jnp.bfloat16), 'b': jnp.array([2.0])}
  r = lionx.sign_reshaper()
  assert r.constraint(tree, 0.25).dtype == jnp.float32
  np.testing.assert_allclose(r.constraint(tree, 0.25), 0.75)
  np.testing.assert_allclose(
      lionx.lp_reshaper(2).constraint(tree, 1.0), math.sqrt(14), rtol=1e-6)
  np.testing.assert_allclose(
      lionx.lp_reshaper(2, 'leaf').constraint(tree, 1.0), math.sqrt(10),
      rtol=1e-6)


def test_k_and_conjugate_values():
  x = jnp.array([3.0, -4.0])
  np.testing.assert_allclose(lionx.sign_reshaper().k(x), 7.0)
  np.testing.assert_allclose(lionx.lp_reshaper(2).k(x), 5.0)
  np.testing.assert_allclose(lionx.sparse_sign_reshaper(1.0).k(x), 5.0)
  np.testing.assert_allclose(lionx.topk_sign_reshaper(1).k(x), 4.0)
  # huber_2: 3 -> 3 - 1 = 2, 4 -> 3; 0.5 -> 0.25^2... on |x| <= e: x^2/(2e).
  np.testing.assert_allclose(lionx.huber_reshaper(2.0).k(x), 5.0)
  np.testing.assert_allclose(
      lionx.huber_reshaper(2.0).k(jnp.array([1.0])), 0.25)
  np.testing.assert_allclose(
      lionx.tanh_reshaper(1.0).k(jnp.array([0.5])), np.log(np.cosh(0.5)),
      rtol=1e-6)
  y_in, y_out = jnp.array([0.5, -0.2]), jnp.array([1.5, 0.0])
  for r in [lionx.sign_reshaper(), lionx.lp_reshaper(2),
            lionx.topk_sign_reshaper(2)]:
    assert float(r.conjugate(y_in)) == 0.0
    assert float(r.conjugate(y_out)) == math.inf
  np.testing.assert_allclose(
      lionx.sparse_sign_reshaper(0.5).conjugate(y_in), 0.5 * 0.7, rtol=1e-6)
  np.testing.assert_allclose(
      lionx.huber_reshaper(2.0).conjugate(y_in), 1.0 * 0.29, rtol=1e-6)
  t = np.array([0.5, -0.2])
  want = np.sum(t * np.arctanh(t) + 0.5 * np.log(1 - t * t)) / 3.0
  np.testing.assert_allclose(lionx.tanh_reshaper(3.0).conjugate(y_in), want,
                             rtol=1e-5)
  assert float(lionx.tanh_reshaper(1.0).conjugate(jnp.array([1.0]))) == math.inf


@pytest.mark.parametrize('name', sorted(lionx.RESHAPERS))
def test_fenchel_young(name):
  """K(x) + K*(y) >= <x, y> with equality at y = grad K(x)."""
  args = {'lp': (3.0,), 'sparse_sign': (0.3,), 'topk_sign': (2,),
          'huber': (0.7,), 'tanh': (2.0,)}.get(name, ())
  r = lionx.RESHAPERS[name](*args)
  x = jnp.asarray(np.random.default_rng(1).standard_normal(6), jnp.float32)
  y = r.grad_k(x)
  np.testing.assert_allclose(r.k(x) + r.conjugate(y), jnp.vdot(x, y),
                             rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('name', sorted(lionx.RESHAPERS))
def test_nan_never_becomes_a_finite_step(name):
  args = {'lp': (2.0,), 'sparse_sign': (0.3,), 'topk_sign': (1,),
          'huber': (0.7,), 'tanh': (2.0,)}.get(name, ())
  r = lionx.RESHAPERS[name](*args)
  out = jax.jit(lambda x: _apply(r, x))(jnp.array([1.0, jnp.nan, -2.0]))
  assert np.isnan(out[1])


@pytest.mark.parametrize('name', sorted(lionx.RESHAPERS))
def test_empty_and_none_trees(name):
  args = {'lp': (2.0,), 'sparse_sign': (0.3,), 'topk_sign': (1,),
          'huber': (0.7,), 'tanh': (2.0,)}.get(name, ())
  r = lionx.RESHAPERS[name](*args)
  assert _apply(r, {}) == {}
  out = _apply(r, {'a': None, 'b': jnp.array([2.0])})
  assert out['a'] is None
  assert float(r.constraint({}, 1.0)) == 0.0


# Mutmut survivors of the second round (tests/MUTATION.md).

def test_a_traced_parameter_is_refused_by_name():
  for make, name in [(lionx.huber_reshaper, 'e'), (lionx.lp_reshaper, 'p'),
                     (lionx.tanh_reshaper, 'beta')]:
    def build(x, make=make):
      make(x)
      return x
    with pytest.raises(TypeError, match=rf'^{name}=\w*Tracer'):
      jax.jit(build)(2.0)


def test_lp_with_an_empty_leaf():
  r = lionx.lp_reshaper(2)
  out = r.update({'a': jnp.zeros((0,)), 'b': jnp.array([3.0, -4.0])},
                 r.init(None))[0]
  assert out['a'].shape == (0,)
  np.testing.assert_allclose(out['b'], [0.6, -0.8], rtol=1e-6)
  out = jax.jit(r.update)({'a': jnp.zeros((0, 2))}, r.init(None))[0]
  assert out['a'].shape == (0, 2)


def test_complex_leaves_are_two_real_coordinates_for_grad_k():
  z = jnp.array([3.0 - 4.0j, -1.0 + 0.0j])
  r = lionx.sign_reshaper()
  out = r.update(z, r.init(None))[0]
  assert out.dtype == jnp.complex64
  np.testing.assert_array_equal(out, [1.0 - 1.0j, -1.0 + 0.0j])
  out = lionx.lp_reshaper(2).grad_k(z)  # over the 4 real coordinates
  np.testing.assert_allclose(
      out, np.array([3.0 - 4.0j, -1.0]) / math.sqrt(26.0), rtol=1e-6)


def test_errors_name_updates_x_and_y():
  r = lionx.lp_reshaper(2)
  with pytest.raises(TypeError, match=r'^updates'):
    r.update(jnp.array([1, 2], jnp.int32), r.init(None))
  for fn, name in [(r.k, 'x'), (r.conjugate, 'y'), (r.gauge, 'y')]:
    with pytest.raises(TypeError, match=rf'^{name} has a leaf'):
      fn({'w': 'abc'})


@pytest.mark.parametrize('scope', ['global', 'leaf'])
def test_topk_k_and_gauge_by_hand(scope):
  tree = {'a': jnp.array([3.0, -1.0]), 'b': jnp.array([-4.0, 0.5, 2.0])}
  r = lionx.topk_sign_reshaper(k=2, scope=scope)
  if scope == 'global':
    assert float(r.k(tree)) == pytest.approx(7.0)  # |-4| + |3|
    # max(||y||_inf, ||y||_1 / k) = max(4, 10.5 / 2)
    assert float(r.gauge(tree)) == pytest.approx(5.25)
  else:
    assert float(r.k(tree)) == pytest.approx(4.0 + 6.0)
    # per leaf max(||y||_inf, ||y||_1 / k): max(max(3, 2), max(4, 3.25))
    assert float(r.gauge(tree)) == pytest.approx(4.0)
  assert float(r.k({})) == 0.0 and float(r.gauge({})) == 0.0
  with jax.enable_x64(True):
    assert r.gauge({}).dtype == jnp.float32


def test_topk_names_carry_k_or_fraction():
  assert 'fraction=0.25' in lionx.topk_sign_reshaper(fraction=0.25).name
  assert 'k=3' in lionx.topk_sign_reshaper(k=3).name


# --- issue 27: exactly on a boundary ---


def _random_trees(n, seed=0):
  """Trees with leaves of mixed scales (down to 1e-3, up to 1e3)."""
  rng = np.random.default_rng(seed)
  for _ in range(n):
    yield {'a': jnp.asarray(rng.standard_normal((7, 5))
                            * 10 ** rng.uniform(-3, 3), jnp.float32),
           'b': jnp.asarray(rng.standard_normal(11), jnp.float32)}


def _q_norm64(leaves, q):
  flat = np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in leaves])
  return np.max(np.abs(flat)) if q == math.inf else np.sum(
      np.abs(flat) ** q) ** (1 / q)


def test_sign_output_is_on_the_box_and_its_conjugate_is_zero():
  """sign(x) has ||.||_inf = 1 exactly (x != 0): K*(grad K(x)) = 0."""
  r = lionx.sign_reshaper()
  for x in _random_trees(5):
    y = r.grad_k(x)
    assert float(r.gauge(y)) == 1.0
    assert float(r.conjugate(y)) == 0.0
    assert float(r.conjugate(jax.tree.map(lambda v: v * 1.001, y))) == math.inf


@pytest.mark.parametrize('scope', ['global', 'leaf'])
@pytest.mark.parametrize('p', [1.5, 2.0, 3.0, 7.0])
def test_lp_output_is_on_the_boundary_and_its_conjugate_is_zero(p, scope):
  """grad K(x) of the lp reshaper has ||.||_q = 1 (per scope), 1/p + 1/q =
  1: the boundary of dom K*. Its float32 gauge is 1 only up to rounding
  (sometimes just above), so K* must allow that slack, and no more."""
  r = lionx.lp_reshaper(p, scope)
  q = p / (p - 1)
  above = 0
  for x in _random_trees(30):
    y = r.grad_k(x)
    scopes = ([jax.tree.leaves(y)] if scope == 'global'
              else [[leaf] for leaf in jax.tree.leaves(y)])
    for leaves in scopes:  # the reference: on the boundary to float32
      assert abs(_q_norm64(leaves, q) - 1) < 1e-6
    gauge = float(r.gauge(y))
    assert abs(gauge - 1) < 1e-6
    above += gauge > 1
    assert float(r.conjugate(y)) == 0.0, (gauge, p, scope)
    # Outside by more than rounding: infinite.
    out = jax.tree.map(lambda v: v * (1 + 1e-4), y)
    assert float(r.conjugate(out)) == math.inf
  assert above > 0  # the slack is exercised: some gauges round above 1


@pytest.mark.parametrize('p', [1.0, 2.0, 4.0])
def test_constraint_at_boundary_points(p):
  """constraint(params, lam) = gauge(lam params): exactly 1 (to rounding)
  for params on the boundary of the set lam params in dom K*; K* there is
  0, and just outside it is infinite."""
  q = math.inf if p == 1.0 else p / (p - 1)
  r = lionx.lp_reshaper(p)
  rng = np.random.default_rng(3)
  for lam in (0.1, 0.5, 2.0):
    v = rng.standard_normal(9)
    theta = v / _q_norm64([v], q) / lam  # ||lam theta||_q = 1
    params = {'w': jnp.asarray(theta[:4], jnp.float32),
              'b': jnp.asarray(theta[4:], jnp.float32)}
    c = float(r.constraint(params, lam))
    assert abs(c - 1) < 1e-6, c
    scaled = jax.tree.map(lambda t, lam=lam: lam * t, params)
    assert float(r.conjugate(scaled)) == 0.0
    outside = jax.tree.map(lambda t: t * 1.001, scaled)
    assert float(r.conjugate(outside)) == math.inf
  # The box at its corners and faces: exactly 1.
  box = lionx.sign_reshaper()
  params = jnp.array([2.0, -2.0, 1.0, 0.0])
  assert float(box.constraint(params, 0.5)) == 1.0
  assert float(box.conjugate(0.5 * params)) == 0.0
