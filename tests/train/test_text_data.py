"""Text data: the embedded byte corpus, nanoGPT token files and batches."""

import hashlib
import platform

import hypothesis
import numpy as np
import pytest
from hypothesis import strategies as st

from lionx.train import config as config_lib
from lionx.train import tasks
from lionx.train.data import text

GPT = tasks.get_task('language_model')
BERT = tasks.get_task('masked_lm')


def lm_config(task='language_model', **changes):
  """A tiny language config (field paths with '__', as tiny_config)."""
  config = config_lib.Config(task=task)
  config.num_epochs, config.num_steps, config.eval_every_steps = 0, 6, 2
  config.batch_size = config.eval_batch_size = 4
  config.logging_max_batches = 2
  config.data.val_max_batches = 2
  config.model.num_layers, config.model.width = 1, 16
  config.model.num_heads, config.model.context_length = 2, 16
  config.optimizer.learning_rate = 1e-3
  config.optimizer.learning_rates = {}
  config.parallel.num_devices = 1
  config.progress = False
  for key, value in changes.items():
    obj = config
    *parents, name = key.split('__')
    for parent in parents:
      obj = getattr(obj, parent)
    setattr(obj, name, value)
  return config


def write_tokens(directory, train, val=None):
  directory.mkdir(parents=True, exist_ok=True)
  np.asarray(train, np.uint16).tofile(directory / 'train.bin')
  np.asarray(train if val is None else val, np.uint16).tofile(
      directory / 'val.bin')
  return directory


# --- the byte corpus ----------------------------------------------------------


def _tree(root):
  files = {
      'a/x.py': b'print(1)\n', 'a/b/y.py': b'y = 2\n', 'z.py': b'z\n',
      'test/t.py': b'no', 'a/tests/t.py': b'no', 'idlelib/idle_test/t.py':
      b'no', 'site-packages/p.py': b'no', 'dist-packages/p.py': b'no',
      'a/test_q.py': b'no', 'a/notes.txt': b'no', '__pycache__/c.py': b'no',
  }
  for i in range(40):  # enough files for both splits
    files[f'm/mod{i}.py'] = f'x{i} = {i}\n'.encode()
  for name, data in files.items():
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    (root / name).write_bytes(data)
  return files


def test_corpus_file_list_is_sorted_and_without_tests(tmp_path):
  files = _tree(tmp_path)
  kept = text.corpus_files(tmp_path)
  expected = sorted(n for n in files if n.endswith('.py') and not any(
      part in ('test', 'tests', 'idle_test', 'site-packages',
               'dist-packages', '__pycache__') for part in n.split('/'))
                    and not n.split('/')[-1].startswith('test_'))
  assert kept == expected
  assert 'a/x.py' in kept and 'z.py' in kept


def test_byte_corpus_splits_by_path_hash(tmp_path):
  files = _tree(tmp_path)
  data = text.byte_corpus(str(tmp_path))
  names = text.corpus_files(tmp_path)
  val_names = [n for n in names
               if int(hashlib.sha256(n.encode()).hexdigest(), 16) % 20 == 0]
  assert val_names and len(val_names) < len(names)
  expect_val = b''.join(files[n] + b'\0' for n in val_names)
  expect_train = b''.join(files[n] + b'\0' for n in names
                          if n not in val_names)
  assert data.val.tobytes() == expect_val
  assert data.train.tobytes() == expect_train
  assert data.info['sha256']['train'] == hashlib.sha256(
      expect_train).hexdigest()
  assert data.info['files'] == {'train': len(names) - len(val_names),
                                'validation': len(val_names)}
  with pytest.raises(ValueError):  # read-only: shared between runs
    data.train[0] = 1


def test_byte_corpus_of_this_interpreter():
  data = text.byte_corpus()
  assert data.vocab_size == 256 and data.train.dtype == np.uint8
  assert data.info['python'] == platform.python_version()
  assert data.info['sha256']['validation'] == hashlib.sha256(
      data.val.tobytes()).hexdigest()
  assert len(data.train) > 10 * len(data.val) > 0  # about 1 file in 20
  # NUL ends each file and nothing else: one per file.
  assert np.count_nonzero(data.train == 0) == data.info['files']['train']
  assert data.info['tokens'] == {'train': len(data.train),
                                 'validation': len(data.val)}


def test_provenance_records_the_corpus(tmp_path):
  config = lm_config()
  data = GPT.load_data(config)
  info = GPT.provenance(config, data)['data']
  assert info['python'] == platform.python_version()
  assert len(info['sha256']['train']) == 64


# --- token files --------------------------------------------------------------


def test_token_files_are_memory_mapped(tmp_path):
  write_tokens(tmp_path, np.arange(100) % 50, np.arange(40) % 50)
  config = lm_config(data__name='token_files', data__data_dir=str(tmp_path),
                     data__vocab_size=50)
  data = GPT.load_data(config)
  assert isinstance(data.train, np.memmap) and data.train.dtype == '<u2'
  assert len(data.train) == 100 and len(data.val) == 40
  np.testing.assert_array_equal(data.val, np.arange(40) % 50)
  batch = GPT.train_batch(config, data, 3)
  assert batch['tokens'].shape == (4, 17) and batch['tokens'].dtype == np.int32


@pytest.mark.parametrize('case,match', [
    ('missing', 'no val.bin'),
    ('odd', 'not a multiple of 2'),
    ('short', 'shorter than one window of 17 tokens'),
    ('vocab', 'token id 70 at position 33 is not below the vocab size 50'),
])
def test_bad_token_files(tmp_path, case, match):
  write_tokens(tmp_path, np.arange(100) % 50)
  val = tmp_path / 'val.bin'
  if case == 'missing':
    val.unlink()
  elif case == 'odd':
    val.write_bytes(val.read_bytes() + b'\x01')
  elif case == 'short':
    np.arange(16, dtype=np.uint16).tofile(val)
  else:
    tokens = np.arange(100, dtype=np.uint16) % 50
    tokens[33] = 70
    tokens.tofile(val)
  config = lm_config(data__name='token_files', data__data_dir=str(tmp_path),
                     data__vocab_size=50)
  with pytest.raises(text.DataError, match=match):
    GPT.load_data(config)


def test_vocab_check_scans_past_the_first_chunk(tmp_path, monkeypatch):
  monkeypatch.setattr(text, '_CHUNK', 16)
  tokens = np.zeros(100, np.uint16)
  tokens[90] = 256
  write_tokens(tmp_path, tokens)
  with pytest.raises(text.DataError, match='position 90 .*vocab size 256'):
    text.token_files(str(tmp_path), 256, 17)


def test_vocab_of_bert_excludes_its_special_tokens(tmp_path):
  # Ids must be below the data's vocabulary; BERT's [CLS], [SEP], [MASK]
  # come after it.
  write_tokens(tmp_path, np.full(100, 49, np.uint16))
  config = lm_config('masked_lm', data__name='token_files',
                     data__data_dir=str(tmp_path), data__vocab_size=49)
  with pytest.raises(text.DataError, match='vocab size 49'):
    BERT.load_data(config)
  config.data.vocab_size = 50
  data = BERT.load_data(config)
  model = BERT.create_model(config, BERT.data_spec(data), 0)
  assert model.wte.embedding.shape == (53, 16)


# --- config refusals ----------------------------------------------------------


@pytest.mark.parametrize('task', ['language_model', 'masked_lm'])
@pytest.mark.parametrize('changes,match', [
    (dict(logging_max_batches=0), 'logging_max_batches=0 means the whole '
     'training stream'),
    (dict(num_epochs=3), "num_epochs=3: task='.*' has no epochs"),
    (dict(eval_every_steps=0), 'eval_every_steps=0 means once per epoch'),
    (dict(data__seq_len=17), "data.seq_len=17: expected .* context length "
     '16'),
    (dict(data__vocab_size=300), "data.vocab_size=300 with "
     "data.name='text_bytes'"),
    (dict(data__name='token_files'), 'needs data.data_dir'),
    (dict(data__name='wiki'), "data.name='wiki' is not one of"),
    (dict(model__width=20, model__num_heads=3), 'model.width=20 is not a '
     'multiple of model.num_heads=3'),
    (dict(data__val_max_batches=-1), 'data.val_max_batches=-1'),
])
def test_refusals_name_the_field(task, changes, match):
  with pytest.raises(config_lib.ConfigError, match=match):
    config_lib.validate(lm_config(task, **changes))


def test_models_belong_to_their_task():
  with pytest.raises(config_lib.ConfigError, match="model.name='bert_base' "
                     'is not one of'):
    config_lib.validate(lm_config(model__name='bert_base'))
  with pytest.raises(config_lib.ConfigError, match="model.name='gpt2_small'"):
    config_lib.validate(lm_config('masked_lm', model__name='gpt2_small'))


# --- batches ------------------------------------------------------------------


@pytest.mark.parametrize('task', [GPT, BERT])
def test_training_batch_is_a_function_of_seed_and_step(task):
  config = lm_config(task.name)
  data = task.load_data(config)
  a = task.train_batch(config, data, 7)
  b = task.train_batch(config, data, 7)
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key])
  other = task.train_batch(config, data, 8)
  assert not np.array_equal(a['tokens'], other['tokens'])
  config.seed = 1
  assert not np.array_equal(a['tokens'], task.train_batch(
      config, data, 7)['tokens'])


def test_gpt_windows_are_contiguous_corpus_bytes():
  config = lm_config(seed=3)
  data = GPT.load_data(config)
  tokens = GPT.train_batch(config, data, 5)['tokens']
  rng = np.random.default_rng([3, 5])
  starts = rng.integers(0, len(data.train) - 17 + 1, 4)
  for row, start in zip(tokens, starts):
    np.testing.assert_array_equal(row, data.train[start:start + 17])


@pytest.mark.parametrize('task', [GPT, BERT])
def test_logging_and_held_out_batches_are_the_same_for_every_seed(task):
  config = lm_config(task.name)
  data = task.load_data(config)
  first = list(task.logging_batches(config, data))
  config.seed = 5
  again = list(task.logging_batches(config, data))
  assert len(first) == 2
  for a, b in zip(first, again):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  held = list(task.held_out_batches(config, data))
  assert len(held) == 2 and all('mask' in b for b in held)


def test_gpt_logging_windows_are_evenly_spread():
  config = lm_config(logging_max_batches=3)
  data = GPT.load_data(config)
  batches = list(GPT.logging_batches(config, data))
  starts = np.floor(np.linspace(0, len(data.train) - 17, 12)).astype(int)
  got = np.concatenate([b['tokens'] for b in batches])
  for row, start in zip(got, starts):
    np.testing.assert_array_equal(row, data.train[start:start + 17])
  assert all(b['mask'].shape == (4, 16) and b['mask'].all() for b in batches)


@hypothesis.settings(max_examples=25, deadline=None)
@hypothesis.given(n=st.integers(2, 60), seq_len=st.integers(1, 9),
                  batch=st.integers(1, 5))
def test_gpt_held_out_tiles_count_every_target_once(n, seq_len, batch):
  """The tiles predict tokens 1 .. n-1 of the validation split, each once."""
  hypothesis.assume(n >= seq_len + 1)
  tokens = np.arange(n, dtype=np.uint16)
  seen = []
  for starts in text.tile_starts(n, seq_len + 1, seq_len, batch):
    b = text.gpt_batch(tokens, starts, seq_len, batch)
    assert b['tokens'].shape == (batch, seq_len + 1)
    seen += list(b['tokens'][:, 1:][b['mask'] > 0])
  assert sorted(seen) == list(range(1, n))


def test_val_max_batches_spreads_the_tiles():
  starts = text.tile_starts(1000, 11, 10, 4, max_batches=2)
  flat = np.concatenate(starts)
  assert len(starts) == 2 and len(flat) == 8
  assert flat[0] == 0 and flat[-1] == 990 and np.all(np.diff(flat) > 0)


# --- BERT examples ------------------------------------------------------------


def _bert(rows=2000, seq_len=24, vocab=50, seed=0):
  tokens = np.arange(5000) % vocab
  rng = np.random.default_rng(seed)
  starts = rng.integers(0, len(tokens) - seq_len, rows)
  return text.bert_batch(tokens, starts, seq_len, vocab,
                         np.random.default_rng(seed + 1)), tokens, starts


def test_bert_examples_restore_the_window():
  """[CLS] first [SEP] second [SEP]; with the targets put back, the
  content is the window (or its two segments swapped)."""
  b, tokens, starts = _bert(rows=300)
  vocab, n = 50, 21
  cls, sep = vocab, vocab + 1
  for i, start in enumerate(starts):
    ids = b['tokens'][i].copy()
    ids[b['positions'][i]] = b['targets'][i]
    window = tokens[start:start + n]
    assert ids[0] == cls and ids[-1] == sep
    (seps,) = np.nonzero(ids == sep)
    assert len(seps) == 2
    first, second = ids[1:seps[0]], ids[seps[0] + 1:-1]
    assert len(first) and len(second)
    joined = (np.concatenate([second, first]) if b['order'][i]
              else np.concatenate([first, second]))
    np.testing.assert_array_equal(joined, window)
    expected_segments = np.r_[np.zeros(seps[0] + 1), np.ones(n + 3 -
                                                             seps[0] - 1)]
    np.testing.assert_array_equal(b['segments'][i], expected_segments)


def test_bert_masking_rates():
  b, _, _ = _bert()
  vocab, k = 50, round(0.15 * 21)
  assert b['positions'].shape == (2000, k) == b['targets'].shape
  # Exactly k distinct content positions per example, never a special one.
  assert all(len(set(p)) == k for p in b['positions'])
  assert np.all(b['targets'] < vocab)
  placed = np.take_along_axis(b['tokens'], b['positions'], 1)
  masked = np.mean(placed == vocab + 2)
  kept = np.mean(placed == b['targets'])
  assert abs(masked - 0.8) < 0.02
  # Kept: 10 %, plus the random replacements that drew the same token.
  assert abs(kept - (0.1 + 0.1 / vocab)) < 0.015
  assert abs(np.mean(b['order']) - 0.5) < 0.04
  # Outside the chosen positions nothing is masked.
  rest = b['tokens'].copy()
  np.put_along_axis(rest, b['positions'], 0, 1)
  assert not np.any(rest == vocab + 2)


def test_bert_eval_batches_are_padded_with_mask_0():
  tokens = np.arange(200) % 50
  b = text.bert_batch(tokens, np.array([0, 30, 60]), 24, 50,
                      np.random.default_rng(0), batch_size=5)
  np.testing.assert_array_equal(b['mask'], [1, 1, 1, 0, 0])
  assert all(v.shape[0] == 5 for v in b.values())
