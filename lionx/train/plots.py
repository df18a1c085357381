r"""Figures in the style of Figure 1 of Dong, Li, Lin, one curve per run.

Panels, over epochs (or steps): the training loss :math:`f(\theta)` of the
logging pass (solid) with the held-out loss (dashed), the task's own
panels (e.g. test top-1 accuracy), the gradient norm ratio
:math:`r = \|\nabla f\|_1/\|\nabla f\|_2` with the reference line
:math:`\sqrt d` (its upper bound), and :math:`\lambda\|\theta\|_\infty`
with the box boundary 1. Curves with few points are drawn with markers, so
that a run of one evaluation still shows. Uses matplotlib's object API (no
pyplot state).
"""

from __future__ import annotations

import math
import pathlib
from typing import Any, Callable, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

Curves = dict[str, Sequence[dict[str, Any]]]
Panel = Callable[[Any, Curves, str], None]
_FEW = 30  # curves with at most this many points get markers


def _style(rows: Sequence[Any]) -> dict[str, Any]:
  return {'marker': 'o', 'markersize': 3} if len(rows) <= _FEW else {}


def _series(rows, x: str, key: str):
  points = [(r[x], r[key]) for r in rows
            if r.get(key) is not None and r.get(x) is not None]
  return [p[0] for p in points], [p[1] for p in points]


def _positive(curves: Curves, *keys: str) -> bool:
  values = [r[k] for rows in curves.values() for r in rows for k in keys
            if r.get(k) is not None]
  return bool(values) and all(
      isinstance(v, (int, float)) and math.isfinite(v) and v > 0
      for v in values)


def _loss(ax, curves: Curves, x: str) -> None:
  for label, rows in curves.items():
    (line,) = ax.plot(*_series(rows, x, 'full_loss'), label=label,
                      **_style(rows))
    held_out = _series(rows, x, 'val_loss')
    if held_out[0]:
      ax.plot(*held_out, linestyle='--', color=line.get_color(),
              **_style(rows))
  if _positive(curves, 'full_loss', 'val_loss'):
    ax.set_yscale('log')
  ax.set_title('loss: f(θ) (solid), held-out (dashed)')


def _ratio(ax, curves: Curves, x: str) -> None:
  sqrt_ds = set()
  for label, rows in curves.items():
    ax.plot(*_series(rows, x, 'grad_norm_ratio'), label=label,
            **_style(rows))
    sqrt_ds.update(round(r['sqrt_d'], 1) for r in rows[:1])
  for value in sorted(sqrt_ds):
    ax.axhline(value, color='black', linestyle='--', linewidth=1,
               label=f'√d = {value:g}')
  ax.set_ylim(bottom=0)
  ax.set_title('gradient norm ratio r = ‖∇f‖₁ / ‖∇f‖₂')


def _box(ax, curves: Curves, x: str) -> None:
  for label, rows in curves.items():
    ax.plot(*_series(rows, x, 'box_linf_scaled'), label=label,
            **_style(rows))
  ax.axhline(1.0, color='black', linestyle='--', linewidth=1,
             label='box boundary')
  if _positive(curves, 'box_linf_scaled'):
    ax.set_yscale('log')
  ax.set_title('λ‖θ‖∞ (feasible ≤ 1)')


def metric_panel(key: str, title: str) -> Panel:
  """A panel of ``row[key]`` over training (accuracies in percent)."""
  scale = 100.0 if key.endswith('accuracy') else 1.0

  def draw(ax, curves: Curves, x: str) -> None:
    for label, rows in curves.items():
      xs, ys = _series(rows, x, key)
      ax.plot(xs, [scale * y for y in ys], label=label, **_style(rows))
    ax.set_title(title)
  return draw


def _panels(extra: Sequence[tuple[str, str]]) -> dict[str, Panel]:
  out = {'loss': _loss}
  for key, title in extra:
    out[_file_name(key)] = metric_panel(key, title)
  out.update(ratio=_ratio, box=_box)
  return out


def _file_name(key: str) -> str:
  """``test_accuracy`` -> ``accuracy`` (the figure's file name)."""
  return key.removeprefix('test_').removeprefix('val_')


def _save(fig: Figure, path: pathlib.Path) -> pathlib.Path:
  FigureCanvasAgg(fig)
  fig.savefig(path, dpi=110)
  return path


def _draw(ax, draw: Panel, curves: Curves, x: str) -> None:
  draw(ax, curves, x)
  ax.set_xlabel(x)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)


def write_figures(curves: Curves, directory: str | pathlib.Path,
                  title: str = '', panels: Sequence[tuple[str, str]] = (),
                  x: str = 'epoch') -> list[pathlib.Path]:
  """Writes ``figure1.png`` (all panels) and one PNG per panel.

  Args:
    curves: label -> metrics.jsonl rows.
    directory: where the PNGs go.
    title: the suptitle of ``figure1.png``.
    panels: the task's extra panels, ``(metrics key, title)``.
    x: the metrics key on the horizontal axis (``epoch`` or ``step``).

  Returns:
    The paths written.
  """
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  drawn = _panels(panels)
  fig = Figure(figsize=(4.5 * len(drawn), 4.4), layout='constrained')
  for ax, draw in zip(fig.subplots(1, len(drawn)), drawn.values()):
    _draw(ax, draw, curves, x)
  if title:
    fig.suptitle(title)
  paths = [_save(fig, directory / 'figure1.png')]
  for name, draw in drawn.items():
    fig = Figure(figsize=(5.5, 4.2), layout='constrained')
    _draw(fig.subplots(), draw, curves, x)
    paths.append(_save(fig, directory / f'{name}.png'))
  return paths
