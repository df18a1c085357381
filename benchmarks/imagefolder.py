"""Images per second of the ImageNet-style folder pipeline on this CPU.

Writes a tree of JPEGs of ImageNet's typical sizes (widths 300-500 and
heights 250-400 px, quality 90, smooth colour gradients with pixel noise)
to a temporary folder, then measures ``lionx.train.data.imagefolder``:

* ``decode``: one image at a time in this process (Pillow: decode, crop,
  bilinear resize to ``--size``, normalise), for the training crop
  (random-resized crop + flip) and the evaluation crop (resize to
  size / 0.875, central crop);
* ``train batches``: ``train_batch`` with ``--workers`` grain worker
  processes (0: in this process), the pipeline of a training run: the time
  to the first batch (starting the workers) and the images per second over
  the batches after it;
* ``eval batches``: ``eval_batches`` over the ``val/`` split, which decodes
  in threads of this process.

Each figure is the median of ``--repeats`` runs. The machine is shared by
other jobs: compare rows of one run, not runs.

Usage (from the repository root):

  python benchmarks/imagefolder.py                        # 512 images
  python benchmarks/imagefolder.py --workers 0,1,2,4 --batch 128
  python benchmarks/imagefolder.py --write                # RESULTS.md too
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import tempfile
import time

import numpy as np
from PIL import Image

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import _common  # noqa: E402  pylint: disable=g-import-not-at-top

from lionx.train.data import imagefolder  # noqa: E402
from lionx.train.data import images  # noqa: E402

SCRIPT = 'imagefolder.py'


def write_tree(root: pathlib.Path, train: int, val: int,
               classes: int = 8) -> None:
  """``train`` and ``val`` JPEGs over ``classes`` folders, ImageNet-sized."""
  rng = np.random.default_rng(0)
  for split, count in (('train', train), ('val', val)):
    for i in range(count):
      folder = root / split / f'n{i % classes:08d}'
      folder.mkdir(parents=True, exist_ok=True)
      width, height = int(rng.integers(300, 501)), int(rng.integers(250, 401))
      y, x = np.mgrid[0:height, 0:width]
      slope = rng.uniform(-0.5, 0.5, (2, 3))
      pixels = (rng.uniform(0, 255, 3) + x[..., None] * slope[0]
                + y[..., None] * slope[1]
                + rng.normal(0, 12, (height, width, 3)))
      Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
          folder / f'{i:06d}.JPEG', quality=90)


def per_second(count: int, seconds: float) -> str:
  return f'{count / seconds:,.0f}'


def decode_rate(ds: imagefolder.ImageFolder, size: int, train: bool) -> float:
  """Seconds to decode every training image once in this process."""
  rng = np.random.default_rng(1)
  paths = [ds.root / 'train' / f.decode() for f in ds.train_files]
  start = time.perf_counter()
  for path in paths:
    if train:
      imagefolder.decode(path, size, rng.random((10, 4)), rng.random() < 0.5)
    else:
      imagefolder.decode(path, size)
  return time.perf_counter() - start


def train_rate(config: images.ImageDataConfig, batch: int,
               batches: int) -> tuple[float, float]:
  """(seconds to the first batch, seconds for the next ``batches``)."""
  ds = images.load_dataset(config)
  try:
    start = time.perf_counter()
    ds.train_batch(0, seed=0, batch_size=batch, augment=True)
    first = time.perf_counter()
    for step in range(1, batches + 1):
      ds.train_batch(step, seed=0, batch_size=batch, augment=True)
    return first - start, time.perf_counter() - first
  finally:
    ds.close()


def eval_rate(config: images.ImageDataConfig, batch: int) -> float:
  ds = images.load_dataset(config)
  start = time.perf_counter()
  for _ in ds.eval_batches('test', batch):
    pass
  return time.perf_counter() - start


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--images', type=int, default=512,
                      help='training images (the val split has a quarter)')
  parser.add_argument('--size', type=int, default=224)
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--workers', default='0,1,2',
                      help='comma-separated worker counts')
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--write', action='store_true',
                      help="replace this script's section of RESULTS.md")
  args = parser.parse_args()
  workers = [int(w) for w in args.workers.split(',')]
  val = max(args.batch, args.images // 4)
  batches = args.images // args.batch - 1
  if batches < 1:
    parser.error(f'--images {args.images} holds fewer than two batches of '
                 f'--batch {args.batch}.')
  with tempfile.TemporaryDirectory() as tmp:
    root = pathlib.Path(tmp)
    began = time.perf_counter()
    write_tree(root, args.images, val)
    print(f'wrote {args.images} + {val} JPEGs in '
          f'{time.perf_counter() - began:.1f} s', file=sys.stderr)

    def config(w: int) -> images.ImageDataConfig:
      return images.ImageDataConfig(name='imagefolder', data_dir=str(root),
                                    image_size=args.size, workers=w)

    ds = images.load_dataset(config(0))
    rows = []
    for train, what in ((True, 'decode, training crop + flip'),
                        (False, 'decode, evaluation crop')):
      seconds = statistics.median(decode_rate(ds, args.size, train)
                                  for _ in range(args.repeats))
      rows.append([what, '1 (this process)', '',
                   per_second(args.images, seconds)])
    for w in workers:
      runs = [train_rate(config(w), args.batch, batches)
              for _ in range(args.repeats)]
      first = statistics.median(r[0] for r in runs)
      rest = statistics.median(r[1] for r in runs)
      rows.append(['train batches (random-resized crop + flip)',
                   f'{w} process(es)' if w else '0 (this process)',
                   f'{first:.1f}', per_second(batches * args.batch, rest)])
    for w in workers:
      seconds = statistics.median(eval_rate(config(w), args.batch)
                                  for _ in range(args.repeats))
      rows.append(['eval batches (resize + central crop)',
                   f'{w} thread(s)' if w else '0 (this thread)', '',
                   per_second(val, seconds)])
  lines = [
      '## ImageNet-style folder pipeline (images/s)', '',
      *_common.machine(),
      f'- command: `python benchmarks/{SCRIPT} --images {args.images} '
      f'--size {args.size} --batch {args.batch} --workers {args.workers} '
      f'--repeats {args.repeats}`',
      f'- {args.images} training and {val} validation JPEGs, 300-500 x '
      f'250-400 px, quality 90; output {args.size} x {args.size}; batches '
      f'of {args.batch}; median of {args.repeats} runs', '',
      *_common.table(['what', 'workers', 's to the first batch',
                      'images/s'], rows)]
  print('\n'.join(lines))
  if args.write:
    _common.write_section(SCRIPT, lines)


if __name__ == '__main__':
  main()
