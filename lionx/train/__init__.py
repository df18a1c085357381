"""The Flax NNX training harness (``pip install lionx[train]``).

Modules: :mod:`~lionx.train.config` (typed configs, files, overrides),
:mod:`~lionx.train.data` (CIFAR archives, digits, synthetic; batches),
:mod:`~lionx.train.models` (ResNet-18/50, ViT, CNN, MLP),
:mod:`~lionx.train.optimizers` and :mod:`~lionx.train.schedules` (by name),
:mod:`~lionx.train.loop` (``create_train_state``, ``make_train_step``,
``train_and_evaluate``), :mod:`~lionx.train.checkpoint` (orbax),
:mod:`~lionx.train.sweep` (learning-rate grids, comparisons),
:mod:`~lionx.train.plots`, :mod:`~lionx.train.report` and
:mod:`~lionx.train.cli` (``lionx-train``, ``lionx-compare``).

This is the only part of lionx that imports Flax, orbax, scikit-learn,
matplotlib and tqdm.
"""
