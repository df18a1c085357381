"""The training loop: one epoch, the metrics schema, resume, failure."""

import json
import math

import jax
import numpy as np
import pytest
from flax import nnx

from lionx.train import config as config_lib
from lionx.train import experiment, steps, sweep, tasks
from lionx.train import workdir as workdir_lib
from lionx.train.checkpoint import Checkpointer
from lionx.train.data import images as data
from tests.train.helpers import tiny_config

# The fields the issues ask of every metrics.jsonl line (the image task
# adds epoch, train_accuracy and test_accuracy).
REQUIRED = ('epoch', 'step', 'lr', 'train_loss', 'full_loss', 'val_loss',
            'test_accuracy', 'train_accuracy', 'grad_l1', 'grad_l2',
            'grad_norm_ratio', 'sqrt_d', 'box_linf_scaled',
            'box_fraction_at_bound', 'kkt_residual', 'grad_l1_running_mean',
            'sign_agreement', 'wall_time')
TASK = tasks.get_task('classification')


def _final_state(config, workdir, ds):
  """The model and optimizer of the newest checkpoint in workdir."""
  per_epoch = data.steps_per_epoch(ds, config.batch_size)
  state = steps.create_train_state(
      config, TASK, ds.spec, config.num_epochs * per_epoch, per_epoch)
  with Checkpointer(workdir / workdir_lib.CHECKPOINT_DIR) as ckpt:
    meta = ckpt.restore(ckpt.latest_step(), state.model, state.optimizer)
  return state, meta


@pytest.mark.slow
def test_one_epoch_synthetic_and_metrics_schema(tmp_path):
  config = tiny_config(num_epochs=2)
  ds = data.load_dataset(config.data)
  result = experiment.train_and_evaluate(config, tmp_path, verbose=False)
  assert result.status == 'finished'
  lines = (tmp_path / 'metrics.jsonl').read_text().splitlines()
  assert len(lines) == 2
  rows = [json.loads(line) for line in lines]
  for row in rows:
    assert set(REQUIRED) <= set(row)
    assert all(isinstance(row[k], (int, float)) for k in REQUIRED)
    assert all(math.isfinite(row[k]) for k in REQUIRED)
  row = rows[-1]
  assert (row['epoch'], row['step']) == (2, 8)  # 64 images / 16 per step
  assert rows[0]['step'] == 4
  # Independent checks from the final checkpoint (taken after epoch 2).
  state, meta = _final_state(config, tmp_path, ds)
  params = nnx.state(state.model, nnx.Param)
  leaves = [np.asarray(x, np.float64) for x in jax.tree.leaves(params)]
  d = sum(x.size for x in leaves)
  assert row['sqrt_d'] == pytest.approx(math.sqrt(d))
  assert row['box_linf_scaled'] == pytest.approx(
      0.1 * max(np.abs(x).max() for x in leaves), rel=1e-6)
  assert 1 <= row['grad_norm_ratio'] <= math.sqrt(d)
  assert row['grad_norm_ratio'] == pytest.approx(
      row['grad_l1'] / row['grad_l2'], rel=1e-4)
  assert row['grad_l1_running_mean'] == pytest.approx(
      (rows[0]['grad_l1'] + rows[1]['grad_l1']) / 2)
  assert 0 <= row['sign_agreement'] <= 1
  # f(θ) and ∇f(θ) by hand from the checkpointed model, one pass.
  view = steps.eval_view(state.model)
  logged = steps.logging_pass(TASK, view,
                              data.eval_batches(ds, 'train', 1000))
  loss, grads = logged.loss, logged.grads
  assert row['full_loss'] == pytest.approx(loss, rel=1e-5)
  g = [np.asarray(x, np.float64) for x in jax.tree.leaves(grads)]
  kkt = 0.1 * sum(np.sum(a * b) for a, b in zip(g, leaves)) + sum(
      np.abs(a).sum() for a in g)
  assert row['kkt_residual'] == pytest.approx(kkt, rel=1e-4)
  assert row['grad_l1'] == pytest.approx(sum(np.abs(a).sum() for a in g),
                                         rel=1e-4)
  # The lr of the epoch's last step, cosine over 8 steps.
  assert row['lr'] == pytest.approx(
      3e-3 * 0.5 * (1 + math.cos(math.pi * 7 / 8)), rel=1e-5)
  assert meta['evals'] == 2 and meta['step'] == 8
  stored = json.loads((tmp_path / 'config.json').read_text())['config']
  assert stored['optimizer']['learning_rate'] == 3e-3


@pytest.mark.slow
def test_one_epoch_through_the_cifar_loader(cifar10_dir, tmp_path):
  config = tiny_config(data__name='cifar10', data__data_dir=str(cifar10_dir),
                       data__augment=True, batch_size=10, model__width=2,
                       model__batch_norm=False)
  result = experiment.train_and_evaluate(config, tmp_path / 'run', verbose=False)
  assert result.status == 'finished'
  (row,) = result.rows
  assert row['step'] == 3  # 30 fixture images, batches of 10
  assert row['test_accuracy'] in {i / 8 for i in range(9)}
  assert row['sqrt_d'] == pytest.approx(math.sqrt(
      # cnn width 2 on 32x32x3, 10 classes
      (27 * 2 + 2) + (18 * 4 + 4) + (16 * 16 * 4 * 8 + 8) + (8 * 10 + 10)))


def _latest(workdir):
  with Checkpointer(workdir / workdir_lib.CHECKPOINT_DIR) as ckpt:
    return ckpt.latest_step()


def _leaves(workdir, config, ds):
  state, _ = _final_state(config, workdir, ds)
  return (jax.tree.leaves(nnx.state(state.model)),
          jax.tree.leaves(nnx.state(state.optimizer)))


@pytest.mark.slow
def test_resume_is_bit_identical(tmp_path, monkeypatch):
  config = tiny_config(num_epochs=4, checkpoint_every_evals=2,
                       data__augment=True)
  ds = data.load_dataset(config.data)
  straight = experiment.train_and_evaluate(config, tmp_path / 'a', data=ds,
                                     verbose=False)
  # Killed (after its checkpoint) at the end of epoch 1.
  first = config_lib.copy(config)
  first.max_evals_this_run = 1
  out = experiment.train_and_evaluate(first, tmp_path / 'b', data=ds,
                                verbose=False)
  assert out.status == 'interrupted' and len(out.rows) == 1
  # The last evaluation of a run is checkpointed, whatever the interval.
  assert _latest(tmp_path / 'b') == 4
  # Resumed, then killed hard inside epoch 4: epochs 2 and 3 are logged
  # but the last checkpoint is epoch 2's.
  real = data.train_batch

  def dies_in_epoch_4(dataset, step, **kwargs):
    if step == 12:  # 4 steps an epoch: the first step of epoch 4
      raise KeyboardInterrupt('killed')
    return real(dataset, step, **kwargs)
  monkeypatch.setattr(data, 'train_batch', dies_in_epoch_4)
  with pytest.raises(KeyboardInterrupt):
    experiment.train_and_evaluate(config, tmp_path / 'b', data=ds,
                                  verbose=False)
  assert len(workdir_lib.read_metrics(tmp_path / 'b')) == 3
  assert _latest(tmp_path / 'b') == 8  # every 2nd evaluation: not epoch 3
  # It resumes after step 8 (restarting would give the same bits too).
  seen = []
  monkeypatch.setattr(data, 'train_batch', lambda dataset, step, **kwargs: (
      seen.append(step) or real(dataset, step, **kwargs)))
  resumed = experiment.train_and_evaluate(config, tmp_path / 'b', data=ds,
                                    verbose=False)
  monkeypatch.setattr(data, 'train_batch', real)
  assert seen == list(range(8, 16)), seen
  assert resumed.status == 'finished'
  a_model, a_opt = _leaves(tmp_path / 'a', config, ds)
  b_model, b_opt = _leaves(tmp_path / 'b', config, ds)
  assert len(a_model) == len(b_model) and len(a_opt) == len(b_opt)
  for x, y in zip(a_model + a_opt, b_model + b_opt):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  # The momentum is part of what was compared, and has moved.
  assert any(np.any(np.asarray(x) != 0) for x in a_opt[:-1])
  assert [r['epoch'] for r in resumed.rows] == [1, 2, 3, 4]
  for r, s in zip(straight.rows, resumed.rows):
    assert {k: v for k, v in r.items() if k != 'wall_time'} == {
        k: v for k, v in s.items() if k != 'wall_time'}


@pytest.mark.slow
def test_the_progress_bar_counts_the_steps_of_this_run(tmp_path, capsys):
  config = tiny_config(num_epochs=2, max_evals_this_run=1)
  config.progress = True
  experiment.train_and_evaluate(config, tmp_path, verbose=True)
  err = capsys.readouterr().err
  assert '| 4/4 [' in err  # 4 steps of the 8: one evaluation
  config.max_evals_this_run = 0
  experiment.train_and_evaluate(config, tmp_path, verbose=True)
  err = capsys.readouterr().err
  assert '| 4/4 [' in err and '/8' not in err  # resumed after step 4


@pytest.mark.slow
def test_resume_with_8bit_momentum_is_bit_identical(tmp_path):
  config = tiny_config(num_epochs=2, optimizer__mu_dtype='int8')
  ds = data.load_dataset(config.data)
  straight = experiment.train_and_evaluate(config, tmp_path / 'a', data=ds,
                                     verbose=False)
  first = config_lib.copy(config)
  first.max_evals_this_run = 1
  experiment.train_and_evaluate(first, tmp_path / 'b', data=ds, verbose=False)
  resumed = experiment.train_and_evaluate(config, tmp_path / 'b', data=ds,
                                    verbose=False)
  a_model, a_opt = _leaves(tmp_path / 'a', config, ds)
  b_model, b_opt = _leaves(tmp_path / 'b', config, ds)
  assert any(np.asarray(x).dtype == np.int8 for x in a_opt)
  for x, y in zip(a_model + a_opt, b_model + b_opt, strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  assert [r['full_loss'] for r in straight.rows] == [
      r['full_loss'] for r in resumed.rows]


@pytest.mark.slow
def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(
    tmp_path, monkeypatch):
  config = tiny_config(num_epochs=3)
  real = data.train_batch

  def poisoned(dataset, step, **kwargs):
    batch = real(dataset, step, **kwargs)
    if step >= 4:  # from the first step of epoch 2
      batch = dict(batch, image=batch['image'] * np.nan)
    return batch
  monkeypatch.setattr(data, 'train_batch', poisoned)
  with pytest.raises(experiment.NonFiniteLossError) as err:
    experiment.train_and_evaluate(config, tmp_path, verbose=False)
  message = str(err.value)
  assert 'non-finite training loss nan at epoch 2, step 5' in message
  assert 'last good checkpoint (epoch 1, step 4)' in message
  with Checkpointer(tmp_path / 'checkpoints') as ckpt:
    assert ckpt.latest_step() == 4
  ds = data.load_dataset(config.data)
  model, opt = _leaves(tmp_path, config, ds)
  assert all(np.all(np.isfinite(np.asarray(x))) for x in model + opt)
  assert len(workdir_lib.read_metrics(tmp_path)) == 1
  result = json.loads((tmp_path / 'result.json').read_text())
  assert result['status'] == 'diverged'
  # Rerunning the same config reports the divergence again.
  monkeypatch.setattr(data, 'train_batch', real)
  with pytest.raises(experiment.NonFiniteLossError, match='epoch 2, step 5'):
    experiment.train_and_evaluate(config, tmp_path, verbose=False)


@pytest.mark.slow
def test_workdir_of_another_config_is_refused(tmp_path, monkeypatch):
  config = tiny_config()
  experiment.train_and_evaluate(config, tmp_path, verbose=False)
  rows = workdir_lib.read_metrics(tmp_path)
  # Same config: reported again, nothing trained.
  monkeypatch.setattr(steps, 'create_train_state', None)
  again = experiment.train_and_evaluate(config, tmp_path, verbose=False)
  assert again.status == 'finished' and again.rows == rows
  # Runtime fields may change; the result-deciding ones may not.
  config.progress = True
  config.max_evals_this_run = 3
  experiment.train_and_evaluate(config, tmp_path, verbose=False)
  other = tiny_config(optimizer__learning_rate=1e-2)
  with pytest.raises(config_lib.ConfigError) as err:
    experiment.train_and_evaluate(other, tmp_path, verbose=False)
  message = str(err.value)
  assert 'different config' in message and '--overwrite' in message
  assert 'optimizer.learning_rate: 0.003 -> 0.01' in message
  monkeypatch.undo()
  out = experiment.train_and_evaluate(other, tmp_path, overwrite=True,
                                verbose=False)
  assert out.status == 'finished' and out.rows != rows
  stored = json.loads((tmp_path / 'config.json').read_text())['config']
  assert stored['optimizer']['learning_rate'] == 1e-2


@pytest.mark.slow
def test_grid_keeps_the_best_rate(tmp_path):
  config = tiny_config(optimizer__lr_grid=(1e-1, 3e-3))
  result = sweep.run(config, tmp_path, verbose=False)
  grid = json.loads((tmp_path / 'grid.json').read_text())
  losses = {r['learning_rate']: r['full_loss'][0] for r in grid['runs']}
  assert set(losses) == {1e-1, 3e-3}
  best = min(losses, key=losses.get)
  assert grid['best_learning_rate'] == best == result.best.learning_rate
  assert result.best.rows == workdir_lib.read_metrics(
      tmp_path / f'lr_{best:g}')
  assert len(result.grid) == 2
  # A single run may not land in a grid's folder, nor a grid in a run's.
  with pytest.raises(config_lib.ConfigError, match='learning-rate grid'):
    sweep.run(tiny_config(), tmp_path, verbose=False)
  with pytest.raises(config_lib.ConfigError, match='a single run'):
    sweep.run(config, tmp_path / 'lr_0.003', verbose=False)


@pytest.mark.slow
def test_compare_writes_figures_and_summary(tmp_path):
  results = sweep.compare(tiny_config(), tmp_path, ['lion', 'sgd'],
                          verbose=False)
  assert [r.best.status for r in results.values()] == ['finished'] * 2
  for png in ('figure1', 'loss', 'accuracy', 'ratio', 'box'):
    assert (tmp_path / f'{png}.png').read_bytes()[:4] == b'\x89PNG'
  summary = (tmp_path / 'summary.md').read_text()
  assert '| lion ' in summary and '| sgd ' in summary
  assert results['sgd'].best.rows == workdir_lib.read_metrics(
      tmp_path / 'sgd')
  with pytest.raises(config_lib.ConfigError, match='a name repeats'):
    sweep.compare(tiny_config(), tmp_path, ['lion', 'lion'])


@pytest.mark.slow
@pytest.mark.parametrize('convention', ['independent', 'corrected'])
def test_box_column_follows_the_weight_decay_convention(tmp_path, convention):
  lr, wd = 3e-3, 1e-4
  config = tiny_config(num_epochs=2, optimizer__weight_decay=wd,
                       optimizer__weight_decay_convention=convention)
  ds = data.load_dataset(config.data)
  result = experiment.train_and_evaluate(config, tmp_path, verbose=False)
  row = result.rows[-1]
  # The box the run keeps, from the convention's definition: the decay step
  # is eta_t * lambda' * theta with lambda' = lambda / eta_peak
  # (independent) or lambda * eta_t / eta_peak (corrected), at the step
  # the next update would take (8 updates made; cosine over 8 steps).
  eta_t = lr * 0.5 * (1 + math.cos(math.pi * 8 / 8))
  expected = wd / lr if convention == 'independent' else wd * eta_t / lr
  assert row['box_weight_decay'] == pytest.approx(expected, rel=1e-5,
                                                  abs=1e-12)
  state, _ = _final_state(config, tmp_path, ds)
  leaves = [np.asarray(x) for x in jax.tree.leaves(
      nnx.state(state.model, nnx.Param))]
  assert row['box_linf_scaled'] == pytest.approx(
      expected * max(np.abs(x).max() for x in leaves), rel=1e-5, abs=1e-12)
  # The optimizer itself decays with the convention: compare with paper.
  paper = tiny_config(num_epochs=2, optimizer__weight_decay=wd)
  other = experiment.train_and_evaluate(paper, tmp_path / 'paper',
                                        verbose=False)
  assert other.rows[-1]['box_weight_decay'] == pytest.approx(wd)
  # The decay steps differ by about an ulp of theta (eta lambda = 3e-7): the
  # parameters show it, the loss may round it away.
  paper_state, _ = _final_state(paper, tmp_path / 'paper', ds)
  paper_leaves = [np.asarray(x) for x in jax.tree.leaves(
      nnx.state(paper_state.model, nnx.Param))]
  assert any(not np.array_equal(a, b) for a, b in zip(leaves, paper_leaves))


def test_conventions_are_for_the_lion_family():
  config = tiny_config(optimizer__name='sgd',
                       optimizer__weight_decay_convention='independent')
  with pytest.raises(config_lib.ConfigError,
                     match="weight_decay_convention='independent' with "
                     "optimizer.name='sgd'"):
    config_lib.validate(config)
  config.optimizer.weight_decay_convention = 'decoupled'
  with pytest.raises(config_lib.ConfigError, match="'decoupled' is not one"):
    config_lib.validate(config)


def _spectral_gauge(leaves, lam):
  """lambda max(sigma_max of matrices (kernels as fan-in x fan-out),
  max |x| of vectors), from NumPy's SVD."""
  out = 0.0
  for x in leaves:
    if x.ndim >= 2:
      out = max(out, np.linalg.norm(x.reshape(-1, x.shape[-1]), 2))
    else:
      out = max(out, np.abs(x).max())
  return lam * out


@pytest.mark.slow
def test_beyond_the_seeds_rows_spectral_cwd_and_muon(tmp_path):
  ds = data.load_dataset(tiny_config().data)
  rows = {}
  for name in ('lion_spectral', 'lion_cwd', 'muon'):
    config = tiny_config(optimizer__name=name)
    rows[name] = experiment.train_and_evaluate(
        config, tmp_path / name, data=ds, verbose=False).rows[-1]
  state, _ = _final_state(tiny_config(optimizer__name='lion_spectral'),
                          tmp_path / 'lion_spectral', ds)
  leaves = [np.asarray(x, np.float64) for x in jax.tree.leaves(
      nnx.state(state.model, nnx.Param))]
  assert rows['lion_spectral']['constraint'] == pytest.approx(
      _spectral_gauge(leaves, 0.1), rel=1e-4)
  # Cautious weight decay keeps no box: no constraint; lambda ||th|| is
  # still measured.
  assert math.isnan(rows['lion_cwd']['constraint'])
  assert rows['lion_cwd']['box_linf_scaled'] > 0
  # Muon has no sign-like direction.
  assert math.isnan(rows['muon']['sign_agreement'])
  assert all(math.isfinite(r['full_loss']) for r in rows.values())


class _Calls(experiment.Hook):
  """Records what the loop tells a hook, and the parameters it sees."""

  def __init__(self):
    self.calls = []

  def start(self, step, state):
    self.calls.append(('start', step))

  def after_step(self, step, state):
    w = nnx.state(state.model, nnx.Param)['conv1']['kernel'][...]
    self.calls.append(('step', step, float(np.abs(np.asarray(w)).sum())))

  def after_eval(self, row, state):
    self.calls.append(('eval', row['step']))


def test_hooks_see_each_step_and_evaluation_this_invocation_trains(
    tmp_path):
  config = tiny_config(num_epochs=2, max_evals_this_run=1, tensorboard=False)
  first, plain = _Calls(), experiment.Hook()  # the base class does nothing
  experiment.train_and_evaluate(config, tmp_path, verbose=False,
                                hooks=[first, plain])
  # 64 images in batches of 16: 4 steps, then the first evaluation.
  assert [c[:2] for c in first.calls] == [
      ('start', 0), ('step', 1), ('step', 2), ('step', 3), ('step', 4),
      ('eval', 4)]
  sums = [c[2] for c in first.calls if c[0] == 'step']
  assert len(set(sums)) == 4  # the parameters after each step, not before
  second = _Calls()
  result = experiment.train_and_evaluate(config, tmp_path, verbose=False,
                                         hooks=[second])
  assert [c[:2] for c in second.calls] == [  # resumed after step 4
      ('start', 4), ('step', 5), ('step', 6), ('step', 7), ('step', 8),
      ('eval', 8)]
  assert result.status == 'finished'
  # A finished run is reported again, untrained: no hook is called.
  third = _Calls()
  experiment.train_and_evaluate(config, tmp_path, verbose=False,
                                hooks=[third])
  assert third.calls == []
  with pytest.raises(TypeError, match=r'hooks\[0\]=.*expected a '
                     'lionx.train.experiment.Hook'):
    experiment.train_and_evaluate(config, tmp_path, verbose=False,
                                  hooks=[lambda step, state: None])
