r"""BERT pre-training: masked language modelling plus sentence order.

The papers' BERT runs (Dong, Li, Lin §4, with Megatron-LM) minimise the
MLM loss plus a sentence-order loss. Here an example is
``[CLS] first [SEP] second [SEP]`` built from a window of
:math:`n = T - 3` consecutive tokens cut into two segments, swapped half
the time, with :math:`k = \max(1, \operatorname{round}(0.15n))` content
positions chosen for prediction (80 % ``[MASK]``, 10 % random, 10 %
kept); see :mod:`lionx.train.data.text`. The loss of one example is

.. math::

  \ell_i = \frac1k \sum_{j \in M_i} -\log p_\theta(x_{ij} \mid \tilde x_i)
    \;-\; \log p_\theta(o_i \mid \tilde x_i),

the mean MLM cross-entropy over its masked positions :math:`M_i` plus the
cross-entropy of its order label :math:`o_i` (nats). Every example has the
same :math:`k`, so the batch's mean of :math:`\ell_i` weighted by its
number of examples gives the exact mean over the logging batches' examples
(:mod:`lionx.train.tasks.base`). ``val_loss`` is the same objective on the
validation split (its non-overlapping windows, masked with a fixed seed);
``val_mlm_loss`` is the MLM part alone (its exp is the MLM perplexity) and
``val_sop_accuracy`` the sentence-order accuracy.

Trained by steps, as :mod:`lionx.train.tasks.language_model`, whose
rules (no epochs, a logging pass of ``logging_max_batches`` batches) apply.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from lionx.train.data import text
from lionx.train.models import lm
from lionx.train.tasks import base
from lionx.train.tasks.language_model import LanguageModelling
from lionx.train.tasks.language_model import TextSpec
from lionx.train.tasks.language_model import cross_entropy

if TYPE_CHECKING:  # config.py imports this module: the type only
  from lionx.train.config import Config


class MaskedLanguageModelling(LanguageModelling):
  """MLM + sentence-order prediction with BERT (see the module doc)."""

  name = 'masked_lm'
  model_config = lm.BertModelConfig
  models = tuple(lm.BERT_PRESETS)
  panels = (('val_sop_accuracy', 'validation sentence-order accuracy (%)'),)
  summary = (('val_mlm_loss', 'val MLM loss'),
             ('val_sop_accuracy', 'val order acc.'))

  def window(self, config: Config) -> int:
    return self.seq_len(config) - len(lm.SPECIAL_TOKENS)

  def min_seq_len(self) -> int:
    return 5  # [CLS] a [SEP] b [SEP]

  def model_vocab(self, spec: TextSpec) -> int:
    return spec.vocab_size + len(lm.SPECIAL_TOKENS)

  def make_batch(self, config: Config, data: text.TextData, tokens: np.ndarray,
                 starts: np.ndarray, rng: np.random.Generator | None,
                 batch_size: int | None) -> base.Batch:
    return text.bert_batch(tokens, starts, self.seq_len(config),
                           data.vocab_size, rng, batch_size)

  def tiles(self, config: Config) -> tuple[int, bool]:
    return self.window(config), False

  def _example_losses(self, model: nnx.Module, batch: base.Batch):
    mlm, order = model(batch['tokens'], batch['segments'],
                       batch['positions'])
    mlm_losses = cross_entropy(mlm, batch['targets'])  # (B, k)
    order_losses = cross_entropy(order, batch['order'])  # (B,)
    hits = (jnp.argmax(order, -1) == batch['order']).astype(jnp.float32)
    mask = batch.get('mask', jnp.ones(order_losses.shape, jnp.float32))
    return (jnp.mean(mlm_losses, -1), order_losses, hits, mask)

  def loss(self, model: nnx.Module, batch: base.Batch) -> base.LossOutput:
    mlm, order, hits, mask = self._example_losses(model, batch)
    count = jnp.sum(mask)
    total = jnp.sum((mlm + order) * mask)
    return base.LossOutput(
        total / jnp.maximum(count, 1.0), count,
        {'train_sop_accuracy': (jnp.sum(hits * mask), count)})

  def evaluate(self, model: nnx.Module, batch: base.Batch) -> base.Metrics:
    mlm, order, hits, mask = self._example_losses(model, batch)
    count = jnp.sum(mask)
    return {'val_loss': (jnp.sum((mlm + order) * mask), count),
            'val_mlm_loss': (jnp.sum(mlm * mask), count),
            'val_sop_accuracy': (jnp.sum(hits * mask), count)}

