"""Checkpoints with orbax: model, optimizer and the loop's own state.

A checkpoint at step ``k`` holds ``{'model': nnx.state(model),
'optimizer': nnx.state(optimizer)}`` (parameters, BatchNorm statistics,
the optimizer's step and state, e.g. Lion's momentum) as pure dicts, and a
JSON ``meta`` dict: the step, the number of evaluations, the seed and data
order that fix the batches, the data's fingerprint, the training time so far
and the running sums of the logged diagnostics. Saving is synchronous, so a
checkpoint on disk is complete. :meth:`Checkpointer.restore_model` reads the
model alone (for sampling, :mod:`lionx.train.sample`, and fine-tuning,
``init_from``).
"""

from __future__ import annotations

import logging
import pathlib
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

# orbax logs every save at INFO/WARNING through absl; keep the CLI quiet.
logging.getLogger('absl').setLevel(logging.ERROR)


class Checkpointer:
  """Saves and restores training state under ``directory``, by step."""

  def __init__(self, directory: str | pathlib.Path, max_to_keep: int = 2,
               read_only: bool = False):
    """``read_only``: restore only; the directory must exist."""
    self.directory = pathlib.Path(directory).resolve()
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=not read_only,
            read_only=read_only, enable_async_checkpointing=False))

  def __enter__(self) -> 'Checkpointer':
    return self

  def __exit__(self, *exc: Any) -> None:
    self.close()

  def latest_step(self) -> Optional[int]:
    """The step of the newest checkpoint, or ``None``."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    """The steps of the checkpoints on disk, in increasing order."""
    return sorted(self._manager.all_steps())

  def save(self, step: int, model: nnx.Module, optimizer: nnx.Optimizer,
           meta: dict[str, Any]) -> None:
    """Writes the checkpoint of ``step`` (replacing one of that step)."""
    tree = {'model': nnx.to_pure_dict(nnx.state(model)),
            'optimizer': nnx.to_pure_dict(nnx.state(optimizer))}
    if step in self._manager.all_steps():
      self._manager.delete(step)  # orbax refuses to write over a step
    self._manager.save(
        step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(tree),
            meta=ocp.args.JsonSave(dict(meta, step=step))),
        force=True)
    self._manager.wait_until_finished()

  def restore(self, step: int, model: nnx.Module,
              optimizer: nnx.Optimizer) -> dict[str, Any]:
    """Loads ``step`` into ``model`` and ``optimizer``; returns its meta."""
    model_state, opt_state = nnx.state(model), nnx.state(optimizer)
    target = {'model': nnx.to_pure_dict(model_state),
              'optimizer': nnx.to_pure_dict(opt_state)}
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    restored = self._manager.restore(
        step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract),
            meta=ocp.args.JsonRestore()))
    nnx.replace_by_pure_dict(model_state, restored['state']['model'])
    nnx.replace_by_pure_dict(opt_state, restored['state']['optimizer'])
    nnx.update(model, model_state)
    nnx.update(optimizer, opt_state)
    return dict(restored['meta'])

  def restore_model(self, step: int, model: nnx.Module,
                    name: str = 'the checkpoint') -> dict[str, Any]:
    """Loads the model of ``step`` into ``model`` (not the optimizer, which
    is not read); returns its meta. Every leaf must have this model's path,
    shape and dtype: ``ValueError`` names the first that does not, after
    ``name`` (what the user called the checkpoint)."""
    model_state = nnx.state(model)
    target = {'model': nnx.to_pure_dict(model_state)}
    stored = ocp.StandardCheckpointer().metadata(
        self.directory / str(step) / 'state').item_metadata
    _same_leaves(f'{name} (step {step})', _flat(target['model']),
                 _flat(stored['model']))
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    restored = self._manager.restore(
        step, args=ocp.args.Composite(
            state=ocp.args.PyTreeRestore(
                item=abstract, partial_restore=True,
                restore_args=ocp.checkpoint_utils.construct_restore_args(
                    abstract)),
            meta=ocp.args.JsonRestore()))
    nnx.replace_by_pure_dict(model_state, restored['state']['model'])
    nnx.update(model, model_state)
    return dict(restored['meta'])

  def close(self) -> None:
    self._manager.close()


def _name(path: tuple[Any, ...]) -> str:
  return '/'.join(str(getattr(k, 'key', getattr(k, 'idx', k))) for k in path)


def _same_leaves(where: str, mine: dict[str, Any],
                 theirs: dict[str, Any]) -> None:
  for path in sorted(set(mine) ^ set(theirs)):
    here = 'this model has' if path in mine else 'the checkpoint has'
    raise ValueError(f'{where}: {here} the leaf {path!r}, the other does '
                     'not; expected a run of the same model shape.')
  for path, leaf in mine.items():
    other = theirs[path]
    if (tuple(other.shape), np.dtype(other.dtype)) != (
        tuple(leaf.shape), np.dtype(leaf.dtype)):
      raise ValueError(
          f'{where}: the leaf {path!r} is {np.dtype(other.dtype)}'
          f'{list(other.shape)} there and {np.dtype(leaf.dtype)}'
          f'{list(leaf.shape)} here; expected a run of the same model '
          'shape.')


def _flat(tree: Any) -> dict[str, Any]:
  """``{'a/b/0': leaf}`` (orbax stores a list's indices as strings)."""
  return {_name(path): leaf
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}
