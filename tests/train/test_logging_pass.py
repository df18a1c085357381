"""The logging pass's accumulation against a NumPy reference (the weighting
of lionx.train.tasks.base: f and its gradient are the means over every real
entry of the logging batches, whatever the batch sizes and padding)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lionx.train import parallel
from lionx.train import steps
from lionx.train.tasks import base


class _Linear(nnx.Module):

  def __init__(self):
    self.w = nnx.Param(jnp.array([0.5, -1.0, 2.0]))


class _Regression(base.Task):
  """Least squares with padding: the least a task can be."""

  name = 'test_logging_regression'
  data_config = model_config = dict
  traced_sizes = []  # the batch sizes loss() was traced with

  def loss(self, model, batch):
    self.traced_sizes.append(batch['x'].shape[0])
    err = batch['x'] @ model.w[...] - batch['y']
    mask = batch['mask']
    weight = jnp.sum(mask)
    mean = jnp.sum(mask * err ** 2) / jnp.maximum(weight, 1.0)
    metrics = {'abs_err': (jnp.sum(mask * jnp.abs(err)), weight),
               'never': (jnp.zeros([]), jnp.zeros([])),
               'no_count': (jnp.ones([]), jnp.zeros([]))}
    return base.LossOutput(mean, weight, metrics)

  def _unused(self, *args):
    raise NotImplementedError

  validate = input_spec = load_data = data_spec = create_model = _unused
  describe = steps_per_epoch = train_batch = logging_batches = _unused
  held_out_batches = evaluate = _unused


TASK = _Regression()


def _batches(rng, sizes, pads):
  out = []
  for n, pad in zip(sizes, pads):
    mask = np.r_[np.ones(n - pad), np.zeros(pad)].astype(np.float32)
    out.append({'x': rng.standard_normal((n, 3)).astype(np.float32),
                'y': rng.standard_normal(n).astype(np.float32),
                'mask': mask})
  return out


def test_logging_pass_is_the_mean_over_real_entries():
  rng = np.random.default_rng(0)
  # Uneven batches, padding, and a batch that is all padding.
  batches = _batches(rng, [4, 7, 1, 3], [0, 2, 0, 3])
  model = _Linear()
  logged = steps.logging_pass(TASK, model, iter(batches))
  w = np.array([0.5, -1.0, 2.0])
  x = np.concatenate([b['x'][b['mask'] > 0] for b in batches]).astype(
      np.float64)
  y = np.concatenate([b['y'][b['mask'] > 0] for b in batches]).astype(
      np.float64)
  err = x @ w - y
  assert len(err) == 10
  assert logged.loss == pytest.approx(np.mean(err ** 2), rel=1e-5)
  np.testing.assert_allclose(logged.grads.w, 2 * err @ x / len(err),
                             rtol=1e-5)
  assert logged.metrics['abs_err'] == pytest.approx(np.mean(np.abs(err)),
                                                    rel=1e-5)
  # A metric with nothing counted is NaN (not 0, inf or an error).
  assert math.isnan(logged.metrics['never'])
  assert math.isnan(logged.metrics['no_count'])


def test_one_batch_and_no_batch():
  rng = np.random.default_rng(1)
  (batch,) = _batches(rng, [5], [1])
  logged = steps.logging_pass(TASK, _Linear(), iter([batch]))
  err = batch['x'][:4] @ np.array([0.5, -1.0, 2.0]) - batch['y'][:4]
  assert logged.loss == pytest.approx(np.mean(err ** 2), rel=1e-5)
  with pytest.raises(ValueError, match="'test_logging_regression' gave no "
                     'logging batches'):
    steps.logging_pass(TASK, _Linear(), iter([]))


@pytest.mark.parametrize('devices', [1, 2])
def test_logging_pass_on_a_mesh_pads_shards_and_waits(devices, monkeypatch):
  """With a mesh, batches are padded to a multiple of its size with mask 0
  (weight 0: the result is unchanged) and, with several devices, every
  step is waited for (module doc of lionx.train.steps)."""
  waited = []
  block = jax.block_until_ready
  monkeypatch.setattr(jax, 'block_until_ready',
                      lambda x: waited.append(x) or block(x))
  rng = np.random.default_rng(2)
  batches = _batches(rng, [3, 5, 1], [0, 1, 0])
  want = steps.logging_pass(TASK, _Linear(), iter(batches))
  TASK.traced_sizes.clear()
  waited.clear()
  mesh = parallel.make_mesh(devices)
  got = steps.logging_pass(TASK, _Linear(), iter(batches), mesh)
  assert got.loss == pytest.approx(want.loss, rel=1e-6)
  np.testing.assert_allclose(got.grads.w, want.grads.w, rtol=1e-6)
  if devices > 1:  # padded to 4, 6 and 2 rows: new shapes, new traces
    assert TASK.traced_sizes
    assert all(n % devices == 0 for n in TASK.traced_sizes)
  # One wait per batch, on that step's totals.
  assert len(waited) == (3 if devices > 1 else 0)
  assert all(isinstance(x, dict) and 'loss' in x for x in waited)
