"""Data parallelism: 1 vs 8 devices, FSDP memory, Distributed Lion, hosts.

The root conftest.py gives the suite 8 simulated CPU devices.
"""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

import lionx
from lionx.train import cli, experiment, optimizers, parallel, steps, tasks
from lionx.train import config as config_lib
from lionx.train import workdir as workdir_lib
from lionx.train.checkpoint import Checkpointer
from lionx.train.config import ConfigError
from lionx.train.data import images as data
from lionx.train.models.vision import VisionModelConfig as ModelConfig
from lionx.train.models.vision import create_model
from tests.train.helpers import tiny_config

TASK = tasks.get_task('classification')

N = 8
# Compared per epoch between runs on 1 and on 8 devices.
CURVE = ('train_loss', 'full_loss', 'val_loss', 'test_accuracy',
         'train_accuracy', 'grad_l1', 'grad_l2', 'kkt_residual',
         'sign_agreement', 'box_linf_scaled')


@pytest.fixture(scope='module', autouse=True)
def eight_devices():
  if jax.device_count() < N:
    pytest.skip(f'needs {N} devices (XLA_FLAGS='
                f'--xla_force_host_platform_device_count={N})')


def _config(**changes):
  """Two epochs of tiny_config (a CNN with BatchNorm, batch 16)."""
  return tiny_config(num_epochs=2, **changes)


def _run(workdir, **changes):
  return experiment.train_and_evaluate(_config(**changes), workdir,
                                       verbose=False)


@pytest.fixture(scope='module')
def one_device(tmp_path_factory):
  """Lion on a mesh of one device."""
  return _run(tmp_path_factory.mktemp('one'), parallel__num_devices=1)


@pytest.fixture(scope='module')
def lion_eight(tmp_path_factory):
  """Lion, replicated over 8 devices."""
  workdir = tmp_path_factory.mktemp('lion8')
  return _run(workdir, parallel__num_devices=N)


def _restore(workdir, config, mesh):
  """The newest checkpoint of ``workdir``, restored onto ``mesh``."""
  ds = data.load_dataset(config.data)
  per_epoch = data.steps_per_epoch(ds, config.batch_size)
  state = steps.create_train_state(
      config, TASK, ds.spec, config.num_epochs * per_epoch, per_epoch, mesh)
  with Checkpointer(workdir / workdir_lib.CHECKPOINT_DIR) as ckpt:
    ckpt.restore(ckpt.latest_step(), state.model, state.optimizer)
  return state


def _max_gap(rows_a, rows_b, keys=CURVE):
  assert [r['epoch'] for r in rows_a] == [r['epoch'] for r in rows_b]
  return {k: max(abs(a[k] - b[k]) for a, b in zip(rows_a, rows_b))
          for k in keys}


# --- placement --------------------------------------------------------------


def test_fsdp_spec_picks_the_largest_divisible_axis():
  assert parallel.fsdp_spec((3, 3, 32, 64), 8) == P(None, None, None,
                                                     'data')
  assert parallel.fsdp_spec((1024, 128), 8) == P('data', None)
  assert parallel.fsdp_spec((12, 40), 4) == P(None, 'data')
  assert parallel.fsdp_spec((16, 16), 8) == P('data', None)  # tie: first
  assert parallel.fsdp_spec((10,), 8) == P()  # nothing divides
  assert parallel.fsdp_spec((4,), 8) == P()  # smaller than N
  assert parallel.fsdp_spec((), 8) == P()
  assert parallel.fsdp_spec((64, 32), 1) == P()


def _momentum_bytes(shape, n):
  """Bytes a device holds of one float32 leaf under the FSDP rule."""
  size = math.prod(shape)
  divisible = any(s >= n and s % n == 0 for s in shape)
  return 4 * (size // n if divisible and n > 1 else size)


def test_fsdp_optimizer_bytes_per_device_fall_as_one_over_n():
  # The embedded default's model: a CNN (width 32) on 8x8x1 digits.
  figures = {}
  for n in (1, 2, 4, 8):
    mesh = parallel.make_mesh(n)
    model = create_model(ModelConfig(name='cnn'), 10, (8, 8, 1))
    optimizer = nnx.Optimizer(model, lionx.lion(1e-3), wrt=nnx.Param)
    parallel.shard_train_state(model, optimizer, mesh, 'fsdp')
    per_device = parallel.bytes_per_device(nnx.state(optimizer))
    assert len(per_device) == n
    figures[n] = max(per_device.values())
    params = nnx.state(model, nnx.Param)
    shapes = [x.shape for x in jax.tree.leaves(params)]
    # Independently: each momentum leaf's share, plus the int32 counters
    # (step counts), which stay whole.
    counters = sum(x.nbytes for x in jax.tree.leaves(nnx.state(optimizer))
                   if x.ndim == 0)
    assert counters <= 16
    expected = sum(_momentum_bytes(s, n) for s in shapes) + counters
    assert figures[n] == expected
    # A parameter and its momentum are sharded alike.
    mu = optimizer.opt_state[0].mu
    for p, m in zip(jax.tree.leaves(params), jax.tree.leaves(mu)):
      assert p.sharding == m.sharding
  d = sum(math.prod(s) for s in shapes)
  assert figures[1] == 4 * d + counters
  for n in (2, 4, 8):
    # Only fc2's 10-element bias is left whole on 8 devices.
    assert figures[n] * n / figures[1] < 1.01
  # Replicated: every device holds everything.
  mesh = parallel.make_mesh(N)
  optimizer = nnx.Optimizer(model, lionx.lion(1e-3), wrt=nnx.Param)
  parallel.shard_train_state(model, optimizer, mesh, 'replicated')
  assert set(parallel.bytes_per_device(nnx.state(optimizer)).values()) == {
      figures[1]}


def test_bad_placement_input():
  with pytest.raises(ValueError, match=r'num_devices=9: only 8 cpu'):
    parallel.make_mesh(9)
  with pytest.raises(ValueError, match=r'num_devices=-1: expected'):
    parallel.make_mesh(-1)
  with pytest.raises(ValueError, match=r'num_devices=True: expected'):
    parallel.make_mesh(True)
  mesh = parallel.make_mesh(N)
  assert mesh.size == N and mesh.axis_names == ('data',)
  assert parallel.make_mesh(0).size == jax.device_count()
  with pytest.raises(ValueError, match=r'batch_size=12 is not a multiple '
                     r'of the 8 devices of parallel.num_devices=0'):
    parallel.check_divisible('batch_size', 12, mesh, 0)
  with pytest.raises(ValueError, match=r"batch\['x'\] has 12 rows"):
    parallel.put_batch({'x': np.zeros((12, 2))}, mesh)
  padded = parallel.pad_batch({'x': np.ones((5, 2)), 'mask': np.ones(5)}, 8)
  np.testing.assert_array_equal(padded['mask'], [1] * 5 + [0] * 3)
  assert padded['x'].shape == (8, 2) and padded['x'][5:].sum() == 0
  model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, lionx.lion(1e-3), wrt=nnx.Param)
  with pytest.raises(ValueError, match=r"parallel.mode='zero' is not one"):
    parallel.shard_train_state(model, optimizer, mesh, 'zero')
  with pytest.raises(TypeError, match='state of lionx.distributed_lion'):
    parallel.shard_train_state(model, optimizer, mesh, per_device=True)
  with pytest.raises(ValueError, match='call shard_train_state'):
    parallel.make_train_step(mesh, model, optimizer, lambda m, b: 0.0)


# --- 8 devices == 1 device --------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize('mode', ['replicated', 'fsdp'])
def test_eight_devices_give_the_loss_curve_of_one(mode, one_device,
                                                  lion_eight,
                                                  tmp_path):
  if mode == 'replicated':
    eight = lion_eight
  else:
    eight = _run(tmp_path, parallel__num_devices=N, parallel__mode=mode)
  assert eight.status == one_device.status == 'finished'
  gaps = _max_gap(one_device.rows, eight.rows)
  # BatchNorm (2 images a device) takes the statistics of the global batch
  # of 16: per-device statistics would move the loss by ~1e-2.
  for key in ('train_loss', 'full_loss', 'val_loss'):
    assert gaps[key] < 1e-5, gaps
  assert gaps['test_accuracy'] == 0 and gaps['train_accuracy'] == 0
  for key in ('grad_l1', 'grad_l2', 'kkt_residual', 'box_linf_scaled'):
    scale = max(abs(r[key]) for r in one_device.rows)
    assert gaps[key] <= 1e-4 * scale, (key, gaps)
  # The checkpoint restores onto the mode's shardings, on 8 devices.
  state = _restore(eight.workdir, _config(parallel__mode=mode),
                   parallel.make_mesh(N))
  kernel = state.model.fc1.kernel[...]
  mu = state.optimizer.opt_state[0].mu['fc1']['kernel']
  spec = P('data', None) if mode == 'fsdp' else P()
  assert kernel.sharding.spec == mu.sharding.spec == spec
  assert len(kernel.sharding.device_set) == N


def _loss(model, batch):
  return TASK.loss(model, batch).loss


def test_one_device_mesh_is_the_plain_jit_step():
  """The harness's mesh path on one device is bit-identical to a plain
  ``nnx.jit`` step."""
  config = _config()
  ds = data.load_dataset(config.data)
  per_epoch = data.steps_per_epoch(ds, config.batch_size)
  mesh = parallel.make_mesh(1)
  plain = steps.create_train_state(config, TASK, ds.spec, per_epoch,
                                   per_epoch)
  placed = steps.create_train_state(config, TASK, ds.spec, per_epoch,
                                    per_epoch, mesh)
  on_mesh = steps.make_train_step(TASK, mesh, placed)

  @nnx.jit
  def step(model, optimizer, batch):
    loss, grads = nnx.value_and_grad(_loss)(model, batch)
    optimizer.update(model, grads)
    return loss
  for k in range(per_epoch):
    batch = data.train_batch(ds, k, seed=0, batch_size=config.batch_size,
                             augment_images=False)
    a = step(plain.model, plain.optimizer, batch)
    b = on_mesh(placed.model, placed.optimizer, batch)
    assert float(a) == float(b)
  for x, y in zip(jax.tree.leaves(nnx.state((plain.model, plain.optimizer))),
                  jax.tree.leaves(nnx.state((placed.model,
                                             placed.optimizer)))):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# --- Distributed Lion -------------------------------------------------------


@pytest.mark.slow
def test_distributed_lion_on_one_device_is_lion(one_device, tmp_path):
  out = _run(tmp_path, parallel__num_devices=1,
             optimizer__name='distributed_lion')
  assert out.status == 'finished'
  for a, b in zip(one_device.rows, out.rows):
    assert b['optimizer'] == 'distributed_lion'
    for key in CURVE:
      assert a[key] == b[key], key


def _curve(rows, key='full_loss'):
  return [r[key] for r in rows]


@pytest.mark.slow
@pytest.mark.parametrize('aggregation', ['majority', 'average'])
def test_distributed_lion_trains_like_lion_on_eight_devices(
    aggregation, lion_eight, tmp_path):
  out = _run(tmp_path, parallel__num_devices=N,
             optimizer__name='distributed_lion',
             optimizer__distributed_lion__aggregation=aggregation)
  assert out.status == 'finished'
  lion, ours = _curve(lion_eight.rows), _curve(out.rows)
  # It learns: the loss falls below that of a uniform guess (ln 4) ...
  assert ours[-1] < min(ours[0], math.log(4))
  # ... and ends comparable to Lion's on the same 8 devices (measured:
  # 1.12 majority and 1.28 average vs 1.07 for Lion, in 8 steps).
  assert ours[-1] < 1.5 * lion[-1]
  # Every device keeps its own momentum (local gradients, no all-reduce);
  # the parameters are replicated.
  config = _config(optimizer__name='distributed_lion',
                   optimizer__distributed_lion__aggregation=aggregation)
  state = _restore(out.workdir, config, parallel.make_mesh(N))
  mu = state.optimizer.opt_state.mu['fc2']['kernel']
  assert mu.shape[0] == N and mu.sharding.spec == P('data')
  mu = np.asarray(mu)
  assert all(np.any(mu[0] != mu[i]) for i in range(1, N))
  kernel = state.model.fc2.kernel[...]
  assert kernel.sharding.spec == P()
  # The sign-agreement diagnostic reads the mean of the 8 votes.
  assert 0.5 < out.rows[-1]['sign_agreement'] <= 1


@pytest.mark.slow
def test_distributed_lion_resumes_bit_identically_on_eight_devices(
    tmp_path):
  changes = {'parallel__num_devices': N,
             'optimizer__name': 'distributed_lion',
             'checkpoint_every_evals': 1}
  straight = _run(tmp_path / 'a', **changes)
  first = _config(max_evals_this_run=1, **changes)
  out = experiment.train_and_evaluate(first, tmp_path / 'b', verbose=False)
  assert out.status == 'interrupted'
  resumed = _run(tmp_path / 'b', **changes)
  assert resumed.status == 'finished'
  for a, b in zip(straight.rows, resumed.rows):
    a.pop('wall_time'), b.pop('wall_time')
    assert a == b
  config = _config(**changes)
  mesh = parallel.make_mesh(N)
  a = _restore(tmp_path / 'a', config, mesh)
  b = _restore(tmp_path / 'b', config, mesh)
  leaves_a = jax.tree.leaves(nnx.state((a.model, a.optimizer)))
  leaves_b = jax.tree.leaves(nnx.state((b.model, b.optimizer)))
  for x, y in zip(leaves_a, leaves_b):
    assert x.sharding == y.sharding
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  # The workdir is tied to its device count.
  with pytest.raises(ConfigError, match=r'parallel.num_devices: 8 -> 4'):
    _run(tmp_path / 'b', **{**changes, 'parallel__num_devices': 4})


@pytest.mark.slow
def test_distributed_lion_running_statistics_are_averaged():
  """BatchNorm in the per-device step: each device normalizes with its own
  batch statistics; the running ones are the mean over the devices."""
  mesh = parallel.make_mesh(N)
  model = create_model(ModelConfig(name='cnn', width=2, batch_norm=True), 4,
                       (4, 4, 1))
  tx = lionx.distributed_lion(1e-2, weight_decay=0.0)
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  parallel.shard_train_state(model, optimizer, mesh, per_device=True)
  rng = np.random.default_rng(0)
  images = rng.normal(size=(2 * N, 4, 4, 1)).astype(np.float32)
  images *= np.arange(1, 2 * N + 1)[:, None, None, None]  # unequal shards
  batch = {'image': images, 'label': np.zeros(2 * N, np.int32)}
  # Reference: the first layer's per-device batch means, by hand.
  kernel = np.asarray(model.conv1.kernel[...])
  conv = jax.lax.conv_general_dilated(
      images, kernel, (1, 1), 'SAME',
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  shard_means = np.asarray(conv).reshape(N, -1, 2).mean(1)
  step = parallel.make_train_step(mesh, model, optimizer, _loss,
                                  per_device=True)
  step(model, optimizer, batch)
  expected = 0.1 * shard_means.mean(0)  # momentum 0.9, running mean 0
  np.testing.assert_allclose(model.bn1.mean[...], expected, rtol=1e-4,
                             atol=1e-6)
  assert model.bn1.mean[...].sharding.spec == P()


def test_distributed_lion_direction_is_the_mean_vote():
  config = config_lib.Config()
  config.optimizer = optimizers.OptimizerConfig(
      name='distributed_lion', b1=0.5, learning_rate=1e-3)
  built = optimizers.make_optimizer(config, total_steps=1)
  mu = {'w': jnp.array([[1.0, -3.0, 0.0], [1.0, 1.0, -1.0]])}  # 2 workers
  state = lionx.DistributedLionState(jnp.zeros([], jnp.int32), mu)
  c = built.direction(state, {'w': jnp.array([1.0, 1.0, 0.0])})
  # sign(0.5 m_i + 0.5 g): worker 0 (+, -, 0), worker 1 (+, +, -).
  np.testing.assert_array_equal(c['w'], [1.0, 0.0, -0.5])


# --- config and command line ------------------------------------------------


@pytest.mark.parametrize('override,match', [
    ('parallel.mode=zero', "parallel.mode='zero' is not one of"),
    ('parallel.num_devices=-1', 'parallel.num_devices=-1: expected'),
    ('parallel.num_devices=9', 'parallel.num_devices=9: only 8 cpu'),
    ('batch_size=12', 'batch_size=12 is not a multiple of the 8 devices'),
    ('optimizer.name=distributed_lion',
     None),
    ('optimizer.distributed_lion.aggregation=median',
     "optimizer.distributed_lion.aggregation='median' is not one of"),
])
def test_bad_parallel_config_is_one_line(override, match, tmp_path, capsys):
  config = tmp_path / 'tiny.py'
  config.write_text('from tests.train.helpers import tiny_config\n'
                    'def get_config():\n'
                    '  return tiny_config()\n')
  code = cli.train_main(['--config', str(config), '--workdir',
                         str(tmp_path / 'w'), 'parallel.num_devices=8',
                         override, '--dry-run'])
  err = capsys.readouterr().err.strip().splitlines()
  if match is None:
    assert code == 0 and not err
  else:
    assert code == 2 and len(err) == 1 and match in err[0], err
  assert not (tmp_path / 'w').exists()


def test_distributed_lion_refuses_fsdp():
  config = _config(optimizer__name='distributed_lion', parallel__mode='fsdp')
  with pytest.raises(ConfigError, match="use parallel.mode='replicated'"):
    config_lib.validate(config)


@pytest.mark.slow
def test_a_new_optimizer_row_keeps_recorded_runs(one_device, tmp_path):
  """A run's identity holds only its own optimizer's section, so adding a
  row (with its own hyperparameters) does not orphan recorded runs."""
  import dataclasses

  @dataclasses.dataclass
  class Extra:
    knob: float = 1.0

  optimizers.register('extra', optimizers.OptimizerSpec(
      lambda s, schedule: None, lambda s, state, grads: grads, Extra))
  try:
    again = _run(one_device.workdir, parallel__num_devices=1)
  finally:
    optimizers.OPTIMIZERS.unregister('extra')
  assert again.status == 'finished' and again.rows == one_device.rows
  with pytest.raises(ConfigError, match=r'parallel.num_devices: 1 -> 8'):
    _run(one_device.workdir, parallel__num_devices=N)


class _Calls(list):
  def initialize(self, **kwargs):
    self.append(('initialize', kwargs))

  def load_config(self, path, overrides=()):
    self.append(('load_config', jax.process_count()))
    raise ConfigError('stop here')


@pytest.fixture
def calls(monkeypatch):
  calls = _Calls()
  monkeypatch.setattr(jax.distributed, 'initialize', calls.initialize)
  monkeypatch.setattr(config_lib, 'load_config', calls.load_config)
  return calls


def test_cli_calls_jax_distributed_initialize_first(calls, capsys):
  code = cli.train_main(['--config', 'c.py', '--workdir', 'w',
                         '--coordinator', '10.0.0.1:1234',
                         '--num-processes', '2', '--process-id', '1'])
  assert code == 2 and 'stop here' in capsys.readouterr().err
  assert calls == [
      ('initialize', {'coordinator_address': '10.0.0.1:1234',
                      'num_processes': 2, 'process_id': 1}),
      ('load_config', 1)]
  calls.clear()
  cli.compare_main(['--config', 'c.py', '--workdir', 'w',
                    '--coordinator', 'auto'])
  assert calls[0] == ('initialize', {'coordinator_address': None,
                                     'num_processes': None,
                                     'process_id': None})
  calls.clear()
  cli.train_main(['--config', 'c.py', '--workdir', 'w'])
  assert [c[0] for c in calls] == ['load_config']


@pytest.mark.parametrize('flags,match', [
    (['--num-processes', '2'], '--num-processes 2 without --coordinator'),
    (['--coordinator', 'h:1', '--num-processes', '2'],
     'expected --num-processes and --process-id as well'),
    (['--coordinator', 'h:1', '--num-processes', '2', '--process-id', '2'],
     '--process-id 2: expected 0 <= id < --num-processes (2)'),
    (['--coordinator', 'h:1', '--num-processes', '0', '--process-id', '0'],
     '--num-processes 0: expected a number >= 1'),
])
def test_bad_host_flags_are_one_line(flags, match, calls, capsys):
  code = cli.train_main(['--config', 'c.py', '--workdir', 'w'] + flags)
  err = capsys.readouterr().err.strip().splitlines()
  assert code == 2 and len(err) == 1 and match in err[0], err
  assert calls == []
