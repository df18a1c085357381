"""lionx-sample: decoding with the KV cache, sampling, the command line."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lionx.train import config as config_lib
from lionx.train import experiment, sample, steps, tasks
from lionx.train import workdir as workdir_lib
from lionx.train.checkpoint import Checkpointer
from lionx.train.models import lm
from tests.train.helpers import ROOT, tiny_config
from tests.train.test_text_data import lm_config, write_tokens

GPT = tasks.get_task('language_model')
VOCAB = 256


def _model(param_dtype='float32', vocab=VOCAB, seed=0, scale=30.0):
  """A random 2-block GPT (context 32) whose logits depend on the context:
  the parameters are the initialisation times ``scale``, so that greedy
  decoding does not repeat one token."""
  config = lm.GPTModelConfig(name='gpt', num_layers=2, width=32, num_heads=4,
                             context_length=32, param_dtype=param_dtype)
  model = lm.create_model(config, vocab, seed=seed)
  params = nnx.state(model, nnx.Param)
  nnx.update(model, jax.tree.map(
      lambda x: (x.astype(jnp.float32) * scale).astype(x.dtype), params))
  return model


def _greedy_by_full_forward(model, prompt, n):
  """Greedy decoding as nanoGPT's generate: the whole context each token.

  The context is padded to the model's full length, so that one
  compilation serves every length: the causal model's logits at a
  position see the tokens up to it only.
  """
  forward = jax.jit(lambda m, t: m(t))
  tokens = list(prompt)
  for _ in range(n):
    padded = np.zeros((1, model.context_length), np.int32)
    padded[0, :len(tokens)] = tokens
    logits = forward(model, jnp.asarray(padded))
    tokens.append(int(jnp.argmax(logits[0, len(tokens) - 1])))
  return np.array(tokens[len(prompt):])


# --- the cache ----------------------------------------------------------------


@pytest.mark.parametrize('param_dtype', [
    'float32', pytest.param('bfloat16', marks=pytest.mark.slow)])
def test_greedy_with_the_cache_equals_greedy_without_it(param_dtype):
  model = _model(param_dtype)
  assert jax.tree.leaves(nnx.state(model, nnx.Param))[0].dtype == (
      jnp.dtype(param_dtype))
  prompt = [3, 141, 59, 26, 5]
  n = 32 - len(prompt)  # up to the end of the context
  cached = sample.sample(model, prompt, max_new_tokens=n, temperature=0)
  uncached = sample.sample(model, prompt, max_new_tokens=n, temperature=0,
                           use_cache=False)
  reference = _greedy_by_full_forward(model, prompt, n)
  assert cached.shape == (n,) and cached.dtype == np.int32
  np.testing.assert_array_equal(cached, reference)
  np.testing.assert_array_equal(uncached, reference)
  assert len(set(reference.tolist())) > 5  # not one token repeated


@pytest.mark.parametrize('param_dtype', [
    'float32', pytest.param('bfloat16', marks=pytest.mark.slow)])
def test_cached_logits_equal_the_full_forward_pass(param_dtype):
  model = _model(param_dtype, seed=1)
  tokens = jax.random.randint(jax.random.key(0), (2, 32), 0, VOCAB)
  full = np.asarray(model(tokens))
  # A prompt of 7 tokens at once, then 3, then one at a time.
  cache = model.init_cache(batch=2, max_len=32)
  assert len(cache) == 2 and cache[0].keys.shape == (2, 32, 4, 8)
  assert cache[0].keys.dtype == jnp.float32
  decode = jax.jit(lambda m, t, c, p: m.decode(t, c, p))
  chunks, position = [], 0
  for size in [7, 3] + [1] * 22:
    logits, cache = decode(model, tokens[:, position:position + size], cache,
                           position)
    chunks.append(np.asarray(logits))
    position += size
  decoded = np.concatenate(chunks, axis=1)
  assert decoded.shape == full.shape == (2, 32, VOCAB)
  assert decoded.dtype == np.float32
  scale = np.max(np.abs(full))
  assert scale > 1.0
  np.testing.assert_allclose(decoded, full, rtol=0, atol=1e-5 * scale)


def test_the_cache_is_refused_beyond_the_context():
  model = _model()
  with pytest.raises(ValueError, match=r'max_len=33: expected 1 to the '
                     r'context length 32 \(model.context_length\)'):
    model.init_cache(batch=1, max_len=33)


@pytest.mark.slow
def test_a_batch_of_prompts_decodes_each_as_alone():
  model = _model(seed=2)
  prompts = np.array([[1, 2, 3], [200, 100, 7]])
  both = sample.sample(model, prompts, max_new_tokens=6, temperature=0)
  assert both.shape == (2, 6)
  for row, prompt in zip(both, prompts):
    np.testing.assert_array_equal(
        row, _greedy_by_full_forward(model, prompt.tolist(), 6))


# --- sampling -----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize('temperature', [0.3, 1.0, 10.0])
def test_top_k_1_is_greedy_at_any_temperature(temperature):
  model = _model(seed=3)
  prompt = [10, 20, 30]
  greedy = sample.sample(model, prompt, max_new_tokens=12, temperature=0)
  top1 = sample.sample(model, prompt, max_new_tokens=12,
                       temperature=temperature, top_k=1, seed=5)
  np.testing.assert_array_equal(top1, greedy)


@pytest.mark.slow
def test_a_seed_fixes_the_sample_and_another_changes_it():
  model = _model(seed=4, scale=1.0)  # near-uniform: 256 choices a token
  kwargs = dict(max_new_tokens=28, temperature=2.0)
  a = sample.sample(model, [65], seed=0, **kwargs)
  again = sample.sample(model, [65], seed=0, **kwargs)
  other = sample.sample(model, [65], seed=1, **kwargs)
  np.testing.assert_array_equal(a, again)
  assert np.sum(a != other) > 14
  assert len(set(a.tolist())) > 14  # drawn, not greedy
  # Token t draws with fold_in(key(seed), t) in both paths.
  np.testing.assert_array_equal(
      sample.sample(model, [65], seed=0, use_cache=False, **kwargs), a)


def test_top_k_draws_among_the_k_most_likely_tokens():
  model = _model(seed=5, scale=3.0)
  prompt, k = [7, 8], 3
  new = sample.sample(model, prompt, max_new_tokens=20, temperature=5.0,
                      top_k=k, seed=2)
  tokens = np.array(prompt + new.tolist())
  logits = np.asarray(model(jnp.asarray(tokens[None, :-1])))[0]
  ranks = [int(np.sum(logits[len(prompt) - 1 + t] > logits[
      len(prompt) - 1 + t, token])) for t, token in enumerate(new)]
  assert max(ranks) < k
  assert len(set(ranks)) > 1  # not only the most likely


@pytest.mark.parametrize('changes, error, match', [
    (dict(max_new_tokens=0), ValueError,
     r'max_new_tokens=0 is outside \[1, inf\)'),
    (dict(max_new_tokens=2.0), TypeError, r'max_new_tokens=2.0: expected '
     'an int'),
    (dict(temperature=-0.5), ValueError,
     r'temperature=-0.5 is outside \[0.0, inf\)'),
    (dict(top_k=0), ValueError, r'top_k=0 is outside \[1, 256\]'),
    (dict(top_k=257), ValueError, r'top_k=257 is outside \[1, 256\]'),
    (dict(seed=-1), ValueError, r'seed=-1 is outside \[0, inf\)'),
    (dict(seed=2 ** 32), ValueError, r'seed=4294967296: expected a seed '
     r'below 2\*\*32'),
    (dict(prompt_ids=[1, 256]), ValueError, r'prompt_ids holds 256 at index '
     r"1: expected token ids 0 to 255 \(the model's vocabulary of 256\)"),
    (dict(prompt_ids=[-1]), ValueError, r'prompt_ids holds -1 at index 0'),
    (dict(prompt_ids=[]), ValueError, 'prompt_ids is empty'),
    (dict(prompt_ids=[0.5]), TypeError, r'prompt_ids of shape \(1,\) and '
     'dtype float64: expected token ids'),
    (dict(prompt_ids=[1, 2], max_new_tokens=31), ValueError,
     r'max_new_tokens=31 after a prompt of 2 token\(s\) needs 33 positions, '
     r"more than the model's context length 32 \(model.context_length\); "
     r'the window does not slide: expected max_new_tokens <= 30'),
])
def test_bad_arguments_are_refused_by_name(changes, error, match):
  kwargs = dict(prompt_ids=[1, 2], max_new_tokens=3, temperature=1.0,
                top_k=None, seed=0)
  kwargs.update(changes)
  with pytest.raises(error, match=match):
    sample.sample(_model(), kwargs.pop('prompt_ids'), **kwargs)


def test_a_bert_is_refused():
  bert = lm.create_model(lm.BertModelConfig(), 259)
  with pytest.raises(TypeError, match=r'model=Bert: expected a '
                     r'lionx.train.models.lm.GPT'):
    sample.sample(bert, [1], max_new_tokens=1)


# --- the command line ---------------------------------------------------------


def _run(capsys, *argv):
  code = sample.main(list(argv))
  out, err = capsys.readouterr()
  return code, out, err


def _error(capsys, *argv):
  code, out, err = _run(capsys, *argv)
  lines = err.strip().splitlines()
  assert code == 2 and out == '' and len(lines) == 1, (code, out, err)
  assert lines[0].startswith('lionx-sample: error: ')
  return lines[0]


def _final_model(config, workdir):
  """The run's model restored by the training loop's own full restore."""
  state = steps.create_train_state(
      config_lib.validate(config), GPT, GPT.input_spec(config),
      config.num_steps, None)
  with Checkpointer(workdir / workdir_lib.CHECKPOINT_DIR) as ckpt:
    ckpt.restore(ckpt.latest_step(), state.model, state.optimizer)
  return state.model


@pytest.mark.slow
def test_the_command_line_samples_an_lm_default_run(tmp_path, capsys):
  config = config_lib.load_config(ROOT / 'configs/lm_default.py', (
      'num_steps=8', 'eval_every_steps=4', 'schedule.warmup_steps=2',
      'logging_max_batches=1', 'data.val_max_batches=1', 'progress=false',
      'tensorboard=false', 'checkpoint_every_evals=1'))
  workdir = tmp_path / 'run'
  result = experiment.train_and_evaluate(config, workdir, verbose=False)
  assert result.status == 'finished'
  model = _final_model(config, workdir)
  loaded, _, step = sample.load_model(workdir)
  assert step == 8
  for a, b in zip(jax.tree.leaves(nnx.state(model)),
                  jax.tree.leaves(nnx.state(loaded))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

  prompt = 'def main():\n    '
  code, out, err = _run(capsys, '--workdir', str(workdir), '--prompt', prompt,
                        '--max-new-tokens', '20', '--temperature', '0')
  assert code == 0, err
  new = _greedy_by_full_forward(model, list(prompt.encode()), 20)
  expected = (prompt.encode() + bytes(new.tolist())).decode(
      errors='replace')
  assert out == expected + '\n'
  assert 'checkpoint of step 8 (gpt_tiny, text_bytes)' in err
  # A sample at a temperature: the seed fixes it, as sample() does.
  args = ('--workdir', str(workdir), '--prompt', 'import ',
          '--max-new-tokens', '30', '--temperature', '1.5', '--top-k', '50')
  first = _run(capsys, *args, '--seed', '3')[1]
  assert first == _run(capsys, *args, '--seed', '3')[1]
  drawn = sample.sample(model, list(b'import '), max_new_tokens=30,
                        temperature=1.5, top_k=50, seed=3)
  assert first == (b'import ' + bytes(drawn.tolist())).decode(
      errors='replace') + '\n'
  # --step: the earlier checkpoint gives another model.
  assert sample.load_model(workdir, 4)[2] == 4

  run = ('--workdir', str(workdir))
  n = ('--max-new-tokens', '3')
  assert _error(capsys, *run, '--prompt', 'x' * 60, '--max-new-tokens',
                '5') == (
      "lionx-sample: error: --max-new-tokens=5 after a prompt of 60 "
      "token(s) needs 65 positions, more than the model's context length "
      '64 (model.context_length); the window does not slide: expected '
      '--max-new-tokens <= 4, or a shorter prompt.')
  assert 'error: --max-new-tokens=0 is outside [1, inf)' in _error(
      capsys, *run, '--prompt', 'a', '--max-new-tokens', '0')
  assert 'error: --temperature=-1.0 is outside [0.0, inf)' in _error(
      capsys, *run, '--prompt', 'a', *n, '--temperature', '-1')
  assert 'error: --top-k=0 is outside [1, 256]' in _error(
      capsys, *run, '--prompt', 'a', *n, '--top-k', '0')
  assert 'error: --seed=-2 is outside [0, inf)' in _error(
      capsys, *run, '--prompt', 'a', *n, '--seed', '-2')
  assert 'error: --prompt-ids holds 300 at index 1: expected token ids 0 ' \
      'to 255' in _error(capsys, *run, '--prompt-ids', '1,300', *n)
  assert "error: --prompt-ids '1,a': expected comma-separated token ids" in (
      _error(capsys, *run, '--prompt-ids', '1,a', *n))
  assert 'error: --prompt is empty' in _error(capsys, *run, '--prompt', '',
                                              *n)
  assert _error(capsys, *run, '--prompt', 'a', *n, '--step', '5').endswith(
      'error: --step 5: ' + str(workdir.resolve() / 'checkpoints')
      + ' has no checkpoint of that step; it has step(s) 4, 8.')


def _fake_run(path, config, checkpoint_step=None):
  """A workdir as lionx-train leaves it: config.json and a checkpoint of
  the initial state at ``checkpoint_step`` (no training: fast)."""
  config = config_lib.validate(config)
  workdir_lib.make(path)
  workdir_lib.start(path, 'run', config_lib.run_identity(config), {})
  if checkpoint_step is None:
    return None
  task = tasks.get_task(config.task)
  state = steps.create_train_state(config, task, task.input_spec(config),
                                   config.num_steps, None)
  with Checkpointer(path / workdir_lib.CHECKPOINT_DIR) as ckpt:
    ckpt.save(checkpoint_step, state.model, state.optimizer, {'seed': 0})
  return state.model


def test_the_command_line_samples_token_ids(tmp_path, capsys):
  data = write_tokens(tmp_path / 'tokens', np.arange(400) % 50)
  config = lm_config(data__name='token_files', data__data_dir=str(data),
                     data__vocab_size=50, model__param_dtype='bfloat16',
                     seed=7)
  model = _fake_run(tmp_path / 'run', config, checkpoint_step=3)
  run = ('--workdir', str(tmp_path / 'run'))
  code, out, err = _run(capsys, *run, '--prompt-ids', '4,9,16',
                        '--max-new-tokens', '10', '--temperature', '0')
  assert code == 0, err
  new = _greedy_by_full_forward(model, [4, 9, 16], 10)
  assert out == ','.join(map(str, [4, 9, 16] + new.tolist())) + '\n'
  loaded = sample.load_model(tmp_path / 'run')[0]
  assert jax.tree.leaves(nnx.state(loaded))[0].dtype == jnp.bfloat16
  n = ('--max-new-tokens', '3')
  assert _error(capsys, *run, '--prompt', 'hello', *n) == (
      "lionx-sample: error: --prompt is text, but the run's data.name="
      "'token_files' holds token ids (no tokenizer here); pass --prompt-ids "
      'ID,ID,... instead.')
  assert 'error: --prompt-ids holds 50 at index 0: expected token ids 0 to ' \
      "49 (the model's vocabulary of 50)" in _error(
          capsys, *run, '--prompt-ids', '50', *n)
  assert 'error: --top-k=51 is outside [1, 50]' in _error(
      capsys, *run, '--prompt-ids', '1', *n, '--top-k', '51')


def test_the_command_line_refuses_what_it_cannot_sample(tmp_path, capsys):
  n = ('--prompt', 'a', '--max-new-tokens', '3')
  missing = tmp_path / 'missing'
  assert _error(capsys, '--workdir', str(missing), *n) == (
      f'lionx-sample: error: --workdir {missing}: no such directory.')
  empty = tmp_path / 'empty'
  empty.mkdir()
  assert _error(capsys, '--workdir', str(empty), *n) == (
      f'lionx-sample: error: --workdir {empty} holds no run (no config.json);'
      ' expected the workdir of a lionx-train run.')
  # A run that has not written its first checkpoint.
  fresh = tmp_path / 'fresh'
  _fake_run(fresh, lm_config())
  folder = fresh / 'checkpoints'
  assert _error(capsys, '--workdir', str(fresh), *n) == (
      f'lionx-sample: error: --workdir {fresh} has no checkpoint ({folder} '
      'is missing or empty): train the run first, or wait for its first '
      'checkpoint.')
  assert not (fresh / 'checkpoints').exists()  # nothing created
  # BERT (masked LM) and classification runs.
  bert = tmp_path / 'bert'
  _fake_run(bert, lm_config('masked_lm'))
  assert _error(capsys, '--workdir', str(bert), *n) == (
      f"lionx-sample: error: --workdir {bert} is a run of task='masked_lm' "
      "with model.name='bert_tiny'; lionx-sample generates from GPT "
      "language-model runs (task='language_model', e.g. "
      'configs/lm_default.py).')
  images = tmp_path / 'images'
  _fake_run(images, tiny_config())
  assert "is a run of task='classification' with model.name='cnn'" in (
      _error(capsys, '--workdir', str(images), *n))
  # A comparison's folder: one of its runs is named.
  (tmp_path / 'cmp').mkdir()
  (tmp_path / 'cmp' / workdir_lib.COMPARISON_FILE).write_text('{}')
  _fake_run(tmp_path / 'cmp' / 'lion', lm_config())
  assert _error(capsys, '--workdir', str(tmp_path / 'cmp'), *n) == (
      f'lionx-sample: error: --workdir {tmp_path / "cmp"} holds a '
      'comparison, not a single run; pass the workdir of one of its runs, '
      f'e.g. {tmp_path / "cmp" / "lion"}.')
  # A config.json that is not a run's.
  odd = tmp_path / 'odd'
  odd.mkdir()
  (odd / 'config.json').write_text(json.dumps({'config': {'task': 1}}))
  assert 'odd/config.json: unreadable' in _error(capsys, '--workdir',
                                                 str(odd), *n)


def test_argparse_errors_exit_2(capsys):
  with pytest.raises(SystemExit) as exit_info:
    sample.main(['--workdir', 'w', '--prompt', 'a', '--prompt-ids', '1',
                 '--max-new-tokens', '2'])
  assert exit_info.value.code == 2
  assert 'not allowed with argument' in capsys.readouterr().err
