"""The Flax NNX training harness (``pip install lionx[train]``).

Layers, each importing only the ones below it::

  cli            lionx-train, lionx-compare (argument parsing, --dry-run)
  sweep          comparisons, learning-rate grids, seeds
  experiment     train_and_evaluate: the task-agnostic loop
  steps · diagnostics · workdir · checkpoint · writers · plots · report
  config         composes the sections below into one Config
  tasks · optimizers   the unit of extension (model + loss + metrics +
                 data); the optimizer's one owner (rate, schedule, tx)
  data · models · schedules · parallel
  fields         typed config sections, overrides, ConfigError

This is the only part of lionx that imports Flax, orbax, scikit-learn,
matplotlib and tqdm.
"""
