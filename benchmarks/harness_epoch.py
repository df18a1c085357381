"""The harness's epoch time on the embedded default: this tree vs a commit.

Trains ``configs/default.py`` (Lion, the small CNN on the bundled digits)
with ``lionx-train`` in a subprocess, alternately from this working tree and
from a git worktree of ``--baseline`` (by default the last commit before the
harness redesign), ``--repeats`` times each. The epoch time is the
difference of ``wall_time`` between consecutive lines of ``metrics.jsonl``
(epoch 1, which compiles, is left out): a training epoch, its logging pass
over the 1437 training images and the test evaluation. Checkpoints are
written only after the last epoch, so that no save falls inside a measured
epoch. The table gives the median per-epoch time of each tree and their
ratio.

Usage (from the repository root):

  python benchmarks/harness_epoch.py                 # 3 repeats, 6 epochs
  python benchmarks/harness_epoch.py --baseline HEAD~5 --repeats 5

Nothing is written outside a temporary directory (deleted afterwards);
the baseline's worktree is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
# The last commit whose harness was lionx/train/loop.py.
BEFORE_REDESIGN = 'f24347d'


def _epoch_times(tree: pathlib.Path, workdir: pathlib.Path,
                 epochs: int) -> list[float]:
  env = dict(os.environ, PYTHONPATH=str(tree))
  subprocess.run(
      [sys.executable, '-m', 'lionx.train.cli', '--config',
       'configs/default.py', '--workdir', str(workdir), '--no-progress',
       'optimizer.name=lion', f'num_epochs={epochs}',
       'parallel.num_devices=1'],
      cwd=tree, env=env, check=True, stdout=subprocess.DEVNULL)
  rows = [json.loads(line) for line in
          (workdir / 'metrics.jsonl').read_text().splitlines()]
  walls = [r['wall_time'] for r in rows]
  return [b - a for a, b in zip(walls, walls[1:])]


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--baseline', default=BEFORE_REDESIGN,
                      help='the commit to compare with')
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--epochs', type=int, default=6)
  args = parser.parse_args(argv)
  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    base = tmp / 'baseline'
    subprocess.run(['git', 'worktree', 'add', '--detach', str(base),
                    args.baseline], cwd=ROOT, check=True,
                   capture_output=True)
    try:
      times = {'baseline': [], 'this tree': []}
      for i in range(args.repeats):  # interleaved: the machine is shared
        for name, tree in (('baseline', base), ('this tree', ROOT)):
          times[name] += _epoch_times(tree, tmp / f'{name}_{i}', args.epochs)
    finally:
      subprocess.run(['git', 'worktree', 'remove', '--force', str(base)],
                     cwd=ROOT, check=False, capture_output=True)
  medians = {k: statistics.median(v) for k, v in times.items()}
  print(f'configs/default.py, Lion, {args.epochs} epochs x {args.repeats} '
        f'repeats; epoch 1 (compilation) left out\n')
  print('| tree | epochs measured | median epoch s | min | max |')
  print('|---|---:|---:|---:|---:|')
  for name, values in times.items():
    print(f'| {name} ({args.baseline if name == "baseline" else "HEAD+"}) '
          f'| {len(values)} | {medians[name]:.3f} | {min(values):.3f} | '
          f'{max(values):.3f} |')
  print(f'\nthis tree / baseline: '
        f'{medians["this tree"] / medians["baseline"]:.3f}')


if __name__ == '__main__':
  main()
