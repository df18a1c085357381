"""Image classification sets held in host memory, batched with NumPy.

* ``cifar10`` / ``cifar100``: the python-pickle archives
  ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz`` (or the folders
  ``cifar-10-batches-py/`` / ``cifar-100-python/`` extracted from them) in
  ``data.data_dir``. Nothing is downloaded. The archives are pickles: load
  only files you trust.
* ``digits``: scikit-learn's bundled handwritten digits (1797 images of
  8x8), split 1437 / 360, stratified, with a fixed seed.
* ``synthetic``: class prototypes plus noise, generated from a fixed seed.

ImageNet-style folders (``imagefolder``) are read from disk by
:mod:`lionx.train.data.imagefolder`; other sets plug in with
:func:`register_dataset`. A loader returns an :class:`ImageSet`: the
in-memory :class:`Dataset`, or any set that makes its own batches.

Training batch ``k`` of a run is a pure function of ``(seed, k)``
(:func:`train_batch`): the order of epoch ``e`` comes from
``(seed, e)`` and the augmentation of each batch from ``(seed, e, k)``, so
a resumed run sees exactly the batches of an uninterrupted one. Images are
normalised per channel with the training set's mean and standard
deviation.

The ``data`` config section of the image tasks (:class:`ImageDataConfig`)
lives here.
"""

from __future__ import annotations

import abc
import dataclasses
import pathlib
import pickle
import tarfile
import zlib
from typing import Callable, Iterator, NamedTuple, Optional

import numpy as np

from lionx.train import fields
from lionx.train import registry
from lionx.train.data import fingerprint

# How training batches are drawn (recorded in every checkpoint).
DATA_ORDER = ('numpy default_rng([seed, epoch, 0]).permutation; augmentation '
              'default_rng([seed, epoch, 1, batch]); epoch 0-based')


class DataError(ValueError):
  """A data set that is missing or not in the expected format."""


@dataclasses.dataclass(slots=True)
class ImageDataConfig:
  """Which image set, where it lives and how it is augmented (``data.*``)."""

  # digits | cifar10 | cifar100 | imagefolder | synthetic | registered
  name: str = 'digits'
  # CIFAR: the folder with the python archives; imagefolder: the folder
  # with train/ and val/.
  data_dir: str = ''
  # Training only. CIFAR, digits, synthetic: random crop (4 px padding) +
  # horizontal flip; imagefolder: random-resized crop + horizontal flip.
  augment: bool = False
  # Synthetic data only (the shapes of the generated images).
  num_train: int = 256
  num_test: int = 128
  image_size: int = 8  # synthetic: the side; imagefolder: the crop's side
  channels: int = 3
  num_classes: int = 10
  # imagefolder: processes that decode the JPEGs (-1: one per CPU core, 0:
  # this process). A runtime field: it does not change the batches.
  workers: int = -1


class InputSpec(NamedTuple):
  """What a model needs to know of the data: image shape and classes."""

  image_shape: tuple[int, int, int]  # (height, width, channels)
  num_classes: int


class ImageSet(abc.ABC):
  """What the image task needs of a data set.

  Attributes:
    name: the set's name (for the log).
    num_classes: the number of classes.
    train_labels: (N,) int32, the labels of the training split.
    test_labels: (M,) int32, the labels of the held-out split.
  """

  name: str
  num_classes: int
  train_labels: np.ndarray
  test_labels: np.ndarray

  @property
  @abc.abstractmethod
  def spec(self) -> InputSpec:
    """The shape of the images and the number of classes."""

  @abc.abstractmethod
  def train_batch(self, step: int, *, seed: int, batch_size: int,
                  augment: bool) -> dict[str, np.ndarray]:
    """Training batch ``step`` (0-based, over all epochs): ``image`` and
    ``label``, a pure function of ``(seed, step)``."""

  @abc.abstractmethod
  def eval_batches(self, split: str, batch_size: int, max_batches: int = 0
                   ) -> Iterator[dict[str, np.ndarray]]:
    """Batches of ``split`` (``'train'`` or ``'test'``) in order, with
    ``mask`` 0 on the padding of the last one; ``max_batches > 0`` stops
    after that many."""

  def fingerprint(self) -> dict[str, str]:
    """What a resume checks is unchanged
    (:mod:`lionx.train.data.fingerprint`); here the labels, a set of its
    own may say more."""
    return {'labels': fingerprint.array_digest(self.train_labels,
                                               self.test_labels)}


@dataclasses.dataclass
class Dataset(ImageSet):
  """Images (N, H, W, C) and int labels for training and test, in memory."""

  name: str
  train_images: np.ndarray  # (N, H, W, C), raw values in [0, scale]
  train_labels: np.ndarray  # (N,), int32
  test_images: np.ndarray
  test_labels: np.ndarray
  num_classes: int
  scale: float = 255.0  # raw value of full intensity
  mean: Optional[np.ndarray] = None  # (C,), of train_images / scale
  std: Optional[np.ndarray] = None
  # The permutation of the epoch in progress: ((seed, epoch, n), order).
  _order: Optional[tuple] = dataclasses.field(
      default=None, init=False, repr=False, compare=False)

  def __post_init__(self):
    if self.mean is None or self.std is None:
      self.mean, self.std = channel_stats(self.train_images, self.scale)

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return tuple(self.train_images.shape[1:])

  @property
  def spec(self) -> InputSpec:
    return InputSpec(self.image_shape, self.num_classes)

  def normalize(self, images: np.ndarray) -> np.ndarray:
    """``(images / scale - mean) / std`` as float32."""
    x = images.astype(np.float32) / np.float32(self.scale)
    return (x - self.mean) / self.std

  def train_batch(self, step: int, *, seed: int, batch_size: int,
                  augment: bool) -> dict[str, np.ndarray]:
    """:func:`train_batch` of this set."""
    return train_batch(self, step, seed=seed, batch_size=batch_size,
                       augment_images=augment)

  def eval_batches(self, split: str, batch_size: int, max_batches: int = 0
                   ) -> Iterator[dict[str, np.ndarray]]:
    """:func:`eval_batches` of this set."""
    return eval_batches(self, split, batch_size, max_batches)

  def fingerprint(self) -> dict[str, str]:
    """The sha256 of the images and labels of each split."""
    return {'train': fingerprint.array_digest(self.train_images,
                                              self.train_labels),
            'test': fingerprint.array_digest(self.test_images,
                                             self.test_labels)}


def channel_stats(images: np.ndarray, scale: float,
                  chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
  """Per-channel mean and std of ``images / scale``, in chunks (float64)."""
  total = np.zeros(images.shape[-1])
  squares = np.zeros(images.shape[-1])
  for i in range(0, len(images), chunk):
    x = images[i:i + chunk].astype(np.float64) / scale
    total += x.sum(axis=(0, 1, 2))
    squares += (x * x).sum(axis=(0, 1, 2))
  count = images.shape[0] * images.shape[1] * images.shape[2]
  mean = total / count
  std = np.sqrt(np.maximum(squares / count - mean * mean, 0.0))
  std = np.where(std > 0, std, 1.0)
  return mean.astype(np.float32), std.astype(np.float32)


# --- CIFAR -----------------------------------------------------------------

_CIFAR = {
    'cifar10': dict(
        title='CIFAR-10', archive='cifar-10-python.tar.gz',
        folder='cifar-10-batches-py', num_classes=10,
        train=tuple(f'data_batch_{i}' for i in range(1, 6)),
        test='test_batch', label_key=b'labels'),
    'cifar100': dict(
        title='CIFAR-100', archive='cifar-100-python.tar.gz',
        folder='cifar-100-python', num_classes=100, train=('train',),
        test='test', label_key=b'fine_labels'),
}
_URL = 'https://www.cs.toronto.edu/~kriz/cifar.html'


def _cifar_source(data_dir: str, spec: dict) -> pathlib.Path:
  """The archive or folder to read, or DataError naming what is expected."""
  root = pathlib.Path(data_dir).expanduser()
  for candidate in (root, root / spec['folder'], root / spec['archive']):
    if candidate.is_file() and candidate.name.endswith('.tar.gz'):
      return candidate
    if candidate.is_dir() and candidate.name == spec['folder']:
      return candidate
  raise DataError(
      f"data.data_dir={data_dir!r}: no {spec['title']} data; expected "
      f"{spec['archive']} or an extracted {spec['folder']}/ folder in it "
      f'(the python version from {_URL}; lionx never downloads).')


def _parse_batch(raw: bytes, where: str, spec: dict):
  try:
    batch = pickle.loads(raw, encoding='bytes')
  except Exception as err:  # any unpickling failure means a corrupt file
    raise DataError(
        f"{where}: not a {spec['title']} python batch ({type(err).__name__}:"
        f" {err}); expected a pickled dict from {spec['archive']}.") from None
  key = spec['label_key']
  if (not isinstance(batch, dict) or b'data' not in batch
      or key not in batch):
    raise DataError(
        f"{where}: not a {spec['title']} python batch; expected a pickled "
        f"dict with b'data' and {key!r}.")
  data = np.asarray(batch[b'data'])
  labels = np.asarray(batch[key])
  if (data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072
      or labels.shape != (data.shape[0],)):
    raise DataError(
        f"{where}: b'data' has shape {data.shape} and dtype {data.dtype}, "
        f'labels shape {labels.shape}; expected uint8 (N, 3072) and (N,).')
  if labels.size and (labels.min() < 0 or labels.max() >= spec['num_classes']):
    raise DataError(
        f"{where}: labels outside [0, {spec['num_classes']}).")
  images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  return np.ascontiguousarray(images), labels.astype(np.int32)


def _read_members(source: pathlib.Path, names: tuple[str, ...],
                  spec: dict) -> list[tuple[np.ndarray, np.ndarray]]:
  out = []
  if source.is_dir():
    for name in names:
      path = source / name
      if not path.is_file():
        raise DataError(
            f"{source}: missing {name}; expected the files of "
            f"{spec['archive']} ({', '.join(names)}).")
      out.append(_parse_batch(path.read_bytes(), str(path), spec))
    return out
  try:
    with tarfile.open(source, 'r:gz') as tar:
      for name in names:
        member = f"{spec['folder']}/{name}"
        try:
          handle = tar.extractfile(member)
        except KeyError:
          handle = None
        if handle is None:
          raise DataError(
              f"{source}: no member {member}; expected the python version "
              f"of {spec['title']} ({spec['archive']} from {_URL}).")
        out.append(_parse_batch(handle.read(), f'{source}:{member}', spec))
  except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
    raise DataError(
        f"{source}: not a readable {spec['archive']} ({type(err).__name__}: "
        f'{err}); expected the gzipped tar archive from {_URL}.') from None
  return out


def load_cifar(data_dir: str, name: str = 'cifar10') -> Dataset:
  """CIFAR-10 or CIFAR-100 from the python archive or its folder."""
  if name not in _CIFAR:
    raise ValueError(f'name={name!r} is not one of {tuple(_CIFAR)}.')
  spec = _CIFAR[name]
  if not data_dir:
    raise DataError(
        f"data.data_dir is empty; set it to the folder that holds "
        f"{spec['archive']} (lionx never downloads).")
  source = _cifar_source(data_dir, spec)
  parts = _read_members(source, spec['train'] + (spec['test'],), spec)
  train, test = parts[:-1], parts[-1]
  return Dataset(
      name=name,
      train_images=np.concatenate([p[0] for p in train]),
      train_labels=np.concatenate([p[1] for p in train]),
      test_images=test[0], test_labels=test[1],
      num_classes=spec['num_classes'], scale=255.0)


# --- digits and synthetic ----------------------------------------------------

DIGITS_TEST_SIZE = 360


def load_digits() -> Dataset:
  """scikit-learn's 8x8 digits: 1437 training and 360 test images."""
  from sklearn import datasets, model_selection
  digits = datasets.load_digits()
  images = digits.images.astype(np.float32)[..., None]  # values 0..16
  labels = digits.target.astype(np.int32)
  x_train, x_test, y_train, y_test = model_selection.train_test_split(
      images, labels, test_size=DIGITS_TEST_SIZE, random_state=0,
      stratify=labels)
  return Dataset('digits', x_train, y_train, x_test, y_test, num_classes=10,
                 scale=16.0)


def synthetic(config: ImageDataConfig) -> Dataset:
  """Class prototypes plus Gaussian noise (a fixed seed, values in [0, 1])."""
  rng = np.random.default_rng(1234)
  shape = (config.image_size, config.image_size, config.channels)
  protos = rng.uniform(0.2, 0.8, (config.num_classes,) + shape)

  def sample(n):
    labels = rng.integers(0, config.num_classes, n).astype(np.int32)
    noise = rng.normal(0.0, 0.15, (n,) + shape)
    images = np.clip(protos[labels] + noise, 0.0, 1.0).astype(np.float32)
    return images, labels
  x_train, y_train = sample(config.num_train)
  x_test, y_test = sample(config.num_test)
  return Dataset('synthetic', x_train, y_train, x_test, y_test,
                 num_classes=config.num_classes, scale=1.0)


Loader = Callable[[ImageDataConfig], ImageSet]
Spec = Callable[[ImageDataConfig], InputSpec]


class _Entry(NamedTuple):
  loader: Loader
  spec: Optional[Spec]  # the input spec from the config alone


DATASETS: registry.Registry = registry.Registry(
    'data.name', ' Other sets need a loader: see '
    'lionx.train.data.images.register_dataset.')


def register_dataset(name: str, loader: Loader, *,
                     spec: Optional[Spec] = None) -> None:
  """Makes ``data.name=name`` load with ``loader(data_config)``.

  The loader returns a :class:`Dataset` (whose arrays may be
  ``np.memmap`` for sets larger than memory) or another
  :class:`ImageSet`. ``spec(data_config)`` gives the
  :class:`InputSpec` without loading (``--dry-run`` then builds the model
  before it opens the data).
  """
  if not isinstance(name, str) or not name:
    raise ValueError(f'name={name!r}: expected a non-empty string.')
  if not callable(loader):
    raise TypeError(f'loader={loader!r}: expected a callable.')
  if spec is not None and not callable(spec):
    raise TypeError(f'spec={spec!r}: expected a callable or None.')
  DATASETS.register(name, _Entry(loader, spec))


register_dataset('digits', lambda config: load_digits(),
                 spec=lambda config: InputSpec((8, 8, 1), 10))
register_dataset('cifar10', lambda config: load_cifar(config.data_dir,
                                                      'cifar10'),
                 spec=lambda config: InputSpec((32, 32, 3), 10))
register_dataset('cifar100', lambda config: load_cifar(config.data_dir,
                                                       'cifar100'),
                 spec=lambda config: InputSpec((32, 32, 3), 100))
register_dataset('synthetic', synthetic, spec=lambda config: InputSpec(
    (config.image_size, config.image_size, config.channels),
    config.num_classes))


def validate(config: ImageDataConfig) -> None:
  """Checks the names and sizes of an :class:`ImageDataConfig`."""
  DATASETS[config.name]  # raises ConfigError for an unknown name
  fields.positive_ints(config, 'data', skip=lambda name: name == 'workers')
  if config.workers < -1:
    raise fields.ConfigError(
        f'data.workers={config.workers}: expected a number of processes '
        '>= 0, or -1 for one per CPU core.')


def input_spec(config: ImageDataConfig) -> Optional[InputSpec]:
  """The :class:`InputSpec` of ``config``'s set without loading it."""
  entry = DATASETS[config.name]
  return None if entry.spec is None else entry.spec(config)


def load_dataset(config: ImageDataConfig) -> ImageSet:
  """The data set named ``config.name``."""
  dataset = DATASETS[config.name].loader(config)
  if not isinstance(dataset, ImageSet):
    raise DataError(
        f'data.name={config.name!r}: its loader returned '
        f'{type(dataset).__name__}; expected a lionx.train.data.images.'
        'Dataset (or another ImageSet).')
  return dataset


# --- batches ----------------------------------------------------------------


def _rng(*key: int) -> np.random.Generator:
  return np.random.default_rng(list(key))


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
  """The order of epoch ``epoch`` (0-based): a function of (seed, epoch)."""
  return _rng(seed, epoch, 0).permutation(n)


def augment(images: np.ndarray, rng: np.random.Generator,
            pad: int = 4) -> np.ndarray:
  """Random crop after zero-padding by ``pad`` px, then a random h-flip."""
  n, h, w, _ = images.shape
  padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  dy = rng.integers(0, 2 * pad + 1, n)
  dx = rng.integers(0, 2 * pad + 1, n)
  flip = rng.random(n) < 0.5
  rows = dy[:, None] + np.arange(h)[None, :]
  cols = dx[:, None] + np.arange(w)[None, :]
  cols = np.where(flip[:, None], cols[:, ::-1], cols)
  return padded[np.arange(n)[:, None, None], rows[:, :, None],
                cols[:, None, :]]


def steps_per_epoch(dataset: ImageSet, batch_size: int) -> int:
  """Full training batches per epoch (the remainder is dropped)."""
  steps = len(dataset.train_labels) // batch_size
  if steps == 0:
    raise DataError(
        f'batch_size={batch_size} is larger than the training set of '
        f'{dataset.name} ({len(dataset.train_labels)} examples).')
  return steps


def train_batch(dataset: Dataset, step: int, *, seed: int, batch_size: int,
                augment_images: bool) -> dict[str, np.ndarray]:
  """Training batch ``step`` (0-based, over all epochs) of a run.

  Example:
    >>> from lionx.train.data import images
    >>> ds = images.load_dataset(images.ImageDataConfig(name='digits'))
    >>> batch = images.train_batch(ds, 0, seed=0, batch_size=4,
    ...                            augment_images=False)
    >>> batch['image'].shape, batch['label'].dtype
    ((4, 8, 8, 1), dtype('int32'))
  """
  per_epoch = steps_per_epoch(dataset, batch_size)
  epoch, index = divmod(step, per_epoch)
  order = _permutation(dataset, seed, epoch)
  idx = order[index * batch_size:(index + 1) * batch_size]
  images = dataset.train_images[idx]
  if augment_images:
    images = augment(images, _rng(seed, epoch, 1, index))
  return {'image': dataset.normalize(images),
          'label': dataset.train_labels[idx]}


def _permutation(dataset: Dataset, seed: int, epoch: int) -> np.ndarray:
  """:func:`epoch_permutation`, remembered for the epoch in progress."""
  key = (seed, epoch, len(dataset.train_labels))
  if dataset._order is None or dataset._order[0] != key:  # pylint: disable=protected-access
    dataset._order = (key, epoch_permutation(seed, epoch, key[2]))  # pylint: disable=protected-access
  return dataset._order[1]  # pylint: disable=protected-access


def eval_batches(dataset: Dataset, split: str, batch_size: int,
                 max_batches: int = 0) -> Iterator[dict[str, np.ndarray]]:
  """Fixed-size batches in order, the last one padded (``mask`` 0).

  ``max_batches > 0`` stops after that many batches.
  """
  if split == 'train':
    images, labels = dataset.train_images, dataset.train_labels
  elif split == 'test':
    images, labels = dataset.test_images, dataset.test_labels
  else:
    raise ValueError(f"split={split!r} is not one of ('train', 'test').")
  n = len(labels)
  size = min(batch_size, n)
  count = -(-n // size)
  if max_batches:
    count = min(count, max_batches)
  for i in range(count):
    x = dataset.normalize(images[i * size:(i + 1) * size])
    y = labels[i * size:(i + 1) * size]
    mask = np.ones(len(y), np.float32)
    if len(y) < size:
      fill = size - len(y)
      x = np.concatenate([x, np.zeros((fill,) + x.shape[1:], x.dtype)])
      y = np.concatenate([y, np.zeros(fill, y.dtype)])
      mask = np.concatenate([mask, np.zeros(fill, np.float32)])
    yield {'image': x, 'label': y, 'mask': mask}
