"""lionx.theory against hand-computed values and Dong, Li, Lin's algebra."""

import math

import hypothesis
import hypothesis.strategies as st
import numpy as np
import pytest

from lionx import theory

positive = st.floats(1e-2, 1e2)


def test_paper_schedule_hand_computed():
  s = theory.paper_schedule(K=10_000, d=4, c1=1.0, c2=2.0, c3=5.0)
  assert s == theory.PaperSchedule(b1=0.99, b2=0.98, learning_rate=0.0025)
  s = theory.paper_schedule(K=16, d=1, c1=4.0, c2=4.0, c3=8.0)
  assert s.b1 == 0.0 and s.b2 == 0.0 and s.learning_rate == 1.0


def test_corollary3_constants_hand_computed():
  c = theory.corollary3_constants(L=2.0, sigma=1.0, f_gap=8.0)
  assert c == (4.0, 4.0, 4.0, 16.0)
  # sigma^6 / (L Delta)^3 wins when the noise is large: 4^6 / 1 = 4096.
  c = theory.corollary3_constants(L=1.0, sigma=4.0, f_gap=1.0)
  assert c.min_steps == 4096.0
  np.testing.assert_allclose(c.c1, 0.25)
  np.testing.assert_allclose(c.c3, 1 / 2)  # 1 / (1 * 2)


@pytest.mark.filterwarnings('error')  # and without a floating-point warning
def test_corollary3_constants_past_float64_range():
  """The recomputation in factors, where an intermediate leaves float64's
  range, with each term of min_steps deciding once."""
  # sigma^6 = 1e360 overflows; sigma^6 / (L Delta)^3 = 1e360 / 1e300 wins.
  c = theory.corollary3_constants(L=1e100, sigma=1e60, f_gap=1.0)
  np.testing.assert_allclose(c, (1e-10, 1e-10, 1e-55, 1e60), rtol=1e-12)
  # sigma^2 = 1e-400 underflows; L Delta / sigma^2 = 1e-300 / 1e-400 wins.
  c = theory.corollary3_constants(L=1e-150, sigma=1e-200, f_gap=1e-150)
  np.testing.assert_allclose(c, (1e50, 1e50, 1e25, 1e100), rtol=1e-12)
  # L Delta = 1e400: min_steps = c^2 = 1e400 is past the range itself.
  c = theory.corollary3_constants(L=1e200, sigma=1.0, f_gap=1e200)
  np.testing.assert_allclose(c[:3], (1e200, 1e200, 1e100), rtol=1e-12)
  assert c.min_steps == math.inf
  # c = 1e-300 / 1e300 underflows to 0: min_steps = c^-6 is inf.
  c = theory.corollary3_constants(L=1e-300, sigma=1e300, f_gap=1e-300)
  assert c.c1 == 0.0 and c.min_steps == math.inf
  np.testing.assert_allclose(c.c3, 1e-300, rtol=1e-12)


def test_corollary3_min_steps_each_term_near_the_crossover():
  """The two terms of min_steps are equal at L Delta = sigma^2 (c1 = 1)."""
  # L Delta / sigma^2 = 2: c1^2 = 2 beats c1^-6 = 1/8.
  assert theory.corollary3_constants(2.0, 1.0, 1.0).min_steps == 2.0
  # L Delta / sigma^2 = 1/4: c1^-6 = 64 beats c1^2 = 1/4.
  np.testing.assert_allclose(
      theory.corollary3_constants(1.0, 2.0, 1.0).min_steps, 64.0)
  # At the crossover L Delta = sigma^2 = 16 both terms are exactly 1, and
  # c3 = 8^(3/4) / (2^(1/4) 4^(1/2)) = 2: exact inputs, exact results.
  assert theory.corollary3_constants(2.0, 4.0, 8.0) == (1.0, 1.0, 2.0, 1.0)


def test_theorem2_terms_hand_computed():
  t = theory.theorem2_terms(d=4, K=16, L=1, sigma=1, f_gap=1, c1=1, c2=1,
                            c3=1)
  # sqrt(d) = 2, K^(1/4) = 2, K^(1/2) = 4, K^(3/4) = 8.
  assert t == (1.0, 1.0, 4.0, 6.0, 0.5)
  assert theory.theorem2_bound(4, 16, 1, 1, 1, 1, 1, 1) == 12.5
  assert theory.theorem4_bound(4, 16, 1, 1, 1, 1, 1, 1) == 12.5
  t = theory.theorem2_terms(d=1, K=1, L=2, sigma=3, f_gap=5, c1=1, c2=4, c3=2)
  np.testing.assert_allclose(t, (2.5, 1.5, 4.0, 18.0, 8.0))


def test_corollary_bound_hand_computed_and_exponent():
  assert theory.corollary3_bound(4, 16, 2.0, 1.0, 8.0) == 30.0
  assert theory.corollary5_bound(4, 16, 2.0, 1.0, 8.0) == 30.0
  # The exponent is 1/4 (not the journal version's 1/2): 16x steps halve it.
  # sigma^2 L Delta = 4 * 2 * 8 = 64, 64^(1/4) = 2 sqrt(2); 81^(-1/4) = 1/3.
  np.testing.assert_allclose(theory.corollary3_bound(9, 81, 2.0, 2.0, 8.0),
                             15 * 2 * math.sqrt(2), rtol=1e-12)
  # Each of sigma^2, L and Delta to the power 1/4 on its own.
  for L, sigma, gap in ((16.0, 1.0, 1.0), (1.0, 4.0, 1.0), (1.0, 1.0, 16.0)):
    assert theory.corollary3_bound(1, 1, L, sigma, gap) == 30.0
  ratio = (theory.corollary3_bound(9, 1600, 7, 1.4, 50)
           / theory.corollary3_bound(9, 100, 7, 1.4, 50))
  np.testing.assert_allclose(ratio, 0.5)


def test_bounds_accept_arrays_of_k():
  k = np.array([1, 16, 256])
  out = theory.corollary3_bound(1, k, 1.0, 1.0, 1.0)
  np.testing.assert_allclose(out, [15.0, 7.5, 3.75])
  terms = theory.theorem2_terms(1, k, 1, 1, 1, 1, 1, 1)
  assert all(np.shape(t) == (3,) for t in terms)
  assert isinstance(theory.corollary3_bound(1, 16, 1, 1, 1), float)


@hypothesis.given(positive, positive, positive, st.integers(1, 10 ** 6),
                  st.floats(1.0, 100.0))
def test_theorem2_with_corollary3_constants_is_below_corollary3(
    L, sigma, gap, d, k_factor):
  """Corollary 3 is Theorem 2 with its constants, for K >= min_steps."""
  c = theory.corollary3_constants(L, sigma, gap)
  k = max(c.min_steps, 1.0) * k_factor
  thm = theory.theorem2_bound(d, k, L, sigma, gap, c.c1, c.c2, c.c3)
  cor = theory.corollary3_bound(d, k, L, sigma, gap)
  assert thm <= cor * (1 + 1e-9)
  # Three of the five terms equal 1, 4 and 6 times the corollary's unit.
  unit = cor / 15
  terms = theory.theorem2_terms(d, k, L, sigma, gap, c.c1, c.c2, c.c3)
  np.testing.assert_allclose(
      [terms.initial_gap, terms.smoothness, terms.momentum],
      [unit, 4 * unit, 6 * unit], rtol=1e-9)


def test_theorem2_can_exceed_corollary3_below_min_steps():
  c = theory.corollary3_constants(1.0, 10.0, 1.0)  # min_steps = 1e6
  k = 10.0
  assert (theory.theorem2_bound(1, k, 1.0, 10.0, 1.0, c.c1, c.c2, c.c3)
          > theory.corollary3_bound(1, k, 1.0, 10.0, 1.0))


def test_empirical_rate_constant_hand_computed():
  # A = (4, 3): max(4 * 1, 3 * 2^(1/4)) = 4; / sqrt(4) for Lion.
  assert theory.empirical_rate_constant([4.0, 2.0], d=4) == 2.0
  assert theory.empirical_rate_constant([4.0, 2.0], kind='sgd') == 4.0
  # A = (1, 1, 1, 1): the max is at K = 4: 4^(1/4) = sqrt(2).
  np.testing.assert_allclose(
      theory.empirical_rate_constant(np.ones(4), kind='sgd'), math.sqrt(2))
  # Repeats are averaged first: mean of (2, 0) and (0, 2) is (1, 1).
  np.testing.assert_allclose(
      theory.empirical_rate_constant([[2.0, 0.0], [0.0, 2.0]], d=1),
      2 ** 0.25)
  # (repeats, K) = (2, 3): the mean over the repeats, (2, 2, 2), then the
  # max at K = 3: 2 * 3^(1/4) (over the steps it would be (2, 2): 2 * 2^(1/4)).
  np.testing.assert_allclose(
      theory.empirical_rate_constant([[4.0, 2.0, 0.0], [0.0, 2.0, 4.0]], d=1),
      2 * 3 ** 0.25)
  assert math.isnan(theory.empirical_rate_constant([1.0, math.nan], d=1))
  # A NaN (a diverged run) is reported as NaN before any other check.
  assert math.isnan(theory.empirical_rate_constant([math.nan, -1.0], d=1))
  assert theory.empirical_rate_constant([0.0, 0.0], d=1) == 0.0


@hypothesis.given(st.lists(st.floats(0, 1e3), min_size=1, max_size=50),
                  st.integers(1, 10 ** 6))
def test_empirical_rate_constant_is_the_smallest(norms, d):
  c = theory.empirical_rate_constant(norms, d)
  k = np.arange(1, len(norms) + 1)
  running = np.cumsum(norms) / k
  bound = c * math.sqrt(d) * k ** -0.25
  assert np.all(running <= bound * (1 + 1e-12) + 1e-300)
  if c > 0:
    assert np.any(np.isclose(running, bound, rtol=1e-9))


def test_lion_from_adamw():
  s = theory.lion_from_adamw(3e-4, 0.01, factor=10)
  np.testing.assert_allclose(s, (3e-5, 0.1, 10.0))
  s = theory.lion_from_adamw(1e-3, 0.1)
  np.testing.assert_allclose(s, (1e-3 / 3, 0.3, 1 / 0.3))
  np.testing.assert_allclose(s.learning_rate * s.weight_decay, 1e-4)
  assert theory.lion_from_adamw(1e-3, 0.0).box == math.inf


BAD = [
    (lambda: theory.paper_schedule(0, 1, 1, 1, 1), ValueError, 'K=0'),
    (lambda: theory.paper_schedule(10, 0.5, 1, 1, 1), ValueError, 'd=0.5'),
    (lambda: theory.paper_schedule(10, 1, 0, 1, 1), ValueError, 'c1=0'),
    (lambda: theory.paper_schedule(10, 1, 1, -1, 1), ValueError, 'c2=-1'),
    (lambda: theory.paper_schedule(10, 1, 1, 1, math.nan), ValueError,
     'c3=nan'),
    (lambda: theory.paper_schedule(10, 1, 4, 1, 1), ValueError,
     'c1=4.0 with K=10.0'),
    (lambda: theory.paper_schedule(10, 1, 1, 4, 1), ValueError,
     'c2=4.0 with K=10.0'),
    (lambda: theory.paper_schedule(10, [1, 4], 1, 1, 1), ValueError,
     r'd=array\(\[1\., 4\.\]\): expected scalars'),
    (lambda: theory.paper_schedule(True, 1, 1, 1, 1), TypeError, 'K=True'),
    (lambda: theory.paper_schedule('10', 1, 1, 1, 1), TypeError, "K='10'"),
    (lambda: theory.corollary3_constants(0, 1, 1), ValueError, 'L=0'),
    (lambda: theory.corollary3_constants(1, -1, 1), ValueError, 'sigma=-1'),
    (lambda: theory.corollary3_constants(1, 1, 0.0), ValueError, 'f_gap=0.0'),
    (lambda: theory.corollary3_bound(0, 10, 1, 1, 1), ValueError, 'd=0'),
    (lambda: theory.corollary3_bound(1, 0.5, 1, 1, 1), ValueError, 'K=0.5'),
    (lambda: theory.corollary3_bound(1, [10, 0], 1, 1, 1), ValueError,
     r'K=\[10, 0\]'),
    (lambda: theory.corollary5_bound(1, 10, 1, 1, -2), ValueError,
     'f_gap=-2'),
    (lambda: theory.theorem2_bound(1, 10, 1, 1, 1, 1, 1, 0), ValueError,
     'c3=0'),
    (lambda: theory.theorem4_bound(1, 0, 1, 1, 1, 1, 1, 1), ValueError,
     'K=0'),
    (lambda: theory.theorem2_terms(1, 10, -1, 1, 1, 1, 1, 1), ValueError,
     'L=-1'),
    (lambda: theory.theorem2_terms(0, 10, 1, 1, 1, 1, 1, 1), ValueError,
     'd=0: expected'),
    (lambda: theory.theorem2_terms([1, 4], 10, 1, 1, 1, 1, 1, 1), ValueError,
     r'd=array\(\[1\., 4\.\]\): expected a scalar'),
    (lambda: theory.theorem2_terms(1, 10, 1, 0, 1, 1, 1, 1), ValueError,
     'sigma=0'),
    (lambda: theory.theorem2_terms(1, 10, 1, 1, -3, 1, 1, 1), ValueError,
     'f_gap=-3'),
    (lambda: theory.theorem2_terms(1, 10, 1, 1, 1, 0, 1, 1), ValueError,
     'c1=0'),
    (lambda: theory.theorem2_terms(1, 10, 1, 1, 1, 1, -2, 1), ValueError,
     'c2=-2'),
    (lambda: theory.corollary3_bound([1, 4], 10, 1, 1, 1), ValueError,
     r'd=array\(\[1\., 4\.\]\): expected a scalar'),
    (lambda: theory.corollary3_bound(1, 10, -1, 1, 1), ValueError, 'L=-1'),
    (lambda: theory.corollary3_bound(1, 10, 1, 0, 1), ValueError, 'sigma=0'),
    (lambda: theory.empirical_rate_constant([1.0], d=[1, 4]), ValueError,
     r'd=array\(\[1\., 4\.\]\): expected a scalar'),
    (lambda: theory.empirical_rate_constant([], d=1), ValueError,
     'norms is empty'),
    (lambda: theory.empirical_rate_constant([1.0], d=0), ValueError, 'd=0'),
    (lambda: theory.empirical_rate_constant([1.0]), ValueError, 'd=None'),
    (lambda: theory.empirical_rate_constant([1.0, -1.0], d=1), ValueError,
     'negative'),
    (lambda: theory.empirical_rate_constant([1.0], d=1, kind='adam'),
     ValueError, "kind='adam'"),
    (lambda: theory.empirical_rate_constant(np.ones((2, 2, 2)), d=1),
     ValueError, 'shape'),
    (lambda: theory.empirical_rate_constant(['a'], d=1), TypeError, 'norms='),
    (lambda: theory.lion_from_adamw(0.0, 0.1), ValueError,
     'learning_rate=0.0'),
    (lambda: theory.lion_from_adamw(1e-3, -0.1), ValueError,
     'weight_decay=-0.1'),
    (lambda: theory.lion_from_adamw(1e-3, 0.1, factor=0.5), ValueError,
     'factor=0.5'),
]


@pytest.mark.parametrize('call,error,text', BAD)
def test_bad_input(call, error, text):
  with pytest.raises(error, match=text):
    call()


def test_public_module():
  for name in theory.__all__:
    assert getattr(theory, name).__doc__


@pytest.mark.filterwarnings('error')
def test_theorem2_terms_past_float64_range_are_inf_without_warnings():
  terms = theory.theorem2_terms(d=4, K=16, L=1e300, sigma=1e300,
                                f_gap=1e300, c1=1.0, c2=1.0, c3=1e-300)
  # f_gap sqrt(d) / (c3 K^(1/4)) = 1e600 and 2 sigma sqrt(d) / (c2 sqrt K)
  # = 1e300: the first leaves the range, the second does not.
  assert terms.initial_gap == math.inf
  assert terms.noise == pytest.approx(1e300)
  assert terms.smoothness == pytest.approx(4.0)  # 4 L c3 sqrt(d) / (c2 q)
