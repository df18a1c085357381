"""The data sets: CIFAR archives, digits, synthetic, batches, augmentation."""

import pickle

import numpy as np
import pytest

from lionx.train.data import images as data
from lionx.train.data.images import ImageDataConfig as DataConfig
from lionx.train.fields import ConfigError
from tests.train.helpers import (
    ARCHIVES, cifar_batches, write_cifar_archive, write_cifar_folder)


def _expected(kind):
  """Images (NHWC) and labels built from the fixture dicts by hand."""
  batches = dict(cifar_batches(kind))
  key = b'labels' if kind == 'cifar10' else b'fine_labels'
  train = ([f'data_batch_{i}' for i in range(1, 6)] if kind == 'cifar10'
           else ['train'])
  test = 'test_batch' if kind == 'cifar10' else 'test'

  def images(rows):
    out = np.zeros((len(rows), 32, 32, 3), np.uint8)
    for i, row in enumerate(rows):  # channel planes R, G, B, each row-major
      for ch in range(3):
        for r in range(32):
          out[i, r, :, ch] = row[ch * 1024 + r * 32: ch * 1024 + r * 32 + 32]
    return out
  x_train = images(np.concatenate([batches[n][b'data'] for n in train]))
  y_train = np.concatenate([batches[n][key] for n in train])
  return x_train, y_train, images(batches[test][b'data']), batches[test][key]


@pytest.mark.parametrize('kind', ['cifar10', 'cifar100'])
@pytest.mark.parametrize('layout', ['archive', 'folder', 'archive_path'])
def test_cifar_reads_the_python_format(tmp_path, kind, layout):
  if layout == 'folder':
    write_cifar_folder(tmp_path, kind)
    where = tmp_path
  else:
    path = write_cifar_archive(tmp_path, kind)
    where = path if layout == 'archive_path' else tmp_path
  ds = data.load_cifar(str(where), kind)
  x_train, y_train, x_test, y_test = _expected(kind)
  np.testing.assert_array_equal(ds.train_images, x_train)
  np.testing.assert_array_equal(ds.train_labels, y_train)
  np.testing.assert_array_equal(ds.test_images, x_test)
  np.testing.assert_array_equal(ds.test_labels, y_test)
  assert ds.num_classes == (10 if kind == 'cifar10' else 100)
  assert ds.train_labels.dtype == np.int32
  x = x_train.astype(np.float64) / 255
  np.testing.assert_allclose(ds.mean, x.mean(axis=(0, 1, 2)), rtol=1e-5)
  np.testing.assert_allclose(ds.std, x.std(axis=(0, 1, 2)), rtol=1e-4)
  z = ds.normalize(x_train)
  np.testing.assert_allclose(z.mean(axis=(0, 1, 2)), 0, atol=1e-4)
  np.testing.assert_allclose(z.std(axis=(0, 1, 2)), 1, atol=1e-3)


def _one_line(err):
  message = str(err.value)
  assert '\n' not in message
  return message


def test_cifar_missing_names_path_and_archive(tmp_path):
  with pytest.raises(data.DataError) as err:
    data.load_cifar(str(tmp_path), 'cifar10')
  message = _one_line(err)
  assert str(tmp_path) in message
  assert 'cifar-10-python.tar.gz' in message and 'never downloads' in message
  with pytest.raises(data.DataError, match='data_dir is empty'):
    data.load_cifar('', 'cifar100')


def test_cifar_corrupt_archive(tmp_path):
  path = tmp_path / ARCHIVES['cifar10']
  path.write_bytes(b'not a gzip file at all' * 10)
  with pytest.raises(data.DataError) as err:
    data.load_cifar(str(tmp_path), 'cifar10')
  message = _one_line(err)
  assert str(path) in message and 'gzipped tar' in message


def test_cifar_truncated_archive(tmp_path):
  path = write_cifar_archive(tmp_path, 'cifar10')
  raw = path.read_bytes()
  path.write_bytes(raw[:len(raw) // 2])
  with pytest.raises(data.DataError) as err:
    data.load_cifar(str(tmp_path), 'cifar10')
  assert str(path) in _one_line(err)


def test_cifar_wrong_member_contents(tmp_path):
  folder = write_cifar_folder(tmp_path, 'cifar10')
  (folder / 'data_batch_3').write_bytes(pickle.dumps({b'data': 1}))
  with pytest.raises(data.DataError) as err:
    data.load_cifar(str(tmp_path), 'cifar10')
  message = _one_line(err)
  assert 'data_batch_3' in message and "b'labels'" in message
  bad = {b'data': np.zeros((2, 100), np.uint8), b'labels': [0, 1]}
  (folder / 'data_batch_3').write_bytes(pickle.dumps(bad))
  with pytest.raises(data.DataError, match=r'\(2, 100\).*uint8 \(N, 3072\)'):
    data.load_cifar(str(tmp_path), 'cifar10')
  (folder / 'data_batch_3').write_bytes(b'garbage')
  with pytest.raises(data.DataError, match='not a CIFAR-10 python batch'):
    data.load_cifar(str(tmp_path), 'cifar10')
  (folder / 'data_batch_3').unlink()
  with pytest.raises(data.DataError, match='missing data_batch_3'):
    data.load_cifar(str(tmp_path), 'cifar10')


def test_cifar_archive_without_members(tmp_path):
  write_cifar_archive(tmp_path, 'cifar100')
  (tmp_path / ARCHIVES['cifar100']).rename(tmp_path / ARCHIVES['cifar10'])
  with pytest.raises(data.DataError, match='no member cifar-10-batches-py/'):
    data.load_cifar(str(tmp_path), 'cifar10')


def test_digits_fixed_split():
  a, b = data.load_digits(), data.load_digits()
  assert a.train_images.shape == (1437, 8, 8, 1)
  assert a.test_images.shape == (360, 8, 8, 1)
  np.testing.assert_array_equal(a.train_labels, b.train_labels)
  np.testing.assert_array_equal(a.test_images, b.test_images)
  assert min(np.bincount(a.test_labels)) >= 35  # stratified
  from sklearn.datasets import load_digits
  everything = load_digits()
  assert np.sum(a.train_images) + np.sum(a.test_images) == pytest.approx(
      np.sum(everything.images))


def test_synthetic_is_fixed_and_shaped():
  config = DataConfig(name='synthetic', num_train=10, num_test=4,
                      image_size=6, channels=2, num_classes=3)
  a, b = data.synthetic(config), data.synthetic(config)
  assert a.train_images.shape == (10, 6, 6, 2)
  np.testing.assert_array_equal(a.train_images, b.train_images)
  assert set(a.train_labels) <= {0, 1, 2}


def test_unknown_dataset_and_register():
  # An unknown name is the config's fault: ConfigError names the field.
  with pytest.raises(ConfigError, match="data.name='nope' is not one of"):
    data.load_dataset(DataConfig(name='nope'))
  with pytest.raises(TypeError, match='expected a callable'):
    data.register_dataset('x', 3)
  with pytest.raises(ValueError, match='non-empty string'):
    data.register_dataset('', lambda c: None)
  with pytest.raises(TypeError, match='spec=3: expected a callable'):
    data.register_dataset('x', lambda c: None, spec=3)
  data.register_dataset('bad', lambda c: 'not a dataset')
  try:
    with pytest.raises(data.DataError, match='returned str'):
      data.load_dataset(DataConfig(name='bad'))
    assert data.input_spec(DataConfig(name='bad')) is None
  finally:
    data.DATASETS.unregister('bad')


def test_input_specs_match_the_loaded_data(cifar10_dir):
  for config in (DataConfig(name='digits'),
                 DataConfig(name='cifar10', data_dir=str(cifar10_dir)),
                 DataConfig(name='synthetic', image_size=5, channels=2,
                            num_classes=3, num_train=8, num_test=4)):
    assert data.input_spec(config) == data.load_dataset(config).spec


def test_permutation_is_a_function_of_seed_and_epoch():
  p = data.epoch_permutation(3, 5, 100)
  np.testing.assert_array_equal(np.sort(p), np.arange(100))
  np.testing.assert_array_equal(p, data.epoch_permutation(3, 5, 100))
  assert not np.array_equal(p, data.epoch_permutation(3, 6, 100))
  assert not np.array_equal(p, data.epoch_permutation(4, 5, 100))


def test_augment_is_a_padded_crop_and_maybe_a_flip():
  rng = np.random.default_rng(0)
  images = rng.integers(1, 255, (40, 6, 5, 2)).astype(np.uint8)
  out = data.augment(images, np.random.default_rng(1), pad=2)
  assert out.shape == images.shape
  flips = 0
  for x, y in zip(images, out):
    padded = np.pad(x, ((2, 2), (2, 2), (0, 0)))
    matches = [(dy, dx, f) for dy in range(5) for dx in range(5)
               for f in (False, True)
               if np.array_equal(
                   (padded[:, ::-1] if f else padded)[dy:dy + 6, dx:dx + 5],
                   y)]
    assert matches
    flips += all(f for _, _, f in matches)
  assert 5 < flips < 35  # about half are flipped


def _epoch(ds, seed, epoch, augment):
  steps = data.steps_per_epoch(ds, 16)
  return [data.train_batch(ds, epoch * steps + k, seed=seed, batch_size=16,
                           augment_images=augment) for k in range(steps)]


def test_train_batches_deterministic_and_cover_the_epoch():
  config = DataConfig(name='synthetic', num_train=50, num_test=4)
  ds = data.synthetic(config)
  first = _epoch(ds, 1, 2, True)
  again = _epoch(data.synthetic(config), 1, 2, True)  # nothing cached
  assert len(first) == 3 == data.steps_per_epoch(ds, 16)
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a['image'], b['image'])
  plain = _epoch(ds, 1, 2, False)
  order = data.epoch_permutation(1, 2, 50)[:48]
  np.testing.assert_array_equal(
      np.concatenate([b['label'] for b in plain]), ds.train_labels[order])
  np.testing.assert_allclose(plain[0]['image'],
                             ds.normalize(ds.train_images[order[:16]]))
  # Augmentation: batch k of an epoch is the crop/flip of (seed, epoch, k).
  for k, batch in enumerate(first):
    want = data.augment(ds.train_images[order[16 * k:16 * (k + 1)]],
                        np.random.default_rng([1, 2, 1, k]))
    np.testing.assert_allclose(batch['image'], ds.normalize(want))
  # Random access: any step alone gives the same batch.
  alone = data.train_batch(ds, 2 * 3 + 1, seed=1, batch_size=16,
                           augment_images=True)
  np.testing.assert_array_equal(alone['image'], first[1]['image'])
  with pytest.raises(data.DataError, match='batch_size=64 is larger'):
    data.steps_per_epoch(ds, 64)


def test_eval_batches_pad_and_mask():
  config = DataConfig(name='synthetic', num_train=23, num_test=4)
  ds = data.synthetic(config)
  batches = list(data.eval_batches(ds, 'train', 10))
  assert [b['image'].shape[0] for b in batches] == [10, 10, 10]
  mask = np.concatenate([b['mask'] for b in batches])
  assert mask.sum() == 23 and mask[23:].sum() == 0
  labels = np.concatenate([b['label'] for b in batches])[:23]
  np.testing.assert_array_equal(labels, ds.train_labels)
  assert len(list(data.eval_batches(ds, 'train', 10, max_batches=2))) == 2
  small = list(data.eval_batches(ds, 'test', 100))
  assert small[0]['image'].shape[0] == 4
  with pytest.raises(ValueError, match="split='val'"):
    list(data.eval_batches(ds, 'val', 10))
