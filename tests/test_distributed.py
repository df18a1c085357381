"""Distributed Lion on 8 simulated CPU devices.

The root ``conftest.py`` sets
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` before JAX starts.
The reference below is written from REFERENCE §8 (Liu et al. 2024), with
NumPy and per-worker gradients.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import lionx

N = 8
SPECS = lionx.DistributedLionState.partition_specs('data')
MODES = [(a, c) for a in ('majority', 'average')
         for c in ('all_to_all', 'all_gather')]


def mesh_of(n):
  devices = jax.devices('cpu')
  if len(devices) < n:
    pytest.fail(
        f'{len(devices)} CPU devices, these tests need {n}: set XLA_FLAGS='
        '--xla_force_host_platform_device_count=8 before JAX starts (the '
        'root conftest.py does).')
  return jax.make_mesh((n,), ('data',), devices=devices[:n])


def reference(theta, grads, lr, b1, b2, wd, aggregation):
  """Distributed Lion; grads[t, i] is worker i's gradient at step t.

  delta_i = sign(b1 m_i + (1-b1) g_i); Delta = sign(sum_i delta_i) or
  mean_i delta_i; theta <- theta - lr (Delta + wd theta);
  m_i <- b2 m_i + (1-b2) g_i. Returns theta, m and the number of ties
  (nonzero votes summing to 0).
  """
  n = grads.shape[1]
  m = np.zeros((n,) + theta.shape)
  ties = 0
  for g in grads:
    delta = np.sign(b1 * m + (1 - b1) * g)
    total = delta.sum(axis=0)
    ties += int(np.sum((total == 0) & np.any(delta != 0, axis=0)))
    step = np.sign(total) if aggregation == 'majority' else total / n
    theta = theta - lr * (step + wd * theta)
    m = b2 * m + (1 - b2) * g
  return theta, m, ties


def run_fed(opt, theta, grads, mesh):
  """Runs ``opt`` on fed gradients ``grads[t, i]`` of worker i at step t."""

  def worker(theta, state, g):
    def body(carry, g_t):
      theta, state = carry
      g_t = jax.tree.map(lambda x: x[0], g_t)  # this worker's
      updates, state = opt.update(g_t, state, theta)
      return (optax.apply_updates(theta, updates), state), None
    return jax.lax.scan(body, (theta, state), g)[0]

  run = jax.jit(jax.shard_map(
      worker, mesh=mesh, in_specs=(P(), SPECS, P(None, 'data')),
      out_specs=(P(), SPECS)))
  init = jax.jit(jax.shard_map(
      opt.init, mesh=mesh, in_specs=P(), out_specs=SPECS))
  grads = jax.device_put(grads, NamedSharding(mesh, P(None, 'data')))
  return run(theta, init(theta), grads)


def regression(seed, n_rows=64, dim=12):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n_rows, dim)).astype(np.float32)
  y = (x @ rng.normal(size=dim) + 0.1 * rng.normal(size=n_rows))
  return x, y.astype(np.float32)


def loss(params, x, y):
  return jnp.mean((x @ params['w'] + params['b'] - y) ** 2)


def train(opt, params, x, y, mesh, steps):
  """Full-batch steps; the rows of x are sharded over the workers."""

  def worker(params, state, x, y):
    def body(carry, _):
      params, state = carry
      local = jax.lax.pcast(params, 'data', to='varying')
      grads = jax.grad(loss)(local, x, y)
      updates, state = opt.update(grads, state, params)
      return (optax.apply_updates(params, updates), state), None
    return jax.lax.scan(body, (params, state), None, length=steps)[0]

  run = jax.jit(jax.shard_map(
      worker, mesh=mesh, in_specs=(P(), SPECS, P('data'), P('data')),
      out_specs=(P(), SPECS)))
  init = jax.jit(jax.shard_map(
      opt.init, mesh=mesh, in_specs=P(), out_specs=SPECS))
  rows = NamedSharding(mesh, P('data'))
  return run(params, init(params), jax.device_put(x, rows),
             jax.device_put(y, rows))


@pytest.mark.parametrize('aggregation,communication', MODES)
def test_equals_numpy_reference(aggregation, communication):
  # Dyadic hyperparameters and integer gradients make c exact, so exact
  # zeros (sign 0) and exact ties (4 against 4) happen and are compared.
  rng = np.random.default_rng(0)
  d, steps = 37, 10  # 37: not a multiple of the packing block.
  grads = rng.integers(-2, 3, size=(steps, N, d)).astype(np.float32)
  theta = (rng.integers(-8, 9, size=d) / 8).astype(np.float32)
  hyper = dict(lr=2.0 ** -5, b1=0.5, b2=0.75, wd=2.0 ** -3)
  opt = lionx.distributed_lion(
      hyper['lr'], hyper['b1'], hyper['b2'], weight_decay=hyper['wd'],
      aggregation=aggregation, communication=communication)
  params, state = run_fed(opt, jnp.asarray(theta), grads, mesh_of(N))
  expected, m, ties = reference(
      theta.astype(np.float64), grads.astype(np.float64),
      aggregation=aggregation, **hyper)
  assert ties > 0  # the tie rule sign(0) = 0 was exercised.
  np.testing.assert_allclose(params, expected, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(state.mu, m, rtol=1e-6)
  assert state.mu.shape == (N, d)
  assert int(state.count) == steps


@pytest.mark.parametrize('aggregation', ['majority', 'average'])
def test_params_bit_identical_on_every_device(aggregation):
  x, y = regression(1)
  params = {'w': jnp.zeros(12), 'b': jnp.zeros(())}
  opt = lionx.distributed_lion(
      optax.cosine_decay_schedule(0.05, 300), weight_decay=0.1,
      aggregation=aggregation)
  out, state = train(opt, params, x, y, mesh_of(N), steps=300)
  for leaf in jax.tree.leaves(out):
    copies = [np.asarray(s.data) for s in leaf.addressable_shards]
    assert len(copies) == N
    for copy in copies[1:]:
      np.testing.assert_array_equal(copy, copies[0])
  # It trained, and each worker kept its own momentum.
  assert loss(out, x, y) < 0.2 * loss(params, x, y)
  mu = np.asarray(state.mu['w'])
  assert not np.allclose(mu[0], mu[1])


@pytest.mark.compiled_as_users
@pytest.mark.parametrize('aggregation,communication', MODES)
def test_one_worker_equals_lion(aggregation, communication):
  rng = np.random.default_rng(2)
  grads = {'w': rng.normal(size=(40, 1, 3, 4)).astype(np.float32),
           'b': rng.normal(size=(40, 1)).astype(np.float32)}
  grads['w'][5, 0, 1] = 0.0
  params = {'w': jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
            'b': jnp.ones(())}
  schedule = optax.linear_schedule(0.1, 0.01, 40)
  kwargs = dict(b1=0.9, b2=0.99, weight_decay=0.2)
  opt = lionx.distributed_lion(
      schedule, **kwargs, aggregation=aggregation,
      communication=communication)
  out, state = run_fed(opt, params, grads, mesh_of(1))

  lion = lionx.lion(schedule, **kwargs)

  @jax.jit
  def lion_run(params, grads):
    def body(carry, g):
      params, s = carry
      updates, s = lion.update(jax.tree.map(lambda x: x[0], g), s, params)
      return (optax.apply_updates(params, updates), s), None
    return jax.lax.scan(body, (params, lion.init(params)), grads)[0]

  expected, lion_state = lion_run(params, grads)
  for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(jax.tree.leaves(state.mu),
                  jax.tree.leaves(lion_state[0].mu)):
    np.testing.assert_array_equal(a[0], b)
  assert int(state.count) == int(lion_state[0].count) == 40


def test_pytree_dtypes_and_both_communications_agree():
  rng = np.random.default_rng(3)
  theta = {'a': jnp.zeros((3, 5)), 'b': jnp.zeros(7, jnp.bfloat16)}
  grads = {'a': rng.normal(size=(4, N, 3, 5)).astype(np.float32),
           'b': rng.normal(size=(4, N, 7)).astype(jnp.bfloat16)}
  results = []
  for communication in ('all_to_all', 'all_gather'):
    opt = lionx.distributed_lion(0.1, communication=communication,
                                 mu_dtype=jnp.bfloat16)
    params, state = run_fed(opt, theta, grads, mesh_of(N))
    assert params['b'].dtype == jnp.bfloat16
    assert state.mu['a'].dtype == jnp.bfloat16
    assert state.mu['a'].shape == (N, 3, 5)
    results.append(params)
  jax.tree.map(np.testing.assert_array_equal, *results)


def test_nonfinite_vote_reaches_every_worker_and_zeros_stay_still():
  grads = np.ones((3, N, 4), np.float32)
  grads[:, :, 2] = 0.0  # no worker ever moves coordinate 2.
  grads[1, 5, 0] = np.nan  # worker 5 only, step 1.
  theta = jnp.array([1.0, 2.0, 3.0, 4.0])
  opt = lionx.distributed_lion(0.1, weight_decay=0.0)
  params, _ = run_fed(opt, theta, grads, mesh_of(N))
  copies = [np.asarray(s.data) for s in params.addressable_shards]
  for copy in copies:
    np.testing.assert_array_equal(copy, copies[0])  # NaN == NaN here.
  assert np.isnan(copies[0][0])
  assert copies[0][2] == 3.0  # exactly: sign(0) = 0 on every worker.
  np.testing.assert_allclose(copies[0][[1, 3]], [1.7, 3.7], rtol=1e-6)


def _step_bytes(opt, mesh, distributed, params):
  specs = SPECS if distributed else P()

  def step(params, state, x, y):
    local = jax.lax.pcast(params, 'data', to='varying')
    grads = jax.grad(loss)(local, x, y)
    if not distributed:
      grads = jax.lax.pmean(grads, 'data')
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  step = jax.jit(jax.shard_map(
      step, mesh=mesh, in_specs=(P(), specs, P('data'), P('data')),
      out_specs=(P(), specs)))
  init = jax.shard_map(opt.init, mesh=mesh, in_specs=P(), out_specs=specs)
  dim = params['w'].shape[0]
  x = jax.ShapeDtypeStruct((4 * N, dim), jnp.float32,
                           sharding=NamedSharding(mesh, P('data')))
  y = jax.ShapeDtypeStruct((4 * N,), jnp.float32,
                           sharding=NamedSharding(mesh, P('data')))
  hlo = step.lower(params, jax.eval_shape(init, params), x, y).compile()
  return lionx.distributed.collective_bytes(hlo.as_text())


@pytest.mark.slow
def test_hlo_bytes_at_most_an_eighth_of_fp32_all_reduce():
  mesh = mesh_of(N)
  params = {'w': jnp.zeros(4001), 'b': jnp.zeros(())}
  d = 4002
  base = _step_bytes(lionx.lion(1e-3), mesh, False, params)
  assert base == {'all-reduce': 4 * d, 'total': 4 * d}
  padded = -(-d // (4 * N)) * 4 * N
  expected = {
      ('majority', 'all_to_all'): padded // 4 + padded // (4 * N),
      ('average', 'all_to_all'): padded // 4 + padded // N,
      ('majority', 'all_gather'): -(-d // 4),
      ('average', 'all_gather'): -(-d // 4),
  }
  for (aggregation, communication), total in expected.items():
    opt = lionx.distributed_lion(
        1e-3, aggregation=aggregation, communication=communication)
    got = _step_bytes(opt, mesh, True, params)
    assert 'all-reduce' not in got  # no gradient all-reduce.
    assert got['total'] == total, (aggregation, communication, got)
    assert 8 * got['total'] <= base['total']


def test_collective_bytes_parses_hlo_forms():
  hlo = """
  %p.1 = bf16[8,4]{1,0} parameter(0)
  %q = (u8[2]{0}, u8[2]{0}) parameter(1)
  %ag = bf16[64,4]{1,0} all-gather(%p.1), dimensions={0}
  %ar-start = f32[3]{0} all-reduce-start(f32[3]{0} %x), to_apply=%add
  %ar-done = f32[3]{0} all-reduce-done(%ar-start)
  %a2a = (u8[2]{0}, u8[2]{0}) all-to-all(%q, /*index=1*/%q), channel_id=1
  ROOT %t = (u8[2]{0}) tuple(%a2a)
  """
  assert lionx.distributed.collective_bytes(hlo) == {
      'all-gather': 64, 'all-reduce': 12, 'all-to-all': 8, 'total': 84}
  assert lionx.distributed.collective_bytes('') == {'total': 0}
  with pytest.raises(ValueError, match=r"\['%nowhere'\].*all-gather"):
    lionx.distributed.collective_bytes(
        '%a = f32[2]{0} all-gather(%nowhere)')


@pytest.mark.slow
def test_trains_digits_like_lion():
  from sklearn.datasets import load_digits
  data = load_digits()
  x = (data.data / 16.0).astype(np.float32)
  y = data.target
  rng = np.random.default_rng(0)
  steps, batch = 150, 128
  idx = np.stack([rng.choice(len(x), batch, replace=False)
                  for _ in range(steps)])
  xs, ys = x[idx], np.eye(10, dtype=np.float32)[y[idx]]
  k1, k2 = jax.random.split(jax.random.key(0))
  params = {'w1': jax.random.normal(k1, (64, 32)) / 8, 'b1': jnp.zeros(32),
            'w2': jax.random.normal(k2, (32, 10)) / 6, 'b2': jnp.zeros(10)}

  def mlp_loss(p, x, y):
    h = jax.nn.relu(x @ p['w1'] + p['b1'])
    logits = h @ p['w2'] + p['b2']
    return -jnp.mean(jnp.sum(jax.nn.log_softmax(logits) * y, axis=-1))

  def run(opt, mesh, distributed):
    specs = SPECS if distributed else P()

    def worker(params, state, xs, ys):
      def body(carry, batch):
        params, state = carry
        local = jax.lax.pcast(params, 'data', to='varying')
        grads = jax.grad(mlp_loss)(local, *batch)
        if not distributed:
          grads = jax.lax.pmean(grads, 'data')
        updates, state = opt.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), None
      return jax.lax.scan(body, (params, state), (xs, ys))[0][0]

    init = jax.jit(jax.shard_map(
        opt.init, mesh=mesh, in_specs=P(), out_specs=specs))
    fit = jax.jit(jax.shard_map(
        worker, mesh=mesh, in_specs=(P(), specs, P(None, 'data'),
                                     P(None, 'data')), out_specs=P()))
    batches = NamedSharding(mesh, P(None, 'data'))
    out = fit(params, init(params), jax.device_put(xs, batches),
              jax.device_put(ys, batches))
    return float(mlp_loss(out, x, np.eye(10, dtype=np.float32)[y]))

  lion = run(lionx.lion(3e-3, weight_decay=0.1), mesh_of(1), False)
  start = float(mlp_loss(params, x, np.eye(10, dtype=np.float32)[y]))
  assert lion < 0.2 * start
  for aggregation in ('majority', 'average'):
    dlion = run(lionx.distributed_lion(3e-3, weight_decay=0.1,
                                       aggregation=aggregation),
                mesh_of(N), True)
    assert dlion < 1.5 * lion, (aggregation, dlion, lion)


def test_rejects_all_reduced_gradients():
  mesh = mesh_of(N)
  opt = lionx.distributed_lion(0.1)

  def step(params, state, x):
    grads = jax.grad(lambda p: jnp.sum(p * x))(params)  # summed over data.
    return opt.update(grads, state, params)[0]

  f = jax.jit(jax.shard_map(step, mesh=mesh, in_specs=(P(), SPECS, P('data')),
                            out_specs=P()))
  init = jax.jit(jax.shard_map(opt.init, mesh=mesh, in_specs=P(),
                               out_specs=SPECS))
  x = jax.device_put(jnp.ones(N), NamedSharding(mesh, P('data')))
  with pytest.raises(ValueError, match=r"same on every worker of 'data'.*"
                     r'jax\.lax\.pcast'):
    f(jnp.zeros(1), init(jnp.zeros(1)), x)


@pytest.mark.parametrize('kwargs,error,match', [
    (dict(aggregation='median'), ValueError, r"aggregation='median' is not"),
    (dict(communication='ring'), ValueError, r"communication='ring' is not"),
    (dict(axis_name=3), TypeError, r'axis_name=3: expected the name'),
    (dict(axis_name=''), TypeError, r"axis_name='': expected the name"),
    (dict(learning_rate=-1.0), ValueError, r'learning_rate=-1.0 is outside'),
    (dict(b1=1.5), ValueError, r'b1=1.5 is outside'),
    (dict(weight_decay=-0.1), ValueError, r'weight_decay=-0.1 is outside'),
    (dict(mu_dtype=jnp.int8), ValueError, r'mu_dtype=.*int8.*not supported'),
    (dict(mu_dtype=0.1), TypeError, r'mu_dtype=0.1'),
    (dict(weight_decay_convention='timm'), ValueError,
     r"weight_decay_convention='timm'"),
    (dict(learning_rate=optax.constant_schedule(0.1),
          weight_decay_convention='independent'), ValueError,
     r'peak_learning_rate=None'),
])
def test_bad_arguments(kwargs, error, match):
  kwargs = {'learning_rate': 0.1, **kwargs}
  with pytest.raises(error, match=match):
    lionx.distributed_lion(**kwargs)


def test_bad_arguments_of_sign_vote():
  with pytest.raises(ValueError, match=r"aggregation='vote' is not one of"):
    lionx.distributed.sign_vote('data', 'vote')
  with pytest.raises(TypeError, match=r"axis_name=\('data',\)"):
    lionx.distributed.sign_vote(('data',))


def test_bad_axis_and_bad_state():
  opt = lionx.distributed_lion(0.1)
  params = jnp.zeros(3)
  state = opt.init(params)  # outside shard_map: a worker axis of size 1.
  assert state.mu.shape == (1, 3)
  with pytest.raises(ValueError, match=r"axis_name='data' is not a mapped"):
    opt.update(params, state, params)
  mesh = mesh_of(N)

  def inside(opt, state_spec, state):
    f = jax.shard_map(
        lambda p, s: opt.update(p, s, p)[0], mesh=mesh,
        in_specs=(P(), state_spec), out_specs=P(), check_vma=False)
    return f(params, state)

  with pytest.raises(ValueError, match=r"axis_name='model' is not a mapped"):
    model = lionx.distributed_lion(0.1, axis_name='model')
    inside(model, P(), model.init(params))
  with pytest.raises(TypeError, match=r'state is a tuple; expected the '
                     r'DistributedLionState'):
    inside(opt, P(), lionx.lion(0.1).init(params))
  with pytest.raises(ValueError, match=r'state.mu has a leaf of shape '
                     r'\(3,\); expected a leading worker axis'):
    inside(opt, P(), state._replace(mu=params))
  with pytest.raises(ValueError, match=r'params=None'):
    inside_none = jax.shard_map(
        lambda p, s: opt.update(p, s)[0], mesh=mesh,
        in_specs=(P(), P()), out_specs=P(), check_vma=False)
    inside_none(params, state)


@pytest.mark.parametrize('convention', ['independent', 'corrected'])
def test_one_worker_equals_lion_with_a_weight_decay_convention(convention):
  rng = np.random.default_rng(5)
  grads = rng.normal(size=(12, 1, 6)).astype(np.float32)
  params = jnp.asarray(rng.normal(size=6), jnp.float32)
  schedule = optax.linear_schedule(0.1, 0.01, 12)
  kwargs = dict(weight_decay=0.5, weight_decay_convention=convention,
                peak_learning_rate=0.1)
  out, _ = run_fed(lionx.distributed_lion(schedule, **kwargs), params, grads,
                   mesh_of(1))
  lion = lionx.lion(schedule, **kwargs)
  state = lion.init(params)
  for g in grads:
    updates, state = jax.jit(lion.update)(g[0], state, params)
    params = optax.apply_updates(params, updates)
  # Not bit for bit: XLA contracts the decay into fused multiply-adds
  # differently inside shard_map and scan.
  np.testing.assert_allclose(out, params, rtol=1e-6, atol=1e-7)


@pytest.mark.compiled_as_users
def test_complex_leaves_vote_as_two_real_coordinates():
  """A complex leaf's update is its real view's, on 8 workers."""
  rng = np.random.default_rng(6)
  g = rng.normal(size=(5, N, 3, 2)).astype(np.float32)
  theta = rng.normal(size=(3, 2)).astype(np.float32)
  opt = lionx.distributed_lion(0.1, weight_decay=0.1)
  real, real_state = run_fed(opt, jnp.asarray(theta), g, mesh_of(N))
  cplx, state = run_fed(opt, jax.lax.complex(theta[..., 0], theta[..., 1]),
                        jax.lax.complex(g[..., 0], g[..., 1]), mesh_of(N))
  assert cplx.dtype == jnp.complex64
  np.testing.assert_array_equal(jnp.stack([cplx.real, cplx.imag], -1), real)
  # The momentum to the last bit XLA's fused multiply-adds may change.
  np.testing.assert_allclose(state.mu, real_state.mu, rtol=1e-6, atol=1e-8)


# --- issue 27: hyperparameters that are not Python floats ---

# Every kind of number holds the same value (tests/kinds.py).
from tests.kinds import KINDS, LR as LR27, PEAK as PEAK27, WD as WD27  # noqa: E402
KINDS27 = {k: v for k, v in KINDS.items() if k != 'np 0-d'}


@pytest.mark.parametrize('convention', ['paper', 'independent', 'corrected'])
def test_hyperparameters_of_every_kind_give_the_same_steps(convention):
  """distributed_lion takes lion's hyperparameters: a NumPy scalar or a
  0-d array gives the steps of the same Python float, bit for bit."""
  rng = np.random.default_rng(5)
  grads = {'w': rng.normal(size=(4, 2, 3, 4)).astype(np.float32)}
  params = {'w': jnp.asarray(300 * rng.normal(size=(3, 4)), jnp.float32)}
  mesh = mesh_of(2)

  def steps(to, schedule):
    kwargs = {'weight_decay': to(WD27),
              'weight_decay_convention': convention}
    learning_rate = to(LR27)
    if convention != 'paper' and isinstance(learning_rate, jax.Array):
      # An array learning rate needs its peak (issue 23): the same number.
      kwargs['peak_learning_rate'] = to(LR27)
    if schedule:
      learning_rate = optax.linear_schedule(LR27, LR27 / 3, 5)
      kwargs['peak_learning_rate'] = to(PEAK27)
    opt = lionx.distributed_lion(learning_rate, **kwargs)
    return np.asarray(run_fed(opt, params, grads, mesh)[0]['w'])

  for schedule in ((False, True) if convention != 'paper' else (False,)):
    want = steps(float, schedule)
    for kind, to in KINDS27.items():
      np.testing.assert_array_equal(steps(to, schedule), want, err_msg=kind)
