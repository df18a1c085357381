r"""``train_and_evaluate``: the task-agnostic loop, with the papers' logging.

A run is a sequence of *intervals* of ``eval_every_steps`` steps (one epoch
when that is 0), each followed by an evaluation (REFERENCE §6):

1. **training**: one jit-compiled step per batch
   (:func:`lionx.train.steps.make_train_step`); the losses stay on the
   device and are checked once per interval;
2. **logging pass**: with the parameters frozen and the model in eval mode,
   the exact :math:`f(\theta)` and :math:`\nabla f(\theta)` over the
   task's logging batches (the training set, or ``logging_max_batches``),
   and from them the diagnostics of :mod:`lionx.train.diagnostics`;
3. **held-out** metrics of the task.

Each evaluation is one row (:data:`METRICS_FIELDS` plus the task's own
fields) for the writers (:mod:`lionx.train.writers`): metrics.jsonl, a line
on stdout, the figures, TensorBoard. Checkpoints are written every
``checkpoint_every_evals`` evaluations and at the end; rerunning with the
same workdir resumes from the newest one and ends with the same bits as an
uninterrupted run. ``wall_time`` is the training time of the run's own
history, also across resumes. A non-finite loss stops the run and keeps the
last good checkpoint. The task supplies everything task-specific
(:mod:`lionx.train.tasks`).

**Hooks** (:class:`Hook`) see the run as it trains: the state before the
first step this invocation trains, after every step and after every
evaluation (with its row). The papers' reproductions measure with them
what the loop does not record (a probe of the parameters after every
step, weight histograms); they run the same loop as ``lionx-train``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import sys
import time
from typing import Any, Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from lionx.train import config as config_lib
from lionx.train import diagnostics as diagnostics_lib
from lionx.train import optimizers
from lionx.train import parallel
from lionx.train import plots
from lionx.train import report
from lionx.train import steps
from lionx.train import tasks
from lionx.train import workdir as workdir_lib
from lionx.train import writers as writers_lib
from lionx.train.checkpoint import Checkpointer
from lionx.train.config import Config, ConfigError

#: The fields of every metrics.jsonl line, whatever the task (which adds its
#: own, e.g. ``test_accuracy``); ``epoch`` is there when the data has epochs.
METRICS_FIELDS = (
    'step', 'optimizer', 'lr', 'train_loss', 'full_loss', 'val_loss',
    'grad_l1', 'grad_l2', 'grad_norm_ratio', 'grad_norm_ratio_over_sqrt_d',
    'sqrt_d', 'box_weight_decay', 'box_linf_scaled', 'box_max_violation',
    'box_fraction_at_bound', 'constraint', 'kkt_residual',
    'kkt_residual_running_mean', 'grad_l1_running_mean', 'sign_agreement',
    'zero_sign_fraction', 'wall_time')


class Hook:
  """Watches a run of :func:`train_and_evaluate`; override what you need.

  ``step`` is the number of updates made so far; ``state`` the run's
  :class:`lionx.train.steps.TrainState` (model, ``nnx.Optimizer``, built
  optimizer), which a hook must not change.

  Example:
    >>> import jax
    >>> from flax import nnx
    >>> from lionx import metrics
    >>> class Linf(Hook):
    ...   def __init__(self):
    ...     self.values = []
    ...   def after_step(self, step, state):
    ...     params = nnx.state(state.model, nnx.Param)
    ...     self.values.append(metrics.tree_linf(params))
  """

  def start(self, step: int, state: steps.TrainState) -> None:
    """Before the first step this invocation trains (``step`` > 0 on
    resume)."""

  def after_step(self, step: int, state: steps.TrainState) -> None:
    """After each training step."""

  def after_eval(self, row: dict[str, Any], state: steps.TrainState
                 ) -> None:
    """After each evaluation, with its metrics row."""


class NonFiniteLossError(RuntimeError):
  """The loss became NaN or infinite; the run stopped."""


class RunResult(NamedTuple):
  """What a run left in its workdir."""

  status: str  # 'finished' | 'diverged' | 'interrupted'
  workdir: pathlib.Path
  learning_rate: float
  rows: list[dict[str, Any]]  # the metrics.jsonl lines
  message: str = ''


@dataclasses.dataclass
class Progress:
  """Where a run stands; saved in each checkpoint's meta."""

  step: int = 0
  evals: int = 0
  wall_time: float = 0.0  # seconds of training history up to `step`
  grad_l1_sum: float = 0.0
  kkt_sum: float = 0.0


@dataclasses.dataclass
class _Run:
  """The fixed context of one run."""

  config: Config
  task: tasks.Task
  path: pathlib.Path
  data: Any
  mesh: jax.sharding.Mesh
  echo: Optional[Callable[[str], None]]
  hooks: tuple[Hook, ...] = ()
  total_steps: int = 0
  every: int = 0
  steps_per_epoch: Optional[int] = None
  schedule_steps: int = 0  # the schedule's length (see --extend)
  fingerprint: dict[str, str] = dataclasses.field(default_factory=dict)
  allow_data_change: bool = False

  @property
  def lr(self) -> float:
    return optimizers.learning_rate(self.config.optimizer)

  @property
  def name(self) -> str:
    return self.config.optimizer.name

  def log(self, message: str) -> None:
    if self.echo is not None:
      self.echo(message)


def _writer() -> bool:
  """Whether this process writes the run's files (process 0 of a
  multi-host run; checkpoints are written by every process, with orbax)."""
  return jax.process_index() == 0


def _echo(verbose: bool) -> Optional[Callable[[str], None]]:
  if not verbose:
    return None
  return lambda message: report.tqdm.write(message, file=sys.stdout)


def train_and_evaluate(
    config: Config,
    workdir: str | pathlib.Path,
    *,
    overwrite: bool = False,
    data: Any = None,
    verbose: bool = True,
    hooks: Sequence[Hook] = (),
    extend: bool = False,
    allow_data_change: bool = False,
) -> RunResult:
  """Trains one run into ``workdir``; resumes or re-reports what is there.

  Args:
    config: a :class:`lionx.train.config.Config` (validated here); its
      ``optimizer.lr_grid`` and ``seeds`` are ignored (see
      :mod:`lionx.train.sweep`).
    workdir: where ``config.json``, ``metrics.jsonl``, ``result.json``,
      ``checkpoints/`` and the figures go.
    overwrite: discard earlier results in ``workdir`` and start afresh.
    data: the task's loaded data (default: ``task.load_data(config)``).
    verbose: print d, sqrt(d), a line per evaluation and the summary.
    hooks: :class:`Hook` objects called as the run trains (none when the
      workdir holds a finished run, which is reported again).
    extend: continue the run in ``workdir`` to this config's longer
      ``num_steps`` (or ``num_epochs``), finished or not; its schedule keeps
      the length it had, so the new steps take its final learning rate.
      Only the length may differ from the stored config.
    allow_data_change: resume even if the data's fingerprint
      (:meth:`lionx.train.tasks.base.Task.fingerprint`) differs from the one in
      the checkpoint.

  Returns:
    A :class:`RunResult`.

  Raises:
    ConfigError: a bad config, a workdir holding a different config, or
      one in use by another process; a resume on changed data.
    NonFiniteLossError: the loss became NaN or infinite.
  """
  config = config_lib.validate(config)
  _flags(extend=extend, allow_data_change=allow_data_change)
  hooks = tuple(hooks)
  for i, hook in enumerate(hooks):
    if not isinstance(hook, Hook):
      raise TypeError(f'hooks[{i}]={hook!r}: expected a '
                      'lionx.train.experiment.Hook.')
  task = tasks.get_task(config.task)
  path = pathlib.Path(workdir)
  mesh = parallel.make_mesh(config.parallel.num_devices)
  parallel.check_divisible('batch_size', config.batch_size, mesh,
                           config.parallel.num_devices)
  identity = config_lib.run_identity(config)
  workdir_lib.check(path, identity, overwrite, extend=extend)
  with workdir_lib.lock(path):
    if overwrite:
      workdir_lib.clear(path)
    run = _Run(config, task, path, data, mesh, _echo(verbose), hooks,
               allow_data_change=allow_data_change)
    stored = workdir_lib.read_json(path / workdir_lib.RESULT_FILE)
    if stored is not None and not extend:
      return _report_again(run, stored)
    _load(run, extend)
    if stored is not None:
      if (stored['status'] != 'finished'
          or stored.get('steps', 0) >= run.total_steps):
        return _report_again(run, stored)
      if _writer():
        (path / workdir_lib.RESULT_FILE).unlink()
      run.log(f'{path}: extending the finished run from step '
              f'{stored["steps"]} to {run.total_steps}.')
    if run.schedule_steps < run.total_steps:
      final = optimizers.make_optimizer(
          config, run.schedule_steps,
          run.steps_per_epoch).schedule(run.schedule_steps)
      run.log(f'{path}: steps {run.schedule_steps + 1} to {run.total_steps} '
              f'at the schedule\'s final learning rate {float(final):g}' +
              (' (it does not move the parameters: set '
               'schedule.final_fraction > 0 or schedule.name=constant in '
               'the run to extend)' if float(final) == 0 else '') + '.')
    return _train(run, identity)


def _flags(**flags: Any) -> None:
  for name, value in flags.items():
    if not isinstance(value, bool):
      raise TypeError(f'{name}={value!r}: expected a bool.')


def _load(run: _Run, extend: bool = False) -> None:
  """The data and what follows from it: the run's length, the schedule's,
  the data's fingerprint."""
  config, task = run.config, run.task
  if run.data is None:
    run.data = task.load_data(config)
  run.steps_per_epoch = task.steps_per_epoch(config, run.data)
  run.total_steps = config_lib.total_steps(config, run.steps_per_epoch)
  run.every = config_lib.batches_per_eval(config, run.steps_per_epoch)
  run.fingerprint = task.fingerprint(config, run.data)
  run.schedule_steps = _schedule_steps(run, extend)


def _schedule_steps(run: _Run, extend: bool) -> int:
  """The steps the schedule spans: the run's own, or, once ``extend`` has
  continued it, those it had before (recorded in the workdir), after
  which the schedule keeps its final value."""
  record = workdir_lib.read_json(run.path / workdir_lib.EXTENSION_FILE)
  if record is not None:
    return int(record['schedule_steps'])
  stored = (workdir_lib.read_json(run.path / workdir_lib.CONFIG_FILE)
            if extend else None)
  if stored is None:
    return run.total_steps
  before = config_lib.copy(run.config)
  before.num_steps = stored['config']['num_steps']
  before.num_epochs = stored['config']['num_epochs']
  planned = config_lib.total_steps(before, run.steps_per_epoch)
  if run.total_steps < planned:
    raise ConfigError(
        f'--extend: this config runs {run.total_steps} steps, fewer than the '
        f'{planned} of the run in --workdir {run.path}; expected more '
        '(raise num_steps or num_epochs).')
  if run.total_steps > planned and _writer():
    workdir_lib.write_json(run.path / workdir_lib.EXTENSION_FILE,
                           {'schedule_steps': planned})
  return planned


def _train(run: _Run, identity: dict[str, Any]) -> RunResult:
  config, task = run.config, run.task
  state = steps.create_train_state(
      config, task, task.data_spec(run.data), run.schedule_steps,
      run.steps_per_epoch, run.mesh)
  d = steps.count_params(state.model)
  where = ('' if run.mesh.size == 1 else
           f' on {run.mesh.size} devices ({config.parallel.mode})')
  run.log(f'{task.describe(config, run.data)}: d = {d:,} parameters, '
          f'sqrt(d) = {math.sqrt(d):.1f}; {run.name} lr={run.lr:g}{where}')
  if _writer():
    workdir_lib.make(run.path)
    workdir_lib.start(run.path, 'run', identity, workdir_lib.provenance(
        config.seed, task.provenance(config, run.data)))
  with Checkpointer(run.path / workdir_lib.CHECKPOINT_DIR) as ckpt:
    progress = _restore(run, ckpt, state)
    if progress.step == 0 and config.init_from:
      _init_from(run, state)
    if _writer():
      workdir_lib.truncate_metrics(run.path, progress.step)
    writers = writers_lib.run_writers(
        run.path, run.echo, run.total_steps, f'{run.name} (lr {run.lr:g})',
        _title(run), task, _x_axis(run),
        rows=workdir_lib.read_metrics(run.path),
        tensorboard=config.tensorboard, start_step=progress.step)
    status = 'diverged'
    try:
      status = _loop(run, state, ckpt, progress, writers)
    finally:
      for writer in writers:
        writer.close(status == 'finished')
  return _finish(run, status)


def _title(run: _Run) -> str:
  opt = run.config.optimizer
  return (f'{run.config.model.name} on {run.config.data.name}, weight '
          f'decay {optimizers.weight_decay(opt):g}')


def _x_axis(run: _Run) -> str:
  return 'epoch' if run.steps_per_epoch is not None else 'step'


def _restore(run: _Run, ckpt: Checkpointer, state: steps.TrainState,
             doing: str = 'resuming after') -> Progress:
  latest = ckpt.latest_step()
  if latest is None:
    return Progress()
  meta = ckpt.restore(latest, state.model, state.optimizer)
  order = run.task.data_order()
  if (meta.get('seed'), meta.get('data_order')) != (run.config.seed, order):
    raise ConfigError(
        f'{ckpt.directory}: checkpoint of seed {meta.get("seed")} and data '
        f'order {meta.get("data_order")!r}; expected seed {run.config.seed}'
        f' and {order!r}. Use --overwrite.')
  _check_data(run, meta.get('data_fingerprint'), latest)
  run.log(f'{run.path}: {doing} step {latest}.')
  return Progress(**{f.name: meta[f.name]
                     for f in dataclasses.fields(Progress)})


def _check_data(run: _Run, saved: Optional[dict[str, str]],
                step: int) -> None:
  """Refuses (or, with allow_data_change, reports) data whose fingerprint
  differs from the checkpoint's (absent in checkpoints of lionx < 0.3)."""
  if saved is None or saved == run.fingerprint:
    return
  changed = sorted(k for k in set(saved) | set(run.fingerprint)
                   if saved.get(k) != run.fingerprint.get(k))
  first = changed[0]
  what = (f'{", ".join(changed)} changed; {first} was '
          f'{saved.get(first, "absent")!r}, now '
          f'{run.fingerprint.get(first, "absent")!r}')
  if not run.allow_data_change:
    raise ConfigError(
        f'--workdir {run.path}: the data differs from that of the '
        f'checkpoint of step {step} ({what}); pass --allow-data-change to '
        'resume on it anyway, or --overwrite to start afresh.')
  run.log(f'{run.path}: the data differs from that of step {step} '
          f'({what}); resuming on it (--allow-data-change).')


def _init_from(run: _Run, state: steps.TrainState) -> None:
  """The parameters (and BatchNorm statistics) of the newest checkpoint of
  another run; the optimizer state stays fresh."""
  source = pathlib.Path(run.config.init_from).expanduser()
  name = f'init_from={run.config.init_from!r}'
  folder = source / workdir_lib.CHECKPOINT_DIR
  if source.resolve() == run.path.resolve():
    raise ConfigError(f'{name} is this run\'s own --workdir; expected '
                      'another run (rerun without init_from to resume).')
  if not folder.is_dir():
    raise ConfigError(f'{name}: no {folder}; expected the workdir of a run '
                      'with a checkpoint.')
  with Checkpointer(folder, read_only=True) as other:
    step = other.latest_step()
    if step is None:
      raise ConfigError(f'{name}: {folder} holds no checkpoint.')
    try:
      other.restore_model(step, state.model, name)
    except ValueError as err:
      raise ConfigError(str(err)) from None
  run.log(f'{run.path}: parameters from {source} (step {step}); a fresh '
          'optimizer state.')


def _save(run: _Run, ckpt: Checkpointer, state: steps.TrainState,
          progress: Progress) -> None:
  meta = dict(dataclasses.asdict(progress), seed=run.config.seed,
              data_order=run.task.data_order(),
              data_fingerprint=run.fingerprint)
  ckpt.save(progress.step, state.model, state.optimizer, meta)


def _loop(run: _Run, state: steps.TrainState, ckpt: Checkpointer,
          progress: Progress, writers: list[writers_lib.Writer]) -> str:
  """Trains and evaluates until the end (or max_evals_this_run)."""
  config = run.config
  train_step = steps.make_train_step(run.task, run.mesh, state,
                                     config.grad_accum_steps)
  diagnostics = diagnostics_lib.make_diagnostics(state.built)
  stop = run.total_steps
  if config.max_evals_this_run:
    stop = min(stop, progress.step + config.max_evals_this_run * run.every)
  began, history = time.perf_counter(), progress.wall_time
  bar = report.progress_bar(
      total=stop - progress.step, enabled=config.progress and
      run.echo is not None, desc=f'{run.name} lr={run.lr:g}')
  for hook in run.hooks:
    hook.start(progress.step, state)
  with bar:
    while progress.step < stop:
      end = min((progress.step // run.every + 1) * run.every, stop)
      losses = _train_interval(run, state, train_step, progress.step, end,
                               bar, writers)
      _check_finite(run, ckpt, losses, progress.step)
      progress.step, progress.evals = end, progress.evals + 1
      row = _evaluate(run, state, diagnostics, progress, losses, ckpt)
      row['wall_time'] = history + time.perf_counter() - began
      for writer in writers:
        writer.write(row)
      for hook in run.hooks:
        hook.after_eval(row, state)
      if (progress.evals % config.checkpoint_every_evals == 0
          or end == stop):
        progress.wall_time = row['wall_time']
        _save(run, ckpt, state, progress)
  return 'finished' if stop == run.total_steps else 'interrupted'


def _train_interval(run: _Run, state: steps.TrainState, train_step,
                    start: int, end: int, bar,
                    writers: Sequence[writers_lib.Writer] = ()) -> jax.Array:
  """Steps ``start .. end - 1``; their losses, still on the device."""
  losses = []
  every = run.config.log_every_steps
  for step in range(start, end):
    batch = run.task.train_batch(run.config, run.data, step)
    losses.append(train_step(state.model, state.optimizer, batch))
    for hook in run.hooks:
      hook.after_step(step + 1, state)
    if every and (step + 1) % every == 0:
      # The last `every` steps, or those since this interval began: a
      # resume starts at an interval too, so it logs the same lines.
      loss = float(jnp.mean(jnp.stack(losses[-every:])))
      for writer in writers:
        writer.write_train(step + 1, loss)
    bar.update(1)
    if len(losses) % 10 == 0 and len(losses) > 10:
      # A loss from 10 steps ago: the device has (nearly) finished it.
      bar.set_postfix(loss=f'{float(losses[-11]):.4f}', refresh=False)
  return jnp.stack(losses)


def _where(run: _Run, step: int) -> str:
  """``epoch E, step S`` (1-based step numbers) or ``step S``."""
  if run.steps_per_epoch is None:
    return f'step {step}'
  return f'epoch {-(-step // run.steps_per_epoch)}, step {step}'


def _diverged(run: _Run, ckpt: Checkpointer,
              message: str) -> NonFiniteLossError:
  good = ckpt.latest_step()
  kept = (f'the last good checkpoint ({_where(run, good)}) is kept in '
          f'{ckpt.directory}' if good is not None else
          'no checkpoint had been written yet')
  message = f'{message} ({run.name}, lr={run.lr:g}); stopped, {kept}.'
  if _writer():
    workdir_lib.write_json(run.path / workdir_lib.RESULT_FILE,
                           {'status': 'diverged', 'message': message})
  return NonFiniteLossError(message)


def _check_finite(run: _Run, ckpt: Checkpointer, losses: jax.Array,
                  start: int) -> None:
  values = np.asarray(losses)
  bad = np.flatnonzero(~np.isfinite(values))
  if bad.size:
    step = start + int(bad[0]) + 1
    raise _diverged(run, ckpt, f'non-finite training loss '
                    f'{values[bad[0]]} at {_where(run, step)}')


def _evaluate(run: _Run, state: steps.TrainState, diagnostics,
              progress: Progress, losses: Optional[jax.Array],
              ckpt: Checkpointer) -> dict[str, Any]:
  """The row of one evaluation (all but wall_time); without ``losses``
  (--eval-only) no train_loss and no running means."""
  config, task = run.config, run.task
  view = steps.eval_view(state.model)
  logged = steps.logging_pass(
      task, view, task.logging_batches(config, run.data), run.mesh)
  if not math.isfinite(logged.loss):
    raise _diverged(run, ckpt, f'non-finite full training loss '
                    f'{logged.loss} at {_where(run, progress.step)}')
  held_out = steps.evaluate(
      task, view, task.held_out_batches(config, run.data), run.mesh)
  params = nnx.as_pure(nnx.state(state.model, nnx.Param))
  values = {k: float(v) for k, v in diagnostics(
      params, logged.grads, nnx.as_pure(state.optimizer.opt_state),
      progress.step).items()}
  if losses is not None:  # a training interval (not --eval-only)
    progress.grad_l1_sum += values['grad_l1']
    progress.kkt_sum += values['kkt_residual']
  row = {'step': progress.step}
  if run.steps_per_epoch is not None:
    epoch = progress.step / run.steps_per_epoch
    row['epoch'] = int(epoch) if epoch.is_integer() else epoch
  row.update({'optimizer': run.name,
              'lr': float(state.schedule(max(progress.step - 1, 0)))})
  if losses is not None:
    row['train_loss'] = float(jnp.mean(losses))
  row.update({'full_loss': logged.loss, **values, **logged.metrics,
              **held_out})
  if losses is not None:
    row.update({
        'grad_l1_running_mean': progress.grad_l1_sum / progress.evals,
        'kkt_residual_running_mean': progress.kkt_sum / progress.evals})
  return row


def evaluate_checkpoint(
    config: Config,
    workdir: str | pathlib.Path,
    *,
    data: Any = None,
    verbose: bool = True,
    allow_data_change: bool = False,
) -> dict[str, Any]:
  """Evaluates the newest checkpoint in ``workdir`` without training.

  The logging pass and the held-out metrics of the run's parameters, as a
  row of metrics.jsonl would have them (without ``train_loss``, ``wall_time``
  and the running means, which belong to training), written to
  ``workdir/eval/step_<step>.json``. An evaluation already there is
  reported again (it is a function of the checkpoint and the data).

  Args:
    config: the run's config (it must match the workdir's, as for a
      resume).
    workdir: the run's workdir.
    data: the task's loaded data (default: ``task.load_data(config)``).
    verbose: print the row.
    allow_data_change: evaluate even if the data's fingerprint differs
      from the checkpoint's.

  Returns:
    The row.
  """
  config = config_lib.validate(config)
  _flags(allow_data_change=allow_data_change)
  task = tasks.get_task(config.task)
  path = pathlib.Path(workdir)
  folder = path / workdir_lib.CHECKPOINT_DIR
  if not folder.is_dir():
    raise ConfigError(f'--workdir {path}: no checkpoint to evaluate; train '
                      'first (lionx-train without --eval-only).')
  workdir_lib.check(path, config_lib.run_identity(config), False)
  mesh = parallel.make_mesh(config.parallel.num_devices)
  with workdir_lib.lock(path):
    run = _Run(config, task, path, data, mesh, _echo(verbose),
               allow_data_change=allow_data_change)
    _load(run)
    state = steps.create_train_state(
        config, task, task.data_spec(run.data), run.schedule_steps,
        run.steps_per_epoch, mesh)
    with Checkpointer(folder) as ckpt:
      if ckpt.latest_step() is None:
        raise ConfigError(f'--workdir {path}: {folder} holds no checkpoint '
                          'to evaluate.')
      progress = _restore(run, ckpt, state, 'evaluating the checkpoint of')
      out = path / workdir_lib.EVAL_DIR / f'step_{progress.step}.json'
      row = workdir_lib.read_json(out)
      if row is not None:
        run.log(f'{out}: evaluated earlier; reporting it again.')
      else:
        row = _evaluate(run, state, diagnostics_lib.make_diagnostics(
            state.built), progress, None, ckpt)
        if _writer():
          out.parent.mkdir(exist_ok=True)
          workdir_lib.write_json(out, row)
  run.log(report.run_table([row], task.summary, _x_axis(run)))
  return row


def _finish(run: _Run, status: str) -> RunResult:
  rows = workdir_lib.read_metrics(run.path)
  if status == 'interrupted':
    run.log(f'{run.path}: stopped at step {rows[-1]["step"]} of '
            f'{run.total_steps} (max_evals_this_run); rerun to resume.')
    return RunResult('interrupted', run.path, run.lr, rows)
  if _writer():
    workdir_lib.write_json(run.path / workdir_lib.RESULT_FILE, {
        'status': 'finished', 'steps': run.total_steps,
        'final': rows[-1] if rows else None})
  run.log(report.run_table(rows, run.task.summary, _x_axis(run)))
  return RunResult('finished', run.path, run.lr, rows)


def _report_again(run: _Run, stored: dict[str, Any]) -> RunResult:
  """A finished (or diverged) run: its numbers, printed again."""
  rows = workdir_lib.read_metrics(run.path)
  x = 'epoch' if rows and 'epoch' in rows[0] else 'step'
  run.log(f'{run.path}: {stored["status"]} earlier with this config; '
          'reporting it again.')
  run.log(report.run_table(rows, run.task.summary, x))
  figure = run.path / 'figure1.png'
  if rows and not figure.exists() and _writer():
    try:
      plots.write_figures({f'{run.name} (lr {run.lr:g})': rows}, run.path,
                          _title(run), run.task.panels, x)
    except OSError as err:
      run.log(f'{run.path}: figures not redrawn ({err.strerror}).')
  if stored['status'] == 'diverged':
    raise NonFiniteLossError(stored.get('message', 'diverged'))
  return RunResult(stored['status'], run.path, run.lr, rows,
                   stored.get('message', ''))


def dry_run(config: Config,
            echo: Callable[[str], None] = print) -> None:
  """Validates ``config``, prints d and sqrt(d), reads one batch.

  Writes nothing. The model is built abstractly (no parameter memory), and
  before the data is opened when the task knows the input shapes from the
  config, so that a missing data set comes after d in the output.
  """
  config = config_lib.validate(config)
  task = tasks.get_task(config.task)
  mesh = parallel.make_mesh(config.parallel.num_devices)
  parallel.check_divisible('batch_size', config.batch_size, mesh,
                           config.parallel.num_devices)
  spec = task.input_spec(config)
  if spec is not None:
    _print_size(config, task, spec, echo)
  data = task.load_data(config)
  if spec is None:
    _print_size(config, task, task.data_spec(data), echo)
  per_epoch = task.steps_per_epoch(config, data)
  total = config_lib.total_steps(config, per_epoch)
  every = config_lib.batches_per_eval(config, per_epoch)
  echo(f'{task.describe(config, data)}; {total} steps, an evaluation every '
       f'{every}, on {mesh.size} device(s)')
  for what, batch in (('training batch', task.train_batch(config, data, 0)),
                      ('held-out batch', next(iter(
                          task.held_out_batches(config, data))))):
    shapes = ', '.join(f'{k} {tuple(np.shape(v))} {np.asarray(v).dtype}'
                       for k, v in batch.items())
    echo(f'{what}: {shapes}')
  _print_memory(config, task, task.data_spec(data), total, per_epoch,
                task.train_batch(config, data, 0), mesh.size, echo)
  echo('dry run: nothing was written.')


def step_memory(config: Config, task: tasks.Task, spec: Any,
                total_steps: int, steps_per_epoch: Optional[int],
                batch: dict[str, Any]) -> Any:
  """XLA's memory analysis of one device's compiled train step (the state
  replicated, the batch as given), from shapes alone: nothing is
  allocated. ``arguments + outputs + temporaries - aliased`` bytes is the
  step's peak by XLA's own accounting."""
  built = optimizers.make_optimizer(config, total_steps, steps_per_epoch)

  def build():
    model = task.create_model(config, spec, config.seed)
    return model, nnx.Optimizer(model, built.tx, wrt=nnx.Param)

  mesh = parallel.make_mesh(1)
  graphdef, state = nnx.split(nnx.eval_shape(build))
  leaves, treedef = jax.tree.flatten(state)
  placed = NamedSharding(mesh, PartitionSpec())
  step = parallel.step_program(
      graphdef, treedef, steps.mean_loss(task), (placed,) * len(leaves),
      mesh, config.grad_accum_steps)
  rows = NamedSharding(mesh, PartitionSpec(parallel.AXIS))
  return step.lower(
      [jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=placed)
       for x in leaves],
      {k: jax.ShapeDtypeStruct(np.shape(v), np.asarray(v).dtype,
                               sharding=rows) for k, v in batch.items()},
  ).compile().memory_analysis()


def _print_memory(config: Config, task: tasks.Task, spec: Any, total: int,
                  per_epoch: Optional[int], batch: dict[str, Any],
                  devices: int, echo: Callable[[str], None]) -> None:
  if optimizers.spec(config.optimizer.name).per_device:
    echo(f'train step memory: not estimated for {config.optimizer.name}, '
         'whose step runs in shard_map with one state per device.')
    return
  rows = config.batch_size // devices
  batch = {k: np.asarray(v)[:rows] for k, v in batch.items()}
  m = step_memory(config, task, spec, total, per_epoch, batch)
  peak = (m.argument_size_in_bytes + m.output_size_in_bytes
          + m.temp_size_in_bytes - m.alias_size_in_bytes)
  have = _device_memory()
  echo(f'train step (XLA\'s estimate, one device, {rows} rows): arguments '
       f'{_size(m.argument_size_in_bytes)}, outputs '
       f'{_size(m.output_size_in_bytes)}, temporaries '
       f'{_size(m.temp_size_in_bytes)}, aliased '
       f'{_size(m.alias_size_in_bytes)}: about {_size(peak)} of the '
       f'device\'s {_size(have)}')
  if peak > have:
    echo(f'warning: the step does not fit ({_size(peak)} > {_size(have)}); '
         'try model.compute_dtype=bfloat16, grad_accum_steps, a smaller '
         'batch_size or more devices.')


def _size(n: int) -> str:
  return f'{n / 2 ** 30:.2f} GiB' if n >= 2 ** 30 else f'{n / 2 ** 20:.1f} MiB'


def _device_memory() -> int:
  """Bytes of device 0 (its allocator's limit), or the host's RAM."""
  stats = jax.devices()[0].memory_stats() or {}
  if 'bytes_limit' in stats:
    return int(stats['bytes_limit'])
  return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')


def _print_size(config: Config, task: tasks.Task, spec: Any,
                echo: Callable[[str], None]) -> None:
  model = nnx.eval_shape(lambda: task.create_model(config, spec, config.seed))
  d = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(
      nnx.state(model, nnx.Param)))
  echo(f'{config.model.name}: d = {d:,} parameters, sqrt(d) = '
       f'{math.sqrt(d):.1f}')
