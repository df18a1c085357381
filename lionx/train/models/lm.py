r"""Language models of the papers' §4, in ``flax.nnx``: GPT-2 and BERT.

* **GPT-2** (:class:`GPT`): learned token and position embeddings, pre-LN
  blocks (``x + attn(LN(x))``, ``x + mlp(LN(x))``) with causal
  self-attention and a GELU MLP, a final LayerNorm, and the output layer
  tied to the token embedding (logits :math:`= h W_e^\top`, no bias).
  ``gpt2_small`` (12 layers, width 768, 12 heads, context 1024) has
  :math:`d` = 124,439,808 parameters at GPT-2's vocabulary of 50257 and
  ``gpt2_medium`` (24, 1024, 16) has 354,823,168.
* **BERT** (:class:`Bert`): token, position and segment embeddings with a
  LayerNorm, the same blocks without the causal mask, a final LayerNorm
  (the pre-LN layout of Megatron-LM, which the papers used), an MLM head
  (dense, GELU, LayerNorm, the decoder tied to the token embedding plus a
  bias over the vocabulary) and a sentence-order head on the first token
  (a tanh pooler and a 2-way linear layer). ``bert_base`` is 12 layers,
  width 768, 12 heads, context 512; ``bert_small`` is the 4-layer, 512-wide
  miniature (8 heads) of Turc et al. (2019), "Well-Read Students Learn
  Better", which is what the papers' "BERT-Small" is taken to be here.
* ``gpt_tiny`` / ``bert_tiny``: 2 layers, width 64, 4 heads, context 64,
  for the embedded byte corpus on a CPU; ``gpt`` / ``bert`` take every size
  from the config (defaults: the tiny ones).
* Incremental decoding (:meth:`GPT.init_cache`, :meth:`GPT.decode`): each
  block keeps the keys and values of the tokens so far (a
  :class:`LayerCache`), so that a new token costs one position's forward
  pass; :mod:`lionx.train.sample` generates with it. The training forward
  pass does not use it.

Every block has :math:`12w^2 + 13w` parameters for width :math:`w` and MLP
width :math:`4w` (``model.mlp_dim`` changes it). Initialisation as GPT-2
(and nanoGPT): weights :math:`N(0, 0.02^2)`, the projections back into the
residual stream :math:`N(0, (0.02/\sqrt{2L})^2)`, biases 0, LayerNorm 1 and
0. Parameters are float32, or stored in ``model.param_dtype`` (bfloat16 or
float16: the float32 initialisation rounded, the forward pass still in
float32; :mod:`lionx.train.models.precision`). No dropout: a batch's loss
is a function of the parameters and the batch alone.

The ``model`` config sections of the language tasks
(:class:`GPTModelConfig`, :class:`BertModelConfig`) live here.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from lionx.train import fields
from lionx.train.models import precision
from lionx.train.models import remat as remat_lib


@dataclasses.dataclass(slots=True)
class GPTModelConfig:
  """The network (``model.*``); ``None`` takes the preset's value."""

  name: str = 'gpt_tiny'  # gpt_tiny | gpt2_small | gpt2_medium | gpt
  num_layers: Optional[int] = None
  width: Optional[int] = None
  num_heads: Optional[int] = None
  mlp_dim: Optional[int] = None  # None: 4 * width
  context_length: Optional[int] = None  # positions the model has
  # Storage of the parameters: float32 | bfloat16 | float16.
  param_dtype: str = 'float32'
  # The dtype of the matrix products: float32 | bfloat16 (the residual
  # stream, norms, softmax and loss stay float32).
  compute_dtype: str = 'float32'
  # Recompute each block's activations in the backward pass
  # (lionx.train.models.remat).
  remat: bool = False


@dataclasses.dataclass(slots=True)
class BertModelConfig(GPTModelConfig):
  """The BERT network (``model.*``); the fields of :class:`GPTModelConfig`."""

  name: str = 'bert_tiny'  # bert_tiny | bert_small | bert_base | bert


@dataclasses.dataclass(frozen=True)
class Shape:
  """A resolved architecture."""

  num_layers: int
  width: int
  num_heads: int
  mlp_dim: int
  context_length: int


# (layers, width, heads, context); the MLP is 4 * width.
GPT_PRESETS = {
    'gpt_tiny': (2, 64, 4, 64),
    'gpt': (2, 64, 4, 64),
    'gpt2_small': (12, 768, 12, 1024),
    'gpt2_medium': (24, 1024, 16, 1024),
}
BERT_PRESETS = {
    'bert_tiny': (2, 64, 4, 64),
    'bert': (2, 64, 4, 64),
    'bert_small': (4, 512, 8, 512),
    'bert_base': (12, 768, 12, 512),
}
#: BERT's special tokens, after the data's vocabulary of V tokens ([CLS] is
#: V, [SEP] V + 1, [MASK] V + 2).
SPECIAL_TOKENS = ('[CLS]', '[SEP]', '[MASK]')
_STD = 0.02


def _or(value: Optional[int], default: int) -> int:
  return default if value is None else value


def shape(config: GPTModelConfig) -> Shape:
  """The architecture of ``config``: its preset with the config's sizes."""
  presets = {**GPT_PRESETS, **BERT_PRESETS}
  if config.name not in presets:
    raise fields.ConfigError(
        f'model.name={config.name!r} is not one of {tuple(sorted(presets))}.')
  layers, width, heads, context = presets[config.name]
  width = _or(config.width, width)
  return Shape(_or(config.num_layers, layers), width,
               _or(config.num_heads, heads), _or(config.mlp_dim, 4 * width),
               _or(config.context_length, context))


def validate(config: GPTModelConfig, names: tuple[str, ...]) -> None:
  """Checks a model section whose name must be one of ``names``."""
  fields.one_of('model.name', config.name, names)
  precision.validate('model.param_dtype', config.param_dtype)
  fields.one_of('model.compute_dtype', config.compute_dtype, COMPUTE_DTYPES)
  fields.positive_ints(config, 'model')
  s = shape(config)
  if s.width % s.num_heads:
    raise fields.ConfigError(
        f'model.width={s.width} is not a multiple of model.num_heads='
        f'{s.num_heads}.')


def _normal(std: float) -> Callable:
  return nnx.initializers.normal(std)


def _linear(cin: int, cout: int, rngs: nnx.Rngs, std: float = _STD,
            dtype: Optional[jnp.dtype] = None) -> nnx.Linear:
  return nnx.Linear(cin, cout, kernel_init=_normal(std), dtype=dtype,
                    bias_init=nnx.initializers.zeros_init(), rngs=rngs)


COMPUTE_DTYPES = {'float32': None, 'bfloat16': jnp.bfloat16}


class LayerCache(NamedTuple):
  """One block's keys and values for incremental decoding (float32).

  ``keys`` and ``values`` have shape (batch, max_len, heads, head width);
  position ``i`` holds the key and value of the token at position ``i``.
  """

  keys: jax.Array
  values: jax.Array


class SelfAttention(nnx.Module):
  """Multi-head self-attention: one qkv projection, softmax, projection."""

  def __init__(self, width: int, num_heads: int, causal: bool,
               out_std: float, *, rngs: nnx.Rngs,
               dtype: Optional[jnp.dtype] = None):
    self.num_heads, self.causal = num_heads, causal
    self.qkv = _linear(width, 3 * width, rngs, dtype=dtype)
    self.out = _linear(width, width, rngs, out_std, dtype=dtype)

  def _heads(self, x: jax.Array) -> tuple[jax.Array, ...]:
    """Queries, keys and values of ``x``, each (B, T, heads, head width)."""
    batch, length, width = x.shape
    heads = (batch, length, self.num_heads, width // self.num_heads)
    return tuple(y.reshape(heads) for y in jnp.split(self.qkv(x), 3, -1))

  def __call__(self, x: jax.Array) -> jax.Array:
    q, k, v = self._heads(x)
    y = jax.nn.dot_product_attention(q, k, v, is_causal=self.causal)
    return self.out(y.reshape(x.shape))

  def decode(self, x: jax.Array, cache: LayerCache,
             position: jax.Array) -> tuple[jax.Array, LayerCache]:
    """Causal attention of ``x`` (B, T), at positions ``position`` to
    ``position + T - 1``, over the cached keys and values and its own."""
    if not self.causal:
      raise ValueError('decode: incremental decoding needs causal '
                       'attention (a GPT, not a BERT).')
    q, k, v = self._heads(x)
    start = (0, position, 0, 0)
    cache = LayerCache(lax.dynamic_update_slice(cache.keys, k, start),
                       lax.dynamic_update_slice(cache.values, v, start))
    # Query i (at position + i) sees the keys at positions <= position + i;
    # the slots after them (zeros, not yet written) get weight 0.
    seen = (jnp.arange(cache.keys.shape[1])[None, :]
            <= position + jnp.arange(x.shape[1])[:, None])
    y = jax.nn.dot_product_attention(q, cache.keys, cache.values,
                                     mask=seen[None, None])
    return self.out(y.reshape(x.shape)), cache


class Block(nnx.Module):
  """Pre-LN transformer block: x + attn(LN(x)), then x + MLP(LN(x))."""

  def __init__(self, s: Shape, causal: bool, epsilon: float, *,
               rngs: nnx.Rngs, dtype: Optional[jnp.dtype] = None):
    out_std = _STD / math.sqrt(2 * s.num_layers)
    self.ln1 = nnx.LayerNorm(s.width, epsilon=epsilon, rngs=rngs)
    self.attn = SelfAttention(s.width, s.num_heads, causal, out_std,
                              rngs=rngs, dtype=dtype)
    self.ln2 = nnx.LayerNorm(s.width, epsilon=epsilon, rngs=rngs)
    self.fc = _linear(s.width, s.mlp_dim, rngs, dtype=dtype)
    self.proj = _linear(s.mlp_dim, s.width, rngs, out_std, dtype=dtype)

  def _mlp(self, x: jax.Array) -> jax.Array:
    return x + self.proj(nnx.gelu(self.fc(self.ln2(x))))

  def __call__(self, x: jax.Array) -> jax.Array:
    return self._mlp(x + self.attn(self.ln1(x)))

  def decode(self, x: jax.Array, cache: LayerCache,
             position: jax.Array) -> tuple[jax.Array, LayerCache]:
    """The block at positions ``position`` onwards (see ``GPT.decode``)."""
    y, cache = self.attn.decode(self.ln1(x), cache, position)
    return self._mlp(x + y), cache


def _embed(num: int, width: int, rngs: nnx.Rngs) -> nnx.Embed:
  # dtype: look-ups and the tied output layer compute in float32 whatever
  # the table's storage (model.param_dtype).
  return nnx.Embed(num, width, dtype=jnp.float32,
                   embedding_init=_normal(_STD), rngs=rngs)


class GPT(nnx.Module):
  """GPT-2: ``tokens (B, T) -> logits (B, T, vocab)``, causal.

  Incremental decoding (:meth:`init_cache`, :meth:`decode`) keeps each
  block's keys and values, so that a new token costs one position's
  forward pass instead of the whole context's; the logits are those of
  ``model(tokens)`` to float32 rounding.

  Example:
    >>> from lionx.train.models import lm
    >>> model = lm.create_model(lm.GPTModelConfig(num_layers=1), 256)
    >>> tokens = jnp.array([[5, 7, 11]])
    >>> cache = model.init_cache(batch=1, max_len=8)
    >>> first, cache = model.decode(tokens[:, :2], cache, 0)  # the prompt
    >>> last, cache = model.decode(tokens[:, 2:], cache, 2)  # one more
    >>> full = model(tokens)
    >>> bool(jnp.allclose(last[:, 0], full[:, 2], atol=1e-5))
    True
  """

  def __init__(self, vocab_size: int, s: Shape, *, rngs: nnx.Rngs,
               dtype: Optional[jnp.dtype] = None, remat: bool = False):
    self.remat = remat
    self.wte = _embed(vocab_size, s.width, rngs)
    self.wpe = _embed(s.context_length, s.width, rngs)
    self.blocks = nnx.List([Block(s, True, 1e-5, rngs=rngs, dtype=dtype)
                            for _ in range(s.num_layers)])
    self.ln_f = nnx.LayerNorm(s.width, epsilon=1e-5, rngs=rngs)

  @property
  def vocab_size(self) -> int:
    return self.wte.num_embeddings

  @property
  def context_length(self) -> int:
    return self.wpe.num_embeddings

  def __call__(self, tokens: jax.Array) -> jax.Array:
    x = self.wte(tokens) + self.wpe(jnp.arange(tokens.shape[1]))
    x = remat_lib.run_blocks(self.blocks, x, self.remat)
    return self.wte.attend(self.ln_f(x))  # tied output layer

  def init_cache(self, batch: int, max_len: int) -> tuple[LayerCache, ...]:
    """An empty cache (zeros) for ``batch`` sequences of up to ``max_len``
    tokens (at most the context length); one :class:`LayerCache` a block."""
    if not 1 <= max_len <= self.context_length:
      raise ValueError(
          f'max_len={max_len}: expected 1 to the context length '
          f'{self.context_length} (model.context_length).')
    attn = self.blocks[0].attn
    width = self.wte.features
    shape = (batch, max_len, attn.num_heads, width // attn.num_heads)
    return tuple(LayerCache(jnp.zeros(shape, jnp.float32),
                            jnp.zeros(shape, jnp.float32))
                 for _ in self.blocks)

  def decode(self, tokens: jax.Array, cache: tuple[LayerCache, ...],
             position: jax.Array | int
             ) -> tuple[jax.Array, tuple[LayerCache, ...]]:
    """The logits of ``tokens`` (B, T) at positions ``position`` to
    ``position + T - 1``, given the cache of the tokens before them.

    Returns the logits (B, T, vocab) and the cache with the new tokens'
    keys and values. ``position`` may be traced (one compilation serves
    every step); ``position + T`` must not exceed the cache's length,
    which is not checked here (``lax.dynamic_update_slice`` would clamp).
    """
    positions = position + jnp.arange(tokens.shape[1])
    x = self.wte(tokens) + self.wpe(positions)
    out = []
    for block, layer in zip(self.blocks, cache):
      x, layer = block.decode(x, layer, position)
      out.append(layer)
    return self.wte.attend(self.ln_f(x)), tuple(out)


class Bert(nnx.Module):
  """BERT with its two heads (see the module doc).

  ``model(tokens, segments, positions)`` with ``tokens`` and ``segments``
  (0 or 1) of shape (B, T) and the masked ``positions`` (B, k) returns the
  MLM logits at those positions (B, k, vocab) and the sentence-order
  logits (B, 2).
  """

  def __init__(self, vocab_size: int, s: Shape, *, rngs: nnx.Rngs,
               dtype: Optional[jnp.dtype] = None, remat: bool = False):
    self.remat = remat
    self.wte = _embed(vocab_size, s.width, rngs)
    self.wpe = _embed(s.context_length, s.width, rngs)
    self.segment = _embed(2, s.width, rngs)
    self.ln_embed = nnx.LayerNorm(s.width, epsilon=1e-12, rngs=rngs)
    self.blocks = nnx.List([Block(s, False, 1e-12, rngs=rngs, dtype=dtype)
                            for _ in range(s.num_layers)])
    self.ln_f = nnx.LayerNorm(s.width, epsilon=1e-12, rngs=rngs)
    self.mlm_dense = _linear(s.width, s.width, rngs)
    self.mlm_ln = nnx.LayerNorm(s.width, epsilon=1e-12, rngs=rngs)
    self.mlm_bias = nnx.Param(jnp.zeros((vocab_size,), jnp.float32))
    self.pooler = _linear(s.width, s.width, rngs)
    self.order = _linear(s.width, 2, rngs)

  def __call__(self, tokens: jax.Array, segments: jax.Array,
               positions: jax.Array) -> tuple[jax.Array, jax.Array]:
    x = (self.wte(tokens) + self.wpe(jnp.arange(tokens.shape[1]))
         + self.segment(segments))
    x = self.ln_embed(x)
    x = remat_lib.run_blocks(self.blocks, x, self.remat)
    x = self.ln_f(x)
    picked = jnp.take_along_axis(x, positions[..., None], axis=1)
    h = self.mlm_ln(nnx.gelu(self.mlm_dense(picked)))
    mlm = self.wte.attend(h) + self.mlm_bias[...]
    order = self.order(jnp.tanh(self.pooler(x[:, 0])))
    return mlm, order


def create_model(config: GPTModelConfig, vocab_size: int,
                 seed: int = 0) -> nnx.Module:
  """The network of ``config`` over a vocabulary of ``vocab_size`` tokens
  (for BERT: the data's vocabulary plus :data:`SPECIAL_TOKENS`).

  Example:
    >>> from lionx.train.models import lm
    >>> model = lm.create_model(lm.GPTModelConfig(), 256)
    >>> model(jnp.zeros((1, 8), jnp.int32)).shape
    (1, 8, 256)
  """
  s = shape(config)
  if (not isinstance(vocab_size, int) or isinstance(vocab_size, bool)
      or vocab_size < 1):
    raise ValueError(f'vocab_size={vocab_size!r}: expected a positive int.')
  cls = GPT if config.name in GPT_PRESETS else Bert
  model = cls(vocab_size, s, rngs=nnx.Rngs(params=seed),
              dtype=COMPUTE_DTYPES[config.compute_dtype], remat=config.remat)
  return precision.cast_params(model, config.param_dtype)
