"""Parameter counts against layer-by-layer formulas; BatchNorm modes."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from lionx.train import parallel, steps, tasks
from lionx.train.data import images as data
from lionx.train.models.vision import VisionModelConfig as ModelConfig
from lionx.train.models.vision import create_model
from lionx.train.steps import count_params as num_params
from tests.train.helpers import tiny_config


def conv(cin, cout, k):
  return cin * cout * k * k  # no bias: BatchNorm follows


def bn(c):
  return 2 * c  # scale and bias; the running statistics are not params


def resnet18(classes, cin=3):
  d = conv(cin, 64, 3) + bn(64)
  c = 64
  for stage, width in enumerate((64, 128, 256, 512)):
    for block in range(2):
      d += conv(c, width, 3) + bn(width) + conv(width, width, 3) + bn(width)
      if c != width:
        d += conv(c, width, 1) + bn(width)
      c = width
  return d + 512 * classes + classes


def resnet50(classes, cin=3, stem=3):
  d = conv(cin, 64, stem) + bn(64)
  c = 64
  for width, blocks in zip((64, 128, 256, 512), (3, 4, 6, 3)):
    for block in range(blocks):
      d += conv(c, width, 1) + bn(width) + conv(width, width, 3) + bn(width)
      d += conv(width, 4 * width, 1) + bn(4 * width)
      if block == 0:
        d += conv(c, 4 * width, 1) + bn(4 * width)
      c = 4 * width
  return d + 2048 * classes + classes


def vit_s(classes, image=224, patch=16, dim=384, depth=12, mlp=1536):
  tokens = (image // patch) ** 2 + 1
  d = patch * patch * 3 * dim + dim  # patch embedding (a conv with bias)
  d += dim + tokens * dim  # class token, positions
  block = (2 * dim  # LayerNorm
           + 3 * (dim * dim + dim)  # q, k, v
           + dim * dim + dim  # attention output
           + 2 * dim  # LayerNorm
           + dim * mlp + mlp + mlp * dim + dim)  # MLP
  return d + depth * block + 2 * dim + dim * classes + classes


# The papers' sqrt(d) (REFERENCE §6): (CIFAR-10, CIFAR-100).
PAPER_SQRT_D = {'resnet18': (3343, 3350), 'resnet50': (4850, 4869),
                'vit_s': (4655, 4659)}
FORMULAS = {'resnet18': resnet18, 'resnet50': resnet50, 'vit_s': vit_s}


def _abstract(name, classes, shape=(32, 32, 3), **fields):
  return nnx.eval_shape(
      lambda: create_model(ModelConfig(name=name, **fields), classes, shape))


@pytest.mark.parametrize('name', ['resnet18', 'resnet50', 'vit_s'])
def test_parameter_counts_match_the_papers(name):
  for classes, paper in zip((10, 100), PAPER_SQRT_D[name]):
    d = num_params(_abstract(name, classes))
    assert d == FORMULAS[name](classes)
    assert abs(math.sqrt(d) - paper) <= 2, (name, classes, math.sqrt(d))


def test_known_totals():
  # torchvision / timm totals, as published.
  assert resnet18(10) == 11_173_962
  assert resnet50(1000, stem=7) == num_params(
      _abstract('resnet50', 1000, (224, 224, 3), stem='imagenet'))
  assert resnet50(1000, stem=7) == 25_557_032
  assert vit_s(1000) == 22_050_664


def test_batch_stats_are_not_parameters():
  model = _abstract('resnet18', 10)
  stats = nnx.state(model, nnx.BatchStat)
  bn_channels = (64 + 4 * 64 + 4 * 128 + 128 + 4 * 256 + 256 + 4 * 512
                 + 512)
  assert sum(x.size for x in jax.tree.leaves(stats)) == 2 * bn_channels


@pytest.mark.slow
@pytest.mark.parametrize('name,fields,shape', [
    ('resnet18', {'width': 2}, (8, 8, 3)),
    ('resnet50', {'width': 2, 'stem': 'imagenet'}, (16, 16, 3)),
    ('vit_s', {'image_size': 32, 'depth': 1}, (8, 8, 3)),
    ('vit_tiny', {}, (8, 8, 1)),
    ('vit', {'patch_size': 2, 'hidden_size': 8, 'depth': 1, 'num_heads': 2,
             'mlp_dim': 8}, (4, 4, 3)),
    ('mlp', {'width': 4}, (8, 8, 1)),
    ('cnn', {'batch_norm': True, 'width': 2}, (7, 7, 1)),
])
def test_forward_shapes(name, fields, shape):
  model = _abstract(name, 5, shape, **fields)
  out = nnx.eval_shape(lambda m: m(jnp.zeros((3,) + shape)), model)
  assert out.shape == (3, 5)


def test_model_errors():
  with pytest.raises(ValueError, match="model.name='resnet9' is not one of"):
    create_model(ModelConfig(name='resnet9'), 10, (8, 8, 3))
  with pytest.raises(ValueError, match='not a multiple of model.patch_size'):
    _abstract('vit_tiny', 10, (8, 8, 3), patch_size=3)
  with pytest.raises(ValueError, match="stem='x'"):
    _abstract('resnet18', 10, stem='x')
  with pytest.raises(ValueError, match='image_shape'):
    create_model(ModelConfig(name='cnn'), 10, (8, 8))


def _loss_grad_stats(model, x, y):
  """Compiled loss, gradient and model state after one training forward,
  and XLA's planned temporaries (bytes)."""
  graphdef, state = nnx.split(model)

  def f(state, x):
    model = nnx.merge(graphdef, state)

    def loss(model):
      logp = jax.nn.log_softmax(model(x))
      return -jnp.mean(jnp.take_along_axis(logp, y[:, None], 1))
    value, grads = nnx.value_and_grad(loss)(model)
    return value, grads, nnx.state(model)  # the BatchNorm statistics too
  compiled = jax.jit(f).lower(state, x).compile()
  return compiled(state, x), compiled.memory_analysis().temp_size_in_bytes


@pytest.mark.slow
@pytest.mark.parametrize('name,fields', [('resnet18', {'width': 8}),
                                         ('vit_tiny', {'depth': 4})])
def test_remat_gives_the_same_step(name, fields):
  x = jax.random.normal(jax.random.key(0), (8, 32, 32, 3))
  y = jnp.arange(8) % 10
  (ref, plain), (out, remat) = (_loss_grad_stats(create_model(ModelConfig(
      name=name, remat=r, **fields), 10, (32, 32, 3)), x, y)
      for r in (False, True))
  assert jax.tree.structure(ref) == jax.tree.structure(out)
  for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(out)):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6)
  if name == 'vit_tiny':  # the scan over blocks keeps less on every backend
    assert remat < 0.8 * plain, (remat, plain)


def test_scan_blocks_refuses_blocks_of_two_structures():
  from lionx.train.models import remat
  blocks = [nnx.Linear(4, 4, rngs=nnx.Rngs(0)),
            nnx.Linear(4, 4, use_bias=False, rngs=nnx.Rngs(1))]
  with pytest.raises(ValueError, match='the blocks differ in structure'):
    remat.scan_blocks(blocks, jnp.ones((2, 4)))


def test_remat_needs_blocks():
  with pytest.raises(ValueError, match="model.remat=True with "
                     "model.name='cnn': expected a resnet"):
    from lionx.train.models import vision
    vision.validate(ModelConfig(name='cnn', remat=True))


TASK = tasks.get_task('classification')


def _bn_model():
  config = tiny_config(model__batch_norm=True)
  ds = data.load_dataset(config.data)
  state = steps.create_train_state(config, TASK, ds.spec, 4, 4)
  return config, ds, state


def _train_step(state):
  mesh = parallel.make_mesh(1)
  parallel.shard_train_state(state.model, state.optimizer, mesh)
  return steps.make_train_step(TASK, mesh, state)


def _first_batch(ds):
  return data.train_batch(ds, 0, seed=0, batch_size=16,
                          augment_images=False)


def _logging(view, ds, batch_size, max_batches=0):
  return steps.logging_pass(
      TASK, view, data.eval_batches(ds, 'train', batch_size, max_batches))


def _stats(model):
  return [np.asarray(x) for x in jax.tree.leaves(
      nnx.state(model, nnx.BatchStat))]


def test_batchnorm_train_updates_eval_and_logging_do_not():
  config, ds, state = _bn_model()
  before = _stats(state.model)
  _train_step(state)(state.model, state.optimizer, _first_batch(ds))
  after_train = _stats(state.model)
  assert any(not np.array_equal(a, b) for a, b in zip(before, after_train))
  view = steps.eval_view(state.model)
  _logging(view, ds, 32)
  steps.evaluate(TASK, view, data.eval_batches(ds, 'test', 32))
  for a, b in zip(after_train, _stats(state.model)):
    np.testing.assert_array_equal(a, b)
  assert state.model.bn1.use_running_average is False  # still train mode


@pytest.mark.slow
def test_logging_epoch_is_the_exact_full_gradient():
  config, ds, state = _bn_model()
  _train_step(state)(state.model, state.optimizer, _first_batch(ds))
  view = steps.eval_view(state.model)
  logged = _logging(view, ds, 7)  # uneven batches
  loss, acc, grads = (logged.loss, logged.metrics['train_accuracy'],
                      logged.grads)
  # Reference: one eval-mode pass over all images at once.
  images = jnp.asarray(ds.normalize(ds.train_images))
  labels = jnp.asarray(ds.train_labels)

  def f(model):
    logits = model(images)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
        logits, labels)), logits
  (ref_loss, logits), ref_grads = nnx.value_and_grad(f, has_aux=True)(
      steps.eval_view(state.model))
  assert loss == pytest.approx(float(ref_loss), rel=1e-5)
  assert acc == pytest.approx(float(jnp.mean(
      jnp.argmax(logits, -1) == labels)))
  for a, b in zip(jax.tree.leaves(grads),
                  jax.tree.leaves(nnx.as_pure(ref_grads))):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6)
  capped = _logging(view, ds, 16, max_batches=1).loss
  first = slice(0, 16)
  ref_capped = optax.softmax_cross_entropy_with_integer_labels(
      logits[first], labels[first]).mean()
  assert capped == pytest.approx(float(ref_capped), rel=1e-5)
