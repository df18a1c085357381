"""Optimizers by name, their directions, and the schedules."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lionx
from lionx.train import optimizers
from lionx.train.config import Config
from lionx.train.optimizers import OptimizerConfig
from lionx.train.schedules import make_schedule

PARAMS = {'w': jnp.array([[0.5, -1.0], [2.0, 0.0]]), 'b': jnp.array([0.3])}
GRADS = [{'w': jnp.array([[1.0, -2.0], [0.5, 3.0]]), 'b': jnp.array([-1.0])},
         {'w': jnp.array([[-1.0, 1.0], [2.0, -0.5]]), 'b': jnp.array([2.0])}]


def _build(opt: OptimizerConfig, lr: float = 1e-2) -> optimizers.Optimizer:
  """``opt`` at the constant rate ``lr``, built by make_optimizer."""
  opt.learning_rate = lr
  config = Config()
  config.optimizer = opt
  config.schedule.name = 'constant'
  return optimizers.make_optimizer(config, total_steps=10)


def _run(tx, steps=2):
  params, state = PARAMS, tx.init(PARAMS)
  for g in GRADS[:steps]:
    updates, state = tx.update(g, state, params)
    params = optax.apply_updates(params, updates)
  return params, state


def test_every_name_is_registered_and_steps():
  expected = ({'lion', 'cautious_lion', 'sgd', 'adamw', 'distributed_lion',
               'lion_cwd', 'muon'}
              | {f'lion_{k}' for k in lionx.RESHAPERS if k != 'sign'})
  assert 'lion_spectral' in expected
  assert set(optimizers.OPTIMIZERS) == expected
  # distributed_lion steps inside shard_map: tests/train/test_parallel.py.
  per_device = {n for n, s in optimizers.OPTIMIZERS.items() if s.per_device}
  assert per_device == {'distributed_lion'}
  for name in expected - per_device:
    built = _build(OptimizerConfig(name=name), 1e-2)
    params, state = _run(built.tx)
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(params))
    c = built.direction(state, GRADS[0])
    if name == 'muon':
      assert c is None  # no sign-like direction
    else:
      assert jax.tree.structure(c) == jax.tree.structure(PARAMS)


def test_lion_matches_algorithm_1():
  lr, wd = 0.1, 0.2
  config = OptimizerConfig(name='lion', weight_decay=wd)
  built = _build(config, lr)
  params, state = _run(built.tx)
  # Algorithm 1 of Dong, Li, Lin by hand, b1 = 0.9, b2 = 0.99.
  theta = {k: np.asarray(v) for k, v in PARAMS.items()}
  m = {k: np.zeros_like(v) for k, v in theta.items()}
  for g in GRADS:
    for k in theta:
      c = 0.9 * m[k] + 0.1 * np.asarray(g[k])
      theta[k] = theta[k] - lr * (np.sign(c) + wd * theta[k])
      m[k] = 0.99 * m[k] + 0.01 * np.asarray(g[k])
  for k in theta:
    np.testing.assert_allclose(params[k], theta[k], rtol=1e-6)
  # The direction for a gradient g: 0.9 m + 0.1 g with the current m.
  c = built.direction(state, GRADS[0])
  for k in theta:
    np.testing.assert_allclose(
        c[k], 0.9 * m[k] + 0.1 * np.asarray(GRADS[0][k]), rtol=1e-6)


@pytest.mark.parametrize('mu_dtype,leaf_dtypes', [
    ('float32', {jnp.float32}), ('bfloat16', {jnp.bfloat16}),
    ('int8', {jnp.int8, jnp.float32})])
@pytest.mark.parametrize('name', ['lion', 'lion_huber', 'cautious_lion'])
def test_mu_dtype_sets_the_lion_momentum(name, mu_dtype, leaf_dtypes):
  config = OptimizerConfig(name=name, mu_dtype=mu_dtype)
  built = _build(config, 1e-2)
  params, state = _run(built.tx)
  node = optimizers.find(state, (lionx.ScaleByLionState,
                                  lionx.ScaleByLion8bitState))
  arrays = [x for x in jax.tree.leaves(node) if x.ndim]
  assert {x.dtype for x in arrays} == {jnp.dtype(d) for d in leaf_dtypes}
  # The direction reads the momentum back (dequantized for int8).
  c = built.direction(state, GRADS[0])
  plain = _build(OptimizerConfig(name=name), 1e-2)
  float_c = plain.direction(_run(plain.tx)[1], GRADS[0])
  for k in PARAMS:
    np.testing.assert_allclose(c[k], float_c[k], rtol=0.05, atol=1e-3)
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(params))


def test_mu_dtype_for_adamw_and_sgd():
  adamw = _build(OptimizerConfig(name='adamw', mu_dtype='bfloat16'), 1e-2).tx
  state = adamw.init(PARAMS)
  assert optimizers.find(state, optax.ScaleByAdamState).mu[
      'w'].dtype == jnp.bfloat16
  sgd = _build(OptimizerConfig(name='sgd', mu_dtype='bfloat16'), 1e-2).tx
  trace = optimizers.find(sgd.init(PARAMS), optax.TraceState).trace
  assert trace['w'].dtype == jnp.bfloat16


def test_sgd_is_pytorch_sgd_with_weight_decay():
  lr, wd, mu = 0.1, 0.2, 0.9
  config = OptimizerConfig(name='sgd', weight_decay=wd)
  config.sgd.momentum = mu
  built = _build(config, lr)
  params, state = _run(built.tx)
  theta = {k: np.asarray(v) for k, v in PARAMS.items()}
  buf = {k: np.zeros_like(v) for k, v in theta.items()}
  for g in GRADS:  # torch.optim.SGD(lr, momentum, weight_decay)
    for k in theta:
      d = np.asarray(g[k]) + wd * theta[k]
      buf[k] = mu * buf[k] + d
      theta[k] = theta[k] - lr * buf[k]
  for k in theta:
    np.testing.assert_allclose(params[k], theta[k], rtol=1e-6)
  c = built.direction(state, GRADS[0])
  for k in theta:
    np.testing.assert_allclose(
        c[k], mu * buf[k] + np.asarray(GRADS[0][k]), rtol=1e-6)
  plain = OptimizerConfig(name='sgd')
  plain.sgd.momentum = 0.0
  built = _build(plain, lr)
  _, state = _run(built.tx)
  assert built.direction(state, GRADS[0]) is GRADS[0]


def test_adamw_direction_has_the_sign_of_its_step():
  config = OptimizerConfig(name='adamw', weight_decay=0.0)
  built = _build(config, 1e-2)
  tx = built.tx
  params, state = _run(tx, steps=1)
  c = built.direction(state, GRADS[1])
  updates, _ = tx.update(GRADS[1], state, params)
  for a, u in zip(jax.tree.leaves(c), jax.tree.leaves(updates)):
    np.testing.assert_array_equal(np.sign(a), -np.sign(u))


def test_lion_k_and_cautious_use_their_reshapers():
  config = OptimizerConfig(name='lion_lp', weight_decay=0.0)
  config.lion_lp.p = 3.0
  built = _build(config, 0.1)
  ours, _ = _run(built.tx)
  ref, _ = _run(lionx.lion_k(0.1, lionx.lp_reshaper(3.0), weight_decay=0.0))
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(ref)):
    np.testing.assert_array_equal(a, b)
  assert built.reshaper().name == lionx.lp_reshaper(3.0).name
  assert _build(OptimizerConfig(name='sgd')).reshaper() is None
  cautious = OptimizerConfig(name='cautious_lion', weight_decay=0.1)
  ours, state = _run(_build(cautious, 0.1).tx)
  ref, _ = _run(lionx.cautious_lion(0.1, weight_decay=0.1))
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(ref)):
    np.testing.assert_array_equal(a, b)
  s = optimizers.resolve(cautious)
  assert (s.b1, s.b2) == (0.95, 0.98)


def test_weight_decay_per_optimizer_and_rates():
  config = OptimizerConfig(name='sgd', weight_decay=0.1,
                           weight_decays={'sgd': 5e-4},
                           learning_rates={'sgd': 0.3, 'lion': 1e-3})
  assert optimizers.weight_decay(config) == 5e-4
  assert optimizers.learning_rate(config) == 0.3
  config.name = 'lion'
  assert optimizers.weight_decay(config) == 0.1
  assert optimizers.learning_rate(config) == 1e-3
  config.learning_rate = 0.5  # one rate for every optimizer
  assert optimizers.learning_rate(config) == 0.5
  # The decay reaches the transform: SGD's L2 term with 5e-4.
  sgd = OptimizerConfig(name='sgd', weight_decays={'sgd': 0.5})
  sgd.sgd.momentum = 0.0
  params, _ = _run(_build(sgd, 0.1).tx, steps=1)
  np.testing.assert_allclose(
      params['b'], PARAMS['b'] - 0.1 * (GRADS[0]['b'] + 0.5 * PARAMS['b']),
      rtol=1e-6)


def test_a_new_optimizer_is_one_row():
  import dataclasses

  @dataclasses.dataclass
  class Hparams:
    scale: float = 2.0

  def build(s, schedule):
    return optax.chain(optax.scale(s.hparams.scale),
                       optax.scale_by_learning_rate(schedule))

  optimizers.register('scaled_sgd', optimizers.OptimizerSpec(
      build, lambda s, state, grads: grads, Hparams))
  try:
    config = OptimizerConfig(name='scaled_sgd', learning_rate=0.1)
    config.scaled_sgd.scale = 3.0
    optimizers.validate(config)
    params, _ = _run(_build(config, 0.1).tx,
                     steps=1)
    np.testing.assert_allclose(params['b'], PARAMS['b'] - 0.3 * GRADS[0]['b'],
                               rtol=1e-6)
  finally:
    optimizers.OPTIMIZERS.unregister('scaled_sgd')


@pytest.mark.parametrize('change,match', [
    ({'weight_decays': {'lamb': 0.1}}, "weight_decays key='lamb'"),
    ({'weight_decays': {'sgd': -1.0}}, 'weight_decays.sgd=-1.0'),
    ({'b1': 1.5}, 'optimizer.b1=1.5'),
    ({'mu_dtype': 'int8', 'name': 'sgd'}, "8-bit momentum is for"),
])
def test_bad_optimizer_sections(change, match):
  config = OptimizerConfig(learning_rate=1e-3, **change)
  with pytest.raises(optimizers.fields.ConfigError, match=match):
    optimizers.validate(config)


def test_bad_hyperparameters():
  config = OptimizerConfig(learning_rate=1e-3)
  config.lion_lp.p = 0.5
  with pytest.raises(ValueError, match=r'optimizer.lion_lp.p=0.5'):
    optimizers.validate(config)
  config = OptimizerConfig(learning_rate=1e-3)
  config.distributed_lion.aggregation = 'mean'
  with pytest.raises(ValueError, match="aggregation='mean' is not one of"):
    optimizers.validate(config)
  with pytest.raises(AttributeError, match="no field or optimizer section"):
    OptimizerConfig().lamb  # pylint: disable=expression-not-assigned


def test_unknown_optimizer():
  with pytest.raises(ValueError, match="optimizer.name='lamb' is not one"):
    _build(OptimizerConfig(name='lamb'), 1.0).tx


def test_schedules_follow_their_formulas():
  lr, total, warm = 0.5, 100, 10
  cos = make_schedule('cosine', lr, total, final_fraction=0.1)
  for t in (0, 1, 37, 99, 100):
    expected = lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t / total)))
    assert float(cos(t)) == pytest.approx(expected, rel=1e-6)
  wc = make_schedule('warmup_cosine', lr, total, warmup_steps=warm)
  for t in (0, 3, 10):
    assert float(wc(t)) == pytest.approx(lr * t / warm, rel=1e-6)
  for t in (10, 40, 100):
    frac = (t - warm) / (total - warm)
    assert float(wc(t)) == pytest.approx(
        lr * 0.5 * (1 + math.cos(math.pi * frac)), rel=1e-5, abs=1e-9)
  const = make_schedule('constant', lr, total)
  assert float(const(0)) == float(const(99)) == lr


# --- issue 25: the weight-decay mask and gradient clipping --------------------

LM_PARAMS = {
    'wte': {'embedding': jnp.full((5, 2), 2.0)},
    'wpe': {'embedding': jnp.full((4, 2), 2.0)},
    'blocks': {0: {'fc': {'kernel': jnp.full((2, 3), 2.0),
                          'bias': jnp.full((3,), 2.0)},
                   'ln1': {'scale': jnp.full((2,), 2.0),
                           'bias': jnp.full((2,), 2.0)}}},
    'vit': {'pos_embed': jnp.full((1, 4, 2), 2.0),
            'patch_embed': {'kernel': jnp.full((2, 2, 3, 2), 2.0)}},
}
DECAYED = {'wte/embedding', 'blocks/0/fc/kernel', 'vit/patch_embed/kernel'}


def _paths(tree):
  return {'/'.join(str(getattr(k, 'key', k)) for k in path): leaf
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def test_matrices_decays_kernels_and_embeddings_only():
  marks = _paths(optimizers.matrices(LM_PARAMS))
  assert {p for p, m in marks.items() if m} == DECAYED
  assert len(marks) == 8


@pytest.mark.parametrize('name', sorted(
    n for n, s in optimizers.OPTIMIZERS.items()
    if not s.per_device and s.masks))
def test_decay_matrices_leaves_the_others_alone_in_every_row(name):
  """A zero gradient: only weight decay moves a parameter, and only the
  kernels and embeddings decay."""
  built = _build(OptimizerConfig(name=name, decay='matrices',
                                 weight_decay=0.5), 0.1)
  zeros = jax.tree.map(jnp.zeros_like, LM_PARAMS)
  state = built.tx.init(LM_PARAMS)
  updates, _ = built.tx.update(zeros, state, LM_PARAMS)
  for path, update in _paths(updates).items():
    moved = bool(jnp.any(update != 0))
    assert moved == (path in DECAYED), (name, path)


def test_decay_all_is_the_default_and_decays_everything():
  built = _build(OptimizerConfig(name='lion', weight_decay=0.5), 0.1)
  assert built.settings.mask is None
  zeros = jax.tree.map(jnp.zeros_like, LM_PARAMS)
  updates, _ = built.tx.update(zeros, built.tx.init(LM_PARAMS), LM_PARAMS)
  for path, update in _paths(updates).items():  # -eta * lambda * 2
    np.testing.assert_allclose(np.asarray(update), -0.1 * 0.5 * 2.0,
                               err_msg=path)


def test_the_box_is_that_of_the_decayed_leaves():
  from lionx.train import diagnostics
  built = _build(OptimizerConfig(name='lion', decay='matrices',
                                 weight_decay=0.5), 0.1)
  params = jax.tree.map(jnp.ones_like, LM_PARAMS)
  params['blocks'][0]['ln1']['scale'] = jnp.full((2,), 50.0)  # not decayed
  params['wte']['embedding'] = jnp.full((5, 2), 1.5)
  grads = jax.tree.map(lambda x: jnp.full_like(x, -1.0), params)
  out = diagnostics.make_diagnostics(built)(
      params, grads, built.tx.init(params), 0)
  assert float(out['box_linf_scaled']) == pytest.approx(0.5 * 1.5)
  decayed = [np.asarray(x) for p, x in _paths(params).items()
             if p in DECAYED]
  g = [np.full(x.shape, -1.0) for x in decayed]
  kkt = 0.5 * sum(float(np.sum(a * b)) for a, b in zip(g, decayed)) + sum(
      float(np.abs(a).sum()) for a in g)
  assert float(out['kkt_residual']) == pytest.approx(kkt)
  total = sum(x.size for x in jax.tree.leaves(params))
  assert float(out['grad_l1']) == pytest.approx(total)  # every leaf
  assert 'grad_norm_preclip' not in out


def test_clip_by_global_norm_is_optax_and_records_the_norm():
  tx = optimizers.clip_by_global_norm(2.0)
  reference = optax.clip_by_global_norm(2.0)
  state = tx.init(PARAMS)
  for i, g in enumerate(GRADS + [jax.tree.map(lambda x: x / 10, GRADS[0])]):
    ours, state = tx.update(g, state)
    theirs, _ = reference.update(g, reference.init(PARAMS))
    jax.tree.map(np.testing.assert_array_equal, ours, theirs)
    norm = math.sqrt(sum(float(np.sum(np.asarray(x) ** 2))
                         for x in jax.tree.leaves(g)))
    assert float(state.norm) == pytest.approx(norm, rel=1e-6)
    assert int(state.count) == i + 1
  assert int(state.clipped) == 2  # the two full gradients; not the tenth
  with pytest.raises(ValueError, match='clip_norm=0'):
    optimizers.clip_by_global_norm(0)


def test_clip_norm_comes_first_and_shows_in_the_diagnostics():
  from lionx.train import diagnostics
  built = _build(OptimizerConfig(name='sgd', clip_norm=1.0, weight_decay=0.0),
                 0.1)
  assert built.clips
  big = jax.tree.map(lambda x: 100 * x, GRADS[0])
  updates, state = built.tx.update(big, built.tx.init(PARAMS), PARAMS)
  norm = math.sqrt(sum(float(np.sum(np.asarray(x) ** 2))
                       for x in jax.tree.leaves(big)))
  for u, g in zip(jax.tree.leaves(updates), jax.tree.leaves(big)):
    np.testing.assert_allclose(u, -0.1 * np.asarray(g) / norm, rtol=1e-5)
  out = diagnostics.make_diagnostics(built)(PARAMS, GRADS[1], state, 1)
  assert float(out['grad_norm_preclip']) == pytest.approx(norm, rel=1e-6)
  assert float(out['clipped_fraction']) == 1.0


@pytest.mark.parametrize('change,match', [
    (dict(decay='kernels'), "optimizer.decay='kernels' is not one of"),
    (dict(clip_norm=-1.0), 'optimizer.clip_norm=-1.0 is outside'),
    (dict(name='muon', decay='matrices'), "decay='matrices' with "
     "optimizer.name='muon'"),
])
def test_bad_decay_and_clip(change, match):
  config = OptimizerConfig(**{'name': 'lion', 'learning_rate': 1e-3,
                              **change})
  with pytest.raises(ValueError, match=match):
    optimizers.validate(config)


def test_decay_and_clip_are_part_of_a_runs_identity():
  from lionx.train import config as config_lib
  config = Config()
  config.optimizer.learning_rate = 1e-3
  plain = config_lib.run_identity(config)['optimizer']
  assert 'decay' not in plain and 'clip_norm' not in plain
  config.optimizer.decay, config.optimizer.clip_norm = 'matrices', 1.0
  changed = config_lib.run_identity(config)['optimizer']
  assert changed['decay'] == 'matrices' and changed['clip_norm'] == 1.0
