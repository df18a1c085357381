r"""Causal language modelling: GPT-2 on token streams (Dong, Li, Lin §4).

The data are :mod:`lionx.train.data.text` streams (``text_bytes``, the
embedded default, or nanoGPT's ``token_files``), the models
:mod:`lionx.train.models.lm` GPTs. An example is a window of
:math:`T + 1` tokens (``T = data.seq_len``, by default the model's
context); the loss is the mean cross-entropy, in nats, of the next token
over the :math:`T` targets of each window and all windows of the batch, so
that the logging pass's :math:`f(\theta)` is the exact mean over the
logging batches' tokens (see :mod:`lionx.train.tasks.base`) and
``val_loss`` the exact mean over the validation tokens evaluated;
:math:`\exp` of it is the perplexity.

A language task trains by steps: ``num_epochs=0``, ``num_steps`` and
``eval_every_steps`` (the data have no epochs), and its logging pass reads
``logging_max_batches`` batches of ``eval_batch_size`` windows (the paper:
100 batches); ``logging_max_batches=0``, the whole training stream, is
refused. The held-out split is the validation stream.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from lionx.train.data import text
from lionx.train.fields import ConfigError
from lionx.train.models import lm
from lionx.train.tasks import base

if TYPE_CHECKING:  # config.py imports this module: the type only
  from lionx.train.config import Config


class TextSpec(NamedTuple):
  """What a language model needs of its data."""

  vocab_size: int  # the data's vocabulary (BERT adds its special tokens)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Per-token cross-entropy in nats, computed in float32."""
  return optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), labels)


class LanguageModelling(base.Task):
  """Next-token prediction with a GPT (see the module doc)."""

  name = 'language_model'
  data_config = text.TextDataConfig
  model_config = lm.GPTModelConfig
  held_out = 'validation'
  models = tuple(lm.GPT_PRESETS)

  def seq_len(self, config: Config) -> int:
    """T: the tokens a model sees per example."""
    if config.data.seq_len is not None:
      return config.data.seq_len
    return lm.shape(config.model).context_length

  def window(self, config: Config) -> int:
    """Tokens of the stream in one example."""
    return self.seq_len(config) + 1

  def min_seq_len(self) -> int:
    return 1

  def validate(self, config: Config) -> None:
    text.validate(config.data)
    lm.validate(config.model, self.models)
    context = lm.shape(config.model).context_length
    seq_len = self.seq_len(config)
    if not self.min_seq_len() <= seq_len <= context:
      raise ConfigError(
          f'data.seq_len={seq_len}: expected {self.min_seq_len()} to the '
          f"model's context length {context} (model.context_length).")
    where = f'task={self.name!r}'
    if config.num_epochs:
      raise ConfigError(
          f'num_epochs={config.num_epochs}: {where} has no epochs; set '
          'num_epochs=0 and num_steps (with eval_every_steps).')
    if not config.eval_every_steps:
      raise ConfigError(
          f'eval_every_steps=0 means once per epoch, but {where} has no '
          'epochs; set eval_every_steps.')
    if not config.logging_max_batches:
      raise ConfigError(
          f'logging_max_batches=0 means the whole training stream, which '
          f'{where} does not read in one logging pass; set it to a number '
          'of batches (the paper: logging_max_batches=100).')

  def input_spec(self, config: Config) -> TextSpec:
    return TextSpec(text.vocab_size(config.data))

  def load_data(self, config: Config) -> text.TextData:
    return text.load(config.data, self.window(config))

  def data_spec(self, data: text.TextData) -> TextSpec:
    return TextSpec(data.vocab_size)

  def model_vocab(self, spec: TextSpec) -> int:
    return spec.vocab_size

  def create_model(self, config: Config, spec: TextSpec,
                   seed: int) -> nnx.Module:
    return lm.create_model(config.model, self.model_vocab(spec), seed=seed)

  def describe(self, config: Config, data: text.TextData) -> str:
    return (f'{config.model.name} on {data.name} ({len(data.train):,} '
            f'training / {len(data.val):,} validation tokens, vocabulary '
            f'{data.vocab_size}, {self.seq_len(config)} tokens an example)')

  def steps_per_epoch(self, config: Config, data: text.TextData) -> None:
    del config, data
    return None

  # --- batches ---------------------------------------------------------------

  def make_batch(self, config: Config, data: text.TextData, tokens: np.ndarray,
                 starts: np.ndarray, rng: np.random.Generator | None,
                 batch_size: int | None) -> base.Batch:
    del data, rng
    return text.gpt_batch(tokens, starts, self.seq_len(config), batch_size)

  def train_batch(self, config: Config, data: text.TextData,
                  step: int) -> base.Batch:
    rng = np.random.default_rng([config.seed, step])
    starts = text.random_starts(len(data.train), self.window(config),
                                config.batch_size, rng)
    return self.make_batch(config, data, data.train, starts, rng, None)

  def logging_batches(self, config: Config,
                      data: text.TextData) -> Iterator[base.Batch]:
    size = config.eval_batch_size
    for i, starts in enumerate(text.logging_starts(
        len(data.train), self.window(config), size,
        config.logging_max_batches)):
      rng = np.random.default_rng([text.LOGGING_SPLIT, i])
      yield self.make_batch(config, data, data.train, starts, rng, size)

  def tiles(self, config: Config) -> tuple[int, bool]:
    """The stride of the held-out windows and whether the last may be
    partial: GPT's overlap by one token, so each target counts once."""
    return self.seq_len(config), True

  def held_out_batches(self, config: Config,
                       data: text.TextData) -> Iterator[base.Batch]:
    size = config.eval_batch_size
    stride, partial = self.tiles(config)
    for i, starts in enumerate(text.tile_starts(
        len(data.val), self.window(config), stride, size,
        config.data.val_max_batches, partial)):
      rng = np.random.default_rng([text.VALIDATION_SPLIT, i])
      yield self.make_batch(config, data, data.val, starts, rng, size)

  # --- loss and metrics ------------------------------------------------------

  def _token_losses(self, model: nnx.Module, batch: base.Batch):
    tokens = batch['tokens']
    targets = tokens[:, 1:]
    mask = batch.get('mask', jnp.ones(targets.shape, jnp.float32))
    return cross_entropy(model(tokens[:, :-1]), targets) * mask, mask

  def loss(self, model: nnx.Module, batch: base.Batch) -> base.LossOutput:
    losses, mask = self._token_losses(model, batch)
    count = jnp.sum(mask)
    return base.LossOutput(jnp.sum(losses) / jnp.maximum(count, 1.0), count,
                           {})

  def evaluate(self, model: nnx.Module, batch: base.Batch) -> base.Metrics:
    losses, mask = self._token_losses(model, batch)
    return {'val_loss': (jnp.sum(losses), jnp.sum(mask))}

  def data_order(self) -> str:
    return text.DATA_ORDER

  def provenance(self, config: Config, data: text.TextData) -> dict[str, Any]:
    del config
    return {'data': data.info}

  def fingerprint(self, config: Config, data: text.TextData
                  ) -> dict[str, str]:
    del config
    return text.fingerprint(data)

