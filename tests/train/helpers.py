"""Tiny configs and CIFAR fixture archives (the exact python format)."""

import io
import pathlib
import pickle
import tarfile

import numpy as np
from lionx.train.config import Config

ROOT = pathlib.Path(__file__).resolve().parents[2]


def tiny_config(**changes) -> Config:
  """One epoch of a small CNN with BatchNorm on 64 synthetic 8x8 images."""
  config = Config()
  config.num_epochs = 1
  config.batch_size = 16
  config.eval_batch_size = 32
  config.checkpoint_every_evals = 1
  config.progress = False
  config.data.name = 'synthetic'
  config.data.num_train = 64
  config.data.num_test = 24
  config.data.image_size = 8
  config.data.channels = 3
  config.data.num_classes = 4
  config.model.name = 'cnn'
  config.model.width = 4
  config.model.batch_norm = True
  config.optimizer.name = 'lion'
  config.optimizer.learning_rate = 3e-3
  config.optimizer.learning_rates = {}
  # The suite simulates 8 devices; tests that want several say so.
  config.parallel.num_devices = 1
  for key, value in changes.items():
    obj = config
    *parents, name = key.split('__')
    for parent in parents:
      obj = getattr(obj, parent)
    setattr(obj, name, value)
  return config


def cifar_images(n: int, offset: int) -> np.ndarray:
  """Deterministic uint8 rows of 3072 values (the archive's layout)."""
  return ((np.arange(n * 3072).reshape(n, 3072) * 7 + offset) % 251
          ).astype(np.uint8)


def cifar_batches(kind: str, n_train_batch: int = 6, n_test: int = 8):
  """(member name, dict) pairs exactly as in the python archives."""
  if kind == 'cifar10':
    names = [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch']
    key, classes = b'labels', 10
  else:
    names = ['train', 'test']
    key, classes = b'fine_labels', 100
  out = []
  for i, name in enumerate(names):
    n = n_test if 'test' in name else n_train_batch
    batch = {b'batch_label': f'{name} of 1'.encode(),
             key: [(7 * i + j) % classes for j in range(n)],
             b'data': cifar_images(n, 13 * i),
             b'filenames': [f'img_{i}_{j}.png'.encode() for j in range(n)]}
    if kind == 'cifar100':
      batch[b'coarse_labels'] = [j % 20 for j in range(n)]
    out.append((name, batch))
  meta = (('batches.meta', {b'label_names': [b'x'] * 10})
          if kind == 'cifar10' else ('meta', {b'fine_label_names': [b'x']}))
  out.append(meta)
  return out


FOLDERS = {'cifar10': 'cifar-10-batches-py', 'cifar100': 'cifar-100-python'}
ARCHIVES = {'cifar10': 'cifar-10-python.tar.gz',
            'cifar100': 'cifar-100-python.tar.gz'}


def write_cifar_archive(directory: pathlib.Path, kind: str, **sizes):
  """Writes ``cifar-10-python.tar.gz`` (or -100-) like the original."""
  path = directory / ARCHIVES[kind]
  with tarfile.open(path, 'w:gz') as tar:
    for name, batch in cifar_batches(kind, **sizes):
      raw = pickle.dumps(batch, protocol=2)
      info = tarfile.TarInfo(f'{FOLDERS[kind]}/{name}')
      info.size = len(raw)
      tar.addfile(info, io.BytesIO(raw))
  return path


def write_cifar_folder(directory: pathlib.Path, kind: str, **sizes):
  folder = directory / FOLDERS[kind]
  folder.mkdir(parents=True)
  for name, batch in cifar_batches(kind, **sizes):
    (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
  return folder
