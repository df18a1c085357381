"""TensorBoard events, read back with TensorBoard's own EventAccumulator."""

import io
import json
import math

import numpy as np
import pytest
from PIL import Image

from tensorboard.backend.event_processing import event_accumulator

from lionx.train import experiment
from lionx.train import workdir as workdir_lib
from lionx.train import writers
from tests.train.helpers import tiny_config


def _events(path):
  acc = event_accumulator.EventAccumulator(
      str(path), size_guidance={'scalars': 0, 'images': 0})
  acc.Reload()
  return acc


def _scalars(acc, tag):
  return [(e.step, e.value) for e in acc.Scalars(tag)]


def _numeric(row):
  return {k: v for k, v in row.items() if k != 'step' and
          isinstance(v, (int, float)) and not isinstance(v, bool)}


@pytest.mark.slow
def test_a_run_and_its_resumption_leave_each_row_once(tmp_path):
  config = tiny_config(num_epochs=2, max_evals_this_run=1)
  first = experiment.train_and_evaluate(config, tmp_path, verbose=False)
  assert first.status == 'interrupted'
  result = experiment.train_and_evaluate(config, tmp_path, verbose=False)
  assert result.status == 'finished'
  rows = [json.loads(line) for line in
          (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  assert [r['step'] for r in rows] == [4, 8]
  assert len(list(tmp_path.glob('events.out.tfevents.*'))) == 2
  acc = _events(tmp_path)
  fields = set(_numeric(rows[0]))
  assert {'full_loss', 'val_loss', 'test_accuracy', 'epoch', 'lr',
          'grad_norm_ratio', 'wall_time'} <= fields
  assert set(acc.Tags()['scalars']) == fields  # not 'optimizer', not 'step'
  for tag in fields:
    expected = [(r['step'], float(np.float32(r[tag]))) for r in rows]
    got = _scalars(acc, tag)
    assert [s for s, _ in got] == [s for s, _ in expected], tag
    for (_, value), (_, want) in zip(got, expected):
      assert value == want or (math.isnan(value) and math.isnan(want)), tag
  # The figures, once at the end of each invocation, as the PNGs on disk.
  images = acc.Tags()['images']
  assert 'figures/figure1' in images
  assert {f'figures/{p.stem}' for p in tmp_path.glob('*.png')} == set(images)
  events = acc.Images('figures/figure1')
  assert [e.step for e in events] == [4, 8]
  drawn = Image.open(io.BytesIO(events[-1].encoded_image_string))
  on_disk = Image.open(tmp_path / 'figure1.png').convert('RGB')
  assert drawn.size == on_disk.size
  assert np.array_equal(np.asarray(drawn.convert('RGB')),
                        np.asarray(on_disk))


def test_overwrite_clears_the_events(tmp_path):
  writer = writers.TensorBoard(tmp_path)
  writer.write({'step': 1, 'full_loss': 1.0})
  writer.close(finished=True)
  (tmp_path / 'notes.txt').write_text('kept')
  assert list(tmp_path.glob('events.out.tfevents.*'))
  workdir_lib.clear(tmp_path)
  assert [p.name for p in tmp_path.iterdir()] == ['notes.txt']


def test_a_restart_hides_the_steps_after_the_checkpoint(tmp_path):
  # A run killed after writing step 12 but whose last checkpoint is step 8
  # is resumed from 8: TensorBoard must show the new step 12, not both.
  first = writers.TensorBoard(tmp_path, start_step=0)
  for step in (4, 8, 12):
    first.write({'step': step, 'full_loss': float(step), 'name': 'x',
                 'flag': True})
  first.close(finished=False)
  second = writers.TensorBoard(tmp_path, start_step=8)
  for step in (12, 16):
    second.write({'step': step, 'full_loss': -float(step)})
  second.close(finished=True)
  acc = _events(tmp_path)
  assert acc.Tags()['scalars'] == ['full_loss']  # no str, no bool
  assert _scalars(acc, 'full_loss') == [(4, 4.0), (8, 8.0), (12, -12.0),
                                        (16, -16.0)]


def test_run_writers_adds_tensorboard_on_process_0_unless_turned_off(
    tmp_path):
  class Task:
    panels, summary = (), ()
  kinds = lambda out: [type(w).__name__ for w in out]
  on = writers.run_writers(tmp_path, None, 1, 'l', 't', Task(), 'step')
  off = writers.run_writers(tmp_path, None, 1, 'l', 't', Task(), 'step',
                            tensorboard=False)
  for writer in on + off:
    writer.close(finished=False)
  assert kinds(on) == ['MetricsFile', 'Figures', 'TensorBoard']
  assert kinds(off) == ['MetricsFile', 'Figures']
