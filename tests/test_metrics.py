"""lionx.metrics against hand-computed values and the papers' equations."""

import math

import hypothesis
import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lionx
from lionx import metrics

NAN = float('nan')
TREE = {'a': jnp.array([1.0, -3.0]), 'b': jnp.array([[2.0]]), 'c': None}
finite = st.floats(-1e3, 1e3, allow_nan=False, width=32)
vectors = hnp.arrays(np.float32, st.integers(1, 12), elements=finite)


def _both(fn, *args, **kwargs):
  """fn eager and under jit; asserts they agree and returns the eager one."""
  eager = fn(*args, **kwargs)
  jitted = jax.jit(lambda *a: fn(*a, **kwargs))(*args)
  jax.tree.map(lambda e, j: np.testing.assert_allclose(e, j, rtol=1e-6),
               eager, jitted)
  return eager


# Norms and sizes.

def test_tree_size():
  assert metrics.tree_size(TREE) == 3
  assert metrics.tree_size({}) == 0
  assert metrics.tree_size([jnp.zeros((3, 0)), 2.0]) == 1
  assert isinstance(metrics.tree_size(TREE), int)


def test_norms_hand_computed():
  assert float(_both(metrics.tree_l1, TREE)) == 6.0
  np.testing.assert_allclose(_both(metrics.tree_l2, TREE), math.sqrt(14),
                             rtol=1e-6)
  assert float(_both(metrics.tree_linf, TREE)) == 3.0


def test_norms_of_empty_tree_are_zero():
  for fn in (metrics.tree_l1, metrics.tree_l2, metrics.tree_linf):
    for empty in ({}, [], None, {'a': jnp.zeros(0)}):
      out = fn(empty)
      assert out.dtype == jnp.float32 and float(out) == 0.0


def test_norms_nan_and_inf():
  x = jnp.array([1.0, NAN])
  for fn in (metrics.tree_l1, metrics.tree_l2, metrics.tree_linf):
    assert math.isnan(float(fn(x)))
  y = jnp.array([1.0, -jnp.inf])
  for fn in (metrics.tree_l1, metrics.tree_l2, metrics.tree_linf):
    assert float(fn(y)) == math.inf


def test_l2_does_not_overflow_or_underflow():
  np.testing.assert_allclose(metrics.tree_l2(jnp.array([1e30, -1e30])),
                             math.sqrt(2) * 1e30, rtol=1e-6)
  np.testing.assert_allclose(metrics.tree_l2(jnp.array([3e-30, 4e-30])),
                             5e-30, rtol=1e-5)


def test_bf16_accumulates_in_float32():
  # 4096 ones: a bfloat16 running sum would stall at 256.
  x = jnp.ones(4096, jnp.bfloat16)
  assert float(metrics.tree_l1(x)) == 4096.0
  assert metrics.tree_l1(x).dtype == jnp.float32
  np.testing.assert_allclose(metrics.tree_l2(x), 64.0, rtol=1e-6)
  assert float(metrics.kkt_residual(x, -x, 1.0)) == 0.0  # -4096 + 4096


# Gradient norm ratio, (8) of Dong, Li, Lin.

def test_grad_norm_ratio_hand_computed():
  r = _both(metrics.grad_norm_ratio, jnp.array([3.0, -4.0, 0.0, 0.0]))
  np.testing.assert_allclose(r, (1.4, 0.7, 2.0), rtol=1e-6)
  ones = metrics.grad_norm_ratio({'a': jnp.ones(9), 'b': jnp.ones(16)})
  np.testing.assert_allclose(ones, (5.0, 1.0, 5.0), rtol=1e-6)
  one_hot = metrics.grad_norm_ratio(jnp.zeros(100).at[7].set(-2.0))
  np.testing.assert_allclose(one_hot, (1.0, 0.1, 10.0), rtol=1e-6)


def test_grad_norm_ratio_bf16_and_extremes():
  r = metrics.grad_norm_ratio(jnp.ones(4096, jnp.bfloat16))
  np.testing.assert_allclose(r, (64.0, 1.0, 64.0), rtol=1e-6)
  np.testing.assert_allclose(
      metrics.grad_norm_ratio(jnp.array([1e30, 1e30, -1e30, 1e30])).ratio,
      2.0, rtol=1e-6)
  np.testing.assert_allclose(
      metrics.grad_norm_ratio(jnp.array([1e-30, -1e-30])).ratio,
      math.sqrt(2), rtol=1e-5)


def test_grad_norm_ratio_degenerate_cases():
  zero = metrics.grad_norm_ratio({'w': jnp.zeros((3, 3))})
  np.testing.assert_array_equal(zero, (0.0, 0.0, 3.0))
  empty = metrics.grad_norm_ratio({})
  np.testing.assert_array_equal(empty, (0.0, 0.0, 0.0))
  for bad in (jnp.array([1.0, NAN]), jnp.array([1.0, jnp.inf])):
    r = metrics.grad_norm_ratio(bad)
    assert math.isnan(float(r.ratio)) and math.isnan(float(r.ratio_over_sqrt_d))


@hypothesis.given(vectors)
def test_grad_norm_ratio_in_one_sqrt_d(g):
  hypothesis.assume(np.any(g != 0))
  r = metrics.grad_norm_ratio(jnp.asarray(g))
  g64 = g.astype(np.float64)
  expected = np.abs(g64).sum() / np.sqrt((g64 ** 2).sum())
  np.testing.assert_allclose(r.ratio, expected, rtol=1e-5)
  assert 1 - 1e-6 <= float(r.ratio) <= math.sqrt(g.size) * (1 + 1e-6)


# Box feasibility.

def test_box_feasibility_hand_computed():
  theta = {'w': jnp.array([10.0, -4.0]), 'b': jnp.array([12.0, 9.995])}
  out = _both(lambda t: metrics.box_feasibility(t, 0.1), theta)
  # lambda |theta| = (1, .4, 1.2, .9995): 3 of 4 are >= 1 - 1e-3.
  np.testing.assert_allclose(out, (1.2, 0.2, 0.75), rtol=1e-6)
  inside = metrics.box_feasibility(jnp.array([1.0, -2.0]), 0.1, tol=0.5)
  np.testing.assert_allclose(inside, (0.2, 0.0, 0.0), rtol=1e-6)


def test_box_feasibility_with_reshapers():
  theta = jnp.array([3.0, -4.0])
  lp2 = metrics.box_feasibility(theta, 0.1, reshaper=lionx.lp_reshaper(2))
  np.testing.assert_allclose(lp2.linf_scaled, 0.5, rtol=1e-6)  # 0.1 * 5
  lp1 = metrics.box_feasibility(theta, 0.1,
                                reshaper=lionx.lp_reshaper(4 / 3))
  np.testing.assert_allclose(lp1.linf_scaled, 0.1 * (3 ** 4 + 4 ** 4) ** 0.25,
                             rtol=1e-5)  # q = 4
  top = metrics.box_feasibility(theta, 0.25,
                                reshaper=lionx.topk_sign_reshaper(1))
  np.testing.assert_allclose(top, (1.75, 0.75, 0.5), rtol=1e-6)
  sign = metrics.box_feasibility(theta, 0.25, reshaper=lionx.sign_reshaper())
  np.testing.assert_allclose(sign, metrics.box_feasibility(theta, 0.25))


def test_box_feasibility_degenerate_cases():
  np.testing.assert_array_equal(
      metrics.box_feasibility(jnp.array([5.0, -1e9]), 0.0), (0.0, 0.0, 0.0))
  np.testing.assert_array_equal(metrics.box_feasibility({}, 0.1), (0, 0, 0))
  nan = metrics.box_feasibility({'a': jnp.array([1.0, NAN])}, 0.1)
  assert all(math.isnan(float(v)) for v in nan)
  bf16 = metrics.box_feasibility(jnp.array([8.0, -10.0], jnp.bfloat16), 0.1)
  np.testing.assert_allclose(bf16, (1.0, 0.0, 0.5), rtol=1e-6)
  assert bf16.linf_scaled.dtype == jnp.float32


def test_box_feasibility_traced_weight_decay():
  fn = jax.jit(lambda t, wd: metrics.box_feasibility(t, wd))
  np.testing.assert_allclose(fn(jnp.array([4.0, 1.0]), 0.5), (2.0, 1.0, 0.5))


# KKT residual, Lemma 1 and Theorem 2(i) of Dong, Li, Lin.

def test_kkt_residual_hand_computed():
  theta = {'a': jnp.array([10.0, 3.0]), 'b': jnp.array([-1.0])}
  grads = {'a': jnp.array([-2.0, 1.0]), 'b': jnp.array([4.0])}
  # 0.1 * (-20 + 3 - 4) + (2 + 1 + 4)
  np.testing.assert_allclose(
      _both(metrics.kkt_residual, theta, grads, 0.1), 4.9, rtol=1e-6)
  assert float(metrics.kkt_residual({}, {}, 0.1)) == 0.0
  assert float(metrics.kkt_residual(theta, grads, 0.0)) == 7.0
  assert math.isnan(float(metrics.kkt_residual(
      jnp.array([1.0]), jnp.array([NAN]), 0.1)))


def test_kkt_residual_zero_at_kkt_point():
  # min (theta - 2)^2 s.t. |theta| <= 1: theta* = 1, grad = -2.
  assert float(metrics.kkt_residual(jnp.array([1.0]), jnp.array([-2.0]),
                                    1.0)) == 0.0
  # An interior stationary point: grad = 0.
  assert float(metrics.kkt_residual(jnp.array([0.3]), jnp.array([0.0]),
                                    1.0)) == 0.0


@hypothesis.given(vectors, st.floats(0.01, 10.0), st.data())
def test_kkt_residual_nonnegative_when_feasible(g, lam, data):
  theta = data.draw(hnp.arrays(
      np.float32, g.shape, elements=st.floats(-1.0, 1.0, width=32)))
  theta = theta / np.float32(lam)  # ||theta||_inf <= 1 / lam
  r = metrics.kkt_residual(jnp.asarray(theta), jnp.asarray(g), lam)
  expected = (lam * np.dot(g.astype(np.float64), theta.astype(np.float64))
              + np.abs(g.astype(np.float64)).sum())
  assert float(r) >= -1e-4 * (1 + np.abs(g).sum())
  np.testing.assert_allclose(r, expected, rtol=1e-4, atol=1e-3)


# Lyapunov function, Theorem 4.1 of Chen, Liu, Liang, Liu.

def _h_reference(f, x, m_lionx, k, k_conj, lam, eps, b1, b2, scale=None):
  """H of Theorem 4.1 of Chen et al. in its convention, m_paper = -m_lionx.

  The coefficient is eps * b1 / (eps lam (1 - b1) + (1 - b2)): the printed
  one times eps (see lionx.metrics.lyapunov); ``scale`` replaces that eps.
  """
  m = -np.asarray(m_lionx, np.float64)
  x = np.asarray(x, np.float64)
  scale = eps if scale is None else scale
  coef = scale * b1 / (eps * lam * (1 - b1) + (1 - b2))
  conj = k_conj(lam * x)
  return f + conj / lam + coef * (conj + k(m) - lam * x @ m)


def _box(y):
  return 0.0 if np.max(np.abs(y)) <= 1 + 1e-9 else math.inf


def _huber_k(m, e):
  a = np.abs(m)
  return float(np.sum(np.where(a <= e, m * m / (2 * e), a - e / 2)))


def _tanh_conj(y, beta):
  if np.max(np.abs(y)) >= 1:
    return math.inf
  return float(np.sum(y * np.arctanh(y) + 0.5 * np.log1p(-y * y)) / beta)


CASES = {
    'sign': (lionx.sign_reshaper(), lambda m: np.abs(m).sum(), _box),
    'l2': (lionx.lp_reshaper(2), np.linalg.norm,
           lambda y: 0.0 if np.linalg.norm(y) <= 1 + 1e-9 else math.inf),
    'huber': (lionx.huber_reshaper(0.5), lambda m: _huber_k(m, 0.5),
              lambda y: 0.25 * float(y @ y) + _box(y)),
    'tanh': (lionx.tanh_reshaper(3.0),
             lambda m: float(np.sum(np.log(np.cosh(3.0 * m))) / 3.0),
             lambda y: _tanh_conj(y, 3.0)),
}


@pytest.mark.parametrize('name', list(CASES))
@pytest.mark.parametrize('implicit', [True, False])
def test_lyapunov_matches_theorem41(name, implicit):
  reshaper, k, k_conj = CASES[name]
  x, m = np.array([0.5, -1.5, 1.0]), np.array([0.3, 0.2, -0.6])
  lam, lr, b1, b2 = 0.4, 0.05, 0.9, 0.99
  eps = lr if implicit else lr / (1 - lr * lam)
  h = _both(lambda x, m: metrics.lyapunov(
      2.5, x, m, reshaper=reshaper, weight_decay=lam, learning_rate=lr,
      b1=b1, b2=b2, implicit=implicit), jnp.asarray(x), jnp.asarray(m))
  expected = _h_reference(2.5, x, m, k, k_conj, lam, eps, b1, b2)
  np.testing.assert_allclose(h, expected, rtol=1e-5)


def test_lyapunov_infinite_outside_and_nan():
  kw = dict(reshaper=lionx.sign_reshaper(), weight_decay=0.5,
            learning_rate=0.01, b1=0.9, b2=0.99)
  assert float(metrics.lyapunov(1.0, jnp.array([3.0]), jnp.array([0.0]),
                                **kw)) == math.inf
  assert math.isnan(float(metrics.lyapunov(
      1.0, jnp.array([NAN]), jnp.array([0.0]), **kw)))
  assert math.isnan(float(metrics.lyapunov(
      NAN, jnp.array([0.0]), jnp.array([0.0]), **kw)))
  assert float(metrics.lyapunov(1.5, {}, {}, **kw)) == 1.5
  # Fenchel-Young: H >= f inside the box, with equality at m = 0, x = 0.
  assert float(metrics.lyapunov(1.5, jnp.zeros(2), jnp.zeros(2), **kw)) == 1.5


def test_lyapunov_bf16_computes_in_float32():
  kw = dict(reshaper=lionx.lp_reshaper(2), weight_decay=0.25,
            learning_rate=0.1, b1=0.9, b2=0.99)
  x, m = np.array([1.5, -2.0, 0.5]), np.array([0.25, -0.5, 1.0])
  h16 = metrics.lyapunov(jnp.bfloat16(1.0), jnp.asarray(x, jnp.bfloat16),
                         jnp.asarray(m, jnp.bfloat16), **kw)
  assert h16.dtype == jnp.float32
  eps = 0.1 / (1 - 0.025)
  k, k_conj = CASES['l2'][1:]
  np.testing.assert_allclose(
      h16, _h_reference(1.0, x, m, k, k_conj, 0.25, eps, 0.9, 0.99),
      rtol=1e-6)


def _lion_k_path(reshaper, implicit, lam, lr, b1, b2, steps):
  """Deterministic Lion-K on a quadratic in float64: x_t, m_t, f(x_t)."""
  a = np.array([1.0, 2.0, 0.5])
  b = np.array([2.0, -3.0, 0.5])
  with jax.enable_x64(True):
    f = lambda x: 0.5 * jnp.sum(a * (x - b) ** 2)
    opt = lionx.lion_k(lr, reshaper, b1=b1, b2=b2, weight_decay=lam,
                       implicit=implicit)

    @jax.jit
    def step(x, state):
      # H at (x_t, m_t): m_t is the momentum before the step at x_t.
      h = metrics.lyapunov(f(x), x, state[0].mu, reshaper=reshaper,
                           weight_decay=lam, learning_rate=lr, b1=b1, b2=b2,
                           implicit=implicit)
      out = (x, state[0].mu, f(x), h)
      updates, state = opt.update(jax.grad(f)(x), state, x)
      return x + updates, state, out

    x = jnp.zeros(3, jnp.float64)
    state = opt.init(x)
    xs, ms, fs, hs = [], [], [], []
    for _ in range(steps):
      x, state, (x_t, m_t, f_t, h_t) = step(x, state)
      xs.append(np.asarray(x_t))
      ms.append(np.asarray(m_t))
      fs.append(float(f_t))
      hs.append(float(h_t))
    xs.append(np.asarray(x))
  return np.array(xs), np.array(ms), np.array(fs), np.array(hs), a.max()


@pytest.mark.parametrize('name', list(CASES))
@pytest.mark.parametrize('implicit', [True, False])
def test_lyapunov_one_step_inequality(name, implicit):
  """H_{t+1} - H_t <= (L eps^2 / 2)||grad K(c_t) + lam x_{t+1}||^2.

  For both schemes eps (grad K + lam x_{t+1}) = x_t - x_{t+1}, so the
  right-hand side is (L / 2)||x_{t+1} - x_t||^2 (Theorem 4.1 of Chen et al.,
  with -eps Delta_t <= 0 dropped). Deterministic Lion-K on a quadratic whose
  minimum (2, -3, .5) lies outside the box 1/lam = 2, in float64.
  """
  reshaper, k, k_conj = CASES[name]
  lam, lr, b1, b2 = 0.5, 0.02, 0.9, 0.99
  eps = lr if implicit else lr / (1 - lr * lam)
  xs, ms, fs, hs, smooth = _lion_k_path(reshaper, implicit, lam, lr, b1, b2,
                                        300)
  slack = 0.5 * smooth * np.sum(np.diff(xs, axis=0) ** 2, axis=1)[:-1]

  def excess(scale):
    h = np.array([_h_reference(fv, x, m, k, k_conj, lam, eps, b1, b2, scale)
                  for fv, x, m in zip(fs, xs, ms)])
    return np.max(np.diff(h) - slack)

  assert np.all(np.isfinite(hs))
  np.testing.assert_allclose(
      hs, [_h_reference(fv, x, m, k, k_conj, lam, eps, b1, b2)
           for fv, x, m in zip(fs, xs, ms)], rtol=1e-9)
  assert np.all(np.diff(hs) <= slack + 1e-10), np.max(np.diff(hs) - slack)
  assert hs[-1] < hs[0] - 1.0
  # The coefficient as printed by Chen et al. (scale 1, not eps) fails.
  assert excess(1.0) > 0.1


# Update statistics.

def test_update_stats_hand_computed():
  c = {'a': jnp.array([0.5, -1.0]), 'b': jnp.array([0.0, 2.0])}
  g = {'a': jnp.array([1.0, 1.0]), 'b': jnp.array([0.0, 3.0])}
  out = _both(metrics.update_stats, c, g)
  np.testing.assert_allclose(out, (0.75, 0.25, math.sqrt(3)), rtol=1e-6)
  u = {'a': jnp.array([3.0, 0.0]), 'b': jnp.array([0.0, -4.0])}
  np.testing.assert_allclose(metrics.update_stats(c, g, u).update_l2, 5.0)
  bf = metrics.update_stats(jnp.array([1.0, -1.0], jnp.bfloat16),
                            jnp.array([2.0, 2.0], jnp.bfloat16))
  np.testing.assert_allclose(bf, (0.5, 0.0, math.sqrt(2)), rtol=1e-6)
  assert bf.sign_agreement.dtype == jnp.float32


def test_update_stats_degenerate_cases():
  np.testing.assert_array_equal(metrics.update_stats({}, {}), (0, 0, 0))
  zero = metrics.update_stats(jnp.zeros(4), jnp.zeros(4))
  np.testing.assert_array_equal(zero, (1.0, 1.0, 0.0))
  nan = metrics.update_stats(jnp.array([NAN, 1.0]), jnp.array([1.0, 1.0]))
  assert math.isnan(float(nan.sign_agreement))
  assert math.isnan(float(nan.zero_sign_fraction))


# Bad input.

BAD = [
    (lambda: metrics.box_feasibility(jnp.ones(2), -0.1), ValueError,
     'weight_decay=-0.1'),
    (lambda: metrics.box_feasibility(jnp.ones(2), 0.1, tol=1.0), ValueError,
     'tol=1.0'),
    (lambda: metrics.box_feasibility(jnp.ones(2), 0.1, reshaper='lp'),
     TypeError, "reshaper='lp'"),
    (lambda: metrics.box_feasibility(jnp.ones(2), '0.1'), TypeError,
     "weight_decay='0.1'"),
    (lambda: metrics.kkt_residual(jnp.ones(2), jnp.ones(3), 0.1), ValueError,
     'grads has a leaf of shape'),
    (lambda: metrics.kkt_residual({'a': jnp.ones(2)}, {'b': jnp.ones(2)},
                                  0.1), ValueError, 'grads has tree structure'),
    (lambda: metrics.kkt_residual(jnp.ones(2), jnp.ones(2), -1.0), ValueError,
     'weight_decay=-1.0'),
    (lambda: metrics.update_stats(jnp.ones(2), jnp.ones(3)), ValueError,
     'grads has a leaf of shape'),
]
_H = dict(reshaper=lionx.sign_reshaper(), weight_decay=0.1,
          learning_rate=0.01, b1=0.9, b2=0.99)
BAD += [
    (lambda: metrics.lyapunov(1.0, jnp.ones(2), jnp.ones(2),
                              **{**_H, 'reshaper': None}), TypeError,
     'reshaper=None'),
    (lambda: metrics.lyapunov(1.0, jnp.ones(2), jnp.ones(2),
                              **{**_H, 'weight_decay': 0.0}), ValueError,
     'weight_decay=0.0'),
    (lambda: metrics.lyapunov(1.0, jnp.ones(2), jnp.ones(2),
                              **{**_H, 'b2': 1.0}), ValueError, 'b2=1.0'),
    (lambda: metrics.lyapunov(1.0, jnp.ones(2), jnp.ones(2),
                              **{**_H, 'learning_rate': 20.0}), ValueError,
     'learning_rate \\* weight_decay < 1'),
    (lambda: metrics.lyapunov(jnp.ones(2), jnp.ones(2), jnp.ones(2), **_H),
     ValueError, 'f_value has shape'),
    (lambda: metrics.lyapunov(1.0, jnp.ones(2), jnp.ones(3), **_H),
     ValueError, 'momentum has a leaf of shape'),
    (lambda: metrics.lyapunov(1.0, jnp.ones(2), jnp.ones(2), implicit=1,
                              **_H), TypeError, 'implicit=1'),
]


@pytest.mark.parametrize('call,error,text', BAD)
def test_bad_input(call, error, text):
  with pytest.raises(error, match=text):
    call()


def test_public_module():
  assert set(metrics.__all__) >= {
      'tree_size', 'tree_l1', 'tree_l2', 'tree_linf', 'NormRatio',
      'grad_norm_ratio', 'BoxFeasibility', 'box_feasibility', 'kkt_residual',
      'lyapunov', 'UpdateStats', 'update_stats'}
  for name in metrics.__all__:
    assert getattr(metrics, name).__doc__


# --- issue 27: mutation survivors of norms.py and metrics.py ---


@pytest.mark.parametrize('norm', ['tree_l1', 'tree_l2', 'tree_linf',
                                  'tree_lp'])
def test_norms_refuse_a_non_numeric_leaf_naming_tree(norm):
  """The diagnostics' norms take any numeric leaves; anything else is a
  TypeError that names the argument ``tree`` and the leaf's path."""
  from lionx._src import norms  # pylint: disable=g-import-not-at-top
  fn = {'tree_l1': metrics.tree_l1, 'tree_l2': metrics.tree_l2,
        'tree_linf': metrics.tree_linf,
        'tree_lp': lambda t: norms.tree_lp(t, 3.0)}[norm]
  tree = {'a': jnp.ones(2), 'b': 'text'}
  with pytest.raises(TypeError, match=r"^tree has a leaf at \['b'\] that "
                     'is not a numeric array'):
    fn(tree)
  # Integer and bool leaves are numbers to the diagnostics.
  assert float(fn({'a': jnp.array([3, -4], jnp.int32),
                   'b': np.array([True])})) > 0


def test_norms_of_an_empty_tree_are_float32_zeros_also_under_x64():
  """An empty tree has norm 0 (norms.py), accumulated in float32: also
  with jax_enable_x64, where a dtype-less zero would be float64."""
  from lionx._src import norms  # pylint: disable=g-import-not-at-top
  with jax.enable_x64(True):
    for value in (metrics.tree_l1({}), metrics.tree_linf({}),
                  norms.tree_lp({}, 3.0), norms.tree_lp({}, math.inf),
                  norms.tree_lp({}, 1.0)):
      assert value.dtype == jnp.float32 and float(value) == 0.0


def test_linf_as_an_lp_norm_with_empty_leaves():
  """p = inf (the gauge of lp_reshaper(1)): an empty leaf adds nothing."""
  from lionx._src import norms  # pylint: disable=g-import-not-at-top
  tree = {'a': jnp.array([1.0, -3.0]), 'e': jnp.zeros((0,))}
  assert float(norms.tree_lp(tree, math.inf)) == 3.0
  assert float(norms.lp(jnp.zeros((0, 2)), math.inf)) == 0.0
  assert float(lionx.lp_reshaper(1.0).gauge(tree)) == 3.0
