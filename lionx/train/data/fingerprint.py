"""Fingerprints of a run's data, so that a resume can tell it changed.

A run saves its data's fingerprint in every checkpoint
(:mod:`lionx.train.experiment`) and refuses to resume on data whose
fingerprint differs, unless ``--allow-data-change``.

* **A file** (:func:`file_digest`): its size and the sha256 of its first
  and last MiB and of 64 blocks of 64 KiB at evenly spaced offsets, about
  6 MiB read whatever the size (a 17 GB OpenWebText ``train.bin`` in
  milliseconds to a second, where hashing it whole would take a minute at
  each start). A file of up to 6 MiB is hashed whole. A change in place
  that spares every sampled block is missed; a change of size, of either
  end (an append, a re-tokenisation, a truncation) is not. The mtime is
  left out on purpose: copying the data to another machine changes it and
  not the tokens.
* **Arrays in memory** (:func:`array_digest`): the sha256 of their bytes,
  shape and dtype (the embedded sets; CIFAR's 150 MB in a fraction of a
  second).
* **A folder of many files** (:func:`listing_digest`): the sha256 of the
  sorted (name, size) list; reading a million images at each start is not
  worth it.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
from typing import Iterable

import numpy as np

_MIB = 1 << 20
_BLOCK, _BLOCKS = 64 * 1024, 64


def file_digest(path: str | os.PathLike) -> str:
  """``'<size> bytes, sha256 <hex>'`` of the sampled blocks of ``path``.

  Example:
    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / 'train.bin'
    >>> _ = path.write_bytes(bytes(range(256)) * 4)
    >>> file_digest(path)[:30]
    '1024 bytes, sha256 785b0751fc2'
  """
  path = pathlib.Path(path)
  size = path.stat().st_size
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    if size <= 2 * _MIB + _BLOCKS * _BLOCK:
      digest.update(f.read())
    else:
      step = (size - 2 * _MIB - _BLOCK) // (_BLOCKS - 1)
      offsets = [0] + [_MIB + i * step for i in range(_BLOCKS)]
      offsets.append(size - _MIB)
      for offset in offsets:
        f.seek(offset)
        digest.update(f.read(_MIB if offset in (0, size - _MIB)
                             else _BLOCK))
  return f'{size} bytes, sha256 {digest.hexdigest()}'


def array_digest(*arrays: np.ndarray) -> str:
  """The sha256 of the arrays' shapes, dtypes and bytes.

  Example:
    >>> import numpy as np
    >>> array_digest(np.zeros(3)) == array_digest(np.zeros(3))
    True
    >>> array_digest(np.zeros(3)) == array_digest(np.zeros(3, np.float32))
    False
  """
  digest = hashlib.sha256()
  for array in arrays:
    array = np.ascontiguousarray(array)
    digest.update(f'{array.shape} {array.dtype.str};'.encode())
    digest.update(memoryview(array).cast('B'))
  return f'sha256 {digest.hexdigest()}'


def listing_digest(root: str | os.PathLike, names: Iterable[str]) -> str:
  """The sha256 of the sorted ``(name, size)`` of the files ``names``
  under ``root``."""
  root = pathlib.Path(root)
  digest = hashlib.sha256()
  count = 0
  for name in sorted(names):
    digest.update(f'{name}\0{(root / name).stat().st_size}\n'.encode())
    count += 1
  return f'{count} files, sha256 {digest.hexdigest()}'
