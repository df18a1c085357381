"""Low-precision parameters in the harness: model.param_dtype and
optimizer.compensation (lionx.compensated)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import lionx
from lionx.train import config as config_lib
from lionx.train import experiment, optimizers, plots, steps, tasks
from lionx.train import workdir as workdir_lib
from lionx.train.checkpoint import Checkpointer
from lionx.train.config import ConfigError
from lionx.train.data import images as data
from lionx.train.models import lm, precision, vision
from tests.train.helpers import tiny_config
from tests.train.test_text_data import lm_config

TASK = tasks.get_task('classification')
SIX_BYTES = {'model__param_dtype': 'bfloat16',
             'optimizer__compensation': 'int8',
             'optimizer__mu_dtype': 'int8'}


def _params(model):
  return jax.tree.leaves(nnx.state(model, nnx.Param))


@pytest.mark.slow
@pytest.mark.parametrize('name', ['bfloat16', 'float16'])
@pytest.mark.parametrize('model_name', ['cnn', 'vit_tiny'])
def test_param_dtype_rounds_the_float32_initialisation(name, model_name):
  base = vision.VisionModelConfig(name=model_name, width=4, batch_norm=True)
  low = vision.VisionModelConfig(name=model_name, width=4, batch_norm=True,
                                 param_dtype=name)
  ref = vision.create_model(base, 3, (8, 8, 1), seed=1)
  model = vision.create_model(low, 3, (8, 8, 1), seed=1)
  want = np.dtype(precision.PARAM_DTYPES[name])
  for p, r in zip(_params(model), _params(ref), strict=True):
    assert p.dtype == want and r.dtype == np.float32
    np.testing.assert_array_equal(
        np.asarray(p), np.asarray(r).astype(want))  # rounded to nearest
  for stat in jax.tree.leaves(nnx.state(model, nnx.BatchStat)):
    assert stat.dtype == np.float32
  # Only the storage is low-precision: the network computes in float32.
  x = jnp.ones((2, 8, 8, 1), jnp.float32)
  assert steps.eval_view(model)(x).dtype == np.float32


def test_float32_is_the_default_and_changes_nothing():
  config = vision.VisionModelConfig(name='mlp', width=4)
  assert config.param_dtype == 'float32'
  model = vision.create_model(config, 3, (4, 4, 1))
  assert {p.dtype for p in _params(model)} == {np.dtype(np.float32)}


@pytest.mark.parametrize('changes, expected', [
    ({'model__param_dtype': 'float64'},
     "model.param_dtype='float64'"),
    ({'optimizer__compensation': 'int4'},
     "optimizer.compensation='int4'"),
    ({'optimizer__compensation': 'int8'},
     "optimizer.compensation='int8' with model.param_dtype='float32'"),
    ({'optimizer__compensation': 'int16', 'model__param_dtype': 'float16'},
     "optimizer.compensation='int16' with model.param_dtype='float16'"),
    ({'optimizer__compensation': 'int8', 'model__param_dtype': 'bfloat16',
      'optimizer__name': 'distributed_lion'},
     "optimizer.compensation='int8' with optimizer.name="
     "'distributed_lion'"),
])
def test_config_refusals_name_the_field(changes, expected):
  config = tiny_config(**changes)
  with pytest.raises(ConfigError) as err:
    config_lib.validate(config)
  message = str(err.value)
  assert expected in message and '\n' not in message


def test_valid_low_precision_configs_pass():
  for changes in (SIX_BYTES, {'model__param_dtype': 'float16',
                              'optimizer__compensation': 'int8'},
                  {'model__param_dtype': 'bfloat16',
                   'optimizer__compensation': 'int16'},
                  {'model__param_dtype': 'bfloat16'}):  # plain bf16 too
    config_lib.validate(tiny_config(**changes))


@pytest.mark.slow
def test_make_optimizer_wraps_the_row_in_compensated():
  params = {'w': jnp.linspace(-0.1, 0.1, 300).astype(jnp.bfloat16),
            'b': jnp.zeros(3, jnp.float32)}
  grads = {'w': jnp.cos(jnp.arange(300.0)).astype(jnp.bfloat16),
           'b': jnp.ones(3, jnp.float32)}
  config = config_lib.Config()
  config.optimizer = optimizers.OptimizerConfig(
      name='lion', learning_rate=1e-4, mu_dtype='int8', compensation='int8')
  config.schedule.name = 'constant'
  tx = optimizers.make_optimizer(config, total_steps=3).tx
  # The same transformation built by hand from the public API.
  ref = lionx.compensated(lionx.lion(1e-4, weight_decay=0.1,
                                     mu_dtype=jnp.int8), jnp.int8)
  state, ref_state = tx.init(params), ref.init(params)
  assert isinstance(state, lionx.CompensatedState)
  for _ in range(3):
    u, state = tx.update(grads, state, params)
    v, ref_state = ref.update(grads, ref_state, params)
    for a, b in zip(jax.tree.leaves(u), jax.tree.leaves(v), strict=True):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    params = optax.apply_updates(params, u)
  assert params['w'].dtype == jnp.bfloat16
  assert np.any(np.asarray(state.residual['w']) != 0)
  assert state.residual['b'] is None  # float32 leaves pass through


def test_run_identity_names_compensation_only_when_set():
  plain = config_lib.run_identity(tiny_config())
  assert 'compensation' not in plain['optimizer']
  six = config_lib.run_identity(tiny_config(**SIX_BYTES))
  assert six['optimizer']['compensation'] == 'int8'
  assert six['model']['param_dtype'] == 'bfloat16'


def _final_state(config, workdir, ds):
  per_epoch = data.steps_per_epoch(ds, config.batch_size)
  state = steps.create_train_state(
      config, TASK, ds.spec, config.num_epochs * per_epoch, per_epoch)
  with Checkpointer(workdir / workdir_lib.CHECKPOINT_DIR) as ckpt:
    ckpt.restore(ckpt.latest_step(), state.model, state.optimizer)
  return state


@pytest.mark.slow
def test_resume_with_bf16_params_compensation_and_8bit_momentum(tmp_path):
  config = tiny_config(num_epochs=2, **SIX_BYTES)
  ds = data.load_dataset(config.data)
  straight = experiment.train_and_evaluate(config, tmp_path / 'a', data=ds,
                                           verbose=False)
  first = config_lib.copy(config)
  first.max_evals_this_run = 1
  experiment.train_and_evaluate(first, tmp_path / 'b', data=ds,
                                verbose=False)
  resumed = experiment.train_and_evaluate(config, tmp_path / 'b', data=ds,
                                          verbose=False)
  a, b = (_final_state(config, tmp_path / k, ds) for k in 'ab')
  a_leaves = jax.tree.leaves(nnx.state((a.model, a.optimizer)))
  b_leaves = jax.tree.leaves(nnx.state((b.model, b.optimizer)))
  for x, y in zip(a_leaves, b_leaves, strict=True):
    assert x.dtype == y.dtype
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  assert straight.rows == [
      dict(r, wall_time=s['wall_time'])
      for r, s in zip(resumed.rows, straight.rows, strict=True)]
  # What was compared: bfloat16 params, their int8 residuals (which have
  # moved), the 8-bit momentum and the dither's key and count.
  assert {p.dtype for p in _params(a.model)} == {np.dtype(jnp.bfloat16)}
  comp = optimizers.find(nnx.as_pure(a.optimizer.opt_state),
                         lionx.CompensatedState)
  residuals = jax.tree.leaves(comp.residual)
  assert residuals and all(r.dtype == np.int8 for r in residuals)
  assert any(np.any(np.asarray(r) != 0) for r in residuals)
  assert int(comp.count) == straight.rows[-1]['step']
  momentum = optimizers.find(comp.inner_state, lionx.ScaleByLion8bitState)
  assert all(c.dtype == np.int8 for c in jax.tree.leaves(momentum.codes))


@pytest.mark.slow
def test_diagnostics_with_bf16_params_are_float32(tmp_path):
  config = tiny_config(**SIX_BYTES)
  ds = data.load_dataset(config.data)
  result = experiment.train_and_evaluate(config, tmp_path, data=ds,
                                         verbose=False)
  (row,) = result.rows
  state = _final_state(config, tmp_path, ds)
  params = [np.asarray(p, np.float64) for p in _params(state.model)]
  # The box column reads the stored bfloat16 parameters.
  assert row['box_linf_scaled'] == pytest.approx(
      0.1 * max(np.abs(p).max() for p in params), rel=1e-6)
  view = steps.eval_view(state.model)
  logged = steps.logging_pass(TASK, view, data.eval_batches(ds, 'train', 32))
  assert {g.dtype for g in jax.tree.leaves(logged.grads)} == {
      np.dtype(np.float32)}
  # The same values stored in float32: the same loss and gradient, bit for
  # bit (the bfloat16 model's gradient is not rounded to bfloat16).
  ref = _final_state(config, tmp_path, ds).model
  nnx.update(ref, jax.tree.map(lambda p: p.astype(jnp.float32),
                               nnx.state(ref, nnx.Param)))
  want = steps.logging_pass(TASK, steps.eval_view(ref),
                            data.eval_batches(ds, 'train', 32))
  assert logged.loss == want.loss
  for g, h in zip(jax.tree.leaves(logged.grads),
                  jax.tree.leaves(want.grads), strict=True):
    np.testing.assert_array_equal(np.asarray(g), np.asarray(h))
  g = [np.asarray(x, np.float64) for x in jax.tree.leaves(logged.grads)]
  assert row['grad_l1'] == pytest.approx(sum(np.abs(x).sum() for x in g),
                                         rel=1e-5)
  kkt = 0.1 * sum(np.sum(x * p) for x, p in zip(g, params)) + sum(
      np.abs(x).sum() for x in g)
  assert row['kkt_residual'] == pytest.approx(kkt, rel=1e-4)
  assert 0 < row['sign_agreement'] <= 1


# --- the language models ------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize('name', ['gpt_tiny', 'bert_tiny'])
def test_lm_param_dtype_rounds_the_float32_initialisation(name):
  cls = lm.GPTModelConfig if name.startswith('gpt') else lm.BertModelConfig
  ref = lm.create_model(cls(name=name, width=16), 40, seed=2)
  model = lm.create_model(cls(name=name, width=16, param_dtype='bfloat16'),
                          40, seed=2)
  for p, r in zip(_params(model), _params(ref), strict=True):
    assert p.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(p),
                                  np.asarray(r).astype(jnp.bfloat16))
  tokens = jnp.zeros((1, 8), jnp.int32)
  if name.startswith('gpt'):
    outputs = (model(tokens),)
  else:
    outputs = model(tokens, tokens, jnp.zeros((1, 2), jnp.int32))
  assert all(out.dtype == np.float32 for out in outputs)  # computed in f32


@pytest.mark.slow
def test_lm_resume_with_six_bytes_is_bit_identical(tmp_path, monkeypatch):
  monkeypatch.setattr(plots, 'write_figures', lambda *args, **kwargs: [])
  config = lm_config(checkpoint_every_evals=1, **SIX_BYTES)
  task = tasks.get_task('language_model')
  text = task.load_data(config)
  straight = experiment.train_and_evaluate(config, tmp_path / 'a',
                                           data=text, verbose=False)
  first = config_lib.copy(config)
  first.max_evals_this_run = 1
  experiment.train_and_evaluate(first, tmp_path / 'b', data=text,
                                verbose=False)
  resumed = experiment.train_and_evaluate(config, tmp_path / 'b', data=text,
                                          verbose=False)
  states = []
  for k in 'ab':
    state = steps.create_train_state(config, task, task.data_spec(text),
                                     config.num_steps, None)
    with Checkpointer(tmp_path / k / workdir_lib.CHECKPOINT_DIR) as ckpt:
      ckpt.restore(ckpt.latest_step(), state.model, state.optimizer)
    states.append(jax.tree.leaves(nnx.state((state.model,
                                             state.optimizer))))
  for x, y in zip(*states, strict=True):
    assert x.dtype == y.dtype
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  assert any(x.dtype == jnp.bfloat16 for x in states[0])
  assert straight.rows == [
      dict(r, wall_time=s['wall_time'])
      for r, s in zip(resumed.rows, straight.rows, strict=True)]
  for row in straight.rows:  # the diagnostics read float32 gradients
    for key in ('grad_l1', 'kkt_residual', 'box_linf_scaled',
                'sign_agreement'):
      assert np.isfinite(row[key]), key
