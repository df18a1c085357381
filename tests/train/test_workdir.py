"""Workdirs: refusals, OS errors, wall time, provenance, what is written."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from matplotlib import image as mpimg

from lionx.train import cli
from lionx.train import config as config_lib
from lionx.train import experiment, plots, sweep, writers
from lionx.train import workdir as workdir_lib
from tests.train.helpers import ROOT, tiny_config

TINY = '''
from tests.train.helpers import tiny_config


def get_config():
  return tiny_config()
'''


def _error(capsys, code):
  err = capsys.readouterr().err
  assert code == 2, err
  lines = err.strip().splitlines()
  assert len(lines) == 1 and 'Traceback' not in err, err
  return lines[0]


@pytest.mark.slow
def test_wall_time_is_elapsed_training_time_across_resumes(tmp_path):
  config = tiny_config(num_epochs=4, checkpoint_every_evals=1)
  first = config_lib.copy(config)
  first.max_evals_this_run = 2
  began = time.perf_counter()
  out = experiment.train_and_evaluate(first, tmp_path, verbose=False)
  spent = time.perf_counter() - began
  assert out.status == 'interrupted'
  # Saving at every evaluation must not count the time twice.
  walls = [r['wall_time'] for r in out.rows]
  assert walls[-1] <= spent
  began = time.perf_counter()
  done = experiment.train_and_evaluate(config, tmp_path, verbose=False)
  spent += time.perf_counter() - began
  walls = [r['wall_time'] for r in done.rows]
  assert walls == sorted(walls) and walls[-1] <= spent
  assert walls[2] > walls[1]  # continues from the checkpoint's time


@pytest.mark.slow
def test_provenance_is_recorded_per_invocation(tmp_path):
  config = tiny_config(num_epochs=2)
  first = config_lib.copy(config)
  first.max_evals_this_run = 1
  experiment.train_and_evaluate(first, tmp_path, verbose=False)
  experiment.train_and_evaluate(config, tmp_path, verbose=False)
  stored = json.loads((tmp_path / 'config.json').read_text())
  assert stored['config']['format'] == config_lib.IDENTITY_FORMAT
  entries = stored['provenance']
  assert len(entries) == 2
  for entry in entries:
    assert set(entry['versions']) >= {'lionx', 'jax', 'jaxlib', 'flax',
                                      'optax'}
    assert entry['versions']['jax'] and entry['python'].count('.') == 2
    assert entry['devices']['count'] >= 1 and entry['seed'] == 0
    assert isinstance(entry['command'], list)
    assert 'git_commit' in entry


@pytest.mark.slow
def test_a_failed_start_never_blocks_the_workdir(tmp_path, capsys):
  path = tmp_path / 'tiny.py'
  path.write_text(TINY)
  args = ['--config', str(path), '--workdir', str(tmp_path / 'w')]
  line = _error(capsys, cli.train_main(args + ['batch_size=5000']))
  assert 'batch_size=5000 is larger than the training set' in line
  # Whatever a failed start left, the corrected command runs.
  (tmp_path / 'w').mkdir(exist_ok=True)
  (tmp_path / 'w' / 'config.json').write_text(
      json.dumps({'config': {'format': 2, 'seed': 99}}))
  assert cli.train_main(args) == 0


@pytest.mark.slow
def test_train_and_compare_workdirs_do_not_mix(tmp_path):
  sweep.compare(tiny_config(), tmp_path / 'c', ['lion'], verbose=False)
  figure = (tmp_path / 'c' / 'figure1.png').read_bytes()
  with pytest.raises(config_lib.ConfigError,
                     match='holds a comparison of optimizers'):
    experiment.train_and_evaluate(tiny_config(), tmp_path / 'c',
                                  verbose=False)
  assert (tmp_path / 'c' / 'figure1.png').read_bytes() == figure
  experiment.train_and_evaluate(tiny_config(), tmp_path / 'r', verbose=False)
  with pytest.raises(config_lib.ConfigError, match='holds a single run'):
    sweep.compare(tiny_config(), tmp_path / 'r', ['lion'], verbose=False)


@pytest.mark.slow
def test_earlier_format_is_refused_clearly(tmp_path):
  experiment.train_and_evaluate(tiny_config(), tmp_path, verbose=False)
  stored = json.loads((tmp_path / 'config.json').read_text())
  stored['config'].pop('format')  # as lionx 0.1 wrote it
  (tmp_path / 'config.json').write_text(json.dumps(stored))
  with pytest.raises(config_lib.ConfigError,
                     match='earlier version of lionx .* --overwrite'):
    experiment.train_and_evaluate(tiny_config(), tmp_path, verbose=False)


def test_os_errors_name_the_workdir(tmp_path, capsys, monkeypatch):
  path = tmp_path / 'tiny.py'
  path.write_text(TINY)
  afile = tmp_path / 'afile'
  afile.write_text('x')
  line = _error(capsys, cli.train_main(['--config', str(path), '--workdir',
                                        str(afile)]))
  assert line == (f'lionx-train: error: --workdir {afile} is a file; '
                  'expected a directory.')
  line = _error(capsys, cli.train_main(['--config', str(path), '--workdir',
                                        str(afile / 'sub')]))
  assert line.startswith(f'lionx-train: error: --workdir {afile / "sub"}: '
                         'cannot create the folder (Not a directory')
  # A folder without write permission (simulated: the tests may run as
  # root, who writes everywhere).
  readonly = tmp_path / 'ro'
  readonly.mkdir()
  real = workdir_lib.os.access
  monkeypatch.setattr(workdir_lib.os, 'access',
                      lambda p, mode: False if str(p) == str(readonly)
                      else real(p, mode))
  line = _error(capsys, cli.train_main(['--config', str(path), '--workdir',
                                        str(readonly)]))
  assert line == f'lionx-train: error: --workdir {readonly}: not writable.'


def test_a_finished_run_is_reported_without_writing(tmp_path, capsys,
                                                    monkeypatch):
  path = tmp_path / 'tiny.py'
  path.write_text(TINY)
  args = ['--config', str(path), '--workdir', str(tmp_path / 'w')]
  assert cli.train_main(args) == 0
  capsys.readouterr()

  def refuse(*args, **kwargs):
    raise PermissionError(13, 'Permission denied', 'somewhere')
  for module, name in ((workdir_lib, 'write_json'),
                       (workdir_lib, 'append_metrics'),
                       (workdir_lib, 'make'), (plots, 'write_figures')):
    monkeypatch.setattr(module, name, refuse)
  monkeypatch.setattr(experiment, 'Checkpointer', refuse)
  assert cli.train_main(args) == 0
  assert 'reporting it again' in capsys.readouterr().out


def _blue_pixels(path):
  pixels = mpimg.imread(path)[..., :3]
  blue = np.array([0x1f, 0x77, 0xb4]) / 255  # matplotlib's first color
  return int(np.sum(np.all(np.abs(pixels - blue) < 0.08, axis=-1)))


def test_a_run_of_one_evaluation_is_drawn(tmp_path):
  row = {'epoch': 1, 'step': 4, 'full_loss': 0.5, 'val_loss': 0.7,
         'test_accuracy': 0.5, 'grad_norm_ratio': 3.0, 'sqrt_d': 10.0,
         'box_linf_scaled': 0.2}
  plots.write_figures({'one': [row]}, tmp_path / 'one', panels=(
      ('test_accuracy', 'test top-1 (%)'),))
  plots.write_figures({'one': []}, tmp_path / 'none', panels=(
      ('test_accuracy', 'test top-1 (%)'),))
  for name in ('loss', 'accuracy', 'ratio', 'box'):
    # Beyond the legend's sample line, which both have: the point itself.
    drawn = _blue_pixels(tmp_path / 'one' / f'{name}.png')
    assert drawn > _blue_pixels(tmp_path / 'none' / f'{name}.png') + 20, name


def test_figures_are_redrawn_while_training(tmp_path):
  figures = writers.Figures(tmp_path, 'run', 'title', (), 'epoch',
                            min_interval=0.0)
  row = {'epoch': 1, 'step': 1, 'full_loss': 0.5, 'val_loss': 0.6,
         'grad_norm_ratio': 2.0, 'sqrt_d': 3.0, 'box_linf_scaled': 0.1}
  figures.write(row)
  assert (tmp_path / 'figure1.png').exists()
  first = (tmp_path / 'loss.png').stat().st_mtime_ns
  figures.write(dict(row, epoch=2, step=2, full_loss=0.25))
  assert (tmp_path / 'loss.png').stat().st_mtime_ns >= first
  assert len(figures.rows) == 2
  # With a long interval, rows are kept but not drawn until close().
  slow = writers.Figures(tmp_path / 'slow', 'run', '', (), 'epoch',
                         min_interval=3600.0)
  slow.write(row)
  assert not (tmp_path / 'slow' / 'figure1.png').exists()
  slow.close(finished=True)
  assert (tmp_path / 'slow' / 'figure1.png').exists()


@pytest.mark.slow
def test_summary_has_held_out_loss_peak_rate_and_percentages(tmp_path):
  config = tiny_config(num_epochs=2)
  results = sweep.compare(config, tmp_path, ['lion', 'sgd'], verbose=False)
  summary = (tmp_path / 'summary.md').read_text()
  header = summary.splitlines()[2]
  for column in ('peak lr', 'weight decay', 'final f(θ)', 'held-out loss',
                 'test top-1'):
    assert column in header
  lion = next(line for line in summary.splitlines()
              if line.startswith('| lion'))
  cells = [c.strip() for c in lion.strip('|').split('|')]
  assert cells[1] == '0.0030'  # the configured rate, not the last step's
  val_loss = results['lion'].best.rows[-1]['val_loss']
  assert f'{val_loss:.4f}' in cells
  accuracy = results['lion'].best.rows[-1]['test_accuracy']
  assert f'{100 * accuracy:.1f} %' in cells


# --- one process per workdir --------------------------------------------------

_HOLD = '''
import pathlib, sys, time
from lionx.train import workdir
with workdir.lock(pathlib.Path(sys.argv[1])):
  print('held', flush=True)
  time.sleep(600)
'''


def _holder(path):
  """A second Python process holding the workdir's lock."""
  child = subprocess.Popen([sys.executable, '-c', _HOLD, str(path)],
                           stdout=subprocess.PIPE, text=True,
                           cwd=str(ROOT))
  assert child.stdout.readline().strip() == 'held'
  return child


@pytest.mark.slow
def test_a_second_process_is_refused_and_a_killed_one_leaves_no_lock(
    tmp_path, capsys):
  path = tmp_path / 'tiny.py'
  path.write_text(TINY)
  w = tmp_path / 'w'
  child = _holder(w)
  try:
    message = f'--workdir {w} is in use by another process (pid {child.pid})'
    with pytest.raises(config_lib.ConfigError, match=message.replace(
        '(', r'\(').replace(')', r'\)')):
      with workdir_lib.lock(w):
        pass
    # lionx-train and lionx-compare refuse in one line, writing nothing.
    for main in (cli.train_main, cli.compare_main):
      line = _error(capsys, main(['--config', str(path), '--workdir',
                                  str(w)]))
      assert message in line and 'wait for it to end' in line
    assert sorted(p.name for p in w.iterdir()) == [workdir_lib.LOCK_FILE]
  finally:
    child.kill()  # SIGKILL: the OS releases the lock with the process
    child.wait()
  with workdir_lib.lock(w):
    with workdir_lib.lock(w):  # nested in one process: passes through
      assert (w / workdir_lib.LOCK_FILE).read_text().strip() == str(
          os.getpid())
  assert cli.train_main(['--config', str(path), '--workdir', str(w)]) == 0

