r"""ImageNet-style folders of JPEGs, decoded by grain worker processes.

``data.name=imagefolder`` with ``data.data_dir=DIR`` reads the layout of
ImageNet (and of torchvision's ``ImageFolder``)::

  DIR/train/<class>/*.JPEG
  DIR/val/<class>/*.JPEG

The classes are the folder names of ``train/``, sorted; label ``i`` is the
``i``-th of them. ``val/`` must hold the same class folders (it is the
held-out split, reported as ``test_*`` by the image task), and every class
folder at least one image (``.JPEG``, ``.jpg``, ``.jpeg`` or ``.png``, any
case; other files and nested folders are ignored). Listing the folders is
all that :func:`load_imagefolder` does: images are decoded when a batch
needs them, and a file that does not decode stops the run with a
:class:`~lionx.train.data.images.DataError` naming it (``--dry-run`` reads
one training and one held-out batch).

**Transforms** (``S = data.image_size``, 224 for ImageNet):

* training with ``data.augment``: the Inception random-resized crop (a
  region of 8%-100% of the area with aspect ratio in [3/4, 4/3], up to 10
  tries, else the central crop of the nearest allowed ratio, as
  torchvision's ``RandomResizedCrop``) resized to ``S x S``, then a
  horizontal flip with probability 1/2;
* evaluation (and training without ``data.augment``): the shorter side
  resized to ``round(S / 0.875)`` (256 for 224), then the central
  ``S x S``.

Resizing is bilinear (Pillow, antialiased), in one resampling of the
cropped region; JPEGs much larger than needed are decoded at 1/2, 1/4 or
1/8 scale (Pillow's ``draft``). Pixels are normalised with ImageNet's
per-channel mean and standard deviation (:data:`MEAN`, :data:`STD`).

**Order.** Training batch ``k`` is a pure function of ``(seed, k)``, as for
the in-memory sets: epoch ``e`` visits the images in
``default_rng([seed, e, 0]).permutation(N)`` and the crops and flips of
batch ``b`` come from ``default_rng([seed, e, 1, b])``. A resumed run
therefore sees exactly the batches of an uninterrupted one, whatever the
number of workers.

**Workers.** Training images are decoded by ``data.workers`` processes
(``-1``: one per CPU core; ``0``: in the main process) through grain: a
``MapDataset`` of images, ``mp_prefetch`` (a batch ahead) and ``batch``;
the worker processes live as long as the run. The evaluation passes, which
start anew at every evaluation, decode in as many threads of the main
process (Pillow releases the GIL while it decodes and resizes): they start
at once, where worker processes take seconds to start and stop. Both keep
the order, so the batches do not depend on the number of workers.

**Several hosts.** Each process decodes only the rows of each global batch
that its own devices hold, and returns the batch as ``jax.Array`` s
sharded along the ``data`` mesh axis over every device
(``jax.make_array_from_process_local_data``); the training step takes
them as they are.
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import math
import multiprocessing.util  # noqa: F401 (its exit handler comes first)
import os
import pathlib
from typing import Any, Iterator, Optional

import numpy as np

# Not `from lionx.train.data import images`: the package imports this
# module, and the import graph would see it import the package back.
import lionx.train.data.images as images
from lionx.train.data import fingerprint
from lionx.train.data.images import DataError

NAME = 'imagefolder'
SPLITS = {'train': 'train', 'test': 'val'}  # the image task's split names
EXTENSIONS = ('.jpeg', '.jpg', '.png')
#: ImageNet's per-channel mean of pixels / 255 (RGB).
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
#: ImageNet's per-channel standard deviation of pixels / 255 (RGB).
STD = np.array([0.229, 0.224, 0.225], np.float32)
CROP_FRACTION = 0.875  # evaluation: resize to S / 0.875, crop S
SCALE = (0.08, 1.0)  # random-resized crop: area fraction
RATIO = (3 / 4, 4 / 3)  # and aspect ratio (width / height)
TRIES = 10


def _scan(folder: pathlib.Path) -> list[str]:
  """The visible entries of ``folder``, sorted, or DataError."""
  try:
    with os.scandir(folder) as entries:
      return sorted(e.name for e in entries if not e.name.startswith('.'))
  except OSError as err:
    raise DataError(f'{folder}: cannot list it ({err.strerror or err}).'
                    ) from None


def _list_split(root: pathlib.Path, split: str
                ) -> dict[str, list[str]]:
  """``{class: sorted image names}`` of ``root/split``, or DataError."""
  folder = root / split
  if not folder.is_dir():
    raise DataError(
        f'data.data_dir={str(root)!r}: no {split}/ folder; expected '
        f'{split}/<class>/*.JPEG (the ImageNet layout).')
  classes = [name for name in _scan(folder) if (folder / name).is_dir()]
  if not classes:
    raise DataError(f'{folder}: no class folders; expected '
                    f'{folder}/<class>/*.JPEG.')
  out = {}
  for name in classes:
    files = [f for f in _scan(folder / name)
             if f.lower().endswith(EXTENSIONS)
             and (folder / name / f).is_file()]
    if not files:
      raise DataError(
          f'{folder / name}: an empty class folder; expected at least one '
          f'image ({", ".join(EXTENSIONS)}).')
    out[name] = files
  return out


def _differ(train: list[str], val: list[str]) -> str:
  def few(names):
    shown = ', '.join(names[:3]) + (', ...' if len(names) > 3 else '')
    return f'{len(names)} ({shown})'
  only_train = sorted(set(train) - set(val))
  only_val = sorted(set(val) - set(train))
  parts = []
  if only_train:
    parts.append(f'only in train/: {few(only_train)}')
  if only_val:
    parts.append(f'only in val/: {few(only_val)}')
  return '; '.join(parts)


def _flatten(listing: dict[str, list[str]], classes: tuple[str, ...]
             ) -> tuple[np.ndarray, np.ndarray]:
  """Paths relative to the split (bytes) and int32 labels, class-major."""
  files, labels = [], []
  for label, name in enumerate(classes):
    files += [os.fsencode(f'{name}/{f}') for f in listing[name]]
    labels += [label] * len(listing[name])
  return np.array(files), np.array(labels, np.int32)


# --- decoding ----------------------------------------------------------------


def random_resized_crop(width: int, height: int, uniforms: np.ndarray
                        ) -> tuple[int, int, int, int]:
  """The box ``(left, top, right, bottom)`` of an Inception crop.

  ``uniforms`` has shape ``(TRIES, 4)``, values in [0, 1): per try the area
  fraction, the log aspect ratio and the two offsets. Without an accepted
  try, the central crop of the nearest allowed aspect ratio.

  Example:
    >>> from lionx.train.data.imagefolder import random_resized_crop
    >>> import numpy as np
    >>> # Each try asks for 52 x 52, taller than 50: the central 4/3 crop.
    >>> random_resized_crop(100, 50, np.full((10, 4), 0.5))
    (16, 0, 83, 50)
  """
  area = width * height
  log_lo, log_hi = math.log(RATIO[0]), math.log(RATIO[1])
  for fraction, log_ratio, u, v in uniforms:
    target = area * (SCALE[0] + (SCALE[1] - SCALE[0]) * fraction)
    ratio = math.exp(log_lo + (log_hi - log_lo) * log_ratio)
    w = int(round(math.sqrt(target * ratio)))
    h = int(round(math.sqrt(target / ratio)))
    if 0 < w <= width and 0 < h <= height:
      left = int(u * (width - w + 1))
      top = int(v * (height - h + 1))
      return left, top, left + w, top + h
  ratio = width / height
  if ratio < RATIO[0]:
    w, h = width, int(round(width / RATIO[0]))
  elif ratio > RATIO[1]:
    w, h = int(round(height * RATIO[1])), height
  else:
    w, h = width, height
  left, top = (width - w) // 2, (height - h) // 2
  return left, top, left + w, top + h


def center_crop(width: int, height: int, size: int
                ) -> tuple[float, float, float, float]:
  """The box that resizing the shorter side to ``size / 0.875`` and
  cropping the central ``size x size`` takes from the image."""
  side = min(width, height) * CROP_FRACTION
  left, top = (width - side) / 2, (height - side) / 2
  return left, top, left + side, top + side


def decode(path: str | os.PathLike, size: int,
           uniforms: Optional[np.ndarray] = None,
           flip: bool = False) -> np.ndarray:
  """One image as normalised float32 ``(size, size, 3)``.

  With ``uniforms`` (see :func:`random_resized_crop`) the training crop,
  else the evaluation crop (:func:`center_crop`); ``flip`` mirrors it.
  Raises whatever Pillow raises for a file it cannot read.
  """
  from PIL import Image  # the train extra
  with Image.open(path) as image:
    width, height = image.size
    if uniforms is None:
      box = center_crop(width, height, size)
    else:
      box = random_resized_crop(width, height, uniforms)
    # Decode a JPEG at the smallest 1/2^k scale that keeps >= size pixels
    # across the box.
    need = (math.ceil(width * size / (box[2] - box[0])),
            math.ceil(height * size / (box[3] - box[1])))
    image.draft('RGB', need)
    sx, sy = image.size[0] / width, image.size[1] / height
    box = (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)
    rgb = image.convert('RGB').resize((size, size), Image.Resampling.BILINEAR,
                                      box=box)
  pixels = np.asarray(rgb, np.float32)
  if flip:
    pixels = pixels[:, ::-1]
  return (pixels / np.float32(255) - MEAN) / STD


def _why(path: pathlib.Path, size: int) -> str:
  """Pillow's complaint about ``path`` (decoded again in this process)."""
  try:
    decode(path, size)
  except Exception as err:  # pylint: disable=broad-except
    return f'{type(err).__name__}: {" ".join(str(err).split())}'
  return 'it failed to decode in a worker'


@dataclasses.dataclass(frozen=True, eq=False)
class _Images:
  """Element ``i`` of a grain pipeline: image ``i`` of this host's rows of
  consecutive batches (picklable: it travels to the worker processes)."""

  folder: str  # root/train or root/val
  files: np.ndarray  # (N,) bytes, relative to folder
  labels: np.ndarray  # (N,) int32
  size: int  # output side
  rows: np.ndarray  # this host's rows of a global batch
  batch_size: int  # global
  first: int  # the first batch
  seed: Optional[int] = None  # training: the order and crops
  augment: bool = False

  def __call__(self, i: int) -> dict[str, Any]:
    batch, j = divmod(i, len(self.rows))
    batch += self.first
    row = int(self.rows[j])
    if self.seed is None:  # evaluation: in order, padded
      index = batch * self.batch_size + row
      uniforms, flip = None, False
    else:
      per_epoch = len(self.labels) // self.batch_size
      epoch, b = divmod(batch, per_epoch)
      index = int(self._order(epoch)[b * self.batch_size + row])
      uniforms, flip = None, False
      if self.augment:
        uniforms, flips = self._crops(epoch, b)
        uniforms, flip = uniforms[row], bool(flips[row])
    if index >= len(self.labels):
      return {'image': np.zeros((self.size, self.size, 3), np.float32),
              'label': np.int32(0), 'mask': np.float32(0),
              'index': np.int64(-1)}
    path = os.path.join(self.folder, os.fsdecode(self.files[index]))
    try:
      image = decode(path, self.size, uniforms, flip)
      index_out = index
    except Exception:  # pylint: disable=broad-except
      # Reported by the main process, which names the file.
      image = np.zeros((self.size, self.size, 3), np.float32)
      index_out = -2 - index
    return {'image': image, 'label': self.labels[index],
            'mask': np.float32(1), 'index': np.int64(index_out)}

  @functools.lru_cache(maxsize=2)
  def _order(self, epoch: int) -> np.ndarray:
    return images.epoch_permutation(self.seed, epoch, len(self.labels))

  @functools.lru_cache(maxsize=4)
  def _crops(self, epoch: int, batch: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([self.seed, epoch, 1, batch])
    uniforms = rng.random((self.batch_size, TRIES, 4))
    return uniforms, rng.random(self.batch_size) < 0.5


def _grain_iterator(source: _Images, count: int, workers: int,
                    processes: bool) -> Any:
  """An iterator over ``count`` local batches of ``source``, decoded by
  ``workers`` processes (``processes``) or threads (0: this thread)."""
  import grain  # the train extra
  local = len(source.rows)
  ds = grain.MapDataset.range(count * local).map(source)
  if not processes:
    # Threads: Pillow releases the GIL while it decodes and resizes.
    return iter(ds.to_iter_dataset(grain.ReadOptions(
        num_threads=workers, prefetch_buffer_size=local if workers else 0)
    ).batch(local, drop_remainder=True))
  from absl import flags
  # grain 0.2.18 reads an absl flag in mp_prefetch and fails unless flags
  # were parsed (google/grain#1355, fixed after that release).
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=0,
                                            prefetch_buffer_size=0))
  ds = ds.mp_prefetch(grain.MultiprocessingOptions(
      num_workers=workers,
      per_worker_buffer_size=-(-local // workers)))  # a batch ahead
  return iter(ds.batch(local, drop_remainder=True))


def _close(iterator: Any) -> None:
  close = getattr(iterator, 'close', None)
  if close is not None:
    close()


def _close_held(held: dict[str, Any]) -> None:
  iterator = held.pop('iterator', None)
  if iterator is not None:
    _close(iterator)


# --- several hosts -----------------------------------------------------------


def batch_sharding() -> Any:
  """The sharding of a global batch: rows over every device, axis ``data``.

  It equals the one the training step uses (``lionx.train.parallel``,
  checked by the tests), which this layer may not import.
  """
  import jax
  from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec
  mesh = Mesh(np.array(jax.devices()), ('data',), axis_types=(AxisType.Auto,))
  return NamedSharding(mesh, PartitionSpec('data'))


def host_rows(size: int) -> np.ndarray:
  """The rows of a global batch of ``size`` that this process decodes:
  all of them on one host, else those of its own devices."""
  import jax
  if jax.process_count() == 1:
    return np.arange(size)
  rows: set[int] = set()
  for index in batch_sharding().addressable_devices_indices_map(
      (size,)).values():
    rows.update(range(*index[0].indices(size)))
  return np.array(sorted(rows))


def _globalize(local: dict[str, np.ndarray], size: int) -> dict[str, Any]:
  """This host's rows as global arrays (several hosts), else as they are."""
  import jax
  if jax.process_count() == 1:
    return local
  sharding = batch_sharding()
  return {k: jax.make_array_from_process_local_data(
      sharding, v, (size,) + v.shape[1:]) for k, v in local.items()}


# --- the data set -----------------------------------------------------------


@dataclasses.dataclass(eq=False)
class ImageFolder(images.ImageSet):
  """An ImageNet-style folder (see the module doc); made by
  :func:`load_imagefolder`."""

  name: str
  root: pathlib.Path
  classes: tuple[str, ...]
  train_files: np.ndarray  # (N,) bytes, relative to root/train
  train_labels: np.ndarray  # (N,) int32
  test_files: np.ndarray  # (M,) bytes, relative to root/val
  test_labels: np.ndarray  # (M,) int32
  image_size: int
  workers: int = 0  # decoding processes; 0: this process
  # The training iterator and the batch it yields next.
  _held: dict[str, Any] = dataclasses.field(
      default_factory=dict, init=False, repr=False)

  def __post_init__(self):
    # Close the workers before multiprocessing's own exit handler does
    # (atexit runs last-registered first): grain then releases its shared
    # memory, instead of leaking it with a warning at shutdown.
    atexit.register(_close_held, self._held)

  @property
  def num_classes(self) -> int:
    return len(self.classes)

  @property
  def spec(self) -> images.InputSpec:
    return images.InputSpec((self.image_size, self.image_size, 3),
                            self.num_classes)

  def fingerprint(self) -> dict[str, str]:
    """The sorted (name, size) list of each split's files (reading every
    image at each start would cost as much as an epoch)."""
    return {split: fingerprint.listing_digest(
                self.root / SPLITS[split], [f.decode() for f in files])
            for split, files in (('train', self.train_files),
                                 ('test', self.test_files))}

  def close(self) -> None:
    """Stops the training iterator's worker processes."""
    _close_held(self._held)

  def _source(self, split: str, batch_size: int, first: int,
              **kwargs: Any) -> _Images:
    train = split == 'train'
    return _Images(
        folder=os.fspath(self.root / SPLITS[split]),
        files=self.train_files if train else self.test_files,
        labels=self.train_labels if train else self.test_labels,
        size=self.image_size, rows=host_rows(batch_size),
        batch_size=batch_size, first=first, **kwargs)

  def _checked(self, batch: dict[str, np.ndarray], split: str
               ) -> dict[str, np.ndarray]:
    index = batch.pop('index')
    bad = index[index <= -2]
    if bad.size:
      files = self.train_files if split == 'train' else self.test_files
      path = self.root / SPLITS[split] / os.fsdecode(files[-2 - bad[0]])
      more = f' (and {bad.size - 1} more in this batch)' if bad.size > 1 else ''
      raise DataError(
          f'{path}: not a readable image ({_why(path, self.image_size)})'
          f'{more}; remove or replace it.')
    return batch

  def train_batch(self, step: int, *, seed: int, batch_size: int,
                  augment: bool) -> dict[str, Any]:
    """Training batch ``step``: ``image`` (B, S, S, 3) float32, ``label``."""
    images.steps_per_epoch(self, batch_size)  # raises if it cannot fit
    key = (seed, batch_size, augment)
    held = self._held
    if held.get('key') != key or held.get('next') != step:
      _close_held(held)
      source = self._source('train', batch_size, step, seed=seed,
                            augment=augment)
      held.update(key=key, iterator=_grain_iterator(
          source, 2 ** 40, self.workers, processes=self.workers > 0))
    try:
      batch = next(held['iterator'])
    except BaseException:
      _close_held(held)
      held.clear()
      raise
    held['next'] = step + 1
    batch = self._checked(batch, 'train')
    batch.pop('mask')
    return _globalize(batch, batch_size)

  def eval_batches(self, split: str, batch_size: int, max_batches: int = 0
                   ) -> Iterator[dict[str, Any]]:
    """``split`` (``'train'``, or ``'test'``: the ``val/`` folder) in
    order, in batches of ``batch_size`` (rounded up to a multiple of the
    device count on several hosts), the last one padded with ``mask`` 0."""
    if split not in SPLITS:
      raise ValueError(f'split={split!r} is not one of {tuple(SPLITS)}.')
    import jax
    n = len(self.train_labels if split == 'train' else self.test_labels)
    size = min(batch_size, n)
    if jax.process_count() > 1:
      size = -(-size // jax.device_count()) * jax.device_count()
    count = -(-n // size)
    if max_batches:
      count = min(count, max_batches)
    iterator = _grain_iterator(self._source(split, size, 0), count,
                               self.workers, processes=False)
    try:
      for _ in range(count):
        batch = self._checked(next(iterator), split)
        yield _globalize(batch, size)
    finally:
      _close(iterator)


def default_workers() -> int:
  """The CPU cores this process may use."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # not on Linux
    return os.cpu_count() or 1


def load_imagefolder(config: images.ImageDataConfig) -> ImageFolder:
  """Lists ``config.data_dir`` (see the module doc); decodes nothing.

  Raises:
    lionx.train.data.images.DataError: no ``train/`` or ``val/``, an empty
      class folder, or different class folders in ``train/`` and ``val/``.
  """
  if not config.data_dir:
    raise DataError(
        'data.data_dir is empty; set it to the folder that holds train/ '
        'and val/ (<class>/*.JPEG in each).')
  root = pathlib.Path(config.data_dir).expanduser()
  if not root.is_dir():
    raise DataError(f'data.data_dir={config.data_dir!r}: no such folder; '
                    'expected one holding train/ and val/.')
  train = _list_split(root, 'train')
  val = _list_split(root, 'val')
  if set(train) != set(val):
    raise DataError(
        f'{root}: train/ and val/ have different class folders '
        f'({_differ(list(train), list(val))}); expected the same classes.')
  classes = tuple(train)
  train_files, train_labels = _flatten(train, classes)
  test_files, test_labels = _flatten(val, classes)
  workers = default_workers() if config.workers < 0 else config.workers
  return ImageFolder(NAME, root, classes, train_files, train_labels,
                     test_files, test_labels, config.image_size, workers)

