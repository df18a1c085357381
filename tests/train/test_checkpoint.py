"""The Checkpointer on its own: which step it restores, into what, and
what it keeps. Resuming whole runs bit for bit is in test_experiment.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import lionx
from lionx.train.checkpoint import Checkpointer


def _model_and_optimizer(width=4, seed=0, dtype=jnp.float32):
  model = nnx.Linear(3, width, rngs=nnx.Rngs(seed), param_dtype=dtype)
  optimizer = nnx.Optimizer(model, lionx.lion(1e-2), wrt=nnx.Param)
  return model, optimizer


def _step(model, optimizer, scale):
  def loss(m):
    return scale * jnp.sum(m(jnp.ones((2, 3))) ** 2)
  optimizer.update(model, nnx.grad(loss)(model))


def _leaves(model, optimizer):
  return [np.asarray(x) for x in
          jax.tree.leaves(nnx.state(model)) + jax.tree.leaves(
              nnx.state(optimizer))]


def test_restores_the_step_asked_for_with_its_meta(tmp_path):
  model, opt = _model_and_optimizer()
  saved = {}
  with Checkpointer(tmp_path, max_to_keep=3) as ckpt:
    assert ckpt.latest_step() is None
    for step in (1, 2, 3):
      _step(model, opt, float(step))
      ckpt.save(step, model, opt, {'evals': 10 * step})
      saved[step] = _leaves(model, opt)
    assert ckpt.latest_step() == 3
  fresh, fresh_opt = _model_and_optimizer(seed=1)
  with Checkpointer(tmp_path, max_to_keep=3) as ckpt:
    meta = ckpt.restore(2, fresh, fresh_opt)
  assert meta == {'evals': 20, 'step': 2}
  for a, b in zip(saved[2], _leaves(fresh, fresh_opt), strict=True):
    np.testing.assert_array_equal(a, b)
  # Not step 3's: the momentum and the parameters moved in between.
  assert any(np.any(a != b) for a, b in zip(saved[3], saved[2]))


def test_keeps_the_newest_max_to_keep_and_replaces_a_step(tmp_path):
  model, opt = _model_and_optimizer()
  with Checkpointer(tmp_path, max_to_keep=2) as ckpt:
    for step in (1, 2, 3):
      ckpt.save(step, model, opt, {})
    assert sorted(int(p.name) for p in tmp_path.iterdir()
                  if p.name.isdigit()) == [2, 3]
    _step(model, opt, 1.0)
    ckpt.save(3, model, opt, {'again': True})  # same step: replaced
    after = _leaves(model, opt)
  fresh, fresh_opt = _model_and_optimizer(seed=1)
  with Checkpointer(tmp_path) as ckpt:
    assert ckpt.restore(3, fresh, fresh_opt) == {'again': True, 'step': 3}
  for a, b in zip(after, _leaves(fresh, fresh_opt), strict=True):
    np.testing.assert_array_equal(a, b)


def test_a_checkpoint_of_another_model_is_not_loaded(tmp_path):
  model, opt = _model_and_optimizer(width=4)
  with Checkpointer(tmp_path) as ckpt:
    ckpt.save(1, model, opt, {})
  other, other_opt = _model_and_optimizer(width=5)
  before = _leaves(other, other_opt)
  with Checkpointer(tmp_path) as ckpt, pytest.raises(ValueError):
    ckpt.restore(1, other, other_opt)
  for a, b in zip(before, _leaves(other, other_opt), strict=True):
    np.testing.assert_array_equal(a, b)


def test_restores_into_the_dtypes_of_the_model(tmp_path):
  model, opt = _model_and_optimizer(dtype=jnp.bfloat16)
  _step(model, opt, 1.0)
  with Checkpointer(tmp_path) as ckpt:
    ckpt.save(1, model, opt, {})
  fresh, fresh_opt = _model_and_optimizer(seed=1, dtype=jnp.bfloat16)
  with Checkpointer(tmp_path) as ckpt:
    ckpt.restore(1, fresh, fresh_opt)
  assert fresh.kernel.value.dtype == jnp.bfloat16
  np.testing.assert_array_equal(np.asarray(fresh.kernel.value, np.float32),
                                np.asarray(model.kernel.value, np.float32))
