"""Tokens per second of one language-model training step, Lion vs AdamW.

The step is the harness's own (``lionx.train.steps.make_train_step``:
forward, backward and the optimizer update of ``lionx-train``, jitted, the
state donated), built from the configs of the language tasks with the
optimizer rows ``lion`` and ``adamw`` (both with (β1, β2) = (0.9, 0.95)
and weight decay 0.1, as the configs set them):

* ``lm_default``: configs/lm_default.py, ``gpt_tiny`` (d = 120,576) on
  batches of 16 x 64 bytes;
* ``gpt2_small``: configs/gpt2_small.py, GPT-2 Small (d = 124,439,808) on a
  batch of 8 x 1024 tokens (``--batch``, ``--seq-len``). Before it runs,
  XLA's compiled memory plan of the forward and backward pass
  (``memory_analysis()``) is read for 8, 4, 2 and 1 windows; the largest
  batch whose temporaries fit in 60 % of the available memory (with both
  optimizers' states) is measured, and the table says so.

Every model trains on one fixed batch of the task (random token ids for
GPT-2 Small, which has no data here). Lion and AdamW alternate, one step
each per round, the order swapped every round, so that the noise of a
shared machine hits both alike; the table gives medians over the rounds
(wall and CPU time of the process) and the median over rounds of the
per-round ratio AdamW time / Lion time (> 1: Lion's step is faster).
Nothing is asserted and nothing is written.

Usage (from the repository root):

  python benchmarks/lm_step.py                          # both models
  python benchmarks/lm_step.py --models lm_default --rounds 20
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time
from typing import Any, Callable

import jax
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import _common  # noqa: E402  pylint: disable=g-import-not-at-top

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODELS = ('lm_default', 'gpt2_small')
OPTIMIZERS = ('lion', 'adamw')


def _config(model: str, args: argparse.Namespace, optimizer: str):
  from lionx.train import config as config_lib
  overrides = [f'optimizer.name={optimizer}', 'parallel.num_devices=1']
  if model == 'gpt2_small':
    # The config has no AdamW rate; a rate does not change a step's cost.
    overrides += [f'batch_size={args.batch}', f'data.seq_len={args.seq_len}',
                  'optimizer.learning_rates.adamw=1e-4']
  return config_lib.load_config(ROOT / 'configs' / f'{model}.py',
                                tuple(overrides))


def _batch(config, task) -> dict[str, np.ndarray]:
  from lionx.train.data import text
  if config.data.name == 'text_bytes':
    return task.train_batch(config, task.load_data(config), 0)
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, text.vocab_size(config.data),
                        task.window(config) * 4, dtype=np.uint16)
  starts = rng.integers(0, len(tokens) - task.window(config),
                        config.batch_size)
  return text.gpt_batch(tokens, starts, task.seq_len(config))


def loss_memory(config, task) -> tuple[float, int]:
  """Bytes of temporaries in XLA's plan of the loss's value and gradient
  for ``config`` (nothing is allocated), and d."""
  from flax import nnx
  model = nnx.eval_shape(lambda: task.create_model(
      config, task.input_spec(config), 0))
  graphdef, state = nnx.split(model)

  def loss(state, batch):
    return task.loss(nnx.merge(graphdef, state), batch).loss

  batch = {'tokens': jax.ShapeDtypeStruct(
      (config.batch_size, task.window(config)), np.int32)}
  compiled = jax.jit(jax.value_and_grad(loss)).lower(state, batch).compile()
  d = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state))
  return float(compiled.memory_analysis().temp_size_in_bytes), d


def available_memory() -> float:
  """MemAvailable of /proc/meminfo in bytes (inf if unknown)."""
  try:
    for line in pathlib.Path('/proc/meminfo').read_text().splitlines():
      if line.startswith('MemAvailable:'):
        return 1024.0 * float(line.split()[1])
  except OSError:
    pass
  return float('inf')


def fitting_batch(args: argparse.Namespace) -> tuple[int, list[str]]:
  """The largest of batch, batch/2, ... whose plan fits; notes on each."""
  from lionx.train import tasks
  budget = 0.6 * available_memory()
  notes, batch = [], args.batch
  while True:
    trial = argparse.Namespace(**{**vars(args), 'batch': batch})
    config = _config('gpt2_small', trial, 'adamw')
    task = tasks.get_task(config.task)
    temp, d = loss_memory(config, task)
    # Both optimizers live: params + Lion's m, params + AdamW's m and v.
    state = 5 * 4 * d
    fits = temp + state <= budget
    notes.append(f'- gpt2_small at {batch} x {args.seq_len}: XLA:CPU plans '
                 f'{temp / 1e9:.1f} GB of temporaries for the forward and '
                 f'backward pass, plus {state / 1e9:.1f} GB of parameters '
                 f'and optimizer states; {budget / 1e9:.1f} GB (60 % of '
                 f'the available memory) {"fits it" if fits else "does not"}')
    if fits or batch == 1:
      return batch, notes
    batch //= 2


def contender(model: str, args: argparse.Namespace, optimizer: str
              ) -> tuple[Callable[[], tuple[float, float]], dict[str, Any]]:
  """One step of ``optimizer`` on ``model``: a callable timing it."""
  from lionx.train import parallel, steps, tasks
  config = _config(model, args, optimizer)
  task = tasks.get_task(config.task)
  mesh = parallel.make_mesh(1)
  state = steps.create_train_state(config, task, task.input_spec(config),
                                   config.num_steps, None, mesh)
  step = steps.make_train_step(task, mesh, state)
  batch = _batch(config, task)
  tokens = int(np.prod(batch['tokens'].shape)) - len(batch['tokens'])

  def run() -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    jax.block_until_ready(step(state.model, state.optimizer, batch))
    return time.perf_counter() - wall, time.process_time() - cpu

  info = {'d': steps.count_params(state.model), 'tokens': tokens,
          'shape': batch['tokens'].shape}
  return run, info


def measure(model: str, args: argparse.Namespace) -> list[list[str]]:
  """The rows of ``model``: Lion and AdamW, side by side."""
  runs, infos = {}, {}
  for name in OPTIMIZERS:
    runs[name], infos[name] = contender(model, args, name)
  rounds = args.rounds if model == 'lm_default' else args.gpt2_rounds
  times: dict[str, list[tuple[float, float]]] = {n: [] for n in runs}
  for r in range(args.warmup + rounds):
    order = OPTIMIZERS if r % 2 == 0 else OPTIMIZERS[::-1]
    for name in order:
      measured = runs[name]()
      if r >= args.warmup:
        times[name].append(measured)
  rows = []
  for name in OPTIMIZERS:
    wall = statistics.median(t[0] for t in times[name])
    cpu = statistics.median(t[1] for t in times[name])
    ratio = statistics.median(
        a[0] / b[0] for a, b in zip(times['adamw'], times[name]))
    info = infos[name]
    batch, width = info['shape']
    rows.append([model, f'{info["d"]:,}', f'{batch} x {width - 1}', name,
                 f'{1e3 * wall:,.1f}', f'{1e3 * cpu:,.1f}',
                 f'{info["tokens"] / wall:,.0f}', f'{ratio:.3f}',
                 str(rounds)])
  return rows


def _args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--models', default=','.join(MODELS),
                      help=f'comma-separated, of {MODELS}')
  parser.add_argument('--rounds', type=int, default=30,
                      help='timed rounds of lm_default')
  parser.add_argument('--gpt2-rounds', type=int, default=3,
                      help='timed rounds of gpt2_small (a step takes '
                      'about a minute on 2 CPU cores)')
  parser.add_argument('--warmup', type=int, default=1,
                      help='untimed rounds first (compilation)')
  parser.add_argument('--batch', type=int, default=8,
                      help='gpt2_small: windows per batch')
  parser.add_argument('--seq-len', type=int, default=1024,
                      help='gpt2_small: tokens per window')
  args = parser.parse_args(argv)
  models = [m.strip() for m in args.models.split(',') if m.strip()]
  for m in models:
    if m not in MODELS:
      parser.error(f'--models: {m!r} is not one of {MODELS}')
  for flag in ('rounds', 'gpt2_rounds', 'batch', 'seq_len'):
    if getattr(args, flag) < 1:
      parser.error(f'--{flag.replace("_", "-")}={getattr(args, flag)}: '
                   'expected >= 1')
  if args.warmup < 0:
    parser.error(f'--warmup={args.warmup}: expected >= 0')
  args.models = models
  return args


def main(argv=None) -> int:
  args = _args(argv)
  rows, notes = [], []
  for model in args.models:
    if model == 'gpt2_small':
      batch, found = fitting_batch(args)
      notes += found
      args = argparse.Namespace(**{**vars(args), 'batch': batch})
    rows += measure(model, args)
  lines = ['## lm_step.py: one training step of the language tasks', '',
           *_common.machine(), '',
           *_common.table(['config', 'd', 'batch (windows x tokens)',
                           'optimizer', 'median ms/step (wall)',
                           'median CPU ms/step', 'tokens/s (wall)',
                           'AdamW time / this time (per round)',
                           'rounds'], rows),
           *([''] + notes if notes else []),
           '', f'Command: python benchmarks/lm_step.py '
           f'{" ".join(sys.argv[1:] if argv is None else argv)}'.rstrip()]
  print('\n'.join(lines))
  return 0


if __name__ == '__main__':
  sys.exit(main())
