r"""The training loop with the papers' intertwined epochs (REFERENCE §6).

Each epoch is

1. a **training epoch**: the stochastic loop, one jit-compiled step per
   batch (:func:`lionx.train.parallel.make_train_step`, the model and
   optimizer donated);
2. a **logging epoch**: with the parameters frozen, no augmentation and
   BatchNorm in eval mode (running statistics, which it does not update),
   the exact full-data loss :math:`f(\theta)` and gradient
   :math:`\nabla f(\theta)` are accumulated over the training set (or its
   first ``logging_max_batches`` batches). Eval-mode BatchNorm makes
   :math:`f` a function of :math:`\theta` alone, independent of how the
   set is batched;
3. **test** top-1 accuracy.

A run uses ``parallel.num_devices`` devices (:mod:`lionx.train.parallel`):
the batches are sharded over a ``data`` mesh axis and the state replicated
(``parallel.mode='replicated'``) or sharded (``'fsdp'``); ``distributed_lion``
steps in ``jax.shard_map`` on each device's own gradient. One device is a
mesh of one: the same code runs.

After the logging epoch one JSON line goes to ``workdir/metrics.jsonl``
(:data:`METRICS_FIELDS`), every diagnostic from :mod:`lionx.metrics`. The
sign agreement compares the optimizer's direction for the full gradient
(:func:`lionx.train.optimizers.direction`: :math:`c = \beta_1 m +
(1-\beta_1)\nabla f` for Lion) with :math:`\nabla f`. For every optimizer
the box fields use the config's weight decay.

Checkpoints (:mod:`lionx.train.checkpoint`) are written every
``checkpoint_every_epochs`` epochs and at the end; rerunning with the same
workdir resumes from the newest one and ends with the same bits as an
uninterrupted run. A non-finite loss stops the run and keeps the last good
checkpoint.
"""

from __future__ import annotations

import functools
import json
import math
import pathlib
import shutil
import time
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from lionx import metrics
from lionx.train import config as config_lib
from lionx.train import data as data_lib
from lionx.train import optimizers, parallel, report
from lionx.train.checkpoint import Checkpointer
from lionx.train.config import Config, ConfigError
from lionx.train.models import create_model, num_params
from lionx.train.schedules import make_schedule

# The fields of every metrics.jsonl line.
METRICS_FIELDS = (
    'epoch', 'step', 'optimizer', 'lr', 'train_loss', 'full_loss',
    'train_accuracy', 'test_loss', 'test_accuracy', 'grad_l1', 'grad_l2',
    'grad_norm_ratio', 'grad_norm_ratio_over_sqrt_d', 'sqrt_d',
    'box_linf_scaled', 'box_max_violation', 'box_fraction_at_bound',
    'constraint', 'kkt_residual', 'kkt_residual_running_mean',
    'grad_l1_running_mean', 'sign_agreement', 'zero_sign_fraction',
    'wall_time')

# How the data order is derived (recorded in every checkpoint): the
# permutation and augmentations of epoch e are functions of (seed, e).
DATA_ORDER = 'numpy default_rng([seed, epoch, stream]), epoch 0-based'

# Files a run writes in its workdir.
CONFIG_FILE, METRICS_FILE, RESULT_FILE = (
    'config.json', 'metrics.jsonl', 'result.json')
CHECKPOINT_DIR = 'checkpoints'
GRID_FILE = 'grid.json'
_RUN_FILES = (CONFIG_FILE, METRICS_FILE, RESULT_FILE, CHECKPOINT_DIR)


class NonFiniteLossError(RuntimeError):
  """The loss became NaN or infinite; the run stopped."""


class RunResult(NamedTuple):
  """What a run left in its workdir."""

  status: str  # 'finished' | 'diverged' | 'interrupted'
  workdir: pathlib.Path
  learning_rate: float
  rows: list[dict[str, Any]]  # the metrics.jsonl lines
  message: str = ''


class TrainState(NamedTuple):
  """A model, its optimizer and the learning-rate schedule."""

  model: nnx.Module
  optimizer: nnx.Optimizer
  schedule: optax.Schedule


# --- steps -------------------------------------------------------------------


def _cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  return optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), labels)


def _loss(model: nnx.Module, batch: dict[str, jax.Array]) -> jax.Array:
  """The mean cross-entropy of a training batch."""
  return jnp.mean(_cross_entropy(model(batch['image']), batch['label']))


def _train_step(model: nnx.Module, optimizer: nnx.Optimizer,
                batch: dict[str, jax.Array]) -> jax.Array:
  loss, grads = nnx.value_and_grad(_loss)(model, batch)
  optimizer.update(model, grads)
  return loss


_donated_train_step = nnx.jit(_train_step, donate_argnums=(0, 1))
_plain_train_step = nnx.jit(_train_step)


def make_train_step(donate: bool = True) -> Callable[..., jax.Array]:
  """The jit-compiled step ``(model, optimizer, batch) -> loss``.

  It updates ``model`` and ``optimizer`` in place (BatchNorm in train mode
  updates its running statistics); ``batch`` holds ``image`` (B, H, W, C)
  float32 and ``label`` (B,) int32. With ``donate`` the old buffers of the
  model and optimizer are reused for the new ones.
  """
  return _donated_train_step if donate else _plain_train_step


@nnx.jit(donate_argnums=1)
def _logging_step(model, totals, batch):
  """Adds one batch's summed loss, correct count and gradient to totals."""
  def loss_fn(model):
    logits = model(batch['image'])
    losses = _cross_entropy(logits, batch['label']) * batch['mask']
    return jnp.sum(losses), logits
  (loss, logits), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
  hits = (jnp.argmax(logits, -1) == batch['label']) * batch['mask']
  grads = nnx.as_pure(grads)
  return {'loss': totals['loss'] + loss,
          'correct': totals['correct'] + jnp.sum(hits),
          'count': totals['count'] + jnp.sum(batch['mask']),
          'grads': jax.tree.map(jnp.add, totals['grads'], grads)}


@nnx.jit
def _eval_step(model, batch):
  logits = model(batch['image'])
  losses = _cross_entropy(logits, batch['label']) * batch['mask']
  hits = (jnp.argmax(logits, -1) == batch['label']) * batch['mask']
  return jnp.sum(losses), jnp.sum(hits), jnp.sum(batch['mask'])


def create_train_state(config: Config, num_classes: int,
                       image_shape: tuple[int, int, int],
                       steps_per_epoch: int,
                       mesh: Optional[jax.sharding.Mesh] = None
                       ) -> TrainState:
  """The model, ``nnx.Optimizer(model, tx, wrt=nnx.Param)`` and schedule.

  With a ``mesh`` (:func:`lionx.train.parallel.make_mesh`) the state is
  placed on it as ``config.parallel.mode`` says (the optimizers of
  ``optimizers.PER_DEVICE`` get one momentum per device).

  Example:
    >>> from lionx.train.config import Config
    >>> from lionx.train.loop import create_train_state, make_train_step
    >>> import numpy as np
    >>> config = Config()
    >>> config.optimizer.learning_rate = 1e-3
    >>> state = create_train_state(config, 10, (8, 8, 1), steps_per_epoch=1)
    >>> batch = {'image': np.zeros((4, 8, 8, 1), np.float32),
    ...          'label': np.zeros(4, np.int32)}
    >>> loss = make_train_step()(state.model, state.optimizer, batch)
    >>> int(state.optimizer.step[...])
    1
  """
  key = json.dumps({
      # The registry entry too: a name may be re-registered.
      'spec': id(optimizers.OPTIMIZERS.get(config.optimizer.name)),
      'optimizer': config_lib.to_dict(config.optimizer),
      'learning_rate': config_lib.learning_rate(config),
      'schedule': config_lib.to_dict(config.schedule),
      'total_steps': config.num_epochs * steps_per_epoch,
      'warmup_steps': config.schedule.warmup_epochs * steps_per_epoch,
  }, sort_keys=True)
  tx, schedule = _tx_and_schedule(key)
  model = create_model(config.model, num_classes, image_shape,
                       seed=config.seed)
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  if mesh is not None:
    parallel.shard_train_state(
        model, optimizer, mesh, config.parallel.mode,
        per_device=config.optimizer.name in optimizers.PER_DEVICE)
  return TrainState(model, optimizer, schedule)


@functools.lru_cache(maxsize=64)
def _tx_and_schedule(key: str):
  """One (tx, schedule) per setting: equal settings share the object, so
  the jitted step (whose static part holds tx) is compiled once."""
  spec = json.loads(key)
  schedule = make_schedule(
      spec['schedule']['name'], spec['learning_rate'],
      total_steps=spec['total_steps'], warmup_steps=spec['warmup_steps'],
      final_fraction=spec['schedule']['final_fraction'])
  opt = config_lib.from_dict(spec['optimizer'], config_lib.OptimizerConfig)
  return optimizers.make_optimizer(opt, schedule), schedule


def eval_view(model: nnx.Module) -> nnx.Module:
  """``model`` with BatchNorm on running statistics (shares its arrays)."""
  return nnx.view(model, use_running_average=True, deterministic=True,
                  raise_if_not_found=False)


def _eval_batches(dataset: data_lib.Dataset, split: str, batch_size: int,
                  max_batches: int = 0,
                  mesh: Optional[jax.sharding.Mesh] = None):
  """Evaluation batches, padded (mask 0) and sharded over ``mesh``."""
  for batch in data_lib.eval_batches(dataset, split, batch_size,
                                     max_batches):
    if mesh is not None:
      batch = parallel.put_batch(parallel.pad_batch(batch, mesh.size), mesh)
    yield batch


def full_loss_and_grad(
    view: nnx.Module, dataset: data_lib.Dataset, batch_size: int,
    max_batches: int = 0, mesh: Optional[jax.sharding.Mesh] = None
) -> tuple[float, float, Any]:
  """The logging epoch: ``(f(θ), train accuracy, ∇f(θ))`` over the set.

  With a ``mesh`` each batch is sharded over its devices (and padded to a
  multiple of their number with ``mask`` 0).
  """
  params = nnx.as_pure(nnx.state(view, nnx.Param))
  totals = {'loss': jnp.zeros([]), 'correct': jnp.zeros([]),
            'count': jnp.zeros([]),
            'grads': jax.tree.map(jnp.zeros_like, params)}
  wait = mesh is not None and mesh.size > 1
  for batch in _eval_batches(dataset, 'train', batch_size, max_batches,
                             mesh):
    totals = _logging_step(view, totals, batch)
    if wait:  # no collectives left in flight (XLA:CPU can deadlock)
      jax.block_until_ready(totals)
  count = totals['count']
  grads = jax.tree.map(lambda g: g / count, totals['grads'])
  return (float(totals['loss'] / count), float(totals['correct'] / count),
          grads)


def evaluate(view: nnx.Module, dataset: data_lib.Dataset,
             batch_size: int, mesh: Optional[jax.sharding.Mesh] = None
             ) -> tuple[float, float]:
  """``(test loss, test top-1 accuracy)``."""
  loss = correct = count = 0.0
  for batch in _eval_batches(dataset, 'test', batch_size, mesh=mesh):
    s, c, n = _eval_step(view, batch)
    loss, correct, count = loss + float(s), correct + float(c), count + float(n)
  return loss / count, correct / count


def make_diagnostics(config: config_lib.OptimizerConfig):
  """A jitted ``(params, grads, opt_state) -> dict`` of lionx.metrics."""
  return _diagnostics(json.dumps({
      'spec': id(optimizers.OPTIMIZERS.get(config.name)),
      'optimizer': config_lib.to_dict(config)}, sort_keys=True))


@functools.lru_cache(maxsize=64)
def _diagnostics(key: str):
  config = config_lib.from_dict(json.loads(key)['optimizer'],
                                config_lib.OptimizerConfig)
  weight_decay = config.weight_decay
  reshaper = optimizers.reshaper(config)

  @jax.jit
  def diagnostics(params, grads, opt_state):
    ratio = metrics.grad_norm_ratio(grads)
    box = metrics.box_feasibility(params, weight_decay)
    if reshaper is None or reshaper.name == 'sign':
      constraint = box.linf_scaled
    else:
      constraint = metrics.box_feasibility(
          params, weight_decay, reshaper=reshaper).linf_scaled
    stats = metrics.update_stats(
        optimizers.direction(config, opt_state, grads), grads)
    return {
        'grad_l1': metrics.tree_l1(grads),
        'grad_l2': metrics.tree_l2(grads),
        'grad_norm_ratio': ratio.ratio,
        'grad_norm_ratio_over_sqrt_d': ratio.ratio_over_sqrt_d,
        'sqrt_d': ratio.sqrt_d,
        'box_linf_scaled': box.linf_scaled,
        'box_max_violation': box.max_violation,
        'box_fraction_at_bound': box.fraction_at_bound,
        'constraint': constraint,
        'kkt_residual': metrics.kkt_residual(params, grads, weight_decay),
        'sign_agreement': stats.sign_agreement,
        'zero_sign_fraction': stats.zero_sign_fraction,
    }
  return diagnostics


# --- the workdir -------------------------------------------------------------


def run_identity(config: Config) -> dict[str, Any]:
  """The fields that decide one run's result, with its learning rate.

  ``parallel.num_devices`` is the number of devices the run uses (0
  resolved): sums over another number of devices round differently, and
  ``distributed_lion`` keeps one momentum per device.
  """
  out = config_lib.identity(config)
  out['parallel']['num_devices'] = len(
      parallel.select_devices(config.parallel.num_devices))
  out.pop('compare_optimizers')
  out.pop('lr_select')
  out['optimizer']['learning_rate'] = config_lib.learning_rate(config)
  out['optimizer'].pop('learning_rates')
  out['optimizer'].pop('lr_grid')
  return out


def _diff(old: Any, new: Any, prefix: str = '') -> list[str]:
  if isinstance(old, dict) and isinstance(new, dict):
    out = []
    for key in sorted(set(old) | set(new), key=str):
      path = f'{prefix}.{key}' if prefix else str(key)
      out += _diff(old.get(key, '<unset>'), new.get(key, '<unset>'), path)
    return out
  return [] if old == new else [f'{prefix}: {old!r} -> {new!r}']


def clear_run_files(workdir: pathlib.Path) -> None:
  """Deletes what a run (or a grid) wrote in ``workdir``, nothing else."""
  for name in _RUN_FILES + (GRID_FILE,):
    path = workdir / name
    if path.is_dir():
      shutil.rmtree(path)
    elif path.exists():
      path.unlink()


def check_workdir(workdir: pathlib.Path, identity: dict[str, Any],
                  overwrite: bool, kind: str = CONFIG_FILE) -> None:
  """Refuses a workdir that holds results of a different config.

  ``kind`` is the file that records the config: ``config.json`` for a run,
  ``grid.json`` for a learning-rate grid.
  """
  if overwrite or not workdir.exists():
    return
  other = GRID_FILE if kind == CONFIG_FILE else CONFIG_FILE
  hint = ('pass --overwrite to discard what is there, or choose another '
          '--workdir')
  if (workdir / other).exists():
    what = 'a learning-rate grid' if other == GRID_FILE else 'a single run'
    raise ConfigError(f'workdir {workdir} holds {what}; {hint}.')
  path = workdir / kind
  if not path.exists():
    if any((workdir / name).exists() for name in _RUN_FILES):
      raise ConfigError(
          f'workdir {workdir} holds results without a {kind}; {hint}.')
    return
  try:
    stored = _with_defaults(json.loads(path.read_text())['config'])
  except (ValueError, KeyError, TypeError, AttributeError) as err:
    raise ConfigError(f'{path}: unreadable ({err}); {hint}.') from None
  changes = _diff(stored, identity)
  if changes:
    shown = '; '.join(changes[:3]) + ('; ...' if len(changes) > 3 else '')
    raise ConfigError(
        f'workdir {workdir} holds results of a different config ({shown}); '
        f'{hint}.')


# Fields added to the config after runs were recorded, with the value
# those runs had: such a run is still recognised (and resumed).
_ADDED_FIELDS = {
    ('optimizer', 'aggregation'): 'majority',
    ('parallel',): {'mode': 'replicated', 'num_devices': 1},
}


def _with_defaults(stored: dict[str, Any]) -> dict[str, Any]:
  """A recorded identity with the later-added fields filled in."""
  for path, value in _ADDED_FIELDS.items():
    node = stored
    for key in path[:-1]:
      node = node.get(key)
    if isinstance(node, dict) and path[-1] not in node:
      node[path[-1]] = value
  return stored


def read_metrics(workdir: pathlib.Path) -> list[dict[str, Any]]:
  """The lines of ``workdir/metrics.jsonl`` (empty if there is none)."""
  path = pathlib.Path(workdir) / METRICS_FILE
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines()
          if line.strip()]


def _write_json(path: pathlib.Path, value: Any) -> None:
  tmp = path.with_suffix('.tmp')
  tmp.write_text(json.dumps(value, indent=1, sort_keys=True) + '\n')
  tmp.replace(path)


def _truncate_metrics(workdir: pathlib.Path, epoch: int) -> None:
  """Drops lines after ``epoch`` (written after the last checkpoint)."""
  rows = [r for r in read_metrics(workdir) if r['epoch'] <= epoch]
  text = ''.join(json.dumps(r) + '\n' for r in rows)
  (workdir / METRICS_FILE).write_text(text)


def _stored_result(workdir: pathlib.Path,
                   lr: float) -> Optional[RunResult]:
  path = workdir / RESULT_FILE
  if not path.exists():
    return None
  result = json.loads(path.read_text())
  return RunResult(result['status'], workdir, lr, read_metrics(workdir),
                   result.get('message', ''))


# --- the loop ---------------------------------------------------------------


def _log(message: str, verbose: bool) -> None:
  if verbose:
    print(message, flush=True)


def train_and_evaluate(
    config: Config,
    workdir: str | pathlib.Path,
    *,
    overwrite: bool = False,
    dataset: Optional[data_lib.Dataset] = None,
    verbose: bool = True,
) -> RunResult:
  """Trains one run into ``workdir``; resumes or re-reports what is there.

  Args:
    config: a :class:`lionx.train.config.Config` (validated here); its
      ``optimizer.lr_grid`` is ignored (see :mod:`lionx.train.sweep`).
    workdir: where ``config.json``, ``metrics.jsonl``, ``result.json`` and
      ``checkpoints/`` go.
    overwrite: discard earlier results in ``workdir`` and start afresh.
    dataset: the loaded data (default: ``load_dataset(config.data)``).
    verbose: print d, sqrt(d) and the summary table.

  Returns:
    A :class:`RunResult`.

  Raises:
    ConfigError: a bad config, or a workdir holding a different config.
    NonFiniteLossError: the loss became NaN or infinite.
  """
  config = config_lib.validate(config)
  workdir = pathlib.Path(workdir)
  lr = config_lib.learning_rate(config)
  mesh = parallel.make_mesh(config.parallel.num_devices)
  parallel.check_divisible('batch_size', config.batch_size, mesh,
                           config.parallel.num_devices)
  identity = run_identity(config)
  check_workdir(workdir, identity, overwrite)
  if overwrite and workdir.exists():
    clear_run_files(workdir)
  stored = _stored_result(workdir, lr)
  if stored is not None:
    if verbose:
      _log(f'{workdir}: {stored.status} earlier with this config; '
           'reporting it again.', verbose)
      print(report.run_table(stored.rows))
    if stored.status == 'diverged':
      raise NonFiniteLossError(stored.message)
    return stored
  workdir.mkdir(parents=True, exist_ok=True)
  if not (workdir / CONFIG_FILE).exists() and _writer():
    _write_json(workdir / CONFIG_FILE, {'config': identity})

  dataset = dataset or data_lib.load_dataset(config.data)
  steps = data_lib.steps_per_epoch(dataset, config.batch_size)
  state = create_train_state(config, dataset.num_classes,
                             dataset.image_shape, steps, mesh)
  d = num_params(state.model)
  where = ('' if mesh.size == 1 else
           f' on {mesh.size} devices ({config.parallel.mode})')
  _log(f'{config.model.name} on {dataset.name} '
       f'({len(dataset.train_labels)} train / {len(dataset.test_labels)} '
       f'test, {dataset.num_classes} classes): d = {d:,} parameters, '
       f'sqrt(d) = {math.sqrt(d):.1f}; {config.optimizer.name} lr={lr:g}'
       f'{where}', verbose)

  checkpointer = Checkpointer(workdir / CHECKPOINT_DIR)
  try:
    return _run(config, workdir, dataset, state, checkpointer, steps, lr,
                verbose, mesh)
  finally:
    checkpointer.close()


def _writer() -> bool:
  """Whether this process writes the run's files (process 0 of a
  multi-host run; checkpoints are written by every process, with orbax)."""
  return jax.process_index() == 0


def _run(config, workdir, dataset, state, checkpointer, steps, lr, verbose,
         mesh):
  model, optimizer, schedule = state
  meta = {'epoch': 0, 'step': 0, 'seed': config.seed, 'wall_time': 0.0,
          'grad_l1_sum': 0.0, 'kkt_sum': 0.0,
          'data_order': DATA_ORDER, 'next_data_epoch': 0}
  latest = checkpointer.latest_epoch()
  if latest is not None:
    meta = checkpointer.restore(latest, model, optimizer)
    if (meta.get('seed'), meta.get('data_order')) != (config.seed,
                                                      DATA_ORDER):
      raise ConfigError(
          f'{checkpointer.directory}: checkpoint of seed {meta.get("seed")}'
          f' and data order {meta.get("data_order")!r}; expected seed '
          f'{config.seed} and {DATA_ORDER!r}. Use --overwrite.')
    _log(f'{workdir}: resuming after epoch {latest}.', verbose)
  if _writer():
    _truncate_metrics(workdir, meta['epoch'])
  start = meta['epoch']
  last = config.num_epochs
  if config.max_epochs_this_run:
    last = min(last, start + config.max_epochs_this_run)

  train_step = parallel.make_train_step(
      mesh, model, optimizer, _loss,
      per_device=config.optimizer.name in optimizers.PER_DEVICE)
  view = eval_view(model)
  diagnostics = make_diagnostics(config.optimizer)
  step, began = meta['step'], time.perf_counter()
  bar = report.progress_bar(
      total=(last - start) * steps, enabled=config.progress and verbose,
      desc=f'{config.optimizer.name} lr={lr:g}')

  def stop(message: str) -> NonFiniteLossError:
    bar.close()
    good = checkpointer.latest_epoch()
    kept = (f'the last good checkpoint (epoch {good}) is kept in '
            f'{checkpointer.directory}' if good is not None else
            'no checkpoint had been written yet')
    message = f'{message}; stopped, {kept}.'
    if _writer():
      _write_json(workdir / RESULT_FILE,
                  {'status': 'diverged', 'message': message})
    return NonFiniteLossError(message)

  for epoch in range(start + 1, last + 1):
    losses = []
    for batch in data_lib.train_batches(dataset, config.batch_size,
                                        config.seed, epoch - 1,
                                        config.data.augment):
      loss = float(train_step(model, optimizer, batch))
      step += 1
      if not math.isfinite(loss):
        raise stop(f'non-finite training loss {loss} at epoch {epoch}, '
                   f'step {step} ({config.optimizer.name}, lr={lr:g})')
      losses.append(loss)
      bar.update(1)
      if step % 10 == 0 or len(losses) == steps:
        bar.set_postfix(epoch=epoch, loss=f'{loss:.4f}', refresh=False)

    full_loss, train_acc, grads = full_loss_and_grad(
        view, dataset, config.eval_batch_size, config.logging_max_batches,
        mesh)
    if not math.isfinite(full_loss):
      raise stop(f'non-finite full training loss {full_loss} at epoch '
                 f'{epoch} ({config.optimizer.name}, lr={lr:g})')
    test_loss, test_acc = evaluate(view, dataset, config.eval_batch_size,
                                   mesh)
    params = nnx.as_pure(nnx.state(model, nnx.Param))
    values = {k: float(v) for k, v in diagnostics(
        params, grads, nnx.as_pure(optimizer.opt_state)).items()}
    meta['grad_l1_sum'] += values['grad_l1']
    meta['kkt_sum'] += values['kkt_residual']
    wall = meta['wall_time'] + time.perf_counter() - began
    row = {
        'epoch': epoch, 'step': step, 'optimizer': config.optimizer.name,
        'lr': float(schedule(max(step - 1, 0))),
        'train_loss': sum(losses) / len(losses), 'full_loss': full_loss,
        'train_accuracy': train_acc, 'test_loss': test_loss,
        'test_accuracy': test_acc, **values,
        'grad_l1_running_mean': meta['grad_l1_sum'] / epoch,
        'kkt_residual_running_mean': meta['kkt_sum'] / epoch,
        'wall_time': wall}
    if _writer():
      with open(workdir / METRICS_FILE, 'a') as f:
        f.write(json.dumps({k: row[k] for k in METRICS_FIELDS}) + '\n')

    if (epoch % config.checkpoint_every_epochs == 0 or epoch == last):
      meta.update(epoch=epoch, step=step, wall_time=wall,
                  next_data_epoch=epoch)
      checkpointer.save(epoch, model, optimizer, meta)
  bar.close()

  rows = read_metrics(workdir)
  if last < config.num_epochs:
    _log(f'{workdir}: stopped after epoch {last} of {config.num_epochs} '
         '(max_epochs_this_run); rerun to resume.', verbose)
    return RunResult('interrupted', workdir, lr, rows)
  if _writer():
    _write_json(workdir / RESULT_FILE,
                {'status': 'finished', 'epochs': config.num_epochs,
                 'final': rows[-1] if rows else None})
  if verbose:
    print(report.run_table(rows), flush=True)
  return RunResult('finished', workdir, lr, rows)
