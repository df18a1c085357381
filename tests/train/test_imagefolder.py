"""ImageNet-style folders: listing, transforms, order, workers, bad trees."""

import json
import math
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from PIL import Image

from lionx.train import cli, experiment, parallel
from lionx.train.data import imagefolder
from lionx.train.data import images
from tests.train.helpers import ROOT, tiny_config

CLASSES = ('n02_dog', 'n01_cat', 'n03_ant')  # sorted: cat, dog, ant


def _picture(seed: int, width: int, height: int) -> Image.Image:
  """A smooth colour gradient plus a little noise (JPEG-friendly)."""
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[0:height, 0:width]
  base = rng.uniform(0, 255, 3)
  slope = rng.uniform(-2, 2, (2, 3))
  pixels = base + x[..., None] * slope[0] + y[..., None] * slope[1]
  pixels += rng.normal(0, 4, pixels.shape)
  return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def write_tree(root, train=5, val=2, classes=CLASSES):
  """root/{train,val}/<class>/*.JPEG of assorted sizes; returns root."""
  seed = 0
  for split, count in (('train', train), ('val', val)):
    for name in classes:
      folder = root / split / name
      folder.mkdir(parents=True)
      for i in range(count):
        seed += 1
        size = (24 + 7 * (seed % 5), 20 + 5 * (seed % 7))
        _picture(seed, *size).save(folder / f'{name}_{i:03d}.JPEG',
                                   quality=95)
  (root / 'train' / CLASSES[0] / 'notes.txt').write_text('not an image')
  return root


@pytest.fixture
def tree(tmp_path):
  return write_tree(tmp_path / 'tree')


def _config(root, **changes):
  config = images.ImageDataConfig(name='imagefolder', data_dir=str(root),
                                  image_size=16, workers=0)
  for key, value in changes.items():
    setattr(config, key, value)
  return config


def _reference_eval(path, size):
  """Resize the shorter side to size / 0.875, then crop the centre."""
  with Image.open(path) as image:
    rgb = image.convert('RGB')
  w, h = rgb.size
  short = size / 0.875
  scale = short / min(w, h)
  resized = rgb.resize((round(w * scale), round(h * scale)),
                       Image.Resampling.BILINEAR)
  left = (resized.size[0] - size) // 2
  top = (resized.size[1] - size) // 2
  crop = np.asarray(resized.crop((left, top, left + size, top + size)),
                    np.float32) / 255
  return (crop - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]


def test_listing_classes_labels_and_spec(tree):
  ds = images.load_dataset(_config(tree))
  assert isinstance(ds, images.ImageSet)
  assert ds.classes == ('n01_cat', 'n02_dog', 'n03_ant')
  assert ds.spec == images.InputSpec((16, 16, 3), 3)
  np.testing.assert_array_equal(ds.train_labels, np.repeat([0, 1, 2], 5))
  np.testing.assert_array_equal(ds.test_labels, np.repeat([0, 1, 2], 2))
  assert ds.train_files[0] == b'n01_cat/n01_cat_000.JPEG'
  assert b'notes.txt' not in b' '.join(ds.train_files)
  assert ds.workers == 0
  auto = images.load_dataset(_config(tree, workers=-1))
  assert auto.workers == imagefolder.default_workers() >= 1


def test_eval_batches_are_the_centre_crops_in_order_and_padded(tree):
  ds = images.load_dataset(_config(tree))
  batches = list(ds.eval_batches('test', 4))
  assert [len(b['label']) for b in batches] == [4, 4]
  np.testing.assert_array_equal(batches[1]['mask'], [1, 1, 0, 0])
  labels = np.concatenate([b['label'] for b in batches])[:6]
  np.testing.assert_array_equal(labels, ds.test_labels)
  for i, name in enumerate(ds.test_files):
    want = _reference_eval(tree / 'val' / name.decode(), 16)
    got = batches[i // 4]['image'][i % 4]
    assert got.shape == (16, 16, 3) and got.dtype == np.float32
    # One resampling of the box against resize-then-crop: close, not equal.
    assert np.abs(got - want).mean() < 0.05
  assert not batches[1]['image'][2:].any()
  assert len(list(ds.eval_batches('train', 4, max_batches=2))) == 2
  with pytest.raises(ValueError, match="split='val' is not one of"):
    next(ds.eval_batches('val', 4))


def test_train_batches_follow_the_documented_order(tree):
  ds = images.load_dataset(_config(tree))
  seed, batch_size = 7, 4  # 15 images: 3 batches an epoch
  eval_images = {}
  for batch in ds.eval_batches('train', 15):
    for j in range(15):
      eval_images[j] = batch['image'][j]
  for step in range(7):
    batch = ds.train_batch(step, seed=seed, batch_size=batch_size,
                           augment=False)
    epoch, index = divmod(step, 3)
    order = np.random.default_rng([seed, epoch, 0]).permutation(15)
    rows = order[index * 4:(index + 1) * 4]
    np.testing.assert_array_equal(batch['label'], ds.train_labels[rows])
    for j, row in enumerate(rows):
      np.testing.assert_array_equal(batch['image'][j], eval_images[row])
    assert set(batch) == {'image', 'label'}


def test_a_batch_is_a_function_of_seed_and_step_alone(tree):
  # In order, out of order (a resumed run starts anew), in another object.
  def batch(ds, step, seed=0):
    return ds.train_batch(step, seed=seed, batch_size=4, augment=True)
  a = images.load_dataset(_config(tree))
  b = images.load_dataset(_config(tree))
  first = [batch(a, k) for k in range(5)]
  for k in (4, 1, 2, 0):
    again = batch(b, k)
    np.testing.assert_array_equal(again['image'], first[k]['image'])
    np.testing.assert_array_equal(again['label'], first[k]['label'])
  other = batch(b, 0, seed=1)
  assert not np.array_equal(other['image'], first[0]['image'])
  plain = a.train_batch(0, seed=0, batch_size=4, augment=False)
  np.testing.assert_array_equal(plain['label'], first[0]['label'])
  assert not np.array_equal(plain['image'], first[0]['image'])


@pytest.mark.slow
def test_worker_processes_give_the_same_batches(tree):
  local = images.load_dataset(_config(tree))
  pooled = images.load_dataset(_config(tree, workers=2))
  for step in (0, 1, 2):
    want = local.train_batch(step, seed=3, batch_size=4, augment=True)
    got = pooled.train_batch(step, seed=3, batch_size=4, augment=True)
    for key in want:
      np.testing.assert_array_equal(got[key], want[key])
  pooled.close()
  for want, got in zip(local.eval_batches('test', 4),
                       pooled.eval_batches('test', 4)):
    for key in want:
      np.testing.assert_array_equal(got[key], want[key])


@settings(max_examples=25, deadline=None)
@given(width=st.integers(1, 400), height=st.integers(1, 400),
       seed=st.integers(0, 2 ** 31))
@example(width=1, height=300, seed=0)  # no try fits: the fallback
@example(width=300, height=2, seed=0)
def test_random_resized_crop_keeps_its_bounds(width, height, seed):
  uniforms = np.random.default_rng(seed).random((10, 4))
  left, top, right, bottom = imagefolder.random_resized_crop(
      width, height, uniforms)
  assert 0 <= left < right <= width and 0 <= top < bottom <= height
  w, h = right - left, bottom - top
  # The first accepted try, recomputed from torchvision's recipe.
  area = width * height
  for fraction, log_ratio, u, v in uniforms:
    target = area * (0.08 + 0.92 * fraction)
    ratio = math.exp(math.log(3 / 4) + math.log(16 / 9) * log_ratio)
    tw = round(math.sqrt(target * ratio))
    th = round(math.sqrt(target / ratio))
    if 0 < tw <= width and 0 < th <= height:
      assert (w, h) == (tw, th)
      assert (left, top) == (int(u * (width - tw + 1)),
                             int(v * (height - th + 1)))
      break
  else:  # the central crop of the nearest ratio in [3/4, 4/3]
    if width / height < 3 / 4:
      want = (width, round(width * 4 / 3))
    elif width / height > 4 / 3:
      want = (round(height * 4 / 3), height)
    else:
      want = (width, height)
    assert (w, h) == want
    assert (left, top) == ((width - w) // 2, (height - h) // 2)


def test_the_batch_sharding_is_the_training_steps():
  mesh = parallel.make_mesh(0)
  from jax.sharding import NamedSharding, PartitionSpec
  assert imagefolder.batch_sharding() == NamedSharding(
      mesh, PartitionSpec(parallel.AXIS))
  np.testing.assert_array_equal(imagefolder.host_rows(12), np.arange(12))


def _break(tree, what):
  if what == 'corrupt':
    path = tree / 'val' / 'n03_ant' / 'n03_ant_001.JPEG'
    path.write_bytes(path.read_bytes()[:200])
    return 'n03_ant_001.JPEG: not a readable image'
  if what == 'garbage':
    (tree / 'val' / 'n01_cat' / 'n01_cat_000.JPEG').write_bytes(b'x' * 50)
    return 'n01_cat_000.JPEG: not a readable image (UnidentifiedImageError'
  if what == 'empty':
    (tree / 'train' / 'n04_bee').mkdir()
    return 'n04_bee: an empty class folder'
  if what == 'differ':
    (tree / 'val' / 'n02_dog').rename(tree / 'val' / 'n05_emu')
    return ('train/ and val/ have different class folders (only in train/: 1'
            ' (n02_dog); only in val/: 1 (n05_emu))')
  if what == 'no_val':
    (tree / 'val').rename(tree / 'elsewhere')
    return 'no val/ folder'
  raise ValueError(what)


DRY = ['--config', f'{ROOT / "configs" / "imagenet.py"}:resnet50',
       '--dry-run', 'batch_size=8', 'eval_batch_size=8', 'data.workers=0']


@pytest.mark.slow
def test_dry_run_reads_a_generated_tree(tree, tmp_path, capsys):
  code = cli.train_main(DRY + ['--workdir', str(tmp_path / 'w'),
                               f'data.data_dir={tree}'])
  out = capsys.readouterr()
  assert code == 0, out.err
  # ResNet-50 with the ImageNet stem: 23,508,032 + a 2048 x 3 head + bias.
  assert 'resnet50: d = 23,514,179 parameters' in out.out
  assert 'resnet50 on imagefolder (15 train / 6 test, 3 classes)' in out.out
  assert 'training batch: image (8, 224, 224, 3) float32, label (8,)' in (
      out.out)
  assert 'held-out batch: image (6, 224, 224, 3) float32' in out.out
  assert not (tmp_path / 'w').exists()


@pytest.mark.parametrize('what', ['corrupt', 'garbage', 'empty', 'differ',
                                  'no_val'])
def test_a_bad_tree_is_refused_in_one_line(tree, tmp_path, capsys, what):
  expected = _break(tree, what)
  code = cli.train_main(DRY + ['--workdir', str(tmp_path / 'w'),
                               f'data.data_dir={tree}'])
  out = capsys.readouterr()
  assert code == 2
  lines = out.err.strip().splitlines()
  assert len(lines) == 1, out.err
  assert lines[0].startswith('lionx-train: error: ')
  assert expected in lines[0]
  assert 'Traceback' not in out.err + out.out


def test_empty_data_dir_and_bad_workers(tmp_path):
  with pytest.raises(images.DataError, match='data.data_dir is empty'):
    images.load_dataset(_config(''))
  with pytest.raises(images.DataError, match='no such folder'):
    images.load_dataset(_config(tmp_path / 'none'))
  config = tiny_config()
  config.data.workers = -2
  with pytest.raises(ValueError, match='data.workers=-2: expected a number'):
    experiment.dry_run(config, echo=lambda line: None)


def test_workers_are_not_part_of_a_runs_identity():
  from lionx.train import config as config_lib
  a, b = tiny_config(), tiny_config()
  b.data.workers = 3
  assert config_lib.run_identity(a) == config_lib.run_identity(b)
  assert 'workers' in config_lib.to_dict(b)['data']


@pytest.mark.slow
def test_training_on_a_tree_resumes_bit_identically(tree, tmp_path):
  def config(**changes):
    return tiny_config(data__name='imagefolder', data__data_dir=str(tree),
                       data__image_size=8, data__workers=0,
                       data__augment=True, batch_size=5, eval_batch_size=4,
                       num_epochs=2, checkpoint_every_evals=10,
                       tensorboard=False, **changes)
  whole = experiment.train_and_evaluate(config(), tmp_path / 'whole',
                                        verbose=False)
  experiment.train_and_evaluate(config(max_evals_this_run=1),
                                tmp_path / 'split', verbose=False)
  split = experiment.train_and_evaluate(config(), tmp_path / 'split',
                                        verbose=False)
  assert whole.status == split.status == 'finished'
  rows = [json.loads(line) for line in
          (tmp_path / 'split' / 'metrics.jsonl').read_text().splitlines()]
  assert [r['step'] for r in rows] == [3, 6]
  for a, b in zip(whole.rows, rows):
    for key in ('train_loss', 'full_loss', 'val_loss', 'test_accuracy',
                'grad_l1'):
      assert a[key] == b[key], key


HOST = '''
import os, sys
pid, port, tree, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=2'
import jax
jax.distributed.initialize(f'127.0.0.1:{port}', 2, pid)
import numpy as np
from lionx.train.data import images, imagefolder
ds = images.load_dataset(images.ImageDataConfig(
    name='imagefolder', data_dir=tree, image_size=16, workers=0))
batch = ds.train_batch(3, seed=5, batch_size=8, augment=True)
held_out = next(ds.eval_batches('test', 5))
mine = lambda x: np.concatenate([np.asarray(s.data)
                                 for s in x.addressable_shards])
np.savez(out, rows=imagefolder.host_rows(8), image=mine(batch['image']),
         label=mine(batch['label']), shape=held_out['image'].shape,
         eval_image=mine(held_out['image']), mask=mine(held_out['mask']))
jax.distributed.shutdown()
'''


@pytest.mark.slow
def test_two_hosts_decode_their_own_rows_of_the_same_batch(tree, tmp_path):
  """2 processes x 2 CPU devices: each decodes the rows of its devices, and
  together they hold the one-process batch."""
  script = tmp_path / 'host.py'
  script.write_text(HOST)
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  env = dict(os.environ, JAX_CPU_COLLECTIVES_IMPLEMENTATION='gloo',
             PYTHONPATH=str(ROOT))
  hosts = [subprocess.Popen(
      [sys.executable, str(script), str(i), str(port), str(tree),
       str(tmp_path / f'{i}.npz')], env=env, stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True) for i in (0, 1)]
  for host in hosts:
    out, _ = host.communicate(timeout=300)
    assert host.returncode == 0, out[-3000:]
  parts = [np.load(tmp_path / f'{i}.npz') for i in (0, 1)]
  np.testing.assert_array_equal(parts[0]['rows'], [0, 1, 2, 3])
  np.testing.assert_array_equal(parts[1]['rows'], [4, 5, 6, 7])
  one = images.load_dataset(_config(tree))
  want = one.train_batch(3, seed=5, batch_size=8, augment=True)
  np.testing.assert_array_equal(
      np.concatenate([p['image'] for p in parts]), want['image'])
  np.testing.assert_array_equal(
      np.concatenate([p['label'] for p in parts]), want['label'])
  # Held out: 5 rows rounded up to 8 (4 devices), the padding masked.
  assert tuple(parts[0]['shape']) == (8, 16, 16, 3)
  mask = np.concatenate([p['mask'] for p in parts])
  np.testing.assert_array_equal(mask, [1, 1, 1, 1, 1, 1, 0, 0])
  first = next(one.eval_batches('test', 5))
  np.testing.assert_array_equal(
      np.concatenate([p['eval_image'] for p in parts])[:5], first['image'])
