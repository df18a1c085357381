r"""Token streams for the language tasks: an embedded byte corpus and
nanoGPT's token files.

* ``text_bytes`` (the embedded default, vocabulary 256): the ``.py`` source
  files of the standard library of the *running* interpreter
  (``sysconfig.get_paths()['stdlib']``), without ``site-packages`` /
  ``dist-packages`` and without tests (folders named ``test``, ``tests``,
  ``idle_test``; files named ``test_*.py``), in the order of their sorted
  relative paths, each followed by a NUL byte (0, which Python source does
  not contain: the end of a document). A file goes to the validation split
  when the SHA-256 of its relative path, read as a number, is 0 modulo 20
  (about 5 % of the files), so the split does not move when other files
  come or go. The corpus differs between Python versions; the run's
  provenance records the version and the SHA-256 of both splits
  (:func:`byte_corpus`).
* ``token_files``: ``data.data_dir`` holds ``train.bin`` and ``val.bin``,
  flat little-endian uint16 token ids as nanoGPT's
  ``data/openwebtext/prepare.py`` writes them (GPT-2's BPE, vocabulary
  50257), read through ``np.memmap``. Nothing is downloaded.

Loading checks each file and stops with a one-line :class:`DataError`: a
missing file, a size that is not a multiple of 2 bytes, a file shorter than
one window, a token id not below the model's vocabulary (``vocab``; the
whole file is scanned in chunks of 2^24 tokens, once per load).

**Batches.** Training batch ``k`` is a function of ``(seed, k)`` alone:
``numpy.random.default_rng([seed, k])`` draws the start of each window,
uniformly over the training split (and, for BERT, the split point, the
swap and the masking, in that order). The logging pass reads
``logging_max_batches`` batches of windows whose starts are evenly spaced
over the training split, and the held-out evaluation reads consecutive
non-overlapping windows that tile the validation split (the last one
padded with ``mask`` 0), or ``data.val_max_batches`` batches of them,
evenly spread. Both are the same for every seed and every evaluation; BERT
masks them with ``default_rng([split, batch])``, split 1 for the logging
pass and 2 for the validation split.

**BERT examples** (:func:`bert_batch`): a window of :math:`n = T - 3`
consecutive tokens is cut at a uniform point into two non-empty segments
A and B; with probability 1/2 they are swapped (sentence-order label 1).
The input is ``[CLS] first [SEP] second [SEP]`` with segment ids 0 up to
and including the first ``[SEP]``, then 1. Exactly
:math:`k = \max(1, \operatorname{round}(0.15 n))` of the :math:`n` content
positions are chosen uniformly for prediction; of those, 80 % become
``[MASK]``, 10 % a uniform random token of the data's vocabulary and 10 %
stay (each position independently). The special tokens follow the data's
vocabulary :math:`V`: ``[CLS]`` = V, ``[SEP]`` = V + 1, ``[MASK]`` = V + 2.

The ``data`` config section of the language tasks (:class:`TextDataConfig`)
lives here.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import pathlib
import sys
import sysconfig
from typing import Any, Callable, NamedTuple, Optional

import numpy as np

from lionx.train import fields
from lionx.train import registry
from lionx.train.data import fingerprint as fingerprint_lib

BYTE_VOCAB = 256
GPT2_VOCAB = 50257
END_OF_FILE = 0  # the NUL byte after each file of the byte corpus
VALIDATION_MODULUS = 20  # 1 in 20 paths (by hash) is validation
EXCLUDED_DIRS = frozenset(
    {'test', 'tests', 'idle_test', 'site-packages', 'dist-packages',
     '__pycache__'})
MASK_RATE, MASK_TOKEN_SHARE, RANDOM_TOKEN_SHARE = 0.15, 0.8, 0.1
LOGGING_SPLIT, VALIDATION_SPLIT = 1, 2  # keys of the fixed BERT masking
_CHUNK = 1 << 24  # tokens per chunk of the vocabulary scan

# How training batches are drawn (recorded in every checkpoint).
DATA_ORDER = ('numpy default_rng([seed, step]): window starts uniform over '
              'the training split (BERT: then split points, swaps, masking)')


class DataError(ValueError):
  """Text data that is missing or not in the expected format."""


@dataclasses.dataclass(slots=True)
class TextDataConfig:
  """Which token stream, and how it is cut into windows (``data.*``)."""

  name: str = 'text_bytes'  # text_bytes | token_files
  data_dir: str = ''  # token_files: the folder with train.bin and val.bin
  # The data's vocabulary: None is 256 (text_bytes) or GPT-2's 50257
  # (token_files); every token id must be below it. BERT adds 3 tokens.
  vocab_size: Optional[int] = None
  # Tokens a model sees per example; None: the model's context length.
  seq_len: Optional[int] = None
  # Held-out evaluation: 0 tiles the whole validation split; N > 0 takes
  # N batches of eval_batch_size windows, evenly spread over it.
  val_max_batches: int = 0


@dataclasses.dataclass
class TextData:
  """A training and a validation token stream."""

  name: str
  train: np.ndarray  # (N,) uint8 or uint16 token ids; np.memmap for files
  val: np.ndarray  # (M,)
  vocab_size: int  # every id is below it
  info: dict[str, Any]  # provenance: where the tokens come from


def fingerprint(data: TextData) -> dict[str, str]:
  """What a resume checks is unchanged: the byte corpus's sha256, or the
  sampled digest of each token file
  (:func:`lionx.train.data.fingerprint.file_digest`)."""
  if 'sha256' in data.info:
    return dict(data.info['sha256'])
  if 'data_dir' in data.info:
    directory = pathlib.Path(data.info['data_dir'])
    return {f'{split}.bin': fingerprint_lib.file_digest(
        directory / f'{split}.bin') for split in ('train', 'val')}
  return {'tokens': fingerprint_lib.array_digest(data.train, data.val)}


def validate(config: TextDataConfig) -> None:
  """Checks the names and sizes of a :class:`TextDataConfig`."""
  SOURCES[config.name]  # raises ConfigError for an unknown name
  fields.positive_ints(config, 'data', skip=lambda n: n == 'val_max_batches')
  fields.non_negative('data.val_max_batches', config.val_max_batches)
  if config.name == 'text_bytes' and config.vocab_size not in (
      None, BYTE_VOCAB):
    raise fields.ConfigError(
        f"data.vocab_size={config.vocab_size} with data.name='text_bytes': "
        f'the byte corpus has {BYTE_VOCAB} tokens; leave it None.')
  if config.name == 'token_files' and not config.data_dir:
    raise fields.ConfigError(
        "data.name='token_files' needs data.data_dir, the folder with "
        "nanoGPT's train.bin and val.bin.")
  if config.vocab_size is not None and config.vocab_size > 1 << 16:
    raise fields.ConfigError(
        f'data.vocab_size={config.vocab_size}: token files hold uint16 ids, '
        f'so at most {1 << 16}.')


def vocab_size(config: TextDataConfig) -> int:
  """The data's vocabulary (see :class:`TextDataConfig`)."""
  if config.vocab_size is not None:
    return config.vocab_size
  return SOURCES[config.name].vocab_size


# --- the embedded byte corpus -------------------------------------------------


def stdlib_root() -> pathlib.Path:
  """The standard library folder of the running interpreter."""
  return pathlib.Path(sysconfig.get_paths()['stdlib'])


def is_validation(relative: str) -> bool:
  """Whether the file at ``relative`` (a POSIX path) is validation text."""
  digest = hashlib.sha256(relative.encode('utf-8')).hexdigest()
  return int(digest, 16) % VALIDATION_MODULUS == 0


def corpus_files(root: pathlib.Path) -> list[str]:
  """The corpus's files under ``root``: sorted relative POSIX paths."""
  out = []
  for folder, dirs, files in os.walk(root):
    dirs[:] = [d for d in dirs if d not in EXCLUDED_DIRS]
    here = pathlib.Path(folder)
    for name in files:
      if name.endswith('.py') and not name.startswith('test_'):
        out.append((here / name).relative_to(root).as_posix())
  return sorted(out)


def _read_only(array: np.ndarray) -> np.ndarray:
  array.flags.writeable = False
  return array


@functools.lru_cache(maxsize=2)
def byte_corpus(root: Optional[str] = None) -> TextData:
  """The ``text_bytes`` corpus from ``root`` (default: :func:`stdlib_root`).

  Example:
    >>> from lionx.train.data import text
    >>> corpus = text.byte_corpus()
    >>> corpus.vocab_size, corpus.train.dtype
    (256, dtype('uint8'))
  """
  base = stdlib_root() if root is None else pathlib.Path(root)
  files = corpus_files(base)
  if not files:
    raise DataError(f'{base}: no Python source files for the byte corpus; '
                    "expected the interpreter's standard library.")
  parts: dict[bool, list[bytes]] = {False: [], True: []}
  for relative in files:
    data = (base / relative).read_bytes()
    parts[is_validation(relative)].append(data + bytes([END_OF_FILE]))
  train, val = (b''.join(parts[split]) for split in (False, True))
  if not parts[True] or not parts[False]:
    raise DataError(f'{base}: {len(files)} files give an empty training or '
                    'validation split; expected a standard library.')
  info = {
      'data': 'text_bytes', 'python': sys.version.split()[0],
      'stdlib': str(base),
      'files': {'train': len(parts[False]), 'validation': len(parts[True])},
      'tokens': {'train': len(train), 'validation': len(val)},
      'sha256': {'train': hashlib.sha256(train).hexdigest(),
                 'validation': hashlib.sha256(val).hexdigest()}}
  return TextData('text_bytes',
                  _read_only(np.frombuffer(train, np.uint8).copy()),
                  _read_only(np.frombuffer(val, np.uint8).copy()),
                  BYTE_VOCAB, info)


# --- nanoGPT token files ------------------------------------------------------


def _check_vocab(path: pathlib.Path, tokens: np.ndarray, vocab: int) -> None:
  for start in range(0, len(tokens), _CHUNK):
    chunk = np.asarray(tokens[start:start + _CHUNK])
    if chunk.size and int(chunk.max()) >= vocab:
      where = start + int(np.argmax(chunk >= vocab))
      raise DataError(
          f'{path}: token id {int(tokens[where])} at position {where:,} is '
          f'not below the vocab size {vocab} (data.vocab_size); expected '
          'ids of the tokenizer the model was configured for.')


def _token_file(directory: pathlib.Path, split: str, window: int,
                vocab: int) -> np.ndarray:
  path = directory / f'{split}.bin'
  if not path.is_file():
    raise DataError(
        f"data.data_dir={str(directory)!r}: no {split}.bin; expected "
        "nanoGPT's train.bin and val.bin (flat uint16 token ids, as "
        "data/openwebtext/prepare.py writes them); lionx never downloads.")
  size = path.stat().st_size
  if size % 2:
    raise DataError(
        f'{path}: {size:,} bytes, not a multiple of 2; expected flat uint16 '
        "token ids (nanoGPT's format).")
  if size // 2 < window:
    raise DataError(
        f'{path}: {size // 2:,} tokens, shorter than one window of {window} '
        'tokens; expected a longer file (or a smaller data.seq_len).')
  tokens = np.memmap(path, dtype='<u2', mode='r')
  _check_vocab(path, tokens, vocab)
  return tokens


def token_files(data_dir: str, vocab: int, window: int) -> TextData:
  """nanoGPT's ``train.bin`` / ``val.bin`` in ``data_dir``, memory-mapped
  and checked (see the module doc); ``window`` is the tokens of one
  example."""
  directory = pathlib.Path(data_dir).expanduser()
  if not directory.is_dir():
    what = 'is a file' if directory.exists() else 'does not exist'
    raise DataError(
        f'data.data_dir={str(directory)!r} {what}; expected the folder '
        "with nanoGPT's train.bin and val.bin.")
  train = _token_file(directory, 'train', window, vocab)
  val = _token_file(directory, 'val', window, vocab)
  info = {'data': 'token_files', 'data_dir': str(directory.resolve()),
          'tokens': {'train': len(train), 'validation': len(val)},
          'bytes': {'train': (directory / 'train.bin').stat().st_size,
                    'validation': (directory / 'val.bin').stat().st_size}}
  return TextData('token_files', train, val, vocab, info)


def _load_bytes(config: TextDataConfig, window: int) -> TextData:
  del config
  data = byte_corpus()
  for split, tokens in (('training', data.train), ('validation', data.val)):
    if len(tokens) < window:
      raise DataError(
          f'the byte corpus has {len(tokens):,} {split} tokens, shorter '
          f'than one window of {window}; use a smaller data.seq_len.')
  return data


def _load_token_files(config: TextDataConfig, window: int) -> TextData:
  return token_files(config.data_dir, vocab_size(config), window)


class _Source(NamedTuple):
  load: Callable[[TextDataConfig, int], TextData]  # (config, window)
  vocab_size: int  # the default data.vocab_size


SOURCES: registry.Registry = registry.Registry('data.name')
SOURCES.register('text_bytes', _Source(_load_bytes, BYTE_VOCAB))
SOURCES.register('token_files', _Source(_load_token_files, GPT2_VOCAB))


def load(config: TextDataConfig, window: int) -> TextData:
  """The data of ``config``; every split holds at least one ``window``."""
  return SOURCES[config.name].load(config, window)


# --- windows ------------------------------------------------------------------


def windows(tokens: np.ndarray, starts: np.ndarray,
            length: int) -> np.ndarray:
  """``tokens[s:s + length]`` for each start, as int32 (len(starts), length)."""
  return np.stack([np.asarray(tokens[s:s + length]) for s in starts]
                  ).astype(np.int32)


def random_starts(n: int, length: int, count: int,
                  rng: np.random.Generator) -> np.ndarray:
  """``count`` uniform window starts in ``[0, n - length]``."""
  return rng.integers(0, n - length + 1, count)


def spread_starts(n: int, length: int, count: int) -> np.ndarray:
  """``count`` window starts evenly spaced from 0 to ``n - length``."""
  return np.floor(np.linspace(0, n - length, count)).astype(np.int64)


def logging_starts(n: int, length: int, batch_size: int,
                   max_batches: int) -> list[np.ndarray]:
  """The window starts of the logging pass, batch by batch."""
  starts = spread_starts(n, length, batch_size * max_batches)
  return np.split(starts, max_batches)


def tile_starts(n: int, length: int, stride: int, batch_size: int,
                max_batches: int = 0,
                partial: bool = True) -> list[np.ndarray]:
  """Starts of windows ``stride`` apart tiling ``n`` tokens, batch by batch.

  With ``partial`` the last window may run past the end (the caller masks
  what is missing), so that every token is covered; without, only full
  windows. ``max_batches > 0`` keeps that many batches, evenly spread.
  """
  if partial:
    count = max(-(-(n - (length - stride)) // stride), 1)
  else:
    count = (n - length) // stride + 1
  starts = np.arange(count, dtype=np.int64) * stride
  if max_batches and max_batches * batch_size < count:
    keep = np.unique(np.floor(np.linspace(
        0, count - 1, max_batches * batch_size)).astype(np.int64))
    starts = starts[keep]
  return [starts[i:i + batch_size] for i in range(0, len(starts), batch_size)]


def padded_windows(tokens: np.ndarray, starts: np.ndarray, length: int,
                   batch_size: int) -> tuple[np.ndarray, np.ndarray]:
  """Windows that may run past the end, zero-filled, and their ``valid``
  mask (1 for a real token), padded with empty rows to ``batch_size``."""
  out = np.zeros((batch_size, length), np.int32)
  valid = np.zeros((batch_size, length), np.float32)
  for i, s in enumerate(starts):
    piece = np.asarray(tokens[s:s + length])
    out[i, :len(piece)] = piece
    valid[i, :len(piece)] = 1.0
  return out, valid


# --- GPT and BERT batches -----------------------------------------------------


def gpt_batch(tokens: np.ndarray, starts: np.ndarray, seq_len: int,
              batch_size: Optional[int] = None) -> dict[str, np.ndarray]:
  """Next-token windows: ``tokens`` (B, T + 1) int32; with ``batch_size``
  (evaluation) also ``mask`` (B, T), 1 where the target token is real."""
  if batch_size is None:
    return {'tokens': windows(tokens, starts, seq_len + 1)}
  window, valid = padded_windows(tokens, starts, seq_len + 1, batch_size)
  return {'tokens': window, 'mask': valid[:, 1:]}


def num_predictions(seq_len: int) -> int:
  """k: the masked positions of a BERT example of ``seq_len`` tokens."""
  return max(1, round(MASK_RATE * (seq_len - 3)))


def bert_batch(tokens: np.ndarray, starts: np.ndarray, seq_len: int,
               vocab: int, rng: np.random.Generator,
               batch_size: Optional[int] = None) -> dict[str, np.ndarray]:
  """BERT examples from windows of ``seq_len - 3`` tokens (module doc).

  Returns ``tokens`` and ``segments`` (B, T) int32, the masked
  ``positions`` and their original ``targets`` (B, k) int32, the
  sentence-order label ``order`` (B,) int32 (1: swapped); with
  ``batch_size`` (evaluation) also ``mask`` (B,) float32, 0 for the rows
  that pad the batch.

  Example:
    >>> import numpy as np
    >>> from lionx.train.data import text
    >>> b = text.bert_batch(np.arange(100), np.array([0, 50]), 12, 256,
    ...                     np.random.default_rng(0))
    >>> b['tokens'].shape, b['positions'].shape, b['order'].shape
    ((2, 12), (2, 1), (2,))
  """
  n = seq_len - 3
  rows = len(starts)
  content = windows(tokens, starts, n)
  cut = rng.integers(1, n, rows)  # len(A), in [1, n - 1]
  swap = rng.random(rows) < 0.5
  cls, sep, mask_id = vocab, vocab + 1, vocab + 2
  ids = np.empty((rows, seq_len), np.int32)
  segments = np.empty((rows, seq_len), np.int32)
  for i in range(rows):
    a, b = content[i, :cut[i]], content[i, cut[i]:]
    first, second = (b, a) if swap[i] else (a, b)
    ids[i] = np.concatenate([[cls], first, [sep], second, [sep]])
    segments[i] = np.repeat([0, 1], [len(first) + 2, len(second) + 1])
  # The n content positions of each row (special tokens are >= vocab).
  slots = np.argsort(ids >= vocab, axis=1, kind='stable')[:, :n]
  k = num_predictions(seq_len)
  chosen = np.argsort(rng.random((rows, n)), axis=1)[:, :k]  # content index
  positions = np.sort(np.take_along_axis(slots, chosen, axis=1), axis=1)
  targets = np.take_along_axis(ids, positions, axis=1)
  draw = rng.random((rows, k))
  replace = rng.integers(0, vocab, (rows, k))
  masked = np.where(draw < MASK_TOKEN_SHARE, mask_id, np.where(
      draw < MASK_TOKEN_SHARE + RANDOM_TOKEN_SHARE, replace, targets))
  np.put_along_axis(ids, positions, masked, axis=1)
  out = {'tokens': ids, 'segments': segments,
         'positions': positions.astype(np.int32),
         'targets': targets.astype(np.int32),
         'order': swap.astype(np.int32)}
  if batch_size is not None:
    fill = batch_size - rows
    out = {key: np.concatenate([v, np.zeros((fill,) + v.shape[1:], v.dtype)])
           for key, v in out.items()}
    out['mask'] = np.concatenate([np.ones(rows, np.float32),
                                  np.zeros(fill, np.float32)])
  return out
