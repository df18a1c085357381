"""The rounding rule of ``lionx._src.interpolation``, from its docstrings.

``interpolate`` returns ``c = w m + (1 - w) g``, NaN where that is not
finite and 0 wherever

    |c| <= 3u (|w||m| + |1 - w||g|) + |w| e_m + 4t (1 + |w|),

``e_m`` a bound on the momentum's error (an array, or ``a|m| + b|g| + e``
from ``momentum_error_linear``). The references here evaluate that formula
in float64 and the float32 arithmetic of ``c`` with and without a fused
multiply-add (XLA may form one), and only judge entries on which every
candidate agrees. Inputs are built by cancellation so that ``|c|`` lands
on both sides of the bound, within a few tenths of it: a constant of the
bound changed by a third moves entries across.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lionx._src import interpolation

U32 = 2.0 ** -24
T32 = float(np.finfo(np.float32).tiny)
F32 = np.float32


def _candidates(m, g, w32, v32):
  """The float32 values c may take: w m + v g rounded as written, or with
  either product fused into the addition."""
  m64, g64 = m.astype(np.float64), g.astype(np.float64)
  wm, vg = F32(w32) * m, F32(v32) * g  # float32 products
  with np.errstate(over='ignore'):
    plain = (wm + vg).astype(np.float32)
    fused_m = (w32 * m64 + vg.astype(np.float64)).astype(np.float32)
    fused_g = (wm.astype(np.float64) + v32 * g64).astype(np.float32)
  return np.stack([plain, fused_m, fused_g])


def _bound(m, g, w, e_m=0.0):
  m64, g64 = np.abs(m.astype(np.float64)), np.abs(g.astype(np.float64))
  aw, a1w = abs(w), abs(1.0 - w)
  return 3 * U32 * (aw * m64 + a1w * g64) + aw * e_m + 4 * T32 * (1 + aw)


def _judge(out, cands, bound):
  """Checks ``out`` where the candidates agree; returns |c| / bound of the
  entries judged zero and of those judged kept."""
  mags = np.abs(cands.astype(np.float64))
  zero = np.all(mags <= bound * (1 - 1e-6), axis=0)
  kept = np.all(mags >= bound * (1 + 1e-6), axis=0)
  out = np.asarray(out)
  np.testing.assert_array_equal(out[zero], 0.0)
  assert np.all(np.any(out[kept] == cands[:, kept], axis=0))
  ratio = mags[0] / bound
  return ratio[zero], ratio[kept]


def _cancelling(rng, w, n=4000, spread=12):
  """m of mixed magnitudes and g = -w m / (1 - w) moved by a few ulps, so
  c is a few roundings of w m."""
  m = (rng.choice([-1.0, 1.0], n) * 10.0 ** rng.uniform(-3, 3, n))
  m = m.astype(np.float32)
  g = (-w / (1.0 - w) * m.astype(np.float64)).astype(np.float32)
  steps = rng.integers(-spread, spread + 1, n).astype(np.float32)
  g = g + steps * np.spacing(np.abs(g))
  return m, g


def _near(ratios, lo, hi):
  return int(np.sum((ratios > lo) & (ratios < hi)))


@pytest.mark.parametrize('w', [0.9, 0.25, 0.5, 0.99, 1.5, 2.0])
def test_zero_within_the_bound_and_kept_above(w):
  rng = np.random.default_rng(int(w * 100))
  m, g = _cancelling(rng, w)
  out = interpolation.interpolate(jnp.asarray(m), jnp.asarray(g), w)
  assert out.dtype == jnp.float32
  cands = _candidates(m, g, F32(w), F32(1.0 - w))
  zero, kept = _judge(out, cands, _bound(m, g, w))
  # Both sides within a third of the bound are populated, so 3u -> 2u or
  # 4u (or any constant moved by that much) changes judged entries.
  assert _near(zero, 0.67, 1.0) >= 20 and _near(kept, 1.0, 1.33) >= 20


def test_a_traced_weight_takes_the_same_rule():
  w = 0.9
  rng = np.random.default_rng(3)
  m, g = _cancelling(rng, w)
  out = jax.jit(interpolation.interpolate)(
      jnp.asarray(m), jnp.asarray(g), jnp.float32(w))
  w32 = F32(w)
  cands = _candidates(m, g, w32, F32(1.0) - w32)  # 1 - w in float32
  zero, kept = _judge(out, cands, _bound(m, g, float(w32)))
  assert _near(zero, 0.67, 1.0) >= 20 and _near(kept, 1.0, 1.33) >= 20


@pytest.mark.parametrize('w', [0.5, 0.9, 1.5])
def test_the_underflow_term(w):
  # m = 0: c = (1 - w) g with |c| around 4t(1 + |w|), where 3u|1 - w||g|
  # is 1e-6 of it; 4t -> 3t or 5t moves about a quarter of the entries.
  rng = np.random.default_rng(0)
  target = 4 * T32 * (1 + abs(w)) * rng.uniform(0.5, 1.5, 2000)
  g = (target / abs(1.0 - w) * rng.choice([-1.0, 1.0], 2000))
  g = g.astype(np.float32)
  m = np.zeros_like(g)
  out = interpolation.interpolate(jnp.asarray(m), jnp.asarray(g), w)
  cands = _candidates(m, g, F32(w), F32(1.0 - w))
  zero, kept = _judge(out, cands, _bound(m, g, w))
  assert _near(zero, 0.76, 1.0) >= 100 and _near(kept, 1.0, 1.24) >= 100


@pytest.mark.parametrize('form', ['array', 'linear'])
def test_the_momentum_error_widens_the_bound(form):
  w = 0.9
  rng = np.random.default_rng(7)
  m, g = _cancelling(rng, w, spread=40)
  if form == 'array':
    e_m = (5 * U32 * np.abs(m.astype(np.float64)) + 1e-30)
    out = interpolation.interpolate(
        jnp.asarray(m), jnp.asarray(g), w,
        m_error=jnp.asarray(e_m, jnp.float32))
  else:
    a, b, e = 5 * U32, 2 * U32, 1e-30
    e_m = (a * np.abs(m.astype(np.float64))
           + b * np.abs(g.astype(np.float64)) + e)
    out = interpolation.interpolate(
        jnp.asarray(m), jnp.asarray(g), w, m_error_linear=(a, b, e))
  cands = _candidates(m, g, F32(w), F32(1.0 - w))
  bound = _bound(m, g, w, e_m)
  zero, kept = _judge(out, cands, bound)
  # The error term is most of the bound: dropping it, or counting it
  # without the factor |w|, moves judged entries.
  assert _near(zero, 0.67, 1.0) >= 20 and _near(kept, 1.0, 1.25) >= 20
  without = _bound(m, g, w)
  assert np.median(without / bound) < 0.6


def test_not_finite_is_nan_and_exact_zero_is_zero():
  m = jnp.array([jnp.inf, 1.0, jnp.nan, 0.0, 0.0, 3e38], jnp.float32)
  g = jnp.array([1.0, -jnp.inf, 0.0, 0.0, -0.0, 3e38], jnp.float32)
  out = np.asarray(interpolation.interpolate(m, g, 0.5))
  assert np.all(np.isnan(out[:3]))
  np.testing.assert_array_equal(out[3:5], 0.0)
  assert out[5] == F32(3e38)  # 0.5 m + 0.5 g, no overflow


@pytest.mark.parametrize('w,m,g,c', [
    # 1.5 m and 0.5 g overflow float32 on their own; c does not.
    (1.5, 3e38, 3e38, 3e38),
    (2.0, 3e38, 3e38, 3e38),
    (1.5, -2.5e38, -1e38, -3.25e38),
])
def test_a_weight_above_one_does_not_overflow_where_c_does_not(w, m, g, c):
  out = interpolation.interpolate(
      jnp.asarray([m], jnp.float32), jnp.asarray([g], jnp.float32), w)
  np.testing.assert_allclose(np.asarray(out), [c], rtol=4 * U32)


def test_unit_roundoff():
  assert interpolation.unit_roundoff(jnp.float32) == 2.0 ** -24
  assert interpolation.unit_roundoff(jnp.bfloat16) == 2.0 ** -8
  assert interpolation.unit_roundoff(jnp.float16) == 2.0 ** -11
  assert interpolation.unit_roundoff('float64') == 2.0 ** -53


@pytest.mark.parametrize('b2', [0.0, 0.5, 0.99, 1.0])
@pytest.mark.parametrize('storage', [jnp.float32, jnp.bfloat16, jnp.float16])
def test_momentum_error_linear_is_its_formula(b2, storage):
  # a = 4u + 1.01 u_s, b = 7u (1 - b2), e = 2t + s_s; u_s = s_s = 0 when
  # the storage is the compute dtype.
  a, b, e = interpolation.momentum_error_linear(b2, jnp.float32, storage)
  same = storage == jnp.float32
  u_s = 0.0 if same else float(jnp.finfo(storage).eps) / 2
  s_s = 0.0 if same else float(jnp.finfo(storage).smallest_subnormal) / 2
  assert a == 4 * U32 + 1.01 * u_s
  assert b == 7 * U32 * (1 - b2)
  assert e == 2 * T32 + s_s


@pytest.mark.parametrize('storage', [jnp.float32, jnp.bfloat16])
def test_momentum_error_bounds_the_stored_momentum(storage):
  """|m_k stored - m_k exact| <= a|m_k| + b|g| + e, from m_k and g alone."""
  rng = np.random.default_rng(11)
  n = 20000
  scale = 10.0 ** rng.uniform(-30, 30, n)
  m_old = (scale * rng.standard_normal(n)).astype(storage)
  g = (scale * rng.standard_normal(n) * 10.0 ** rng.uniform(-3, 3, n))
  g = jnp.asarray(g, jnp.float32)
  for b2 in (0.9, 0.99, 0.5):
    m32 = jnp.asarray(m_old, jnp.float32)
    stored = (b2 * m32 + (1.0 - b2) * g).astype(storage)
    exact = (b2 * np.asarray(m32, np.float64)
             + (1.0 - b2) * np.asarray(g, np.float64))
    m_new = jnp.asarray(stored, jnp.float32)
    bound = np.asarray(interpolation.momentum_error(
        m_new, g, b2, storage), np.float64)
    err = np.abs(np.asarray(m_new, np.float64) - exact)
    assert np.all(err <= bound)
    # Not vacuous: the bound is within 40x of the worst error seen.
    assert np.max(err / bound) > 1 / 40


@pytest.mark.parametrize('b1,b2,a', [
    (0.9, 0.99, 0.9 / 0.99),
    (0.95, 0.98, 0.95 / 0.98),
    (0.5, 0.5, 1.0),        # b1 = b2: c = m_k
    (0.0, 0.99, 0.0),       # c = g
    (0.6, 0.3, 2.0),        # b1 = 2 b2 exactly: still from m_k
    (1.0, 1.0, 1.0),
    (1, 1, 1.0),            # Python ints are numbers too
])
def test_c_from_new_coefficient_where_it_is_used(b1, b2, a):
  assert interpolation.c_from_new_coefficient(b1, b2) == a


@pytest.mark.parametrize('b1,b2', [
    (0.61, 0.3),    # b1 > 2 b2: rounding amplified
    (0.9, 0.0),     # b2 = 0: no new momentum to take c from
    (0.0, 0.0),
    (1.0, 0.4),
])
def test_c_from_new_coefficient_where_it_is_not(b1, b2):
  assert interpolation.c_from_new_coefficient(b1, b2) is None


def test_c_from_new_coefficient_of_traced_betas_is_none():
  seen = []

  @jax.jit
  def f(b1, b2):
    seen.append(interpolation.c_from_new_coefficient(b1, b2))
    seen.append(interpolation.c_from_new_coefficient(0.9, b2))
    seen.append(interpolation.c_from_new_coefficient(b1, 0.99))
    return b1

  f(0.9, 0.99)
  assert seen == [None, None, None]
