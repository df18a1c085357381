"""Issue 11: lionx as a true drop-in for optax.lion, with no wrong step.

Each section is one item of the issue: the positional order, the rounding
rule for c_k, inject_hyperparams with narrow params, NaN and huge values in
norms, masks and integer leaves, scale_by_lion's output, the weight-decay
conventions and complex leaves.
"""

import fractions
import inspect

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lionx
from lionx._src.realview import view_as_real
from tests import reference

U32 = 2.0 ** -24
U16 = 2.0 ** -8  # bfloat16


def _run(opt, params, grads_seq):
  state = opt.init(params)
  update = jax.jit(opt.update)
  for g in grads_seq:
    updates, state = update(g, state, params)
    params = optax.apply_updates(params, updates)
  return params, state


def _tree(rng, scale=1.0):
  return {'w': (scale * rng.standard_normal((6, 5))).astype(np.float32),
          'b': (scale * rng.standard_normal(5)).astype(np.float32)}


# 1. Positional arguments: optax's order.

OPTAX_ORDER = ['learning_rate', 'b1', 'b2', 'mu_dtype', 'weight_decay', 'mask']


@pytest.mark.parametrize('factory,order', [
    (lionx.lion, OPTAX_ORDER),
    (lionx.cautious_lion, OPTAX_ORDER),
    (lionx.distributed_lion, OPTAX_ORDER),
    (lionx.lion_k, OPTAX_ORDER[:1] + ['reshaper'] + OPTAX_ORDER[1:]),
])
def test_positional_order_is_optax(factory, order):
  params = inspect.signature(factory).parameters.values()
  positional = [p.name for p in params
                if p.kind == inspect.Parameter.POSITIONAL_OR_KEYWORD]
  assert positional == order
  assert [p.name for p in inspect.signature(optax.lion).parameters.values()
          ][:6] == OPTAX_ORDER


def test_positional_call_is_optax_lion_bit_for_bit():
  """lion(lr, b1, b2, mu_dtype, wd, mask) as optax.lion, 300 steps."""
  rng = np.random.default_rng(0)
  params = _tree(rng)
  grads = [_tree(rng) for _ in range(300)]
  mask = {'w': True, 'b': False}
  sched = optax.cosine_decay_schedule(1e-2, 300)
  got, _ = _run(lionx.lion(sched, 0.9, 0.95, None, 0.3, mask), params, grads)
  want, _ = _run(optax.lion(sched, 0.9, 0.95, None, 0.3, mask), params, grads)
  chex.assert_trees_all_equal(got, want)


def test_dtype_in_fourth_place_is_the_momentum_dtype():
  params = {'w': jnp.ones(4)}
  opt = lionx.lion(1e-3, 0.9, 0.99, jnp.bfloat16)
  state = opt.init(params)
  assert state[0].mu['w'].dtype == jnp.bfloat16
  updates, _ = opt.update({'w': jnp.ones(4)}, state, params)
  # The default weight decay 1e-3, not bfloat16(count).
  np.testing.assert_allclose(updates['w'], -1e-3 * (1 + 1e-3), rtol=1e-6)
  updates, _ = lionx.lion(0.1, 0.9, 0.99, None, 0.1).update(
      {'w': jnp.zeros(4)}, opt.init(params), params)
  np.testing.assert_allclose(updates['w'], -0.1 * 0.1, rtol=1e-6)


@pytest.mark.parametrize('make,error,text', [
    (lambda: lionx.lion(1e-3, 0.9, 0.99, 0.1), TypeError, 'mu_dtype=0.1'),
    (lambda: lionx.lion(1e-3, 0.9, 0.99, None, jnp.bfloat16), TypeError,
     'weight_decay=.*the type bfloat16'),
    (lambda: lionx.lion(jnp.float32), TypeError, 'learning_rate=.*the type'),
    (lambda: lionx.lion(1e-3, weight_decay=np.dtype('float32')), TypeError,
     'weight_decay=.*the dtype float32'),
    (lambda: lionx.lion(1e-3, weight_decay=lambda: 0.1), TypeError,
     r'weight_decay=.*not schedule\(count\)'),
    (lambda: lionx.lion(1e-3, b1=lambda count: 0.9), TypeError,
     'b1=.*a callable'),
    (lambda: lionx.lion(1e-3, weight_decay=True), TypeError,
     'weight_decay=True.*a bool'),
    (lambda: lionx.lion(True), TypeError, 'learning_rate=True.*a bool'),
    (lambda: lionx.lion(1e-3, b2=jnp.array(True)), TypeError, 'b2='),
    (lambda: lionx.lion(1e-3, b1=0.9 + 0j), TypeError, 'b1='),
    (lambda: lionx.lion(1e-3, mask=0.1), TypeError, 'mask=0.1'),
    (lambda: lionx.lion(1e-3, mu_dtype=jnp.int32), TypeError,
     'mu_dtype=.*int32'),
    (lambda: lionx.lion_k(1e-3, None, 0.9, 0.99, None, jnp.bfloat16),
     TypeError, 'weight_decay='),
    (lambda: lionx.cautious_lion(1e-3, 0.9, 0.99, 0.5), TypeError,
     'mu_dtype=0.5'),
    (lambda: lionx.distributed_lion(1e-3, 0.9, 0.99, 0.5), TypeError,
     'mu_dtype=0.5'),
    (lambda: lionx.add_decoupled_weight_decay(jnp.bfloat16), TypeError,
     'weight_decay='),
    (lambda: lionx.cautious_lion(1e-3, reshaper='sign'), TypeError,
     "reshaper='sign'"),
])
def test_no_dtype_class_or_callable_where_a_number_goes(make, error, text):
  with pytest.raises(error, match=text):
    make()


def test_schedule_that_returns_no_scalar_is_named():
  params = jnp.ones(3)
  opt = lionx.lion(1e-3, weight_decay=lambda count: jnp.ones(3))
  with pytest.raises(TypeError, match='weight_decay=.*returned'):
    opt.update(jnp.ones(3), opt.init(params), params)
  opt = lionx.lion(lambda count: 'fast')
  with pytest.raises(TypeError, match='learning_rate=.*returned'):
    opt.update(jnp.ones(3), opt.init(params), params)


# 2. No step where Algorithm 1's c is 0; Algorithm 1's sign above rounding.

D, STEPS = 8, 6
MODES = 6  # per coordinate: 0, random, c ~ 0, m_k ~ 0, tiny, huge.


def _gradient(mode, rng, m, b1, b2):
  scale = 10.0 ** rng.uniform(-3, 3, D)
  g = scale * rng.standard_normal(D)
  with np.errstate(divide='ignore', invalid='ignore'):
    cancel_c = -b1 / (1 - b1) * m if b1 < 1 else g
    cancel_m = -b2 / (1 - b2) * m if b2 < 1 else g
  g = np.select([mode == 0, mode == 2, mode == 3, mode == 4, mode == 5],
                [0.0, cancel_c, cancel_m, 1e-30 * g, 1e30 * g], g)
  return np.where(np.isfinite(g), g, 0.0).astype(np.float32)


def _exact_c(b1, m, g):
  b1 = fractions.Fraction(b1)
  return [b1 * fractions.Fraction(float(mi))
          + (1 - b1) * fractions.Fraction(float(gi)) for mi, gi in zip(m, g)]


unit = st.one_of(st.sampled_from([0.0, 1.0, 0.5, 0.25, 0.75, 0.9, 0.99]),
                 st.floats(0.0, 1.0))


@pytest.mark.slow
@settings(max_examples=60)
@given(unit, unit, st.sampled_from(['free', 'equal', 'b1>b2']),
       st.sampled_from([None, jnp.bfloat16, 'inject']),
       st.integers(0, 2 ** 31 - 1))
def test_sign_is_algorithm1_above_rounding_and_zero_at_zero(
    b1, b2, relation, mu_dtype, seed):
  if relation == 'equal':
    b2 = b1
  elif relation == 'b1>b2':
    b1, b2 = max(b1, b2), min(b1, b2)
  rng = np.random.default_rng(seed)
  modes = rng.integers(0, MODES, (STEPS, D))
  if mu_dtype == 'inject':  # traced betas, rounded to float32 by optax.
    opt = optax.inject_hyperparams(lionx.lion)(
        1.0, b1=b1, b2=b2, weight_decay=0.0)
    b1 = float(np.float32(b1))
    u_mu = U32
  else:
    opt = lionx.lion(1.0, b1=b1, b2=b2, mu_dtype=mu_dtype, weight_decay=0.0)
    u_mu = U16 if mu_dtype is not None else U32
  params = jnp.zeros(D)
  state = opt.init(params)
  update = jax.jit(opt.update)

  def momentum(state):
    mu = optax.tree_utils.tree_get(state, 'mu')
    return np.asarray(jnp.asarray(mu, jnp.float32), np.float64)

  for k in range(STEPS):
    m = momentum(state)
    g = _gradient(modes[k], rng, m, b1, b2)
    exact = _exact_c(b1, m, g)
    updates, state = update(jnp.asarray(g), state, params)
    step = -np.asarray(updates)  # sign(c_k): learning rate 1, no decay.
    tol = (64 * U32 + 8 * u_mu) * (np.abs(m) + np.abs(g)) + 1e-36
    for i in range(D):
      if exact[i] == 0:
        assert step[i] == 0, (k, i, m[i], g[i], step[i])
      elif abs(float(exact[i])) > tol[i]:
        assert step[i] == np.sign(float(exact[i])), (k, i, m[i], g[i])


def test_b1_one_makes_no_first_step():
  rng = np.random.default_rng(1)
  params = jnp.zeros(1000)
  g = jnp.asarray(rng.standard_normal(1000), jnp.float32)
  for opt in [lionx.lion(1e-3, b1=1.0, b2=0.99, weight_decay=0.0),
              lionx.lion_k(1e-3, lionx.lp_reshaper(3), b1=1.0, b2=0.5,
                           weight_decay=0.0),
              lionx.cautious_lion(1e-3, b1=1.0, b2=0.9, weight_decay=0.0),
              optax.lion(1e-3, b1=1.0, b2=0.99, weight_decay=0.0)]:
    updates, state = jax.jit(opt.update)(g, opt.init(params), params)
    np.testing.assert_array_equal(updates, 0.0)
  # Second step with b1 = 1: c_2 = m_1 = 0.01 g_1, so sign(g_1).
  opt = lionx.lion(1.0, b1=1.0, b2=0.99, weight_decay=0.0)
  state = opt.init(params)
  _, state = opt.update(g, state, params)
  updates, _ = opt.update(-g, state, params)
  np.testing.assert_array_equal(updates, -np.sign(g))


def test_sparse_gradients_leave_zero_momentum_still():
  """b1 = 1: a coordinate whose momentum is exactly 0 does not move."""
  params = jnp.zeros(6)
  opt = lionx.lion(1.0, b1=1.0, b2=0.9, weight_decay=0.0)
  state = opt.init(params)
  g1 = jnp.array([1.0, 0.0, -2.0, 0.0, 0.0, 3.0])
  _, state = opt.update(g1, state, params)
  updates, _ = opt.update(jnp.array([5.0, -7.0, 1.0, 3.0, 0.0, -1.0]),
                          state, params)
  np.testing.assert_array_equal(updates, [-1.0, 0.0, 1.0, 0.0, 0.0, -1.0])


# 3. inject_hyperparams with narrow params (hyperparameters become bf16).

@pytest.mark.slow
@pytest.mark.parametrize('dtype', [jnp.bfloat16, jnp.float16, jnp.float32])
@pytest.mark.parametrize('jit', [False, True])
@pytest.mark.parametrize('factory,kwargs', [
    (lionx.lion, {}),
    (lionx.cautious_lion, {}),
    (lionx.lion_k, {'reshaper': lionx.lp_reshaper(2)}),
    # An injected learning rate is an array: the peak is required (#23).
    (lionx.lion, {'weight_decay_convention': 'independent',
                  'peak_learning_rate': 0.1}),
])
def test_inject_hyperparams_with_narrow_params(dtype, jit, factory, kwargs):
  opt = optax.inject_hyperparams(factory)(
      learning_rate=0.1, b1=0.9, b2=0.99, weight_decay=0.01, **kwargs)
  params = jnp.array([1.0, -1.0, 0.5], dtype)
  state = opt.init(params)
  update = jax.jit(opt.update) if jit else opt.update
  for _ in range(2):
    updates, state = update(jnp.array([1.0, 2.0, -1.0], dtype), state, params)
    params = optax.apply_updates(params, updates)
  assert params.dtype == dtype and updates.dtype == dtype
  assert np.all(np.isfinite(np.asarray(params, np.float32)))
  assert float(jnp.abs(updates.astype(jnp.float32)).sum()) > 0


def test_inject_hyperparams_bf16_equals_plain_with_rounded_betas():
  """Eagerly, optax hands bf16 betas over; lionx uses them as given."""
  b1, b2, wd = (float(jnp.bfloat16(v)) for v in (0.9, 0.99, 0.01))
  params = jnp.array([1.0, -1.0, 0.5, 2.0], jnp.bfloat16)
  g = jnp.array([1.0, 2.0, -1.0, 0.0], jnp.bfloat16)
  injected = optax.inject_hyperparams(lionx.lion)(
      learning_rate=0.125, b1=0.9, b2=0.99, weight_decay=0.01)
  plain = lionx.lion(0.125, b1, b2, weight_decay=wd)
  a, _ = injected.update(g, injected.init(params), params)
  b, _ = plain.update(g, plain.init(params), params)
  np.testing.assert_array_equal(a, b)


# 4-5. Norms: NaN fills its scope; correct up to the float32 maximum.

def test_lp_nan_makes_its_whole_scope_nan():
  grads = {'a': jnp.array([jnp.nan, 30.0]), 'b': jnp.array([-400.0])}
  opt = lionx.lion_k(0.1, lionx.lp_reshaper(2), weight_decay=0.0)
  params = jax.tree.map(jnp.zeros_like, grads)
  updates, _ = opt.update(grads, opt.init(params), params)
  for leaf in jax.tree.leaves(updates):
    assert np.all(np.isnan(leaf)), updates
  # Per-leaf scope: only the leaf with the NaN.
  opt = lionx.lion_k(0.1, lionx.lp_reshaper(2, 'leaf'), weight_decay=0.0)
  updates, _ = opt.update(grads, opt.init(params), params)
  assert np.all(np.isnan(updates['a']))
  np.testing.assert_allclose(updates['b'], [0.1])


@pytest.mark.parametrize('bad', [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize('scope', ['global', 'leaf'])
def test_lp_reshaper_nonfinite_fills_its_scope(bad, scope):
  r = lionx.lp_reshaper(3, scope)
  out = r.update({'a': jnp.array([bad, 1.0]), 'b': jnp.array([2.0])},
                 r.init(None))[0]
  assert np.all(np.isnan(out['a']))
  assert np.all(np.isnan(out['b'])) == (scope == 'global')


def test_norms_up_to_the_float32_maximum():
  big = jnp.array([1e38, 1e38], jnp.float32)
  np.testing.assert_allclose(lionx.metrics.tree_l2(big), 1.41421356e38,
                             rtol=1e-6)
  np.testing.assert_allclose(lionx.metrics.tree_l1(big), 2e38, rtol=1e-6)
  ratio = lionx.metrics.grad_norm_ratio(big)
  np.testing.assert_allclose(ratio.ratio, np.sqrt(2), rtol=1e-6)
  np.testing.assert_allclose(ratio.ratio_over_sqrt_d, 1.0, rtol=1e-6)
  for scope in ('global', 'leaf'):
    out = lionx.lp_reshaper(2, scope).update(2e38 * jnp.ones(4), None)[0]
    np.testing.assert_allclose(out, 0.5, rtol=1e-6)
    jitted = jax.jit(lambda x: lionx.lp_reshaper(2, scope).update(x, None)[0])
    np.testing.assert_allclose(jitted(2e38 * jnp.ones(4)), 0.5, rtol=1e-6)
  # A norm that exceeds the maximum is inf; the maximum itself is not.
  assert np.isinf(lionx.metrics.tree_l2(jnp.array([3e38, 3e38])))
  np.testing.assert_allclose(
      lionx.metrics.tree_linf(jnp.array([3.4e38, -1.0])), 3.4e38, rtol=1e-6)
  # top-k's gauge max(||y||_inf, ||y||_1 / k): the sum 6e38 overflows.
  gauge = lionx.topk_sign_reshaper(3).gauge(jnp.array([2e38, 2e38, 2e38]))
  np.testing.assert_allclose(gauge, 2e38, rtol=1e-6)


@pytest.mark.parametrize('k', [-100, -37, 0, 41, 100, 125, 126])
@settings(max_examples=10)
@given(st.sampled_from([1.0, 1.5, 2.0, 3.0]), st.integers(0, 2 ** 31 - 1))
def test_norms_and_lp_commute_with_powers_of_two(k, p, seed):
  """Exact scaling: f(2^k x) == 2^k f(x) bit for bit, up to ~2^127."""
  rng = np.random.default_rng(seed)
  x = {'a': rng.standard_normal(7), 'b': rng.standard_normal((2, 3))}
  top = max(np.max(np.abs(v)) for v in x.values())
  x = jax.tree.map(lambda v: (v / top).astype(np.float32), x)  # max |x| = 1.
  s = np.float32(2.0 ** k)
  xs = jax.tree.map(lambda v: v * s, x)
  for scope in ('global', 'leaf'):
    r = lionx.lp_reshaper(p, scope)
    chex.assert_trees_all_equal(r.update(xs, None)[0], r.update(x, None)[0])
  for norm in (lionx.metrics.tree_l2, lionx.metrics.tree_l1):
    want = float(norm(x)) * 2.0 ** k
    # A norm above the float32 maximum is inf, and only then.
    want = want if want <= float(np.finfo(np.float32).max) else np.inf
    assert float(norm(xs)) == want
  assert float(lionx.metrics.grad_norm_ratio(xs).ratio) == float(
      lionx.metrics.grad_norm_ratio(x).ratio)


# 7. distributed_lion refuses 8-bit momentum at construction.

def test_distributed_lion_refuses_int8_momentum():
  with pytest.raises(ValueError, match='mu_dtype=.*int8'):
    lionx.distributed_lion(0.1, mu_dtype=jnp.int8)
  with pytest.raises(ValueError, match='mu_dtype='):
    lionx.distributed_lion(0.1, 0.9, 0.99, 'int8')


# 8. Masks of JAX/NumPy bools; integer leaves; reshaper parameters.

@pytest.mark.parametrize('true,false', [
    (True, False), (np.bool_(True), np.bool_(False)),
    (jnp.array(True), jnp.array(False)), (np.array(True), np.array(False))])
def test_mask_leaves_may_be_any_concrete_bool(true, false):
  params = {'w': jnp.ones((2, 2)), 'b': jnp.ones(2)}
  mask = {'w': true, 'b': false}
  opt = lionx.lion(0.1, weight_decay=0.5, mask=mask)
  grads = jax.tree.map(jnp.zeros_like, params)
  updates, _ = jax.jit(opt.update)(grads, opt.init(params), params)
  np.testing.assert_allclose(updates['w'], -0.05)
  np.testing.assert_allclose(updates['b'], 0.0)
  want, _ = optax.masked(optax.add_decayed_weights(0.5), mask).update(
      grads, optax.masked(optax.add_decayed_weights(0.5), mask).init(params),
      params)
  np.testing.assert_allclose(updates['w'], -0.1 * want['w'])


def test_mask_refuses_arrays_and_numbers():
  params = {'w': jnp.ones(2)}
  for leaf, text in [(jnp.array([True, False]), 'mask has a leaf'),
                     (1, 'mask has a leaf 1')]:
    opt = lionx.lion(0.1, mask={'w': leaf})
    with pytest.raises(TypeError, match=text):
      opt.init(params)


@pytest.mark.parametrize('make', [
    lambda: lionx.lion(0.1),
    lambda: lionx.lion_k(0.1, lionx.tanh_reshaper(2.0)),
    lambda: lionx.cautious_lion(0.1),
    lambda: lionx.scale_by_lion(),
    lambda: lionx.add_decoupled_weight_decay(0.1),
])
def test_integer_params_are_refused(make):
  opt = make()
  with pytest.raises(TypeError, match=r"params has a leaf at \['n'\] of "
                     'dtype int32'):
    opt.init({'w': jnp.ones(2), 'n': jnp.array([1, 2, 3], jnp.int32)})


def test_integer_gradients_are_refused():
  opt = lionx.lion(0.1)
  params = jnp.ones(3)
  with pytest.raises(TypeError, match='updates has a leaf .* int32'):
    opt.update(jnp.array([1, 2, 3], jnp.int32), opt.init(params), params)
  for r in (lionx.lp_reshaper(2), lionx.tanh_reshaper(1.0)):
    with pytest.raises(TypeError, match='updates has a leaf .* int32'):
      r.update(jnp.array([1, 2, 3], jnp.int32), r.init(None))


@pytest.mark.parametrize('make,name', [
    (lionx.lp_reshaper, 'p'),
    (lionx.sparse_sign_reshaper, 'threshold'),
    (lionx.huber_reshaper, 'e'),
    (lionx.tanh_reshaper, 'beta'),
    (lambda v: lionx.topk_sign_reshaper(fraction=v), 'fraction'),
    (lambda v: lionx.topk_sign_reshaper(v), 'k'),
])
def test_reshaper_parameters_must_be_concrete(make, name):
  with pytest.raises(TypeError, match=f'{name}=.*(traced|Traced)'):
    jax.jit(lambda v: make(v).update(jnp.ones(3), None)[0])(
        jnp.float32(0.5) if name == 'fraction' else jnp.float32(2.0))


@pytest.mark.parametrize('make,value', [
    (lionx.lp_reshaper, np.float32(2.0)),
    (lionx.huber_reshaper, np.float64(0.5)),
    (lionx.tanh_reshaper, jnp.float32(3.0)),  # concrete: accepted.
    (lionx.topk_sign_reshaper, np.int64(2)),
])
def test_reshaper_parameters_accept_numpy_and_concrete_numbers(make, value):
  r = make(value)
  assert r.update(jnp.array([1.0, -2.0, 3.0]), None)[0].shape == (3,)


# 9. scale_by_lion emits c, not sign(c).

def test_scale_by_lion_says_it_emits_c_not_sign():
  first = lionx.scale_by_lion.__doc__.strip().splitlines()[0]
  assert 'not' in first and 'sign' in first


def test_scale_by_lion_without_reshaper_is_momentum_sgd():
  g = jnp.array([1.0, -2.0, 4.0])
  tx = optax.chain(lionx.scale_by_lion(0.9, 0.99),
                   optax.scale_by_learning_rate(0.5))
  u, _ = tx.update(g, tx.init(g))
  np.testing.assert_allclose(u, -0.5 * 0.1 * np.asarray(g), rtol=1e-6)
  tx = optax.chain(lionx.scale_by_lion(0.9, 0.99), lionx.sign_reshaper(),
                   optax.scale_by_learning_rate(0.5))
  u, _ = tx.update(g, tx.init(g))
  want, _ = optax.lion(0.5, weight_decay=0.0).update(
      g, optax.lion(0.5, weight_decay=0.0).init(g), g)
  np.testing.assert_array_equal(u, want)


# 10. Weight-decay conventions.

CONVENTIONS = ['paper', 'independent', 'corrected']


@pytest.mark.parametrize('convention', CONVENTIONS)
@pytest.mark.parametrize('variant', ['lion', 'lion_k', 'cautious', 'implicit'])
def test_conventions_equal_numpy(convention, variant):
  rng = np.random.default_rng(3)
  steps, d = 40, 12
  peak, wd = 0.05, 0.4
  sched = optax.warmup_cosine_decay_schedule(0.0, peak, 5, steps, 0.005)
  kwargs = dict(weight_decay=wd, weight_decay_convention=convention)
  if convention != 'paper':
    kwargs['peak_learning_rate'] = peak
  if variant == 'lion':
    opt, grad_k = lionx.lion(sched, **kwargs), np.sign
  elif variant == 'lion_k':
    opt = lionx.lion_k(sched, lionx.huber_reshaper(0.5), **kwargs)
    grad_k = lambda c: np.clip(c, -0.5, 0.5) / 0.5
  elif variant == 'implicit':
    opt, grad_k = lionx.lion_k(sched, implicit=True, **kwargs), np.sign
  else:
    opt, grad_k = lionx.cautious_lion(sched, 0.9, 0.99, **kwargs), None
  theta0 = rng.uniform(-5, 5, d).astype(np.float32)
  grads = [rng.standard_normal(d).astype(np.float32) for _ in range(steps)]
  got, _ = _run(opt, jnp.asarray(theta0), grads)

  theta, m = theta0.astype(np.float64), np.zeros(d)
  for k, g in enumerate(grads):
    lr = float(sched(k))
    if variant == 'cautious':
      c = 0.9 * m + 0.1 * g
      u = np.sign(c)
      phi = (u * g > 0)
      step = np.where(phi, u, 0.0) * (d / (phi.sum() + 1))
      theta, m = reference.lion_step_convention(
          theta, m, g, lr, peak, 0.9, 0.99, wd, convention,
          grad_k=lambda c, step=step: step)
    elif variant == 'implicit':
      # theta_{k+1} = theta_k - lr (sign(c) + lam' theta_{k+1}).
      new, m_new = reference.lion_step_convention(
          np.zeros(d), m, g, lr, peak, 0.9, 0.99, wd, convention)
      lam = {'paper': wd, 'independent': wd / peak,
             'corrected': wd * lr / peak}[convention]
      theta = (theta + new) / (1 + lr * lam)
      m = m_new
    else:
      theta, m = reference.lion_step_convention(
          theta, m, g, lr, peak, 0.9, 0.99, wd, convention, grad_k)
  np.testing.assert_allclose(got, theta, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize('convention', CONVENTIONS)
def test_convention_with_a_constant_learning_rate(convention):
  """A number as learning rate is eta_peak; the decay step of one step."""
  lr, wd = 0.25, 0.5
  params = jnp.array([2.0, -4.0])
  opt = lionx.lion(lr, weight_decay=wd, weight_decay_convention=convention)
  updates, _ = opt.update(jnp.zeros(2), opt.init(params), params)
  step = {'paper': lr * wd, 'independent': wd,
          'corrected': wd * lr}[convention]
  np.testing.assert_allclose(updates, -step * np.asarray(params), rtol=1e-6)


@pytest.mark.parametrize('convention', CONVENTIONS)
def test_effective_weight_decay(convention):
  sched = optax.linear_schedule(1e-3, 1e-4, 10)
  peak = 1e-3 if convention != 'paper' else None
  for count in (0, 3, 10):
    got = lionx.effective_weight_decay(
        0.1, count, weight_decay_convention=convention,
        learning_rate=sched, peak_learning_rate=peak)
    lr = float(sched(count))
    want = {'paper': 0.1, 'independent': 0.1 / 1e-3,
            'corrected': 0.1 * lr / 1e-3}[convention]
    np.testing.assert_allclose(got, want, rtol=1e-6)
  # Traced count, and a weight-decay schedule.
  f = jax.jit(lambda c: lionx.effective_weight_decay(
      lambda n: 0.1 * (n + 1), c, weight_decay_convention=convention,
      learning_rate=sched, peak_learning_rate=peak))
  lam = {'paper': 1.0, 'independent': 1 / 1e-3,
         'corrected': float(sched(4)) / 1e-3}[convention]
  np.testing.assert_allclose(f(4), 0.5 * lam, rtol=1e-5)


@pytest.mark.parametrize('make,error,text', [
    (lambda: lionx.lion(optax.constant_schedule(0.1),
                        weight_decay_convention='independent'),
     ValueError, 'peak_learning_rate=None'),
    (lambda: lionx.lion_k(optax.constant_schedule(0.1),
                          weight_decay_convention='corrected'),
     ValueError, 'peak_learning_rate=None'),
    (lambda: lionx.lion(0.1, peak_learning_rate=0.1), ValueError,
     'peak_learning_rate=0.1 is only used'),
    (lambda: lionx.lion(0.1, weight_decay_convention='timm'), ValueError,
     "weight_decay_convention='timm'"),
    (lambda: lionx.lion(0.1, weight_decay_convention='independent',
                        peak_learning_rate=0.0), ValueError,
     'peak_learning_rate=0.0'),
    (lambda: lionx.lion(0.0, weight_decay_convention='independent'),
     ValueError, 'learning_rate=0.0'),
    (lambda: lionx.add_decoupled_weight_decay(
        0.1, weight_decay_convention='corrected', peak_learning_rate=0.1),
     ValueError, 'learning_rate=None'),
    (lambda: lionx.add_decoupled_weight_decay(
        0.1, weight_decay_convention='independent'),
     ValueError, 'learning_rate=None'),
    (lambda: lionx.effective_weight_decay(
        0.1, weight_decay_convention='corrected'),
     ValueError, 'learning_rate=None'),
    (lambda: lionx.cautious_lion(
        0.1, weight_decay_convention='independent', peak_learning_rate='x'),
     TypeError, "peak_learning_rate='x'"),
])
def test_convention_errors_name_the_argument(make, error, text):
  with pytest.raises(error, match=text):
    make()


def test_add_decoupled_weight_decay_independent_needs_only_the_peak():
  tx = lionx.add_decoupled_weight_decay(
      0.5, weight_decay_convention='independent', peak_learning_rate=0.25)
  params = jnp.array([2.0, -4.0])
  u, _ = tx.update(jnp.zeros(2), tx.init(params), params)
  np.testing.assert_allclose(u, [4.0, -8.0])


STEPS_BOX = 25


@pytest.mark.slow
@given(st.sampled_from(CONVENTIONS), st.floats(0.05, 5.0),
       st.floats(0.01, 1.0), st.sampled_from(['constant', 'cosine']),
       st.floats(0.0, 1.0), st.floats(0.0, 1.0), st.integers(0, 2 ** 31 - 1))
def test_the_box_of_each_convention_is_invariant(
    convention, lam_peak, eta_lam, schedule, b1, b2, seed):
  """lam'_0 ||theta_0|| <= 1 and eta_t lam'_t <= 1 => lam'_t ||theta_t|| <= 1.

  lam' is the convention's effective weight decay (nonincreasing here),
  lam_peak the box's lam' at the peak, eta_lam the product eta_peak lam'.
  """
  eta = eta_lam / lam_peak
  # lam' = wd (paper), wd / eta (independent), wd eta_t / eta (corrected).
  wd = lam_peak * eta if convention == 'independent' else lam_peak
  sched = (optax.constant_schedule(eta) if schedule == 'constant' else
           optax.cosine_decay_schedule(eta, STEPS_BOX, 0.1))
  kwargs = dict(weight_decay=wd, weight_decay_convention=convention,
                learning_rate=sched,
                peak_learning_rate=None if convention == 'paper' else eta)
  lam0 = float(lionx.effective_weight_decay(**kwargs))
  np.testing.assert_allclose(lam0, lam_peak, rtol=1e-5)
  rng = np.random.default_rng(seed)
  theta = jnp.asarray(rng.uniform(-1, 1, 8) / lam0, jnp.float32)
  grads = rng.standard_normal((STEPS_BOX, 8)) * rng.choice(
      [0.0, 1e-3, 1.0, 1e3], (STEPS_BOX, 8))
  opt = lionx.lion(sched, b1, b2, **{k: v for k, v in kwargs.items()
                                     if k != 'learning_rate'})
  state = opt.init(theta)
  update = jax.jit(opt.update)
  reshaper = lionx.sign_reshaper()
  for k in range(STEPS_BOX):
    updates, state = update(jnp.asarray(grads[k], jnp.float32), state, theta)
    theta = optax.apply_updates(theta, updates)
    for count in (k, k + 1):  # the box of this step, and of the next one.
      lam = lionx.effective_weight_decay(count=count, **kwargs)
      box = lionx.metrics.box_feasibility(theta, lam)
      assert float(box.linf_scaled) <= 1 + 1e-5, (k, count)
      np.testing.assert_allclose(reshaper.constraint(theta, lam),
                                 box.linf_scaled, rtol=1e-6)


# 11. Complex leaves: two real coordinates, bit for bit.

def _real_view_tree(tree):
  return jax.tree.map(view_as_real, tree)


def _bits(x):
  x = np.asarray(x)
  return x.view(np.uint32 if x.dtype.itemsize == 4 else np.uint64)


COMPLEX_OPTIMIZERS = {
    'lion': lambda: lionx.lion(0.05, weight_decay=0.3),
    'lion_mu_f32': lambda: lionx.lion(0.05, mu_dtype=jnp.float32),
    'lp_global': lambda: lionx.lion_k(0.05, lionx.lp_reshaper(3)),
    'lp_leaf': lambda: lionx.lion_k(0.05, lionx.lp_reshaper(2, 'leaf')),
    'sparse': lambda: lionx.lion_k(0.05, lionx.sparse_sign_reshaper(0.05)),
    'topk_leaf': lambda: lionx.lion_k(0.05, lionx.topk_sign_reshaper(3)),
    'topk_global': lambda: lionx.lion_k(
        0.05, lionx.topk_sign_reshaper(fraction=0.3, scope='global')),
    'huber': lambda: lionx.lion_k(0.05, lionx.huber_reshaper(0.1)),
    'tanh': lambda: lionx.lion_k(0.05, lionx.tanh_reshaper(5.0)),
    'implicit': lambda: lionx.lion_k(0.05, weight_decay=0.5, implicit=True),
    'cautious': lambda: lionx.cautious_lion(0.05, weight_decay=0.2),
    'corrected': lambda: lionx.lion(
        optax.cosine_decay_schedule(0.05, 10), weight_decay=0.5,
        weight_decay_convention='corrected', peak_learning_rate=0.05),
    'inject': lambda: optax.inject_hyperparams(
        lionx.lion, hyperparam_dtype=jnp.float32)(0.05, b1=0.8),
    'bf16_mu': lambda: lionx.lion(0.05, mu_dtype=jnp.bfloat16),
    'b1_gt_b2': lambda: lionx.lion(0.05, 0.9, 0.3),
}


@pytest.mark.compiled_as_users
@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(COMPLEX_OPTIMIZERS))
def test_complex_leaf_is_its_real_view_bit_for_bit(name):
  rng = np.random.default_rng(4)

  def cplx(shape):
    return (rng.standard_normal(shape)
            + 1j * rng.standard_normal(shape)).astype(np.complex64)

  params = {'z': cplx((3, 4)), 'x': rng.standard_normal(5).astype(np.float32)}
  grads = [{'z': cplx((3, 4)), 'x': rng.standard_normal(5).astype(np.float32)}
           for _ in range(6)]
  grads[2]['z'][0, 0] = 0.0  # exact zeros in both parts.
  grads[3]['z'][1, 1] = complex(np.nan, 1.0)  # NaN in the real part only.
  opt = COMPLEX_OPTIMIZERS[name]()
  p_c, s_c = params, opt.init(params)
  p_r = _real_view_tree(params)
  s_r = opt.init(p_r)
  update = jax.jit(opt.update)
  for g in grads:
    u_c, s_c = update(g, s_c, p_c)
    u_r, s_r = update(_real_view_tree(g), s_r, p_r)
    p_c = optax.apply_updates(p_c, u_c)
    p_r = optax.apply_updates(p_r, u_r)
    assert u_c['z'].dtype == jnp.complex64 and p_c['z'].dtype == jnp.complex64
    for a, b in zip(jax.tree.leaves(_real_view_tree(u_c)),
                    jax.tree.leaves(u_r)):
      np.testing.assert_array_equal(_bits(a), _bits(b))
  # The NaN stayed in the real part: the imaginary part moved finitely.
  z = np.asarray(p_c['z'])
  if name not in ('lp_global', 'lp_leaf'):  # those NaN their scope.
    assert np.isnan(z[1, 1].real) and np.isfinite(z[1, 1].imag)
  mu = optax.tree_utils.tree_get(s_c, 'mu')
  assert mu['z'].shape == (3, 4, 2)  # the real view's momentum.


@pytest.mark.parametrize('jit', [False, True])
def test_inject_hyperparams_with_complex_params_says_what_to_do(jit):
  opt = optax.inject_hyperparams(lionx.lion)(0.1)
  z = jnp.ones(3, jnp.complex64)
  update = jax.jit(opt.update) if jit else opt.update
  with pytest.raises(TypeError, match=r'b1=.*complex64.*'
                     'hyperparam_dtype=jnp.float32'):
    update(z, opt.init(z), z)


def test_scale_by_lion_alone_on_a_complex_leaf():
  tx = lionx.scale_by_lion(0.9, 0.99, mu_dtype=jnp.bfloat16)
  z = jnp.array([1 - 2j, 0.5j], jnp.complex64)
  state = tx.init(z)
  assert state.mu.shape == (2, 2) and state.mu.dtype == jnp.bfloat16
  c, state = tx.update(z, state)
  cr, _ = tx.update(view_as_real(z), tx.init(view_as_real(z)))
  np.testing.assert_array_equal(view_as_real(c), cr)
  assert c.dtype == jnp.complex64


def test_complex_add_decoupled_weight_decay_and_cautious():
  z = jnp.array([1 + 2j, -3 + 0.5j], jnp.complex64)
  tx = lionx.add_decoupled_weight_decay(0.5)
  u, _ = tx.update(jnp.ones(2, jnp.complex64), tx.init(z), z)
  np.testing.assert_array_equal(u, [1.5 + 1j, -0.5 + 0.25j])
  tx = lionx.cautious(lionx.sign_reshaper())
  g = jnp.array([1 - 1j, 0 + 2j], jnp.complex64)
  u, _ = tx.update(g, tx.init(g))
  # 4 real coordinates, 3 agree (the 0 does not): 4 / (3 + 1) = 1.
  np.testing.assert_array_equal(u, [1 - 1j, 0 + 1j])


def test_metrics_count_real_and_imaginary_parts():
  z = {'z': jnp.array([3 - 4j, 1j], jnp.complex64), 'x': jnp.array([-2.0])}
  r = _real_view_tree(z)
  m = lionx.metrics
  assert m.tree_size(z) == 5
  assert float(m.tree_l1(z)) == 10.0
  assert float(m.tree_linf(z)) == 4.0
  chex.assert_trees_all_close(m.tree_l2(z), m.tree_l2(r))
  chex.assert_trees_all_close(m.grad_norm_ratio(z), m.grad_norm_ratio(r))
  chex.assert_trees_all_close(m.box_feasibility(z, 0.3),
                              m.box_feasibility(r, 0.3))
  chex.assert_trees_all_close(m.kkt_residual(z, z, 0.3),
                              m.kkt_residual(r, r, 0.3))
  chex.assert_trees_all_close(m.update_stats(z, z), m.update_stats(r, r))
  for reshaper in (lionx.lp_reshaper(3), lionx.topk_sign_reshaper(2),
                   lionx.tanh_reshaper(2.0)):
    chex.assert_trees_all_close(reshaper.constraint(z, 0.2),
                                reshaper.constraint(r, 0.2))
    chex.assert_trees_all_close(
        m.lyapunov(1.0, z, z, reshaper=reshaper, weight_decay=0.2,
                   learning_rate=0.1, b1=0.9, b2=0.99),
        m.lyapunov(1.0, r, r, reshaper=reshaper, weight_decay=0.2,
                   learning_rate=0.1, b1=0.9, b2=0.99))


def test_complex_parabola_converges_with_conjugated_gradients():
  """JAX's grad of a real loss is the conjugate of the real view's gradient:
  conjugate it first, as optax's tests do for complex params."""
  target = jnp.array([1 + 2j, -0.5 - 1j], jnp.complex64)
  f = lambda z: jnp.sum(jnp.abs(z - target) ** 2)
  opt = lionx.lion(optax.exponential_decay(0.05, 200, 0.3), weight_decay=0.1)
  z = jnp.zeros(2, jnp.complex64)
  state = opt.init(z)

  @jax.jit
  def step(z, state):
    grads = optax.tree.conj(jax.grad(f)(z))
    updates, state = opt.update(grads, state, z)
    return optax.apply_updates(z, updates), state

  for _ in range(1000):
    z, state = step(z, state)
  assert z.dtype == jnp.complex64
  np.testing.assert_allclose(z, target, atol=0.05)
