"""Progress bars, the line printed per evaluation, and summary tables."""

from __future__ import annotations

import math
import statistics
import sys
from typing import Any, Sequence

from tqdm import tqdm  # text bars everywhere: no ipywidgets warning in Jupyter

Row = dict[str, Any]


def progress_bar(total: int, enabled: bool, desc: str = '') -> tqdm:
  """A tqdm bar on stderr (live loss and ETA), or a silent one."""
  return tqdm(total=total, disable=not enabled, desc=desc, unit='step',
              file=sys.stderr, dynamic_ncols=True, leave=False)


def number(value: Any, key: str = '') -> str:
  """A table cell: accuracies in percent, others with 4 significant
  digits, integers as they are; '-' for a value the row does not have."""
  if value is None:
    return '-'
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return str(value)
  if isinstance(value, int):
    return str(value)
  if not math.isfinite(value):
    return str(value)
  if key.endswith('accuracy'):
    return f'{100 * value:.1f} %'
  if key == 'wall_time':
    return f'{value:.1f}'
  if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
    return f'{value:.3g}'
  return f'{value:.4f}'


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  """A Markdown table of already formatted cells, columns aligned."""
  widths = [max([len(h)] + [len(r[i]) for r in rows])
            for i, h in enumerate(headers)]

  def line(values):
    return '| ' + ' | '.join(v.ljust(w) for v, w in zip(values, widths)) + ' |'
  rule = '|' + '|'.join('-' * (w + 2) for w in widths) + '|'
  return '\n'.join([line(headers), rule] + [line(r) for r in rows])


def columns(extra: Sequence[tuple[str, str]],
            x: str = 'epoch') -> list[tuple[str, str]]:
  """The columns of a run's table: ``(metrics key, header)``."""
  return [(x, x), ('lr', 'lr'), ('train_loss', 'train loss'),
          ('full_loss', 'f(θ)'), ('val_loss', 'held-out loss'), *extra,
          ('grad_norm_ratio_over_sqrt_d', 'r/√d'),
          ('box_linf_scaled', 'λ‖θ‖∞'), ('kkt_residual', 'KKT'),
          ('sign_agreement', 'sign agr.'), ('wall_time', 'time s')]


def run_table(rows: Sequence[Row], extra: Sequence[tuple[str, str]] = (),
              x: str = 'epoch', max_rows: int = 10) -> str:
  """Up to ``max_rows`` evenly spaced evaluations (always the last)."""
  if not rows:
    return '(no evaluations logged)'
  n, k = len(rows), min(len(rows), max_rows)
  picks = sorted({round(i * (n - 1) / max(k - 1, 1)) for i in range(k)})
  cols = columns(extra, x)
  return table([h for _, h in cols],
               [[number(rows[i].get(key), key) for key, _ in cols]
                for i in picks])


def eval_line(row: Row, total_steps: int, extra: Sequence[tuple[str, str]],
              ) -> str:
  """One line per evaluation, for the log."""
  where = (f"epoch {row['epoch']}, " if 'epoch' in row else '') + (
      f"step {row['step']}/{total_steps}")
  parts = [f"train {number(row['train_loss'])}",
           f"f(θ) {number(row['full_loss'])}",
           f"held-out {number(row['val_loss'])}"]
  parts += [f'{header} {number(row[key], key)}' for key, header in extra
            if key in row]
  parts += [f"r/√d {number(row['grad_norm_ratio_over_sqrt_d'])}",
            f"λ‖θ‖∞ {number(row['box_linf_scaled'])}",
            f"{row['wall_time']:.1f} s"]
  return f"{where}: " + ', '.join(parts)


def final(rows: Sequence[Row], key: str) -> Any:
  return rows[-1].get(key, float('nan')) if rows else float('nan')


def spread(values: Sequence[float], key: str = '') -> str:
  """``median [min, max]`` over seeds (one value: itself)."""
  values = [v for v in values if isinstance(v, (int, float))]
  if not values:
    return 'nan'
  if len(values) == 1:
    return number(values[0], key)
  return (f'{number(statistics.median(values), key)} '
          f'[{number(min(values), key)}, {number(max(values), key)}]')
