"""Progress bars and the summary tables printed at the end of a run."""

from __future__ import annotations

import math
import sys
from typing import Any, Sequence

from tqdm import tqdm  # text bars everywhere: no ipywidgets warning in Jupyter


def progress_bar(total: int, enabled: bool, desc: str = '') -> tqdm:
  """A tqdm bar on stderr (live loss and ETA), or a silent one."""
  return tqdm(total=total, disable=not enabled, desc=desc, unit='step',
              file=sys.stderr, dynamic_ncols=True, leave=False)


def _cell(value: Any) -> str:
  if isinstance(value, float):
    if not math.isfinite(value):
      return str(value)
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
      return f'{value:.3g}'
    return f'{value:.4f}'
  return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  """A Markdown table with aligned columns."""
  cells = [[_cell(v) for v in row] for row in rows]
  widths = [max([len(h)] + [len(r[i]) for r in cells])
            for i, h in enumerate(headers)]
  def line(values):
    return '| ' + ' | '.join(v.ljust(w) for v, w in zip(values, widths)) + ' |'
  rule = '|' + '|'.join('-' * (w + 2) for w in widths) + '|'
  return '\n'.join([line(headers), rule] + [line(r) for r in cells])


_RUN_COLUMNS = (
    ('epoch', 'epoch'), ('lr', 'lr'), ('train_loss', 'train loss'),
    ('full_loss', 'f(θ)'), ('test_loss', 'test loss'),
    ('test_accuracy', 'test top-1'),
    ('grad_norm_ratio_over_sqrt_d', 'r/√d'),
    ('box_linf_scaled', 'λ‖θ‖∞'), ('kkt_residual', 'KKT'),
    ('sign_agreement', 'sign agr.'), ('wall_time', 'time s'))


def run_table(rows: Sequence[dict[str, Any]], max_rows: int = 10) -> str:
  """Up to ``max_rows`` evenly spaced epochs (always the last)."""
  if not rows:
    return '(no epochs logged)'
  n, k = len(rows), min(len(rows), max_rows)
  picks = sorted({round(i * (n - 1) / max(k - 1, 1)) for i in range(k)})
  return table([h for _, h in _RUN_COLUMNS],
               [[rows[i][k] for k, _ in _RUN_COLUMNS] for i in picks])


def final(rows: Sequence[dict[str, Any]], key: str) -> Any:
  return rows[-1][key] if rows else float('nan')
