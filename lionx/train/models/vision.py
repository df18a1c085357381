r"""The networks of the papers' experiments, in ``flax.nnx``.

* ``resnet18`` / ``resnet50``: torchvision's ResNets with the CIFAR stem
  (3x3 conv, stride 1, no max-pool) or the ImageNet stem (7x7/2 + max-pool).
  At 10 and 100 classes they have d = 11,173,962 / 11,220,132 (ResNet-18)
  and 23,520,842 / 23,705,252 (ResNet-50) parameters, i.e. the papers'
  :math:`\sqrt d \approx` 3343 / 3350 and 4850 / 4869.
* ``vit_s``: ViT-S/16 (timm's ``vit_small_patch16_224``: width 384, depth
  12, 6 heads, MLP 1536, class token, learned positions) at 224 px, with the
  inputs resized to ``image_size`` first: d = 21,669,514 / 21,704,164
  (:math:`\sqrt d \approx` 4655 / 4659). ``vit`` takes every size from the
  config; ``vit_tiny`` is a 2-block ViT that trains on a CPU.
* ``cnn`` (optionally with BatchNorm) / ``mlp``: small networks for the
  embedded digits.

``model.kernel_init`` chooses the initialiser of every convolution, dense
and attention kernel: ``default`` keeps each architecture's own (He normal
with fan-out for the ResNets' convolutions, as in torchvision; Flax's LeCun
normal elsewhere); ``kaiming_normal`` and ``kaiming_uniform`` are PyTorch's
``torch.nn.init.kaiming_normal_`` / ``kaiming_uniform_`` with their default
arguments (fan-in, gain :math:`\sqrt 2`): :math:`N(0, 2/\text{fan\_in})`
and :math:`U(\pm\sqrt{6/\text{fan\_in}})`, the two initialisations of
Figure 3 of Chen, Liu, Liang, Liu. Biases, BatchNorm and LayerNorm
parameters, the ViT's class token and positions keep their initialisers.

``model.param_dtype`` (``float32``, ``bfloat16`` or ``float16``) stores the
parameters in that dtype: the float32 initialisation rounded to nearest,
computed in float32 (:mod:`lionx.train.models.precision`).

BatchNorm scale and bias are parameters (``nnx.Param``); the running
statistics are ``nnx.BatchStat`` and are not counted in d. BatchNorm uses
batch statistics in train mode and the running ones in eval mode
(``nnx.view(model, use_running_average=True)``).

The ``model`` config section of the image tasks (:class:`VisionModelConfig`)
lives here.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from lionx.train import fields
from lionx.train import registry
from lionx.train.models import precision
from lionx.train.models import remat as remat_lib


@dataclasses.dataclass(slots=True)
class VisionModelConfig:
  """The network (``model.*``); ``None`` takes the architecture's value."""

  name: str = 'cnn'  # cnn | mlp | resnet18 | resnet50 | vit | vit_s | vit_tiny
  width: Optional[int] = None  # base channels (ResNet 64, CNN 32, MLP 256)
  stem: str = 'cifar'  # ResNet: cifar (3x3 conv) | imagenet (7x7 + pool)
  batch_norm: bool = False  # cnn: BatchNorm after each convolution
  # Kernels: default | kaiming_normal | kaiming_uniform (module doc).
  kernel_init: str = 'default'
  # Storage of the parameters: float32 | bfloat16 | float16.
  param_dtype: str = 'float32'
  # ViT only.
  patch_size: Optional[int] = None
  image_size: Optional[int] = None  # resize inputs to this size first
  hidden_size: Optional[int] = None
  depth: Optional[int] = None
  num_heads: Optional[int] = None
  mlp_dim: Optional[int] = None
  # resnet* and vit*: recompute activations in the backward pass
  # (lionx.train.models.remat; each ResNet stage, each ViT block).
  remat: bool = False


STEMS = ('cifar', 'imagenet')
_BN = {'momentum': 0.9, 'epsilon': 1e-5}  # PyTorch's BatchNorm defaults
_CONV_INIT = nnx.initializers.variance_scaling(2.0, 'fan_out', 'normal')
Initializer = Callable[..., jax.Array]
# PyTorch's kaiming_*_ defaults: mode='fan_in', gain sqrt(2) (a = 0).
KERNEL_INITS: dict[str, Optional[Initializer]] = {
    'default': None,  # each layer's own
    'kaiming_normal': nnx.initializers.variance_scaling(
        2.0, 'fan_in', 'normal'),
    'kaiming_uniform': nnx.initializers.variance_scaling(
        2.0, 'fan_in', 'uniform'),
}


def _init(init: Optional[Initializer]) -> dict[str, Initializer]:
  """``kernel_init=init`` for a layer, or nothing (its own default)."""
  return {} if init is None else {'kernel_init': init}


def _conv(cin: int, cout: int, size: int, stride: int, rngs: nnx.Rngs,
          padding: Optional[int] = None,
          init: Optional[Initializer] = None) -> nnx.Conv:
  pad = size // 2 if padding is None else padding
  return nnx.Conv(cin, cout, (size, size), strides=stride,
                  padding=((pad, pad), (pad, pad)), use_bias=False,
                  kernel_init=init or _CONV_INIT, rngs=rngs)


class BasicBlock(nnx.Module):
  """Two 3x3 convolutions (ResNet-18/34)."""

  expansion = 1

  def __init__(self, cin: int, width: int, stride: int, *, rngs: nnx.Rngs,
               init: Optional[Initializer] = None):
    cout = width * self.expansion
    self.conv1 = _conv(cin, width, 3, stride, rngs, init=init)
    self.bn1 = nnx.BatchNorm(width, **_BN, rngs=rngs)
    self.conv2 = _conv(width, cout, 3, 1, rngs, init=init)
    self.bn2 = nnx.BatchNorm(cout, **_BN, rngs=rngs)
    self.shortcut = _shortcut(cin, cout, stride, rngs, init)

  def __call__(self, x: jax.Array) -> jax.Array:
    y = nnx.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return nnx.relu(y + (x if self.shortcut is None else self.shortcut(x)))


class Bottleneck(nnx.Module):
  """1x1, 3x3 (with the stride), 1x1 convolutions (ResNet-50, torchvision)."""

  expansion = 4

  def __init__(self, cin: int, width: int, stride: int, *, rngs: nnx.Rngs,
               init: Optional[Initializer] = None):
    cout = width * self.expansion
    self.conv1 = _conv(cin, width, 1, 1, rngs, init=init)
    self.bn1 = nnx.BatchNorm(width, **_BN, rngs=rngs)
    self.conv2 = _conv(width, width, 3, stride, rngs, init=init)
    self.bn2 = nnx.BatchNorm(width, **_BN, rngs=rngs)
    self.conv3 = _conv(width, cout, 1, 1, rngs, init=init)
    self.bn3 = nnx.BatchNorm(cout, **_BN, rngs=rngs)
    self.shortcut = _shortcut(cin, cout, stride, rngs, init)

  def __call__(self, x: jax.Array) -> jax.Array:
    y = nnx.relu(self.bn1(self.conv1(x)))
    y = nnx.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    return nnx.relu(y + (x if self.shortcut is None else self.shortcut(x)))


def _shortcut(cin: int, cout: int, stride: int, rngs: nnx.Rngs,
              init: Optional[Initializer] = None
              ) -> Optional[nnx.Sequential]:
  if stride == 1 and cin == cout:
    return None
  return nnx.Sequential(_conv(cin, cout, 1, stride, rngs, init=init),
                        nnx.BatchNorm(cout, **_BN, rngs=rngs))


class ResNet(nnx.Module):
  """A ResNet: stem, four stages of blocks, global average pool, linear."""

  def __init__(self, block: type, stage_sizes: Sequence[int],
               num_classes: int, in_channels: int = 3, width: int = 64,
               stem: str = 'cifar', *, rngs: nnx.Rngs,
               init: Optional[Initializer] = None, remat: bool = False):
    if stem not in STEMS:
      raise ValueError(f'stem={stem!r} is not one of {STEMS}.')
    self.stem, self.remat = stem, remat
    self.stage_sizes = tuple(stage_sizes)
    if stem == 'cifar':
      self.conv1 = _conv(in_channels, width, 3, 1, rngs, init=init)
    else:
      self.conv1 = _conv(in_channels, width, 7, 2, rngs, init=init)
    self.bn1 = nnx.BatchNorm(width, **_BN, rngs=rngs)
    blocks, cin = [], width
    for i, size in enumerate(stage_sizes):
      for j in range(size):
        stride = 2 if i > 0 and j == 0 else 1
        blocks.append(block(cin, width * 2 ** i, stride, rngs=rngs,
                            init=init))
        cin = width * 2 ** i * block.expansion
    self.blocks = nnx.List(blocks)
    self.fc = nnx.Linear(cin, num_classes, rngs=rngs, **_init(init))

  def __call__(self, x: jax.Array) -> jax.Array:
    x = nnx.relu(self.bn1(self.conv1(x)))
    if self.stem == 'imagenet':
      x = nnx.max_pool(x, (3, 3), strides=(2, 2),
                       padding=((1, 1), (1, 1)))
    if self.remat:
      stages, start = [], 0
      for size in self.stage_sizes:
        stages.append(self.blocks[start:start + size])
        start += size
      x = remat_lib.checkpoint_stages(stages, x)
    else:
      x = remat_lib.sequential(self.blocks, x)
    return self.fc(jnp.mean(x, axis=(1, 2)))


class EncoderBlock(nnx.Module):
  """Pre-norm transformer block: x + MHA(LN(x)), then x + MLP(LN(x))."""

  def __init__(self, dim: int, heads: int, mlp_dim: int, *, rngs: nnx.Rngs,
               init: Optional[Initializer] = None):
    self.norm1 = nnx.LayerNorm(dim, epsilon=1e-6, rngs=rngs)
    self.attn = nnx.MultiHeadAttention(
        num_heads=heads, in_features=dim, qkv_features=dim, decode=False,
        rngs=rngs, **_init(init))
    self.norm2 = nnx.LayerNorm(dim, epsilon=1e-6, rngs=rngs)
    self.fc1 = nnx.Linear(dim, mlp_dim, rngs=rngs, **_init(init))
    self.fc2 = nnx.Linear(mlp_dim, dim, rngs=rngs, **_init(init))

  def __call__(self, x: jax.Array) -> jax.Array:
    x = x + self.attn(self.norm1(x))
    y = self.fc2(nnx.gelu(self.fc1(self.norm2(x)), approximate=False))
    return x + y


class ViT(nnx.Module):
  """Vision Transformer: patch embedding, class token, encoder, linear head."""

  def __init__(self, num_classes: int, in_channels: int, image_size: int,
               patch_size: int, dim: int, depth: int, heads: int,
               mlp_dim: int, *, rngs: nnx.Rngs,
               init: Optional[Initializer] = None, remat: bool = False):
    if image_size % patch_size:
      raise ValueError(
          f'model.image_size={image_size} is not a multiple of '
          f'model.patch_size={patch_size}.')
    if dim % heads:
      raise ValueError(
          f'model.hidden_size={dim} is not a multiple of '
          f'model.num_heads={heads}.')
    self.image_size, self.remat = image_size, remat
    num_patches = (image_size // patch_size) ** 2
    self.patch_embed = nnx.Conv(
        in_channels, dim, (patch_size, patch_size), strides=patch_size,
        padding='VALID', rngs=rngs, **_init(init))
    self.cls_token = nnx.Param(jnp.zeros((1, 1, dim)))
    self.pos_embed = nnx.Param(
        0.02 * jax.random.normal(rngs.params(), (1, num_patches + 1, dim)))
    self.blocks = nnx.List([EncoderBlock(dim, heads, mlp_dim, rngs=rngs,
                                         init=init)
                            for _ in range(depth)])
    self.norm = nnx.LayerNorm(dim, epsilon=1e-6, rngs=rngs)
    self.head = nnx.Linear(dim, num_classes, rngs=rngs, **_init(init))

  def __call__(self, x: jax.Array) -> jax.Array:
    size = self.image_size
    if x.shape[1:3] != (size, size):
      x = jax.image.resize(x, (x.shape[0], size, size, x.shape[3]),
                           'bilinear')
    x = self.patch_embed(x)
    x = x.reshape(x.shape[0], -1, x.shape[-1])
    cls = jnp.broadcast_to(self.cls_token[...], (x.shape[0], 1, x.shape[-1]))
    x = jnp.concatenate([cls, x], axis=1) + self.pos_embed[...]
    x = remat_lib.run_blocks(self.blocks, x, self.remat)
    return self.head(self.norm(x)[:, 0])


class CNN(nnx.Module):
  """Two 3x3 convolutions (the second with stride 2) and two dense layers.

  With ``batch_norm`` each convolution is followed by BatchNorm.
  """

  def __init__(self, num_classes: int, in_channels: int, image_size: int,
               width: int = 32, batch_norm: bool = False, *,
               rngs: nnx.Rngs, init: Optional[Initializer] = None):
    self.conv1 = nnx.Conv(in_channels, width, (3, 3), use_bias=not batch_norm,
                          rngs=rngs, **_init(init))
    self.conv2 = nnx.Conv(width, 2 * width, (3, 3), strides=2,
                          use_bias=not batch_norm, rngs=rngs, **_init(init))
    if batch_norm:
      self.bn1 = nnx.BatchNorm(width, **_BN, rngs=rngs)
      self.bn2 = nnx.BatchNorm(2 * width, **_BN, rngs=rngs)
    else:
      self.bn1 = self.bn2 = None
    side = -(-image_size // 2)
    self.fc1 = nnx.Linear(side * side * 2 * width, 4 * width, rngs=rngs,
                          **_init(init))
    self.fc2 = nnx.Linear(4 * width, num_classes, rngs=rngs, **_init(init))

  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.conv1(x)
    x = nnx.relu(x if self.bn1 is None else self.bn1(x))
    x = self.conv2(x)
    x = nnx.relu(x if self.bn2 is None else self.bn2(x))
    x = nnx.relu(self.fc1(x.reshape(x.shape[0], -1)))
    return self.fc2(x)


class MLP(nnx.Module):
  """Flatten, two hidden ReLU layers, linear output."""

  def __init__(self, num_classes: int, in_features: int, width: int = 256,
               *, rngs: nnx.Rngs, init: Optional[Initializer] = None):
    self.fc1 = nnx.Linear(in_features, width, rngs=rngs, **_init(init))
    self.fc2 = nnx.Linear(width, width, rngs=rngs, **_init(init))
    self.fc3 = nnx.Linear(width, num_classes, rngs=rngs, **_init(init))

  def __call__(self, x: jax.Array) -> jax.Array:
    x = nnx.relu(self.fc1(x.reshape(x.shape[0], -1)))
    return self.fc3(nnx.relu(self.fc2(x)))


# ViT sizes: (patch, image, hidden, depth, heads, mlp).
VIT_PRESETS = {
    'vit_s': (16, 224, 384, 12, 6, 1536),
    'vit_tiny': (4, None, 32, 2, 2, 64),
    'vit': (16, None, 384, 12, 6, 1536),
}


def _or(value: Optional[int], default: Any) -> Any:
  return default if value is None else value


def _resnet(block, stages):
  def build(cfg: VisionModelConfig, num_classes, shape, rngs):
    return ResNet(block, stages, num_classes, shape[2], _or(cfg.width, 64),
                  cfg.stem, rngs=rngs, init=KERNEL_INITS[cfg.kernel_init],
                  remat=cfg.remat)
  return build


def _vit(preset: str):
  def build(cfg: VisionModelConfig, num_classes, shape, rngs):
    patch, image, dim, depth, heads, mlp = VIT_PRESETS[preset]
    return ViT(num_classes, shape[2], _or(cfg.image_size, image or shape[0]),
               _or(cfg.patch_size, patch), _or(cfg.hidden_size, dim),
               _or(cfg.depth, depth), _or(cfg.num_heads, heads),
               _or(cfg.mlp_dim, mlp), rngs=rngs,
               init=KERNEL_INITS[cfg.kernel_init], remat=cfg.remat)
  return build


# model.name -> build(config, num_classes, image_shape, rngs).
MODELS: registry.Registry = registry.Registry('model.name')
MODELS.register('cnn', lambda cfg, n, shape, rngs: CNN(
    n, shape[2], shape[0], _or(cfg.width, 32), cfg.batch_norm,
    rngs=rngs, init=KERNEL_INITS[cfg.kernel_init]))
MODELS.register('mlp', lambda cfg, n, shape, rngs: MLP(
    n, math.prod(shape), _or(cfg.width, 256), rngs=rngs,
    init=KERNEL_INITS[cfg.kernel_init]))
MODELS.register('resnet18', _resnet(BasicBlock, (2, 2, 2, 2)))
MODELS.register('resnet50', _resnet(Bottleneck, (3, 4, 6, 3)))
for _name in ('vit', 'vit_s', 'vit_tiny'):
  MODELS.register(_name, _vit(_name))


def validate(config: VisionModelConfig) -> None:
  """Checks the names and sizes of a :class:`VisionModelConfig`."""
  MODELS[config.name]  # raises ConfigError for an unknown name
  fields.one_of('model.stem', config.stem, STEMS)
  fields.one_of('model.kernel_init', config.kernel_init, KERNEL_INITS)
  precision.validate('model.param_dtype', config.param_dtype)
  fields.positive_ints(config, 'model')
  if config.remat and not config.name.startswith(('resnet', 'vit')):
    raise fields.ConfigError(
        f'model.remat=True with model.name={config.name!r}: expected a '
        'resnet* or vit* model (the cnn and mlp have no blocks to '
        'recompute).')


def create_model(config: VisionModelConfig, num_classes: int,
                 image_shape: Sequence[int], seed: int = 0) -> nnx.Module:
  """The model named ``config.name`` for images of ``image_shape`` (H, W, C).

  Example:
    >>> from flax import nnx
    >>> from lionx.train.models import vision
    >>> model = vision.create_model(
    ...     vision.VisionModelConfig(name='mlp', width=8), 10, (8, 8, 1))
    >>> sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
    682
  """
  build = MODELS[config.name]
  if config.kernel_init not in KERNEL_INITS:
    raise ValueError(
        f'model.kernel_init={config.kernel_init!r} is not one of '
        f'{tuple(KERNEL_INITS)}.')
  if len(image_shape) != 3:
    raise ValueError(
        f'image_shape={tuple(image_shape)}: expected (height, width, '
        'channels).')
  model = build(config, num_classes, tuple(image_shape),
                nnx.Rngs(params=seed))
  return precision.cast_params(model, config.param_dtype)
