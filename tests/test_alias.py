"""lionx.lion against the paper's algorithm, optax.lion, and optax's table."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lionx
from tests import reference

SHAPES = {'w': (7, 5), 'b': (5,), 'deep': {'x': (3, 2, 4)}}


def _tree(rng, shapes=SHAPES, scale=1.0):
  return jax.tree.map(
      lambda s: (scale * rng.standard_normal(s)).astype(np.float32), shapes,
      is_leaf=lambda s: isinstance(s, tuple))


def _run(opt, params, grads_seq, jit=True):
  state = opt.init(params)
  update = jax.jit(opt.update) if jit else opt.update
  for g in grads_seq:
    updates, state = update(g, state, params)
    params = optax.apply_updates(params, updates)
  return params, state


@pytest.mark.parametrize('b1,b2,wd', [(0.9, 0.99, 0.1), (0.95, 0.98, 0.0),
                                      (0.0, 0.5, 1.0), (1.0, 1.0, 0.01)])
def test_lion_equals_numpy_algorithm1(b1, b2, wd):
  rng = np.random.default_rng(0)
  params = _tree(rng)
  grads = [_tree(rng) for _ in range(120)]
  lr = 3e-3
  got, state = _run(lionx.lion(lr, b1, b2, weight_decay=wd), params, grads)

  # float32 like lionx, so rounding cannot flip a sign between the two.
  ref = jax.tree.map(np.asarray, params)
  mom = jax.tree.map(np.zeros_like, ref)
  b1, b2, wd, lr = map(np.float32, (b1, b2, wd, lr))
  for g in grads:
    out = jax.tree.map(
        lambda t, m, gg: reference.lion_step(t, m, gg, lr, b1, b2, wd),
        ref, mom, g)
    ref = jax.tree.map(lambda o: o[0], out, is_leaf=lambda o: isinstance(o, tuple))
    mom = jax.tree.map(lambda o: o[1], out, is_leaf=lambda o: isinstance(o, tuple))
  chex.assert_trees_all_close(got, ref, rtol=1e-6, atol=1e-6)
  chex.assert_trees_all_close(state[0].mu, mom, rtol=1e-5, atol=1e-6)
  assert int(state[0].count) == len(grads)


def test_lion_equals_optax_lion():
  rng = np.random.default_rng(1)
  params = _tree(rng)
  grads = [_tree(rng) for _ in range(100)]
  sched = optax.cosine_decay_schedule(1e-2, 100)
  got, _ = _run(lionx.lion(sched, 0.9, 0.95, weight_decay=0.3), params, grads)
  want, _ = _run(optax.lion(sched, 0.9, 0.95, weight_decay=0.3), params, grads)
  chex.assert_trees_all_equal(got, want)


def test_lion_k_with_sign_is_lion():
  rng = np.random.default_rng(2)
  params, grads = _tree(rng), [_tree(rng) for _ in range(30)]
  a, _ = _run(lionx.lion(1e-2, weight_decay=0.2), params, grads)
  b, _ = _run(lionx.lion_k(1e-2, lionx.sign_reshaper(), weight_decay=0.2),
              params, grads)
  chex.assert_trees_all_equal(a, b)


def test_equal_betas_is_signed_momentum():
  """b1 = b2 = b: the step is sign(m_k), with m_k the usual EMA (SignSGD-M)."""
  rng = np.random.default_rng(3)
  x = rng.standard_normal(16).astype(np.float32)
  grads = [rng.standard_normal(16).astype(np.float32) for _ in range(25)]
  got, _ = _run(lionx.lion(0.01, 0.8, 0.8, weight_decay=0.0), jnp.asarray(x), grads)
  m = np.zeros(16)
  ref = x.astype(np.float64)
  for g in grads:
    m = 0.8 * m + 0.2 * g
    ref = ref - 0.01 * np.sign(m)
  np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('name,reshaper,grad_k', [
    ('lp3', lionx.lp_reshaper(3.0), lambda c: reference.lp_grad(c, 3.0)),
    ('huber', lionx.huber_reshaper(0.5), lambda c: np.clip(c, -0.5, 0.5) / 0.5),
    ('tanh', lionx.tanh_reshaper(3.0), lambda c: np.tanh(3.0 * c)),
    ('sparse', lionx.sparse_sign_reshaper(0.3),
     lambda c: np.sign(c) * (np.abs(c) > 0.3)),
])
def test_lion_k_equals_numpy(name, reshaper, grad_k):
  del name
  rng = np.random.default_rng(4)
  x = rng.standard_normal(40).astype(np.float32)
  grads = [rng.standard_normal(40).astype(np.float32) for _ in range(50)]
  got, _ = _run(lionx.lion_k(0.01, reshaper, 0.9, 0.99, weight_decay=0.5),
                jnp.asarray(x), grads)
  theta, m = x.astype(np.float64), np.zeros(40)
  for g in grads:
    theta, m = reference.lion_step(theta, m, g, 0.01, 0.9, 0.99, 0.5, grad_k)
  np.testing.assert_allclose(got, theta, rtol=1e-5, atol=1e-5)


def test_cautious_lion_equals_numpy():
  rng = np.random.default_rng(5)
  params = _tree(rng)
  grads = [_tree(rng) for _ in range(60)]
  got, _ = _run(lionx.cautious_lion(1e-2, weight_decay=0.1), params, grads)
  ref = jax.tree.map(np.float64, params)
  mom = jax.tree.map(np.zeros_like, ref)
  for g in grads:
    leaves = jax.tree.map(
        lambda t, m, gg: reference.cautious_lion_step(
            t, m, gg, 1e-2, 0.95, 0.98, 0.1), ref, mom, g)
    is_pair = lambda o: isinstance(o, tuple)
    ref = jax.tree.map(lambda o: o[0], leaves, is_leaf=is_pair)
    mom = jax.tree.map(lambda o: o[1], leaves, is_leaf=is_pair)
  chex.assert_trees_all_close(got, ref, rtol=1e-5, atol=1e-6)


def test_implicit_weight_decay_is_scheme_15():
  """x_{t+1} = x_t - eta (grad_k(c) + lam x_{t+1}), solved exactly."""
  rng = np.random.default_rng(6)
  x = rng.uniform(-5, 5, 10).astype(np.float32)
  grads = [rng.standard_normal(10).astype(np.float32) for _ in range(20)]
  lr, lam = 0.1, 2.0
  got, _ = _run(lionx.lion_k(lr, weight_decay=lam, implicit=True),
                jnp.asarray(x), grads)
  theta, m = x.astype(np.float64), np.zeros(10)
  for g in grads:
    c = 0.9 * m + 0.1 * g
    theta = (theta - lr * np.sign(c)) / (1 + lr * lam)
    m = 0.99 * m + 0.01 * g
  np.testing.assert_allclose(got, theta, rtol=1e-5, atol=1e-6)


# The optax alias_test table, crossed with lionx's optimizers.
OPTIMIZERS = {
    'lion': lambda lr: lionx.lion(lr),
    'lion_wd': lambda lr: lionx.lion(lr, weight_decay=0.1),
    'lion_lp': lambda lr: lionx.lion_k(lr, lionx.lp_reshaper(2, 'leaf')),
    'lion_sparse': lambda lr: lionx.lion_k(lr, lionx.sparse_sign_reshaper(1e-3)),
    'lion_topk': lambda lr: lionx.lion_k(lr, lionx.topk_sign_reshaper(1)),
    'lion_huber': lambda lr: lionx.lion_k(lr, lionx.huber_reshaper(0.1)),
    'lion_tanh': lambda lr: lionx.lion_k(lr, lionx.tanh_reshaper(10.0)),
    'lion_implicit': lambda lr: lionx.lion_k(lr, implicit=True),
    'cautious_lion': lambda lr: lionx.cautious_lion(lr),
    'lion_lp_global': lambda lr: lionx.lion_k(lr, lionx.lp_reshaper(3)),
    'lion_topk_global': lambda lr: lionx.lion_k(
        lr, lionx.topk_sign_reshaper(fraction=0.5, scope='global')),
    'lion_independent': lambda lr: lionx.lion(
        lr, weight_decay=1e-2, weight_decay_convention='independent',
        peak_learning_rate=_peak(lr)),
    'lion_corrected': lambda lr: lionx.lion(
        lr, weight_decay=0.1, weight_decay_convention='corrected',
        peak_learning_rate=_peak(lr)),
}


def _peak(lr):
  """peak_learning_rate for a schedule (its value at step 0), else None."""
  return float(lr(0)) if callable(lr) else None


def _parabola():
  target = jnp.array([1.0, -2.0])
  return jnp.zeros(2), lambda p: jnp.sum((p - target) ** 2), target


def _rosenbrock():
  def f(p):
    return (1.0 - p[0]) ** 2 + 100.0 * (p[1] - p[0] ** 2) ** 2
  return jnp.array([-0.5, 0.5]), f, jnp.array([1.0, 1.0])


@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(OPTIMIZERS))
@pytest.mark.parametrize('problem', [_parabola, _rosenbrock])
def test_converges(name, problem):
  params, f, target = problem()
  lr = optax.exponential_decay(0.05, 200, 0.3)
  opt = OPTIMIZERS[name](lr)
  state = opt.init(params)

  @jax.jit
  def step(params, state):
    updates, state = opt.update(jax.grad(f)(params), state, params)
    return optax.apply_updates(params, updates), state

  for _ in range(2000):
    params, state = step(params, state)
  np.testing.assert_allclose(params, target, atol=0.05)


@pytest.mark.parametrize('name', sorted(OPTIMIZERS))
def test_accepts_extra_args(name):
  opt = OPTIMIZERS[name](0.1)
  params = jnp.ones(3)
  updates, _ = opt.update(jnp.ones(3), opt.init(params), params,
                          value=jnp.array(1.0), other='ignored')
  assert updates.shape == (3,)


INJECTABLE = {
    'lion': (lionx.lion, {}),
    'cautious_lion': (lionx.cautious_lion, {}),
    # With inject_hyperparams, a fixed peak (else it follows the injected
    # learning rate, and a learning rate of 0 divides by 0).
    'lion_independent': (lionx.lion, {'weight_decay_convention': 'independent',
                                      'peak_learning_rate': 0.1}),
    'lion_corrected': (lionx.lion, {'weight_decay_convention': 'corrected',
                                    'peak_learning_rate': 0.1}),
    'lion_implicit': (lionx.lion_k, {'implicit': True}),
    **{f'lion_k_{name}': (lionx.lion_k, {'reshaper': reshaper})
       for name, reshaper in [
           ('lp', lionx.lp_reshaper(2)),
           ('lp_leaf', lionx.lp_reshaper(3, 'leaf')),
           ('sparse', lionx.sparse_sign_reshaper(1e-3)),
           ('topk', lionx.topk_sign_reshaper(1)),
           ('topk_global', lionx.topk_sign_reshaper(fraction=0.5,
                                                    scope='global')),
           ('huber', lionx.huber_reshaper(0.1)),
           ('tanh', lionx.tanh_reshaper(10.0))]},
}


@pytest.mark.parametrize('name', sorted(INJECTABLE))
def test_inject_hyperparams(name):
  factory, kwargs = INJECTABLE[name]
  opt = optax.inject_hyperparams(factory)(
      learning_rate=0.1, b1=0.9, b2=0.99, weight_decay=0.01, **kwargs)
  params = jnp.array([1.0, -1.0])
  state = opt.init(params)
  step = jax.jit(opt.update)
  updates, state = step(jnp.array([1.0, 1.0]), state, params)
  state.hyperparams['learning_rate'] = jnp.array(0.0)
  zero, _ = step(jnp.array([1.0, 1.0]), state, params)
  assert float(jnp.abs(updates).sum()) > 0
  np.testing.assert_array_equal(zero, 0.0)


def test_inject_hyperparams_lion_matches_plain():
  rng = np.random.default_rng(7)
  params, grads = _tree(rng), [_tree(rng) for _ in range(10)]
  a, _ = _run(optax.inject_hyperparams(lionx.lion)(0.01, weight_decay=0.1),
              params, grads)
  b, _ = _run(lionx.lion(0.01, weight_decay=0.1), params, grads)
  chex.assert_trees_all_close(a, b, rtol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(OPTIMIZERS))
@pytest.mark.parametrize('dtype', [jnp.bfloat16, jnp.float32])
def test_preserves_dtype(name, dtype):
  opt = OPTIMIZERS[name](0.1)
  params = {'a': jnp.ones((4,), dtype), 'b': jnp.zeros((2, 3), dtype)}
  state = opt.init(params)
  grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
  updates, state = jax.jit(opt.update)(grads, state, params)
  new = optax.apply_updates(params, updates)
  for leaf in jax.tree.leaves((updates, new)):
    assert leaf.dtype == dtype


@pytest.mark.parametrize('name', sorted(OPTIMIZERS))
def test_no_recompilation(name):
  opt = OPTIMIZERS[name](optax.linear_schedule(0.1, 0.0, 10))
  params = {'a': jnp.ones(3), 'b': jnp.ones((2, 2))}
  state = opt.init(params)
  traces = []

  @jax.jit
  def step(params, state, grads):
    traces.append(1)
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  for i in range(3):
    grads = jax.tree.map(lambda p: jnp.full_like(p, i + 1.0), params)
    params, state = step(params, state, grads)
  assert len(traces) == 1
  assert step._cache_size() == 1


@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(OPTIMIZERS))
def test_multi_steps_accumulates(name):
  """MultiSteps(k) over g1..gk equals one plain step on their mean."""
  rng = np.random.default_rng(8)
  params = jnp.asarray(rng.standard_normal(6), jnp.float32)
  grads = [jnp.asarray(rng.standard_normal(6), jnp.float32) for _ in range(3)]
  multi = optax.MultiSteps(OPTIMIZERS[name](0.1), every_k_schedule=3)
  state = multi.init(params)
  p = params
  for i, g in enumerate(grads):
    updates, state = jax.jit(multi.update)(g, state, p)
    p = optax.apply_updates(p, updates)
    if i < 2:
      np.testing.assert_array_equal(p, params)
  single = OPTIMIZERS[name](0.1)
  mean = sum(grads) / 3
  updates, _ = single.update(mean, single.init(params), params)
  np.testing.assert_allclose(p, params + updates, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('mu_dtype', [jnp.bfloat16, jnp.float32])
def test_mu_dtype_respected(mu_dtype):
  opt = lionx.lion(0.1, mu_dtype=mu_dtype)
  params = {'a': jnp.ones(3, jnp.float32), 'b': jnp.ones(2, jnp.bfloat16)}
  state = opt.init(params)
  grads = jax.tree.map(lambda p: jnp.full_like(p, 0.3), params)
  updates, state = jax.jit(opt.update)(grads, state, params)
  for mu in jax.tree.leaves(state[0].mu):
    assert mu.dtype == mu_dtype
  assert updates['a'].dtype == jnp.float32
  assert updates['b'].dtype == jnp.bfloat16
  np.testing.assert_allclose(
      np.asarray(state[0].mu['a'], np.float32), 0.003, rtol=1e-2)


def test_default_mu_dtype_follows_params():
  params = {'a': jnp.ones(3, jnp.bfloat16), 'b': jnp.ones(2)}
  state = lionx.lion(0.1).init(params)
  assert state[0].mu['a'].dtype == jnp.bfloat16
  assert state[0].mu['b'].dtype == jnp.float32


def test_none_leaves_and_optax_masked():
  params = {'w': jnp.ones(3), 'frozen': jnp.ones(2), 'none': None}
  mask = {'w': True, 'frozen': False, 'none': None}
  opt = optax.masked(lionx.lion(0.1, weight_decay=0.5), mask)
  state = opt.init(params)
  grads = {'w': jnp.ones(3), 'frozen': jnp.ones(2), 'none': None}
  updates, state = jax.jit(opt.update)(grads, state, params)
  np.testing.assert_allclose(updates['w'], -0.1 * 1.5)
  np.testing.assert_array_equal(updates['frozen'], grads['frozen'])
  assert updates['none'] is None


@pytest.mark.parametrize('mask', [
    {'w': True, 'b': False},
    lambda p: jax.tree.map(lambda x: x.ndim > 1, p),
])
def test_weight_decay_mask(mask):
  params = {'w': jnp.ones((2, 2)), 'b': jnp.ones(2)}
  opt = lionx.lion(0.1, weight_decay=0.5, mask=mask)
  grads = jax.tree.map(jnp.zeros_like, params)
  updates, _ = opt.update(grads, opt.init(params), params)
  np.testing.assert_allclose(updates['w'], -0.05)
  np.testing.assert_allclose(updates['b'], 0.0)


def test_weight_decay_schedule():
  sched = optax.linear_schedule(1.0, 0.0, 2)
  tx = lionx.add_decoupled_weight_decay(sched)
  params = jnp.ones(2)
  state = tx.init(params)
  seen = []
  for _ in range(3):
    u, state = tx.update(jnp.zeros(2), state, params)
    seen.append(float(u[0]))
  assert seen == [1.0, 0.5, 0.0]


# --- issue 23: mu_dtype under optax.inject_hyperparams (item 5) ---


def test_inject_hyperparams_mu_dtype_says_static_args():
  """inject_hyperparams takes jnp.bfloat16 (callable) for a schedule and
  passes an array: the error says static_args=('mu_dtype',), not that the
  positional order changed."""
  opt = optax.inject_hyperparams(lionx.lion)(learning_rate=1e-3,
                                             mu_dtype=jnp.bfloat16)
  with pytest.raises(TypeError, match=(
      r"^mu_dtype=Array\(0, dtype=bfloat16\): expected a dtype, got an "
      r"array.*static_args=\('mu_dtype',\)")) as info:
    opt.init(jnp.ones(3))
  assert 'positional order' not in str(info.value)
  fixed = optax.inject_hyperparams(lionx.lion, static_args=('mu_dtype',))(
      learning_rate=1e-3, mu_dtype=jnp.bfloat16)
  state = fixed.init(jnp.ones(3))
  mus = [x for x in jax.tree.leaves(state) if x.shape == (3,)]
  assert mus and all(m.dtype == jnp.bfloat16 for m in mus)


# --- issue 27: hyperparameters that are not Python floats ---

# Every kind of number holds the same value (tests/kinds.py).
from tests.kinds import KINDS, LR as LR27, PEAK as PEAK27, WD as WD27  # noqa: E402
KINDS27 = {k: v for k, v in KINDS.items() if k != 'np 0-d'}
ALIASES27 = {
    'lion': lionx.lion,
    'lion_k(lp 3)': lambda *a, **k: lionx.lion_k(
        a[0], lionx.lp_reshaper(3.0), *a[1:], **k),
    'cautious_lion': lionx.cautious_lion,
}


def _alias_steps(alias, convention, kinds, schedule=False):
  """Four steps of ``alias`` with learning rate, weight decay and peak of
  the kinds given (one kind per hyperparameter)."""
  lr_kind, wd_kind, peak_kind = (KINDS27[k] for k in kinds)
  kwargs = {'weight_decay': wd_kind(WD27),
            'weight_decay_convention': convention}
  if schedule:
    learning_rate = optax.linear_schedule(LR27, LR27 / 3, 5)
    if convention != 'paper':
      kwargs['peak_learning_rate'] = peak_kind(PEAK27)
  else:
    learning_rate = lr_kind(LR27)
    if convention != 'paper' and kinds[0] == 'jnp 0-d':
      # An array learning rate needs its peak (issue 23): the same number.
      kwargs['peak_learning_rate'] = peak_kind(LR27)
  opt = ALIASES27[alias](learning_rate, **kwargs)
  rng = np.random.default_rng(1)
  params = _tree(rng, scale=300.0)  # the decay shows against the sign
  grads = [_tree(rng) for _ in range(4)]
  out, _ = _run(opt, params, grads, jit=False)
  return out


@pytest.mark.parametrize('alias', sorted(ALIASES27))
@pytest.mark.parametrize('convention', ['paper', 'independent', 'corrected'])
@pytest.mark.parametrize('kind', sorted(set(KINDS27) - {'python'}))
def test_hyperparameters_of_every_kind_give_the_same_steps(alias,
                                                          convention, kind):
  """lion, lion_k and cautious_lion take the learning rate, the weight
  decay and the peak as any real number: a NumPy scalar or a 0-d array
  gives the steps of the same Python float, bit for bit, under every
  weight-decay convention (each hyperparameter alone, and all at once)."""
  want = _alias_steps(alias, convention, ('python',) * 3)
  for kinds in ((kind, 'python', 'python'), ('python', kind, 'python'),
                (kind, kind, kind)):
    chex.assert_trees_all_equal(_alias_steps(alias, convention, kinds),
                                want)
  if convention != 'paper':  # a schedule with a peak of each kind
    want = _alias_steps(alias, convention, ('python',) * 3, schedule=True)
    for kinds in (('python', 'python', kind), (kind, kind, kind)):
      chex.assert_trees_all_equal(
          _alias_steps(alias, convention, kinds, schedule=True), want)
