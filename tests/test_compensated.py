"""lionx.compensated: low-precision parameters with a rounding residual.

* the issue's target: bfloat16 params + int8 residual follow float32 Lion
  (3000 steps, lr 1e-4, weight decay 0.1, |theta_0| ~ 0.05), where plain
  bfloat16 params do not move;
* the split lands each parameter exactly on the rounded value, keeps the
  precise value to the residual's quantum, and rounds without bias;
* a zero update changes nothing; float32 leaves pass through;
* jit, inject_hyperparams, MultiSteps, apply_if_finite, nnx.Optimizer,
  optax.adamw as the inner, resume; bad input.
"""

import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lionx
from lionx._src import compensated as comp

LR, WD = 1e-4, 0.1


def _lion(**kwargs):
  return lionx.lion(learning_rate=kwargs.pop('learning_rate', LR),
                    weight_decay=kwargs.pop('weight_decay', WD), **kwargs)


def _run(opt, params, grads_of, steps):
  """``steps`` jitted steps (a scan) with grads_of(k) as the k-th gradient."""
  def body(carry, k):
    p, s = carry
    u, s = opt.update(grads_of(k), s, p)
    return (optax.apply_updates(p, u), s), None

  @jax.jit
  def go(params):
    (p, s), _ = jax.lax.scan(body, (params, opt.init(params)),
                             jnp.arange(steps))
    return p, s

  return go(params)


def test_bf16_with_int8_residual_follows_fp32_lion():
  """The issue's target: >= 90% equal to bf16(fp32 Lion), within 10 eta."""
  n, steps = 4096, 3000
  key = jax.random.PRNGKey(0)
  theta0 = (0.05 * jnp.sign(jax.random.normal(key, (n,)))
            * (1 + 0.2 * jax.random.uniform(jax.random.PRNGKey(1), (n,)))
            ).astype(jnp.bfloat16)

  def grads_of(k):  # the same float32 gradients for every run
    return jax.random.normal(jax.random.fold_in(key, k), (n,))

  p32, _ = _run(_lion(), theta0.astype(jnp.float32), grads_of, steps)
  opt = lionx.compensated(_lion())
  p16, state = _run(opt, theta0, grads_of, steps)
  assert p16.dtype == jnp.bfloat16
  equal = float(jnp.mean(p16 == p32.astype(jnp.bfloat16)))
  dist = float(jnp.max(jnp.abs(p16.astype(jnp.float32) - p32))) / LR
  assert equal >= 0.9, equal
  assert dist <= 10, dist
  full = lionx.compensated_params(p16, state)
  assert float(jnp.max(jnp.abs(full - p32))) / LR <= 2.0
  # Plain bfloat16 params: each step is below half an ulp, nothing moves.
  plain, _ = _run(_lion(), theta0, grads_of, steps)
  np.testing.assert_array_equal(plain, theta0)
  assert float(jnp.max(jnp.abs(plain.astype(jnp.float32) - p32))) / LR > 100


def _ulp(x):
  """The bfloat16 ulp of x (float64), with a floor at the smallest normal."""
  e = np.floor(np.log2(np.maximum(np.abs(x), 2.0 ** -126)))
  return 2.0 ** (e - 7)


_BF16 = st.floats(-1e3, 1e3, width=32).map(
    lambda v: float(np.float32(jnp.asarray(v, jnp.bfloat16))))


@hypothesis.settings(max_examples=25)
@hypothesis.given(st.lists(_BF16, min_size=16, max_size=16),  # one shape: one compile
                  st.floats(-4.0, 4.0), st.integers(0, 2 ** 32 - 1),
                  st.integers(0, 1000))
def test_split_lands_on_the_rounded_value(values, scale, seed, count):
  """apply_updates lands on round(target); precise is within a quantum."""
  p = jnp.asarray(values, jnp.bfloat16)
  p64 = np.asarray(p, np.float64)
  # Below the smallest normal float32 XLA:CPU flushes to zero.
  ok = np.abs(p64) >= 2.0 ** -100
  target = (p64 + scale * _ulp(p64) * np.linspace(-1, 1, p.size)
            ).astype(np.float32)
  u = comp.dither(jnp.array([seed, 7], jnp.uint32), 0, jnp.uint32(count),
                  p.shape)
  update, hi, r = comp.split(jnp.asarray(target), p, jnp.int8, u)
  assert update.dtype == jnp.float32 and r.dtype == jnp.int8
  landed = np.asarray(optax.apply_updates(p, update), np.float64)
  hi64 = np.asarray(hi, np.float64)
  np.testing.assert_array_equal(landed[ok], hi64[ok])
  rounded = np.asarray(jnp.asarray(target).astype(jnp.bfloat16), np.float64)
  # hi is the nearest bfloat16, or the other neighbour at an exact tie.
  tie = np.abs(hi64 - target) == np.abs(rounded - target)
  assert np.all(((hi64 == rounded) | tie)[ok])
  full = np.asarray(comp.precise(hi, r), np.float64)
  quantum = np.asarray(comp._quantum(hi, 8), np.float64)  # pylint: disable=protected-access
  assert np.all((np.abs(full - target) < quantum)[ok])


def test_split_is_unbiased():
  """Averaged over the dither, the stored value is the target."""
  p = jnp.asarray([0.05, -0.05, 1.0, 0.0078125], jnp.bfloat16)
  rng = np.random.default_rng(0)
  target = np.asarray(p, np.float32) + np.float32(1e-4) * rng.uniform(
      -1, 1, 4).astype(np.float32)
  grid = (jnp.arange(1024, dtype=jnp.float32) + 0.5) / 1024
  split = jax.vmap(lambda u: comp.split(jnp.asarray(target), p, jnp.int8,
                                        jnp.full(4, u)))
  _, hi, r = split(grid)
  full = np.asarray(comp.precise(hi, r), np.float64).mean(axis=0)
  quantum = np.asarray(comp._quantum(p, 8), np.float64)  # pylint: disable=protected-access
  assert np.all(np.abs(full - target) <= quantum / 1024 + 1e-12)


@hypothesis.settings(max_examples=25)
@hypothesis.given(st.lists(_BF16, min_size=16, max_size=16),  # one shape: one compile
                  st.integers(-128, 127))
def test_zero_update_changes_nothing(values, residual):
  p = jnp.asarray(values, jnp.bfloat16)
  r = jnp.full(p.shape, residual, jnp.int8)
  full = comp.precise(p, r)
  # A residual past the rounding midpoint is not a state split() makes,
  # and below the smallest normal float32 XLA:CPU flushes to zero.
  ok = np.asarray((full.astype(jnp.bfloat16) == p)
                  & (jnp.abs(p.astype(jnp.float32)) >= 2.0 ** -100))
  u = jnp.full(p.shape, 0.3)
  update, hi, r2 = comp.split(full, p, jnp.int8, u)
  np.testing.assert_array_equal(np.asarray(comp.precise(hi, r2))[ok],
                                np.asarray(full)[ok])
  np.testing.assert_array_equal(
      np.asarray(optax.apply_updates(p, update), np.float32)[ok],
      np.asarray(p, np.float32)[ok])


def test_float32_leaves_pass_through():
  params = {'w': jnp.ones(5, jnp.bfloat16), 'b': jnp.linspace(-1, 1, 3),
            'z': jnp.ones(2, jnp.complex64)}
  grads = {'w': jnp.ones(5, jnp.bfloat16), 'b': jnp.ones(3),
           'z': jnp.ones(2, jnp.complex64)}
  opt = lionx.compensated(_lion(learning_rate=0.1))
  state = opt.init(params)
  assert state.residual['b'] is None and state.residual['z'] is None
  assert state.residual['w'].dtype == jnp.int8
  updates, _ = opt.update(grads, state, params)
  inner = _lion(learning_rate=0.1)
  expected, _ = inner.update(
      grads, inner.init(params), params)
  np.testing.assert_array_equal(updates['b'], expected['b'])
  np.testing.assert_array_equal(updates['z'], expected['z'])


def test_inner_sees_precise_params_and_float32_grads():
  seen = {}

  def update_fn(updates, state, params=None):
    seen['grads'] = jax.tree.map(lambda x: x.dtype, updates)
    seen['params'] = params
    return jax.tree.map(jnp.zeros_like, updates), state

  spy = optax.GradientTransformation(lambda p: optax.EmptyState(), update_fn)
  opt = lionx.compensated(spy)
  params = {'w': jnp.full(3, 0.05, jnp.bfloat16), 'b': jnp.ones(2)}
  state = opt.init(params)
  state = state._replace(residual={'w': jnp.array([5, -5, 0], jnp.int8),
                                   'b': None})
  opt.update({'w': jnp.ones(3, jnp.bfloat16), 'b': jnp.ones(2)}, state,
             params)
  assert seen['grads'] == {'w': jnp.float32, 'b': jnp.float32}
  q = 2.0 ** (-5 - 7 - 8)  # 0.05 is in [2^-5, 2^-4)
  np.testing.assert_array_equal(
      seen['params']['w'],
      np.float32(jnp.float32(jnp.bfloat16(0.05))) + np.array([5, -5, 0]) * q)


def _bf16_problem(n=64):
  rng = np.random.default_rng(1)
  params = {'w': jnp.asarray(0.05 * rng.standard_normal(n), jnp.bfloat16),
            'b': jnp.asarray(rng.standard_normal(3), jnp.float32)}
  grads = [jax.tree.map(lambda p, k=k: jnp.asarray(
      np.random.default_rng(k).standard_normal(p.shape), p.dtype), params)
           for k in range(8)]
  return params, grads


def _steps(opt, params, grads, state=None):
  state = opt.init(params) if state is None else state
  step = jax.jit(opt.update)
  for g in grads:
    updates, state = step(g, state, params)
    params = optax.apply_updates(params, updates)
  return params, state


def _f32(tree):
  return jax.tree.map(lambda x: x.astype(jnp.float32), tree)


def _assert_trees_equal(a, b):
  jax.tree.map(np.testing.assert_array_equal, a, b)


def test_resume_is_bit_identical():
  params, grads = _bf16_problem()
  opt = lionx.compensated(_lion(learning_rate=1e-3))
  full_p, full_s = _steps(opt, params, grads)
  half_p, half_s = _steps(opt, params, grads[:4])
  # A checkpoint round trip: to NumPy and back.
  half_p, half_s = jax.tree.map(lambda x: jnp.asarray(np.asarray(x)),
                                (half_p, half_s))
  rest_p, rest_s = _steps(opt, half_p, grads[4:], half_s)
  _assert_trees_equal(rest_p, full_p)
  _assert_trees_equal(rest_s, full_s)


def test_apply_if_finite_skips_the_whole_step():
  params, grads = _bf16_problem()
  opt = optax.apply_if_finite(lionx.compensated(_lion(learning_rate=1e-3)),
                              max_consecutive_errors=5)
  params, state = _steps(opt, params, grads[:3])
  bad = jax.tree.map(lambda g: g.at[0].set(jnp.nan), grads[3])
  updates, new_state = jax.jit(opt.update)(bad, state, params)
  _assert_trees_equal(optax.apply_updates(params, updates), params)
  _assert_trees_equal(new_state.inner_state, state.inner_state)
  assert int(new_state.notfinite_count) == 1


def test_multisteps_equals_the_mean_gradient():
  params, grads = _bf16_problem()
  make = lambda: lionx.compensated(_lion(learning_rate=1e-3))  # noqa: E731
  twice = [g for g in grads[:4] for _ in range(2)]
  multi_p, _ = _steps(optax.MultiSteps(make(), every_k_schedule=2),
                      params, twice)
  single_p, _ = _steps(make(), params, grads[:4])
  _assert_trees_equal(multi_p, single_p)


def test_inject_hyperparams_inside_and_outside():
  params, grads = _bf16_problem()
  plain, _ = _steps(lionx.compensated(_lion(learning_rate=1e-3)), params,
                    grads)
  # float32 hyperparameters (optax would take the bfloat16 of the grads).
  inside = lionx.compensated(optax.inject_hyperparams(
      lionx.lion, static_args=('b1', 'b2'), hyperparam_dtype=jnp.float32)(
          learning_rate=1e-3, weight_decay=WD))
  outside = optax.inject_hyperparams(
      lambda learning_rate: lionx.compensated(_lion(
          learning_rate=learning_rate)), hyperparam_dtype=jnp.float32)(
              learning_rate=1e-3)
  for opt in (inside, outside):
    got, _ = _steps(opt, params, grads)
    _assert_trees_equal(got, plain)


def test_adamw_inner_follows_fp32_adamw():
  params, grads = _bf16_problem(256)
  grads = grads * 25  # 200 steps
  opt = lionx.compensated(optax.adamw(1e-4, weight_decay=0.1))
  p16, _ = _steps(opt, params, grads)
  p32, _ = _steps(optax.adamw(1e-4, weight_decay=0.1), _f32(params),
                  [_f32(g) for g in grads])
  moved = np.abs(np.asarray(p32['w']) - np.asarray(params['w'], np.float32))
  assert np.median(moved) > 1e-3  # 200 steps of about 1e-4
  err = np.abs(np.asarray(p16['w'], np.float32) - np.asarray(p32['w']))
  assert err.max() <= np.asarray(_ulp(np.asarray(p32['w']))).max()
  np.testing.assert_array_equal(p16['b'], p32['b'])


def test_int16_residual_is_float32_precise():
  params, grads = _bf16_problem()
  grads = grads * 10
  p16, state = _steps(lionx.compensated(_lion(learning_rate=1e-4),
                                        jnp.int16), params, grads)
  p32, _ = _steps(_lion(learning_rate=1e-4), _f32(params),
                  [_f32(g) for g in grads])
  full = lionx.compensated_params(p16, state)
  err = np.abs(np.asarray(full['w'], np.float64) - np.asarray(p32['w']))
  assert err.max() <= 1e-6  # float32 rounding, not bfloat16 + int8


def test_float16_params():
  params = {'w': jnp.full(8, 0.5, jnp.float16)}
  grads = [{'w': jnp.ones(8, jnp.float16)}] * 20
  p, state = _steps(lionx.compensated(_lion(learning_rate=1e-5,
                                            weight_decay=0.0)),
                    params, grads)
  full = lionx.compensated_params(p, state)['w']
  np.testing.assert_allclose(full, 0.5 - 20e-5, rtol=0, atol=1e-5)
  assert p['w'].dtype == jnp.float16


def test_nnx_optimizer_bf16_model():
  """A bfloat16 model trains like its float32 twin, in nnx.Optimizer."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  x = jax.random.normal(jax.random.PRNGKey(0), (16, 8))
  y = jax.random.normal(jax.random.PRNGKey(1), (16, 2))
  models, optimizers = {}, {}
  for dtype in (jnp.bfloat16, jnp.float32):
    models[dtype] = nnx.Linear(8, 2, rngs=nnx.Rngs(0),
                               param_dtype=jnp.bfloat16)
    tx = _lion(learning_rate=1e-4)
    if dtype == jnp.bfloat16:
      tx = lionx.compensated(tx)
    else:  # the float32 twin starts from the same (bfloat16) values
      nnx.update(models[dtype], _f32(nnx.state(models[dtype], nnx.Param)))
    optimizers[dtype] = nnx.Optimizer(models[dtype], tx, wrt=nnx.Param)

  @nnx.jit
  def step(model, optimizer):
    loss, grads = nnx.value_and_grad(
        lambda m: jnp.mean((m(x.astype(m.kernel.dtype)) - y) ** 2))(model)
    optimizer.update(model, _f32(grads))
    return loss

  for _ in range(5):
    for dtype in models:
      step(models[dtype], optimizers[dtype])
  state = nnx.as_pure(optimizers[jnp.bfloat16].opt_state)
  assert state.residual['kernel'].dtype == jnp.int8
  params = nnx.as_pure(nnx.state(models[jnp.bfloat16], nnx.Param))
  assert params['kernel'].dtype == jnp.bfloat16
  full = lionx.compensated_params(params, state)
  twin = nnx.as_pure(nnx.state(models[jnp.float32], nnx.Param))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-5),
               full, twin)


def test_no_recompilation():
  params, grads = _bf16_problem()
  opt = lionx.compensated(_lion(learning_rate=optax.cosine_decay_schedule(
      1e-3, 10)))
  traces = []

  @jax.jit
  def step(params, state, grads):
    traces.append(1)
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  state = opt.init(params)
  for g in grads:
    params, state = step(params, state, g)
  assert len(traces) == 1


def test_bad_input():
  with pytest.raises(TypeError, match='inner=.*GradientTransformation'):
    lionx.compensated(lambda x: x)
  with pytest.raises(ValueError, match='residual_dtype=float32'):
    lionx.compensated(_lion(), jnp.float32)
  with pytest.raises(TypeError, match='residual_dtype='):
    lionx.compensated(_lion(), 'not a dtype')
  with pytest.raises(TypeError, match='seed=0.5'):
    lionx.compensated(_lion(), seed=0.5)
  opt = lionx.compensated(_lion())
  params = jnp.ones(3, jnp.bfloat16)
  with pytest.raises(ValueError, match='params=None'):
    opt.update(params, opt.init(params))
  with pytest.raises(ValueError, match='float16.*use jnp.int8'):
    lionx.compensated(_lion(), jnp.int16).init(jnp.ones(3, jnp.float16))
  with pytest.raises(ValueError, match='0 CompensatedState'):
    lionx.compensated_params(params, _lion().init(params))
