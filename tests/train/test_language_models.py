"""GPT-2 and BERT: sizes, the forward pass, the losses, training, resume."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from experiments import _lm
from lionx.train import cli
from lionx.train import config as config_lib
from lionx.train import experiment, plots, steps, tasks
from lionx.train import workdir as workdir_lib
from lionx.train.checkpoint import Checkpointer
from lionx.train.models import lm
from tests.train.helpers import ROOT
from tests.train.test_text_data import lm_config, write_tokens

GPT = tasks.get_task('language_model')
BERT = tasks.get_task('masked_lm')


def _count(config, vocab):
  model = nnx.eval_shape(lambda: lm.create_model(config, vocab))
  return sum(math.prod(x.shape) for x in jax.tree.leaves(
      nnx.state(model, nnx.Param)))


def _block(w, mlp):
  """One pre-LN block, layer by layer."""
  ln1 = ln2 = 2 * w
  qkv = w * 3 * w + 3 * w
  attn_out = w * w + w
  fc = w * mlp + mlp
  proj = mlp * w + w
  return ln1 + qkv + attn_out + ln2 + fc + proj


def _gpt(vocab, layers, w, context):
  # Token and position embeddings, blocks, the final LayerNorm; the output
  # layer is the token embedding (tied), so it adds nothing.
  return vocab * w + context * w + layers * _block(w, 4 * w) + 2 * w


def _bert(vocab, layers, w, context, mlp=None):
  mlp = 4 * w if mlp is None else mlp
  embeddings = vocab * w + context * w + 2 * w + 2 * w  # + segments + LN
  mlm_head = (w * w + w) + 2 * w + vocab  # dense, LN, output bias (tied)
  order_head = (w * w + w) + (w * 2 + 2)  # pooler, 2-way classifier
  return (embeddings + layers * _block(w, mlp) + 2 * w + mlm_head
          + order_head)


def test_gpt2_sizes_match_the_layer_by_layer_count():
  small = _count(lm.GPTModelConfig(name='gpt2_small'), 50257)
  medium = _count(lm.GPTModelConfig(name='gpt2_medium'), 50257)
  assert small == _gpt(50257, 12, 768, 1024) == 124_439_808
  assert medium == _gpt(50257, 24, 1024, 1024) == 354_823_168


def test_bert_sizes_match_the_layer_by_layer_count():
  base = _count(lm.BertModelConfig(name='bert_base'), 30522)
  small = _count(lm.BertModelConfig(name='bert_small'), 30522)
  assert base == _bert(30522, 12, 768, 512)
  # Hugging Face's BertForPreTraining (post-LN) has 110,106,428; the
  # pre-LN layout adds one final LayerNorm.
  assert base == 110_106_428 + 2 * 768
  assert small == _bert(30522, 4, 512, 512, mlp=2048)
  config = lm.BertModelConfig(name='bert', num_layers=3, width=48,
                              num_heads=4, mlp_dim=100, context_length=40)
  assert _count(config, 259) == _bert(259, 3, 48, 40, mlp=100)


def test_gpt2_small_leaf_shapes():
  model = nnx.eval_shape(
      lambda: lm.create_model(lm.GPTModelConfig(name='gpt2_small'), 50257))
  shapes = [x.shape for x in jax.tree.leaves(nnx.state(model, nnx.Param))]
  # The embedding appears once: the output layer is tied to it.
  assert shapes.count((50257, 768)) == 1
  assert shapes.count((768, 2304)) == 12 and shapes.count((3072, 768)) == 12
  assert shapes.count((1024, 768)) == 1
  params = jax.tree.leaves(nnx.state(model, nnx.Param))
  assert {x.dtype for x in params} == {np.dtype('float32')}


# --- an independent NumPy reference of the forward passes ---------------------


def _np_params(module):
  return jax.tree.map(lambda x: np.asarray(x, np.float64),
                      nnx.to_pure_dict(nnx.state(module, nnx.Param)))


def _ln(x, p, eps):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * p['scale'] + p['bias']


def _gelu(x):  # GPT-2's tanh approximation
  return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def _attention(x, p, heads, causal):
  t, w = x.shape
  qkv = x @ p['qkv']['kernel'] + p['qkv']['bias']
  q, k, v = np.split(qkv, 3, -1)
  out = np.zeros_like(x)
  hd = w // heads
  for h in range(heads):
    s = slice(h * hd, (h + 1) * hd)
    scores = q[:, s] @ k[:, s].T / np.sqrt(hd)
    if causal:
      scores = np.where(np.tril(np.ones((t, t))) > 0, scores, -np.inf)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    out[:, s] = weights @ v[:, s]
  return out @ p['out']['kernel'] + p['out']['bias']


def _blocks(x, params, heads, causal, eps):
  for p in params['blocks'].values():
    x = x + _attention(_ln(x, p['ln1'], eps), p['attn'], heads, causal)
    y = _gelu(_ln(x, p['ln2'], eps) @ p['fc']['kernel'] + p['fc']['bias'])
    x = x + y @ p['proj']['kernel'] + p['proj']['bias']
  return x


def _tiny(cls, name, vocab=40, remat=False):
  config = cls(name=name, num_layers=2, width=16, num_heads=4,
               context_length=12, remat=remat)
  return lm.create_model(config, vocab, seed=3)


def _perturbed(model):
  """The model with random LayerNorm parameters and biases (which start
  at 1 and 0), so that the reference checks their use too."""
  state = nnx.state(model, nnx.Param)
  leaves, treedef = jax.tree.flatten(state)
  rng = np.random.default_rng(7)
  leaves = [np.asarray(x) + np.float32(0.1) * rng.standard_normal(
      x.shape, np.float32) for x in leaves]
  nnx.update(model, treedef.unflatten(leaves))
  return model


@pytest.mark.slow
@pytest.mark.parametrize('remat', [False, True])
def test_gpt_forward_matches_a_numpy_reference(remat):
  model = _perturbed(_tiny(lm.GPTModelConfig, 'gpt', remat=remat))
  tokens = np.array([[1, 5, 39, 0, 2, 2, 9, 11, 30, 4]])
  p = _np_params(model)
  wte = p['wte']['embedding']
  x = wte[tokens[0]] + p['wpe']['embedding'][:10]
  x = _ln(_blocks(x, p, 4, True, 1e-5), p['ln_f'], 1e-5)
  expected = x @ wte.T  # tied output layer
  np.testing.assert_allclose(np.asarray(model(jnp.asarray(tokens)))[0],
                             expected, rtol=2e-4, atol=2e-4)


@pytest.mark.slow
@pytest.mark.parametrize('remat', [False, True])
def test_bert_forward_matches_a_numpy_reference(remat):
  model = _perturbed(_tiny(lm.BertModelConfig, 'bert', remat=remat))
  tokens = np.array([[37, 5, 36, 38, 2, 39, 9, 11, 38]])
  segments = np.array([[0, 0, 0, 0, 1, 1, 1, 1, 1]])
  positions = np.array([[2, 7]])
  p = _np_params(model)
  wte = p['wte']['embedding']
  x = (wte[tokens[0]] + p['wpe']['embedding'][:9]
       + p['segment']['embedding'][segments[0]])
  x = _ln(x, p['ln_embed'], 1e-12)
  x = _ln(_blocks(x, p, 4, False, 1e-12), p['ln_f'], 1e-12)
  h = _gelu(x[[2, 7]] @ p['mlm_dense']['kernel'] + p['mlm_dense']['bias'])
  mlm = _ln(h, p['mlm_ln'], 1e-12) @ wte.T + p['mlm_bias']
  pooled = np.tanh(x[0] @ p['pooler']['kernel'] + p['pooler']['bias'])
  order = pooled @ p['order']['kernel'] + p['order']['bias']
  got_mlm, got_order = model(jnp.asarray(tokens), jnp.asarray(segments),
                             jnp.asarray(positions))
  np.testing.assert_allclose(np.asarray(got_mlm)[0], mlm, rtol=2e-4,
                             atol=2e-4)
  np.testing.assert_allclose(np.asarray(got_order)[0], order, rtol=2e-4,
                             atol=2e-4)


@pytest.mark.slow
def test_gpt_is_causal_and_bert_is_not():
  gpt = _tiny(lm.GPTModelConfig, 'gpt')
  bert = _tiny(lm.BertModelConfig, 'bert')
  a = jnp.array([[1, 2, 3, 4, 5, 6]])
  b = a.at[0, 4].set(20)
  ga, gb = gpt(a), gpt(b)
  np.testing.assert_array_equal(ga[0, :4], gb[0, :4])
  assert not np.allclose(ga[0, 4:], gb[0, 4:])
  seg, pos = jnp.zeros_like(a), jnp.array([[1]])
  assert not np.allclose(bert(a, seg, pos)[0], bert(b, seg, pos)[0])


# --- the losses ---------------------------------------------------------------


def _log_softmax(logits):
  logits = np.asarray(logits, np.float64)
  m = logits.max(-1, keepdims=True)
  return logits - m - np.log(np.exp(logits - m).sum(-1, keepdims=True))


@pytest.mark.slow
def test_gpt_loss_is_the_mean_next_token_cross_entropy():
  config = lm_config()
  data = GPT.load_data(config)
  model = GPT.create_model(config, GPT.data_spec(data), 0)
  batch = next(GPT.held_out_batches(config, data))
  batch['mask'][1, 5:] = 0  # as a partial window would be
  out = GPT.loss(model, batch)
  tokens = batch['tokens']
  logp = _log_softmax(model(jnp.asarray(tokens[:, :-1])))
  nll = -np.take_along_axis(logp, tokens[:, 1:, None], -1)[..., 0]
  mask = batch['mask']
  assert float(out.weight) == mask.sum() == 4 * 16 - 11
  assert float(out.loss) == pytest.approx((nll * mask).sum() / mask.sum(),
                                          rel=1e-5)
  val = GPT.evaluate(model, batch)['val_loss']
  assert float(val[0]) == pytest.approx((nll * mask).sum(), rel=1e-5)
  # An untrained byte model is near the uniform log(256).
  assert abs(float(out.loss) - math.log(256)) < 0.1


@pytest.mark.slow
def test_bert_loss_is_mlm_mean_plus_order_per_example():
  config = lm_config('masked_lm')
  data = BERT.load_data(config)
  model = BERT.create_model(config, BERT.data_spec(data), 0)
  batch = next(BERT.held_out_batches(config, data))
  batch['mask'][3] = 0
  mlm, order = model(batch['tokens'], batch['segments'], batch['positions'])
  mlm_nll = -np.take_along_axis(_log_softmax(mlm), batch['targets'][..., None],
                                -1)[..., 0]
  order_nll = -np.take_along_axis(_log_softmax(order),
                                  batch['order'][:, None], -1)[:, 0]
  per_example = mlm_nll.mean(-1) + order_nll
  mask = batch['mask']
  out = BERT.loss(model, batch)
  assert float(out.weight) == 3
  assert float(out.loss) == pytest.approx(
      (per_example * mask).sum() / 3, rel=1e-5)
  metrics = BERT.evaluate(model, batch)
  assert float(metrics['val_mlm_loss'][0]) == pytest.approx(
      (mlm_nll.mean(-1) * mask).sum(), rel=1e-5)
  hits = (np.argmax(np.asarray(order), -1) == batch['order']) * mask
  assert float(metrics['val_sop_accuracy'][0]) == hits.sum()


# --- training through the loop ------------------------------------------------


REQUIRED = ('step', 'lr', 'train_loss', 'full_loss', 'val_loss', 'grad_l1',
            'grad_l2', 'grad_norm_ratio', 'sqrt_d', 'box_linf_scaled',
            'kkt_residual', 'constraint', 'wall_time')


def _final(config, task, workdir, data):
  state = steps.create_train_state(config, task, task.data_spec(data),
                                   config.num_steps, None)
  with Checkpointer(workdir / workdir_lib.CHECKPOINT_DIR) as ckpt:
    ckpt.restore(ckpt.latest_step(), state.model, state.optimizer)
  return state


@pytest.mark.slow
def test_gpt_run_logs_the_common_schema_and_exact_f(tmp_path, monkeypatch):
  config = lm_config(optimizer__name='lion_lp')
  config.optimizer.lion_lp.p = 2.0
  data = GPT.load_data(config)
  result = experiment.train_and_evaluate(config, tmp_path, data=data,
                                         verbose=False)
  assert result.status == 'finished'
  rows = workdir_lib.read_metrics(tmp_path)
  assert [r['step'] for r in rows] == [2, 4, 6]
  for row in rows:
    assert set(REQUIRED) <= set(row) and 'epoch' not in row
    assert all(math.isfinite(row[k]) for k in REQUIRED if k != 'step')
  # f(θ): the mean over every token of the logging windows, by hand.
  state = _final(config, GPT, tmp_path, data)
  total = count = 0.0
  for batch in GPT.logging_batches(config, data):
    out = GPT.loss(state.model, batch)
    total += float(out.loss) * float(out.weight)
    count += float(out.weight)
  assert count == 2 * 4 * 16
  assert rows[-1]['full_loss'] == pytest.approx(total / count, rel=1e-5)
  params = [np.asarray(x, np.float64) for x in jax.tree.leaves(
      nnx.state(state.model, nnx.Param))]
  d = sum(x.size for x in params)
  assert rows[-1]['sqrt_d'] == pytest.approx(math.sqrt(d))
  # Lion-l2's constraint: ||lambda theta||_q over all of theta, q = 2.
  norm = math.sqrt(sum(np.sum((0.1 * x) ** 2) for x in params))
  assert rows[-1]['constraint'] == pytest.approx(norm, rel=1e-5)
  stored = json.loads((tmp_path / 'config.json').read_text())
  assert stored['provenance'][0]['data']['data'] == 'text_bytes'
  assert (tmp_path / 'figure1.png').exists()
  # The experiments' runner reports a finished run again, untrained, and
  # refuses a workdir of another config without overwrite.
  monkeypatch.setattr(steps, 'create_train_state', None)
  again = _lm.train(config, tmp_path, overwrite=False, data=data)
  assert again.status == 'finished' and again.rows == rows
  other = config_lib.copy(config)
  other.seed = 1
  with pytest.raises(config_lib.ConfigError, match='--overwrite'):
    _lm.train(other, tmp_path, overwrite=False, data=data)


def _leaves(state):
  return (jax.tree.leaves(nnx.state(state.model))
          + jax.tree.leaves(nnx.state(state.optimizer)))


@pytest.mark.slow
@pytest.mark.parametrize('task', ['language_model', 'masked_lm'])
def test_resume_is_bit_identical(task, tmp_path, monkeypatch):
  monkeypatch.setattr(plots, 'write_figures', lambda *args, **kwargs: [])
  optimizer = 'lion_lp' if task == 'language_model' else 'adamw'
  config = lm_config(task, checkpoint_every_evals=1,
                     optimizer__name=optimizer)
  config.optimizer.lion_lp.p = 2.0
  the_task = tasks.get_task(task)
  data = the_task.load_data(config)
  straight = experiment.train_and_evaluate(config, tmp_path / 'a',
                                           data=data, verbose=False)
  first = config_lib.copy(config)
  first.max_evals_this_run = 1
  out = experiment.train_and_evaluate(first, tmp_path / 'b', data=data,
                                      verbose=False)
  assert out.status == 'interrupted'
  if task == 'language_model':
    # Killed hard inside the third interval, after the second checkpoint.
    real = type(the_task).train_batch

    def dies(self, config, data, step):
      if step == 5:
        raise KeyboardInterrupt('killed')
      return real(self, config, data, step)
    monkeypatch.setattr(type(the_task), 'train_batch', dies)
    with pytest.raises(KeyboardInterrupt):
      experiment.train_and_evaluate(config, tmp_path / 'b', data=data,
                                    verbose=False)
    monkeypatch.setattr(type(the_task), 'train_batch', real)
  resumed = experiment.train_and_evaluate(config, tmp_path / 'b', data=data,
                                          verbose=False)
  assert resumed.status == 'finished'
  a = _leaves(_final(config, the_task, tmp_path / 'a', data))
  b = _leaves(_final(config, the_task, tmp_path / 'b', data))
  for x, y in zip(a, b, strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  # The optimizer state is part of what was compared, and has moved.
  assert any(np.any(np.asarray(x) != 0) for x in b[-6:])
  assert [r['step'] for r in resumed.rows] == [2, 4, 6]
  for r, s in zip(straight.rows, resumed.rows, strict=True):
    assert {k: v for k, v in r.items() if k != 'wall_time'} == {
        k: v for k, v in s.items() if k != 'wall_time'}


# --- configs and the command line ---------------------------------------------


PAPER = {'gpt2_small.py': ('language_model', 124_439_808, 1024),
         'gpt2_medium.py': ('language_model', 354_823_168, 1024),
         'bert_small.py': ('masked_lm', _bert(50260, 4, 512, 512, 2048), 512),
         'bert_base.py': ('masked_lm', _bert(50260, 12, 768, 512), 512)}


@pytest.mark.parametrize('name', sorted(PAPER))
def test_paper_configs_carry_the_paper_settings(name):
  config = config_lib.load_config(ROOT / 'configs' / name)
  task, _, seq_len = PAPER[name]
  assert config.task == task and config.data.name == 'token_files'
  assert (config.num_epochs, config.num_steps) == (0, 50_000)
  assert config.batch_size == 640 and config.logging_max_batches == 100
  assert (config.optimizer.b1, config.optimizer.b2) == (0.9, 0.95)
  assert config.optimizer.learning_rates == {'lion': 1e-5, 'sgd': 1e-4}
  assert config.data.seq_len == seq_len and config.data.vocab_size == 50257


@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(PAPER))
def test_paper_configs_dry_run_on_token_files(name, tmp_path, capsys):
  task, d, seq_len = PAPER[name]
  write_tokens(tmp_path / 'owt', np.arange(3000) % 50257)
  code = cli.train_main([
      '--config', str(ROOT / 'configs' / name), '--workdir',
      str(tmp_path / 'w'), '--dry-run', f'data.data_dir={tmp_path / "owt"}',
      'parallel.num_devices=1'])
  out = capsys.readouterr().out
  assert code == 0, out
  assert f'd = {d:,} parameters' in out
  width = seq_len + 1 if task == 'language_model' else seq_len
  assert f'training batch: tokens (640, {width}) int32' in out
  assert '50000 steps, an evaluation every 2000' in out
  assert not (tmp_path / 'w').exists()


def test_lm_default_dry_run(tmp_path, capsys):
  code = cli.train_main(['--config', str(ROOT / 'configs' / 'lm_default.py'),
                         '--workdir', str(tmp_path / 'w'), '--dry-run'])
  out = capsys.readouterr().out
  assert code == 0
  assert f'd = {_gpt(256, 2, 64, 64):,} parameters' in out
  assert 'training batch: tokens (16, 65) int32' in out
  assert 'held-out batch: tokens (16, 65) int32, mask (16, 64) float32' in out


@pytest.mark.parametrize('case,match', [
    ('vocab', 'is not below the vocab size 50257 (data.vocab_size)'),
    ('missing', 'no train.bin'),
    # A missing folder is named as the folder, not as a missing train.bin.
    ('no folder', "owt' does not exist; expected the folder"),
])
def test_bad_token_files_are_one_line(case, match, tmp_path, capsys):
  tokens = np.arange(3000) % 50257
  if case == 'vocab':
    tokens[2000] = 60000
  if case != 'no folder':
    write_tokens(tmp_path / 'owt', tokens)
  if case == 'missing':
    (tmp_path / 'owt' / 'train.bin').unlink()
  code = cli.train_main([
      '--config', str(ROOT / 'configs' / 'gpt2_small.py'), '--workdir',
      str(tmp_path / 'w'), f'data.data_dir={tmp_path / "owt"}',
      'parallel.num_devices=1'])
  err = capsys.readouterr().err
  assert code == 2
  lines = err.strip().splitlines()
  assert len(lines) == 1 and 'Traceback' not in err
  assert lines[0].startswith('lionx-train: error: ') and match in lines[0]
  assert not (tmp_path / 'w' / 'metrics.jsonl').exists()


# --- issue 25, items 2-3: bf16 compute and rematerialisation ------------------


def _lm_model(**changes):
  from lionx.train.models import lm
  config = lm.GPTModelConfig(**{
      'name': 'gpt', 'num_layers': 2, 'width': 64, 'num_heads': 4,
      'context_length': 64, **changes})
  return lm.create_model(config, 96, seed=0)


def _grad_fn(model):
  def loss(m, tokens):
    logits = m(tokens[:, :-1])
    logp = jax.nn.log_softmax(logits.astype(jnp.float32))
    return -jnp.mean(jnp.take_along_axis(logp, tokens[:, 1:, None], -1))
  return nnx.value_and_grad(loss)


def _temporaries(model, tokens) -> int:
  """XLA's planned temporaries of the jitted loss-and-gradient (bytes)."""
  graphdef, state = nnx.split(model)

  def f(state, tokens):
    model = nnx.merge(graphdef, state)
    return _grad_fn(model)(model, tokens)
  compiled = jax.jit(f).lower(state, tokens).compile()
  return compiled.memory_analysis().temp_size_in_bytes


@pytest.mark.slow
def test_remat_gives_the_same_gradient_and_keeps_less():
  tokens = jax.random.randint(jax.random.key(1), (8, 65), 0, 96)
  for name in ('gpt', 'bert'):
    plain, remat = _lm_model(name=name), _lm_model(name=name, remat=True)
    if name == 'bert':
      segments = jnp.zeros_like(tokens)
      positions = jnp.tile(jnp.arange(0, 64, 8), (8, 1))
      f = nnx.value_and_grad(lambda m: jnp.mean(
          m(tokens[:, :64], segments[:, :64], positions)[0] ** 2))
      (l1, g1), (l2, g2) = f(plain), f(remat)
    else:
      (l1, g1), (l2, g2) = (_grad_fn(plain)(plain, tokens),
                            _grad_fn(remat)(remat, tokens))
    assert float(l1) == pytest.approx(float(l2), rel=1e-6)
    assert jax.tree.structure(g1) == jax.tree.structure(g2)  # one leaf a block
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4,
                                 atol=1e-7)
  # XLA's own accounting: the backward pass keeps each block's input only
  # (4 blocks of 16 x 128 tokens, width 128: activations dominate).
  big = {'num_layers': 4, 'width': 128, 'context_length': 128}
  tokens = jax.random.randint(jax.random.key(2), (16, 129), 0, 96)
  plain = _temporaries(_lm_model(**big), tokens)
  remat = _temporaries(_lm_model(remat=True, **big), tokens)
  assert remat < 0.5 * plain, (remat, plain)


@pytest.mark.slow
def test_bfloat16_compute_keeps_float32_where_it_matters():
  tokens = jax.random.randint(jax.random.key(2), (4, 33), 0, 96)
  full, half = _lm_model(), _lm_model(compute_dtype='bfloat16')
  # The same float32 parameters (same seed), products in bfloat16.
  for a, b in zip(jax.tree.leaves(nnx.state(full, nnx.Param)),
                  jax.tree.leaves(nnx.state(half, nnx.Param))):
    assert a.dtype == b.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  ref, out = full(tokens), half(tokens)
  assert out.dtype == jnp.float32  # the tied output layer and the loss
  gap = float(jnp.max(jnp.abs(out - ref)) / jnp.max(jnp.abs(ref)))
  assert 0 < gap < 0.05  # bfloat16 rounding, not another network
  jaxpr = str(jax.make_jaxpr(lambda t: half(t))(tokens))
  assert 'bf16' in jaxpr and 'dot_general' in jaxpr
  assert str(jax.make_jaxpr(lambda t: full(t))(tokens)).count('bf16') == 0


def test_compute_dtype_is_checked_and_recorded():
  from lionx.train import config as config_lib
  from lionx.train.fields import ConfigError
  config = config_lib.Config(task='language_model')
  config.num_epochs, config.num_steps, config.eval_every_steps = 0, 4, 2
  config.logging_max_batches = 2
  config.optimizer.learning_rate = 1e-3
  assert 'compute_dtype' not in config_lib.run_identity(config)['model']
  config.model.compute_dtype, config.model.remat = 'bfloat16', True
  model = config_lib.run_identity(config)['model']
  assert model['compute_dtype'] == 'bfloat16' and model['remat'] is True
  config.model.compute_dtype = 'float16'
  with pytest.raises(ConfigError, match="model.compute_dtype='float16' is "
                     'not one of'):
    config_lib.validate(config)


@pytest.mark.slow
def test_remat_on_four_fsdp_devices_gives_the_run_of_one(tmp_path,
                                                           monkeypatch):
  monkeypatch.setattr(plots, 'write_figures', lambda *args, **kwargs: [])
  config = lm_config()
  data = GPT.load_data(config)
  plain = experiment.train_and_evaluate(config, tmp_path / 'a', data=data,
                                        verbose=False)
  sharded = config_lib.copy(config)
  sharded.model.remat = True
  sharded.parallel.num_devices, sharded.parallel.mode = 4, 'fsdp'
  remat = experiment.train_and_evaluate(sharded, tmp_path / 'b', data=data,
                                        verbose=False)
  assert plain.status == remat.status == 'finished'
  for a, b in zip(plain.rows, remat.rows, strict=True):
    for key in ('train_loss', 'full_loss', 'val_loss', 'grad_l1'):
      assert b[key] == pytest.approx(a[key], rel=1e-5), key
