"""lionx-train and lionx-compare: runs, reruns and one-line errors."""

import json
import subprocess
import sys

import numpy as np
import pytest

from lionx.train import cli
from tests.train.helpers import ROOT

TINY = '''
from tests.train.helpers import tiny_config


def get_config():
  return tiny_config()
'''


@pytest.fixture
def tiny_file(tmp_path):
  path = tmp_path / 'tiny.py'
  path.write_text(TINY)
  return path


def _error_line(capsys, code, prog='lionx-train'):
  out = capsys.readouterr()
  assert code == 2
  lines = out.err.strip().splitlines()
  assert len(lines) == 1, out.err
  assert lines[0].startswith(f'{prog}: error: ')
  assert 'Traceback' not in out.err + out.out
  return lines[0]


@pytest.mark.parametrize('override,match', [
    ('model.name=resnet9', "model.name='resnet9' is not one of"),
    ('optimizer.name=lamb', "optimizer.name='lamb' is not one of"),
    ('data.name=mnist', "data.name='mnist' is not one of"),
    ('schedule.name=step', "schedule.name='step' is not one of"),
    ('optimizer.learning_rate=0', 'optimizer.learning_rate=0.0 is outside '
     '(0.0, inf): expected a positive number'),
    ('optimizer.learning_rate=-0.1', 'expected a positive number'),
    ('batch_size=-4', 'batch_size=-4 is outside (0.0, inf): expected a '
     'positive number'),
    ('batch_size=0', 'batch_size=0 is outside (0.0, inf): expected a '
     'positive number'),
    ('optimizer.lr=1', "unknown config field 'optimizer.lr'"),
])
def test_bad_input_is_one_line(tiny_file, tmp_path, capsys, override, match):
  code = cli.train_main(['--config', str(tiny_file), '--workdir',
                         str(tmp_path / 'w'), override])
  assert match in _error_line(capsys, code)
  assert not (tmp_path / 'w').exists()


def test_missing_config_and_data(tmp_path, tiny_file, capsys):
  code = cli.train_main(['--config', str(tmp_path / 'x.py'),
                         '--workdir', str(tmp_path)])
  assert 'no such file' in _error_line(capsys, code)
  code = cli.compare_main(['--config', str(tiny_file), '--workdir',
                           str(tmp_path / 'w'), 'data.name=cifar10',
                           f'data.data_dir={tmp_path}'])
  line = _error_line(capsys, code, 'lionx-compare')
  assert str(tmp_path) in line and 'cifar-10-python.tar.gz' in line
  code = cli.compare_main(['--config', str(tiny_file), '--workdir',
                           str(tmp_path / 'w'), '--optimizers', 'lion,lamb'])
  assert "--optimizers lion,lamb: 'lamb' is not one of" in _error_line(
      capsys, code, 'lionx-compare')
  code = cli.train_main(['--config', str(tiny_file), '--workdir',
                         str(tmp_path / 'w'), '--lr-grid', '1e-3,x'])
  assert '--lr-grid 1e-3,x' in _error_line(capsys, code)


@pytest.mark.slow
def test_train_rerun_and_refusal(tiny_file, tmp_path, capsys):
  workdir = tmp_path / 'run'
  args = ['--config', str(tiny_file), '--workdir', str(workdir)]
  assert cli.train_main(args) == 0
  out = capsys.readouterr().out
  assert 'd = ' in out and 'sqrt(d) = ' in out and '| epoch ' in out
  assert (workdir / 'figure1.png').exists()
  assert len((workdir / 'metrics.jsonl').read_text().splitlines()) == 1
  assert cli.train_main(args) == 0  # finished: reported again
  assert 'reporting it again' in capsys.readouterr().out
  code = cli.train_main(args + ['seed=1'])
  line = _error_line(capsys, code)
  assert 'different config (seed: 0 -> 1)' in line and '--overwrite' in line
  assert cli.train_main(args + ['seed=1', '--overwrite']) == 0
  stored = json.loads((workdir / 'config.json').read_text())
  assert stored['config']['seed'] == 1


@pytest.mark.slow
def test_compare_writes_figures_and_is_rerunnable(tiny_file, tmp_path,
                                                  capsys):
  args = ['--config', str(tiny_file), '--workdir', str(tmp_path),
          '--optimizers', 'lion,sgd']
  assert cli.compare_main(args) == 0
  first = (tmp_path / 'summary.md').read_text()
  out = capsys.readouterr().out
  assert '| lion ' in out and '| sgd ' in out and 'figure1.png' in out
  assert cli.compare_main(args) == 0
  assert (tmp_path / 'summary.md').read_text() == first
  # lionx-train --optimizers is the same comparison.
  assert cli.train_main(args) == 0


@pytest.mark.slow
def test_diverged_run_exits_1(tiny_file, tmp_path, capsys):
  code = cli.train_main(['--config', str(tiny_file), '--workdir',
                         str(tmp_path), 'optimizer.name=sgd',
                         'optimizer.learning_rate=1e30'])
  out = capsys.readouterr()
  assert code == 1
  assert 'non-finite' in out.err and 'Traceback' not in out.err


def test_console_script_prints_no_traceback(tmp_path):
  proc = subprocess.run(
      [sys.executable, '-m', 'lionx.train.cli', '--config',
       str(ROOT / 'configs' / 'default.py'), '--workdir', str(tmp_path),
       'optimizer.name=lamb'],
      capture_output=True, text=True, cwd=ROOT, timeout=120)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines() == [
      "lionx-train: error: optimizer.name='lamb' is not one of "
      "('adamw', 'cautious_lion', 'distributed_lion', 'lion', 'lion_cwd', "
      "'lion_huber', 'lion_lp', 'lion_sparse_sign', 'lion_spectral', "
      "'lion_tanh', 'lion_topk_sign', 'muon', 'sgd'). A new optimizer is one "
      'call to lionx.train.optimizers.register.']


def test_dry_run_prints_d_and_a_batch_and_writes_nothing(tiny_file, tmp_path,
                                                         capsys):
  workdir = tmp_path / 'w'
  code = cli.train_main(['--config', str(tiny_file), '--workdir',
                         str(workdir), '--dry-run'])
  out = capsys.readouterr().out
  assert code == 0
  # cnn width 4 with BatchNorm on 8x8x3, 4 classes (tiny_config).
  d = (27 * 4 + 2 * 4) + (36 * 8 + 2 * 8) + (4 * 4 * 8 * 16 + 16) + (
      16 * 4 + 4)
  assert f'd = {d:,} parameters' in out
  assert 'training batch: image (16, 8, 8, 3) float32' in out
  assert 'held-out batch: image (24, 8, 8, 3)' in out
  assert "train step (XLA's estimate, one device, 16 rows): arguments" in out
  assert 'warning' not in out
  assert not workdir.exists()


def test_dry_run_memory_is_xlas_own_accounting(tiny_file, capsys,
                                                monkeypatch):
  """The arguments hold at least the parameters, Lion's float32 momentum
  and the batch; a device too small gets a warning naming the levers."""
  from lionx.train import experiment
  from lionx.train import config as config_lib
  config = config_lib.load_config(tiny_file)
  task = experiment.tasks.get_task(config.task)
  data = task.load_data(config)
  batch = task.train_batch(config, data, 0)
  m = experiment.step_memory(config, task, task.data_spec(data), 4, 4, batch)
  d = 27 * 4 + 4 + 36 * 8 + 8 + 4 * 4 * 8 * 16 + 16 + 16 * 4 + 4
  batch_bytes = sum(np.asarray(v).nbytes for v in batch.values())
  assert m.argument_size_in_bytes >= 4 * 2 * d + batch_bytes
  assert m.alias_size_in_bytes >= 4 * 2 * d  # the donated state
  monkeypatch.setattr(experiment, '_device_memory', lambda: 1024)
  experiment.dry_run(config)
  out = capsys.readouterr().out
  assert 'warning: the step does not fit' in out and 'grad_accum_steps' in out


def test_dry_run_without_the_data_prints_d_then_the_error(tmp_path, capsys):
  code = cli.train_main([
      '--config', f"{ROOT / 'configs' / 'cifar.py'}:cifar100,resnet18",
      '--workdir', str(tmp_path / 'w'), '--dry-run',
      f'data.data_dir={tmp_path}'])
  out = capsys.readouterr()
  assert code == 2
  assert 'resnet18: d = 11,220,132 parameters, sqrt(d) = 3349.6' in out.out
  lines = out.err.strip().splitlines()
  assert len(lines) == 1 and 'cifar-100-python.tar.gz' in lines[0]
  assert not (tmp_path / 'w').exists()


@pytest.mark.slow
def test_flax_flag_syntax_and_a_line_per_evaluation(tiny_file, tmp_path,
                                                    capsys):
  workdir = tmp_path / 'run'
  code = cli.train_main(['--config', str(tiny_file), '--workdir',
                         str(workdir), '--config.optimizer.learning_rate=1e-2',
                         '--config.num_epochs', '2', '--no-progress'])
  assert code == 0
  out = capsys.readouterr().out
  assert 'epoch 1, step 4/8: train ' in out
  assert 'epoch 2, step 8/8: train ' in out
  stored = json.loads((workdir / 'config.json').read_text())['config']
  assert stored['optimizer']['learning_rate'] == 1e-2
  assert stored['num_epochs'] == 2


@pytest.mark.slow
def test_compare_with_seeds_reports_median_and_range(tiny_file, tmp_path,
                                                     capsys):
  code = cli.compare_main(['--config', str(tiny_file), '--workdir',
                           str(tmp_path), '--optimizers', 'lion,sgd',
                           '--seeds', '1,2,3'])
  assert code == 0
  for name in ('lion', 'sgd'):
    for seed in (1, 2, 3):
      rows = (tmp_path / name / f'seed_{seed}' / 'metrics.jsonl')
      assert rows.exists()
  summary = (tmp_path / 'summary.md').read_text()
  assert 'Median [min, max] over the seeds [1, 2, 3].' in summary
  lion = [line for line in summary.splitlines() if line.startswith('| lion')]
  finals = sorted(json.loads((tmp_path / 'lion' / f'seed_{s}' /
                              'metrics.jsonl').read_text().splitlines()[-1]
                             )['full_loss'] for s in (1, 2, 3))
  # median [min, max] of the three final f(θ), as the table prints them.
  from lionx.train import report
  assert report.spread(finals) in lion[0]
  assert finals[0] < finals[2]  # the seeds differ
  capsys.readouterr()
