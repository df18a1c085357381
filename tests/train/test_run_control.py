"""Issue 26, items 2-5: --eval-only, init_from, --extend and the data's
fingerprint on resume.

Each is checked against what the contract says it must reproduce: an
evaluation of the last checkpoint is the run's last row; a fine-tuned run
starts at the other run's parameters with a fresh optimizer; an extended
run keeps the steps it had and then trains at the schedule's final rate;
a resume on changed data is refused.
"""

from __future__ import annotations

import os
import pathlib

import jax
import numpy as np
import pytest
from flax import nnx

import orbax.checkpoint as ocp

import lionx.train as lt
from lionx.train import cli
from lionx.train import workdir as workdir_lib
from lionx.train.data import fingerprint
from tests.train.helpers import tiny_config
from tests.train.test_text_data import lm_config, write_tokens

EVAL_DROPPED = ('train_loss', 'wall_time', 'grad_l1_running_mean',
                'kkt_residual_running_mean')


def _params(model):
  return jax.tree.map(np.asarray, nnx.to_pure_dict(
      nnx.state(model, nnx.Param)))


class _Start(lt.Hook):
  """The parameters and optimizer state when training starts."""

  def start(self, step, state):
    self.step = step
    self.params = _params(state.model)
    self.opt = jax.tree.map(np.asarray, nnx.to_pure_dict(
        nnx.state(state.optimizer)))


def _flat(tree):
  return {'/'.join(str(getattr(k, 'key', getattr(k, 'idx', k)))
                   for k in path): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def _checkpoint(workdir):
  """(step, model leaves by path, meta) of the newest checkpoint, read
  with orbax directly."""
  manager = ocp.CheckpointManager(pathlib.Path(workdir) / 'checkpoints')
  step = manager.latest_step()
  out = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
  manager.close()
  return step, _flat(out['state']['model']), out['meta']


# --- --eval-only --------------------------------------------------------------


def test_eval_only_reproduces_the_last_row(tmp_path, capsys):
  config = tiny_config()
  run = lt.train_and_evaluate(config, tmp_path / 'w', verbose=False)
  row = lt.evaluate_checkpoint(config, tmp_path / 'w', verbose=False)
  last = run.rows[-1]
  assert set(row) == set(last) - set(EVAL_DROPPED)
  for key, value in row.items():
    assert value == last[key], key  # the same parameters, data and code
  stored = tmp_path / 'w' / 'eval' / f'step_{last["step"]}.json'
  assert workdir_lib.read_json(stored) == row
  # Again: reported from the file (the file is not rewritten).
  before = stored.stat().st_mtime_ns
  assert lt.evaluate_checkpoint(config, tmp_path / 'w', verbose=True) == row
  assert stored.stat().st_mtime_ns == before
  assert 'evaluated earlier' in capsys.readouterr().out
  # Nothing of the run changed.
  assert workdir_lib.read_metrics(tmp_path / 'w') == run.rows


def test_eval_only_refusals(tmp_path):
  config = tiny_config()
  with pytest.raises(lt.ConfigError, match='no checkpoint to evaluate'):
    lt.evaluate_checkpoint(config, tmp_path / 'none', verbose=False)
  lt.train_and_evaluate(config, tmp_path / 'w', verbose=False)
  other = tiny_config(optimizer__learning_rate=1e-3)
  with pytest.raises(lt.ConfigError, match='different config'):
    lt.evaluate_checkpoint(other, tmp_path / 'w', verbose=False)
  with pytest.raises(TypeError, match="allow_data_change='yes'"):
    lt.evaluate_checkpoint(config, tmp_path / 'w', allow_data_change='yes')


# --- init_from ----------------------------------------------------------------


@pytest.mark.slow
def test_init_from_starts_at_the_other_runs_parameters(tmp_path):
  source = tiny_config()
  lt.train_and_evaluate(source, tmp_path / 'a', verbose=False)
  _, trained, _ = _checkpoint(tmp_path / 'a')
  fresh = _Start()
  lt.train_and_evaluate(tiny_config(seed=1), tmp_path / 'fresh',
                        verbose=False, hooks=[fresh])
  tuned = _Start()
  config = tiny_config(seed=1, init_from=str(tmp_path / 'a'),
                       optimizer__learning_rate=1e-3)
  lt.train_and_evaluate(config, tmp_path / 'b', verbose=False, hooks=[tuned])
  assert tuned.step == 0
  params = _flat(tuned.params)
  assert params and set(params) <= set(trained)
  for path, value in params.items():
    np.testing.assert_array_equal(value, trained[path], err_msg=path)
  # A fresh optimizer: the state of a new run, not the source's.
  jax.tree.map(np.testing.assert_array_equal, tuned.opt, fresh.opt)
  # The identity records it: the run is not the fresh one.
  stored = workdir_lib.read_json(tmp_path / 'b' / 'config.json')
  assert stored['config']['init_from'] == str(tmp_path / 'a')
  # Resuming the fine-tuned run does not load the source again.
  again = _Start()
  config.num_epochs = 2
  lt.train_and_evaluate(config, tmp_path / 'b', verbose=False, hooks=[again],
                        extend=True)
  assert again.step == 4


@pytest.mark.slow
def test_init_from_refusals(tmp_path):
  lt.train_and_evaluate(tiny_config(), tmp_path / 'a', verbose=False)
  wider = tiny_config(model__width=8, init_from=str(tmp_path / 'a'))
  with pytest.raises(lt.ConfigError, match=r"init_from='.*a' \(step 4\): "
                     r"the leaf '\w+/.*' is float32\[.*\] there and "
                     r'float32\[.*\] here'):
    lt.train_and_evaluate(wider, tmp_path / 'b', verbose=False)
  with pytest.raises(lt.ConfigError, match='no .*nothere/checkpoints'):
    lt.train_and_evaluate(
        tiny_config(init_from=str(tmp_path / 'nothere')), tmp_path / 'c',
        verbose=False)
  with pytest.raises(lt.ConfigError, match="this run's own --workdir"):
    lt.train_and_evaluate(
        tiny_config(init_from=str(tmp_path / 'd')), tmp_path / 'd',
        verbose=False)


# --- --extend -----------------------------------------------------------------


def _schedule(config, steps):
  return lt.make_optimizer(lt.validate(lt.copy(config)), steps, 4).schedule


@pytest.mark.slow
def test_extend_keeps_the_run_then_trains_at_the_final_rate(tmp_path):
  config = tiny_config(num_epochs=2, schedule__final_fraction=0.25)
  short = lt.train_and_evaluate(config, tmp_path / 'w', verbose=False)
  longer = lt.copy(config)
  longer.num_epochs = 4
  with pytest.raises(lt.ConfigError, match='pass --extend'):
    lt.train_and_evaluate(longer, tmp_path / 'w', verbose=False)
  out = lt.train_and_evaluate(longer, tmp_path / 'w', verbose=False,
                              extend=True)
  assert out.status == 'finished' and out.rows[:2] == short.rows
  assert [r['step'] for r in out.rows] == [4, 8, 12, 16]
  final = float(_schedule(config, 8)(8))
  assert final == pytest.approx(0.25 * 3e-3)
  assert [r['lr'] for r in out.rows[2:]] == [final, final]
  assert out.rows[3]['full_loss'] != out.rows[1]['full_loss']  # it trained
  # Reported again afterwards, without --extend.
  again = lt.train_and_evaluate(longer, tmp_path / 'w', verbose=False)
  assert again.rows == out.rows


@pytest.mark.slow
def test_an_interrupted_extension_resumes_bit_identically(tmp_path):
  config = tiny_config(num_epochs=1, schedule__final_fraction=0.5)
  longer = tiny_config(num_epochs=3, schedule__final_fraction=0.5)
  for name in ('a', 'b'):
    lt.train_and_evaluate(config, tmp_path / name, verbose=False)
  whole = lt.train_and_evaluate(longer, tmp_path / 'a', verbose=False,
                                extend=True)
  cut = lt.copy(longer)
  cut.max_evals_this_run = 1
  first = lt.train_and_evaluate(cut, tmp_path / 'b', verbose=False,
                                extend=True)
  assert first.status == 'interrupted'
  rest = lt.train_and_evaluate(longer, tmp_path / 'b', verbose=False)
  strip = lambda rows: [{k: v for k, v in r.items() if k != 'wall_time'}
                        for r in rows]
  assert strip(rest.rows) == strip(whole.rows)


@pytest.mark.slow
def test_extend_refusals(tmp_path, capsys):
  config = tiny_config(num_epochs=2)
  lt.train_and_evaluate(config, tmp_path / 'w', verbose=False)
  shorter = tiny_config(num_epochs=1)
  with pytest.raises(lt.ConfigError, match='runs 4 steps, fewer than the 8'):
    lt.train_and_evaluate(shorter, tmp_path / 'w', verbose=False,
                          extend=True)
  changed = tiny_config(num_epochs=3, optimizer__learning_rate=1e-3)
  with pytest.raises(lt.ConfigError, match='different config'):
    lt.train_and_evaluate(changed, tmp_path / 'w', verbose=False,
                          extend=True)
  longer = tiny_config(num_epochs=3)  # cosine to 0: the extension idles
  lt.train_and_evaluate(longer, tmp_path / 'w', verbose=True, extend=True)
  assert 'it does not move the parameters' in capsys.readouterr().out


# --- the data's fingerprint ---------------------------------------------------


def _lm(tmp_path, **changes):
  return lm_config(data__name='token_files', data__vocab_size=50,
                   data__data_dir=str(tmp_path / 'tokens'), **changes)


@pytest.mark.slow
def test_resume_on_a_file_changed_in_place_is_refused(tmp_path):
  write_tokens(tmp_path / 'tokens', np.arange(400) % 50, np.arange(80) % 50)
  config = _lm(tmp_path, max_evals_this_run=1)
  lt.train_and_evaluate(config, tmp_path / 'w', verbose=False)
  train = tmp_path / 'tokens' / 'train.bin'
  size, stat = train.stat().st_size, train.stat()
  with open(train, 'r+b') as f:  # one token, in place, same size
    f.seek(2 * 123)
    f.write(np.uint16(7).tobytes())
  os.utime(train, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same mtime
  assert train.stat().st_size == size
  resume = _lm(tmp_path)
  with pytest.raises(lt.ConfigError, match=r'the data differs from that of '
                     r'the checkpoint of step 2 \(train.bin changed.*'
                     r'--allow-data-change'):
    lt.train_and_evaluate(resume, tmp_path / 'w', verbose=False)
  out = lt.train_and_evaluate(resume, tmp_path / 'w', verbose=False,
                              allow_data_change=True)
  assert out.status == 'finished'


@pytest.mark.slow
def test_the_cli_says_it_in_one_line(tmp_path, capsys):
  write_tokens(tmp_path / 'tokens', np.arange(400) % 50, np.arange(80) % 50)
  config_file = tmp_path / 'c.py'
  config_file.write_text(
      'from tests.train.test_run_control import _lm\n'
      'import pathlib\n'
      f'def get_config():\n  return _lm(pathlib.Path({str(tmp_path)!r}))\n')
  base = ['--config', str(config_file), '--workdir', str(tmp_path / 'w')]
  assert cli.train_main(base + ['max_evals_this_run=1']) == 0
  write_tokens(tmp_path / 'tokens', (np.arange(400) * 3) % 50,
               np.arange(80) % 50)  # other tokens, the same size
  capsys.readouterr()
  assert cli.train_main(base) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and '--allow-data-change' in err[0]
  assert cli.train_main(base + ['--allow-data-change']) == 0
  assert cli.train_main(base + ['--eval-only']) == 0
  assert (tmp_path / 'w' / 'eval' / 'step_6.json').exists()
  capsys.readouterr()
  for flags, match in [
      (['--eval-only', '--overwrite'], 'not with --overwrite'),
      (['--eval-only', '--seeds', '0,1'], 'not with --seeds'),
      (['--extend', '--lr-grid', '1e-3,1e-4'], 'not with --lr-grid'),
      (['--extend', 'num_steps=3'], 'runs 3 steps, fewer than the 6'),
  ]:
    assert cli.train_main(base + flags) == 2, flags
    err = capsys.readouterr().err.strip()
    assert '\n' not in err and match in err, (flags, err)


def test_file_digest_reads_both_ends_and_samples_the_middle(tmp_path):
  path = tmp_path / 'big.bin'
  rng = np.random.default_rng(0)
  data = rng.integers(0, 256, 20 * 2 ** 20, np.uint8)
  data.tofile(path)
  digest = fingerprint.file_digest(path)
  assert digest.startswith(f'{data.size} bytes, sha256 ')

  def changed(at):
    copy = data.copy()
    copy[at] ^= 1
    copy.tofile(path)
    return fingerprint.file_digest(path) != digest

  mib = 2 ** 20
  assert changed(0) and changed(mib - 1)  # the first MiB
  assert changed(data.size - 1) and changed(data.size - mib)  # the last
  step = (data.size - 2 * mib - 65536) // 63
  assert changed(mib + 5 * step + 10)  # inside a sampled block
  assert not changed(mib + 5 * step + 65536 + 10)  # between blocks: missed
  data.tofile(path)
  os.utime(path, (0, 0))  # mtime alone is not a change
  assert fingerprint.file_digest(path) == digest
  np.append(data, 0).astype(np.uint8).tofile(path)  # an appended byte
  assert fingerprint.file_digest(path) != digest


def test_small_files_are_hashed_whole(tmp_path):
  import hashlib
  path = tmp_path / 'f.bin'
  payload = bytes(range(256)) * 9000  # 2.2 MiB
  path.write_bytes(payload)
  assert fingerprint.file_digest(path) == (
      f'{len(payload)} bytes, sha256 {hashlib.sha256(payload).hexdigest()}')


def test_every_built_in_data_has_a_fingerprint():
  classification = lt.get_task('classification')
  config = lt.validate(tiny_config())
  first = classification.fingerprint(config,
                                     classification.load_data(config))
  assert set(first) == {'train', 'test'}
  assert first == classification.fingerprint(
      config, classification.load_data(config))
  other = lt.validate(tiny_config(data__num_train=80))
  assert classification.fingerprint(
      other, classification.load_data(other))['train'] != first['train']
  lm = lt.get_task('language_model')
  text = lt.validate(lm_config())
  data = lm.load_data(text)
  assert lm.fingerprint(text, data) == data.info['sha256']


@pytest.mark.slow
def test_a_workdir_without_a_fingerprint_still_resumes(tmp_path, monkeypatch):
  """Checkpoints written before the fingerprint existed carry none."""
  config = tiny_config(num_epochs=2, max_evals_this_run=1)
  task = lt.get_task('classification')
  monkeypatch.setattr(type(task), 'fingerprint', lambda *a: None)
  lt.train_and_evaluate(config, tmp_path / 'w', verbose=False)
  monkeypatch.undo()
  config.max_evals_this_run = 0
  assert lt.train_and_evaluate(config, tmp_path / 'w',
                               verbose=False).status == 'finished'


def test_listing_digest_sees_names_and_sizes(tmp_path):
  for name, size in (('a.jpg', 3), ('b.jpg', 5)):
    (tmp_path / name).write_bytes(b'x' * size)
  digest = fingerprint.listing_digest(tmp_path, ['b.jpg', 'a.jpg'])
  assert digest.startswith('2 files, sha256 ')
  assert digest == fingerprint.listing_digest(tmp_path, ['a.jpg', 'b.jpg'])
  (tmp_path / 'b.jpg').write_bytes(b'x' * 6)
  assert digest != fingerprint.listing_digest(tmp_path, ['a.jpg', 'b.jpg'])


@pytest.mark.slow
def test_fingerprint_is_in_the_checkpoint(tmp_path):
  config = tiny_config()
  lt.train_and_evaluate(config, tmp_path / 'w', verbose=False)
  step, _, meta = _checkpoint(tmp_path / 'w')
  task = lt.get_task('classification')
  assert step == 4 and meta['data_fingerprint'] == task.fingerprint(
      lt.validate(config), task.load_data(lt.validate(config)))


# --- issue 25, item 7: the running training loss ------------------------------


@pytest.mark.slow
def test_train_log_every_k_steps_resumes_and_matches_the_rows(tmp_path):
  config = tiny_config(num_epochs=2, log_every_steps=2)
  whole = lt.train_and_evaluate(config, tmp_path / 'a', verbose=False)
  log = workdir_lib.read_metrics(tmp_path / 'a', 'train_log.jsonl')
  assert [r['step'] for r in log] == [2, 4, 6, 8]
  # The windows split each evaluation's interval: their mean is its loss.
  for row, pair in zip(whole.rows, (log[:2], log[2:])):
    assert row['train_loss'] == pytest.approx(
        (pair[0]['train_loss'] + pair[1]['train_loss']) / 2, rel=1e-6)
  cut = tiny_config(num_epochs=2, log_every_steps=2, max_evals_this_run=1)
  lt.train_and_evaluate(cut, tmp_path / 'b', verbose=False)
  lt.train_and_evaluate(config, tmp_path / 'b', verbose=False)
  assert workdir_lib.read_metrics(tmp_path / 'b', 'train_log.jsonl') == log
  # A runtime field: the same run, logged more often, is not another run.
  finer = tiny_config(num_epochs=2, log_every_steps=1)
  assert lt.train_and_evaluate(finer, tmp_path / 'a',
                               verbose=False).rows == whole.rows


@pytest.mark.slow
def test_a_window_that_crosses_an_evaluation_restarts_there(tmp_path):
  """k=3 over intervals of 4 steps: the line at step 3 is steps 1-3, at 6
  steps 5-6 (its interval began at 5); a resume logs the same lines."""
  config = tiny_config(num_epochs=2, log_every_steps=3)
  lt.train_and_evaluate(config, tmp_path / 'a', verbose=False)
  log = workdir_lib.read_metrics(tmp_path / 'a', 'train_log.jsonl')
  assert [r['step'] for r in log] == [3, 6]
  cut = tiny_config(num_epochs=2, log_every_steps=3, max_evals_this_run=1)
  lt.train_and_evaluate(cut, tmp_path / 'b', verbose=False)
  lt.train_and_evaluate(config, tmp_path / 'b', verbose=False)
  assert workdir_lib.read_metrics(tmp_path / 'b', 'train_log.jsonl') == log
  with pytest.raises(lt.ConfigError, match='log_every_steps=-1 is outside'):
    lt.validate(tiny_config(log_every_steps=-1))

# --- issue 25, item 1: gradient accumulation ----------------------------------


def _task_case(name):
  if name == 'classification':
    config = tiny_config(batch_size=32, model__batch_norm=False)
  else:
    config = lm_config(name, batch_size=32)
  config = lt.validate(config)
  task = lt.get_task(config.task)
  data = task.load_data(config)
  model = task.create_model(config, task.data_spec(data), seed=0)
  batch = jax.tree.map(np.asarray, task.train_batch(config, data, 0))
  return task, model, batch


@pytest.mark.parametrize('name', [
    'classification', pytest.param('language_model', marks=pytest.mark.slow),
    pytest.param('masked_lm', marks=pytest.mark.slow)])
def test_four_micro_batches_give_the_gradient_of_one_batch(name):
  from lionx.train import parallel
  task, model, batch = _task_case(name)
  loss_fn = lambda m, b: task.loss(m, b).loss
  one, g1 = parallel.value_and_grad(loss_fn, model, batch)
  four, g4 = parallel.value_and_grad(loss_fn, model, batch, 4)
  np.testing.assert_allclose(float(four), float(one), rtol=1e-6)
  worst = 0.0
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g4)):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = np.abs(a).max() + 1e-30
    worst = max(worst, float(np.abs(a - b).max() / scale))
  assert worst < 1e-5, worst  # float32 rounding of a sum in another order


@pytest.mark.slow
def test_accumulation_runs_resumes_and_refuses_uneven_splits(tmp_path):
  config = tiny_config(num_epochs=2, grad_accum_steps=2)
  whole = lt.train_and_evaluate(config, tmp_path / 'a', verbose=False)
  assert whole.status == 'finished'
  stored = workdir_lib.read_json(tmp_path / 'a' / 'config.json')['config']
  assert stored['grad_accum_steps'] == 2
  cut = tiny_config(num_epochs=2, grad_accum_steps=2, max_evals_this_run=1)
  lt.train_and_evaluate(cut, tmp_path / 'b', verbose=False)
  rest = lt.train_and_evaluate(config, tmp_path / 'b', verbose=False)
  strip = lambda rows: [{k: v for k, v in r.items() if k != 'wall_time'}
                        for r in rows]
  assert strip(rest.rows) == strip(whole.rows)
  with pytest.raises(lt.ConfigError, match='grad_accum_steps=3 does not '
                     'divide batch_size=16'):
    lt.validate(tiny_config(grad_accum_steps=3))
  with pytest.raises(lt.ConfigError, match='grad_accum_steps=0 is outside'):
    lt.validate(tiny_config(grad_accum_steps=0))


@pytest.mark.slow
def test_micro_batches_are_really_split():
  """With BatchNorm the statistics are those of each micro-batch, so the
  gradient differs from the whole batch's: the scan does split it."""
  from lionx.train import parallel
  config = lt.validate(tiny_config(batch_size=32))  # batch_norm=True
  task = lt.get_task(config.task)
  data = task.load_data(config)
  model = task.create_model(config, task.data_spec(data), seed=0)
  batch = jax.tree.map(np.asarray, task.train_batch(config, data, 0))
  loss_fn = lambda m, b: task.loss(m, b).loss
  _, g1 = parallel.value_and_grad(loss_fn, model, batch)
  _, g4 = parallel.value_and_grad(loss_fn, model, batch, 4)
  gaps = [float(np.abs(np.asarray(a) - np.asarray(b)).max())
          for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g4))]
  assert max(gaps) > 1e-3
