r"""Image classification: the papers' CIFAR and ImageNet experiments.

The data are :mod:`lionx.train.data.images` sets (in memory) or
ImageNet-style folders (:mod:`lionx.train.data.imagefolder`), the models
:mod:`lionx.train.models.vision` networks. The loss is the mean
cross-entropy over a batch's real images (padding has ``mask`` 0). The
logging pass runs over the training set (or its first
``logging_max_batches`` batches of ``eval_batch_size``) with BatchNorm on
its running statistics, so that :math:`f(\theta)` depends on
:math:`\theta` alone; it also reports ``train_accuracy``. The held-out
split is the test set (CIFAR and digits have no separate validation set;
for an image folder it is ``val/``): ``val_loss`` is the test loss, beside
``test_accuracy`` (top-1).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator, Optional

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from lionx.train.data import images
from lionx.train.models import vision
from lionx.train.tasks import base

if TYPE_CHECKING:  # config.py imports this module: the type only
  from lionx.train.config import Config


def _cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  return optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), labels)


def _masked(batch: base.Batch) -> jax.Array:
  return batch.get('mask', jnp.ones(batch['label'].shape, jnp.float32))


def _sums(model: nnx.Module, batch: base.Batch
          ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The summed cross-entropy, the correct predictions and the count of
  the batch's real (unpadded) examples."""
  logits = model(batch['image'])
  mask = _masked(batch)
  losses = _cross_entropy(logits, batch['label']) * mask
  hits = (jnp.argmax(logits, -1) == batch['label']) * mask
  return jnp.sum(losses), jnp.sum(hits), jnp.sum(mask)


class ImageClassification(base.Task):
  """Images to classes, with cross-entropy and top-1 accuracy."""

  name = 'classification'
  data_config = images.ImageDataConfig
  model_config = vision.VisionModelConfig
  panels = (('test_accuracy', 'test top-1 accuracy (%)'),)
  summary = (('test_accuracy', 'test top-1'),)
  held_out = 'test'

  def validate(self, config: Config) -> None:
    images.validate(config.data)
    vision.validate(config.model)

  def input_spec(self, config: Config) -> Optional[images.InputSpec]:
    return images.input_spec(config.data)

  def load_data(self, config: Config) -> images.ImageSet:
    return images.load_dataset(config.data)

  def data_spec(self, data: images.ImageSet) -> images.InputSpec:
    return data.spec

  def fingerprint(self, config: Config, data: images.ImageSet
                  ) -> dict[str, str]:
    del config
    return data.fingerprint()

  def create_model(self, config: Config, spec: images.InputSpec,
                   seed: int) -> nnx.Module:
    return vision.create_model(config.model, spec.num_classes,
                               spec.image_shape, seed=seed)

  def describe(self, config: Config, data: images.ImageSet) -> str:
    return (f'{config.model.name} on {data.name} '
            f'({len(data.train_labels)} train / {len(data.test_labels)} '
            f'test, {data.num_classes} classes)')

  def steps_per_epoch(self, config: Config, data: images.ImageSet) -> int:
    return images.steps_per_epoch(data, config.batch_size)

  def train_batch(self, config: Config, data: images.ImageSet,
                  step: int) -> base.Batch:
    return data.train_batch(step, seed=config.seed,
                            batch_size=config.batch_size,
                            augment=config.data.augment)

  def logging_batches(self, config: Config,
                      data: images.ImageSet) -> Iterator[base.Batch]:
    return data.eval_batches('train', config.eval_batch_size,
                             config.logging_max_batches)

  def held_out_batches(self, config: Config,
                       data: images.ImageSet) -> Iterator[base.Batch]:
    return data.eval_batches('test', config.eval_batch_size)

  def loss(self, model: nnx.Module, batch: base.Batch) -> base.LossOutput:
    losses, hits, count = _sums(model, batch)
    return base.LossOutput(
        loss=losses / jnp.maximum(count, 1.0), weight=count,
        metrics={'train_accuracy': (hits, count)})

  def evaluate(self, model: nnx.Module, batch: base.Batch) -> base.Metrics:
    losses, hits, count = _sums(model, batch)
    return {'val_loss': (losses, count),
            'test_accuracy': (hits, count)}

  def data_order(self) -> str:
    return images.DATA_ORDER

