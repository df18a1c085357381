"""Shared pieces of the reproductions: the Lion loop, the config files
of the repository and the result files."""

from __future__ import annotations

import argparse
import csv
import io
import json
import pathlib
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import optax

GradFn = Callable[[jax.Array], jax.Array]

#: The repository's root: the reproductions run from a clone.
REPO = pathlib.Path(__file__).resolve().parent.parent
DIGITS_CONFIG = REPO / 'configs' / 'default.py'  # the embedded digits CNN
LM_CONFIG = REPO / 'configs' / 'lm_default.py'  # the byte-level GPT


def shown(path: str | pathlib.Path) -> str:
  """``path`` as a report shows it: relative to the repository's root
  when it lies inside it (``configs/lm_default.py``)."""
  path = pathlib.Path(path)
  try:
    return str(path.resolve().relative_to(REPO))
  except ValueError:
    return str(path)


def trajectory(
    opt: optax.GradientTransformation,
    grad_fn: GradFn,
    x0: jax.Array,
    num_steps: int,
    key: Optional[jax.Array] = None,
    noise_scale: float = 0.0,
) -> tuple[jax.Array, jax.Array]:
  """Runs ``opt`` on ``grad_fn`` with ``lax.scan``; jit/vmap friendly.

  The gradient fed to the optimizer is ``grad_fn(x) + noise_scale * eps``
  with ``eps ~ N(0, I)`` drawn from ``key``.

  Returns:
    ``(xs, noise_sq)``: the iterates ``x_1 .. x_{K+1}`` (shape
    ``(num_steps + 1,) + x0.shape``; ``xs[0] = x0``) and ``||eps_k||^2`` per
    step (shape ``(num_steps,)``; zeros without noise).
  """
  if key is None:
    key = jax.random.key(0)

  def step(carry, k):
    x, state = carry
    eps = jax.random.normal(jax.random.fold_in(key, k), x.shape, x.dtype)
    g = grad_fn(x) + noise_scale * eps
    updates, state = opt.update(g, state, x)
    x_new = optax.apply_updates(x, updates)
    return (x_new, state), (x_new, jnp.sum(eps * eps))

  (_, _), (xs, noise_sq) = jax.lax.scan(
      step, (x0, opt.init(x0)), jnp.arange(num_steps))
  xs = jnp.concatenate([x0[None], xs], axis=0)
  return xs, noise_sq * (noise_scale ** 2)


def parser(name: str, doc: str) -> argparse.ArgumentParser:
  """The parser of ``python -m experiments.<name>``, described by the
  first line of ``doc`` (the module's docstring)."""
  return argparse.ArgumentParser(prog=f'python -m experiments.{name}',
                                 description=doc.split('\n')[0])


def check_outputs(
    out_dir: pathlib.Path, names: Sequence[str], overwrite: bool,
) -> list[pathlib.Path]:
  """The result paths; refuses (``FileExistsError``) to overwrite them."""
  paths = [out_dir / n for n in names]
  existing = [str(p) for p in paths if p.exists()]
  if existing and not overwrite:
    raise FileExistsError(
        f'{existing} already exist; pass --overwrite to replace them.')
  out_dir.mkdir(parents=True, exist_ok=True)
  return paths


def write_outputs(paths: Sequence[pathlib.Path], fig: Any, text: str,
                  summary: Any) -> None:
  """Writes the figure, the markdown and the JSON summary to ``paths`` (as
  :func:`check_outputs` returned them) and prints the report."""
  png, md, js = paths
  fig.savefig(png, dpi=110)
  md.write_text(text)
  js.write_text(json.dumps(summary, indent=1, default=str))
  print(text)
  print(f'wrote {png}, {md}, {js}')


def _fmt(value: Any) -> str:
  if isinstance(value, bool):
    return 'yes' if value else 'no'
  if isinstance(value, float):
    return f'{value:.6g}'
  return str(value)


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
  """A GitHub markdown table of dict rows (keys of the first row)."""
  if not rows:
    return ''
  keys = list(rows[0])
  lines = ['| ' + ' | '.join(keys) + ' |',
           '|' + '|'.join('---' for _ in keys) + '|']
  for row in rows:
    lines.append('| ' + ' | '.join(_fmt(row[k]) for k in keys) + ' |')
  return '\n'.join(lines) + '\n'


def csv_text(rows: Sequence[dict[str, Any]]) -> str:
  """CSV text of dict rows."""
  buffer = io.StringIO()
  if rows:
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    for row in rows:
      writer.writerow({k: _fmt(v) for k, v in row.items()})
  return buffer.getvalue()


def figure(**kwargs):
  """A matplotlib ``Figure`` outside pyplot (no global backend change)."""
  try:
    from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  except ImportError as err:
    raise ImportError(
        'The reproductions draw with matplotlib: pip install "lionx[train]".'
    ) from err
  return Figure(**kwargs)
