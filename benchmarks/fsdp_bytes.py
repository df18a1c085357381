"""Bytes per device of a config's optimizer state under parallel.mode=fsdp.

Builds the config's model and optimizer (no training) on meshes of 1, 2, 4
and 8 devices, places them with ``parallel.mode=fsdp`` and prints the bytes
the most loaded device holds, from the placed arrays' shards. On a CPU the
devices are simulated (``XLA_FLAGS=--xla_force_host_platform_device_count``,
set here before JAX starts).

Usage (from the repository root):

  python benchmarks/fsdp_bytes.py --config configs/default.py
"""

from __future__ import annotations

import argparse
import os


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', default='configs/default.py')
  parser.add_argument('--devices', default='1,2,4,8')
  args = parser.parse_args(argv)
  counts = [int(n) for n in args.devices.split(',')]
  flag = '--xla_force_host_platform_device_count'
  if flag not in os.environ.get('XLA_FLAGS', ''):  # before JAX starts
    os.environ['XLA_FLAGS'] = (
        f"{os.environ.get('XLA_FLAGS', '')} {flag}={max(counts)}").strip()
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from lionx.train import config as config_lib  # pylint: disable=g-import-not-at-top
  from lionx.train import parallel, steps, tasks  # pylint: disable=g-import-not-at-top

  config = config_lib.load_config(args.config)
  task = tasks.get_task(config.task)
  data = task.load_data(config)
  per_epoch = task.steps_per_epoch(config, data)
  total = config_lib.total_steps(config, per_epoch)
  print(f'{args.config}, parallel.mode=fsdp, bytes per device (the most '
        'loaded one)\n\n| devices | optimizer state | x 1 device | '
        'parameters |\n|---:|---:|---:|---:|')
  first = None
  for n in counts:
    config.parallel.mode, config.parallel.num_devices = 'fsdp', n
    state = steps.create_train_state(config, task, task.data_spec(data),
                                     total, per_epoch, parallel.make_mesh(n))
    opt = max(parallel.bytes_per_device(nnx.state(state.optimizer)).values())
    par = max(parallel.bytes_per_device(
        nnx.state(state.model, nnx.Param)).values())
    first = first or opt
    print(f'| {n} | {opt:,} | 1/{first / opt:.2f} | {par:,} |')


if __name__ == '__main__':
  main()
