"""Tasks: what the harness trains (see :mod:`lionx.train.tasks.base`).

* ``classification`` (:mod:`~lionx.train.tasks.classification`): images to
  one of :math:`C` classes; cross-entropy, top-1 accuracy.

Every module of this package registers its tasks when it is imported, and
importing the package imports them all, so a new task is a new file here.
"""

import importlib
import pkgutil

from lionx.train.tasks.base import TASKS
from lionx.train.tasks.base import LossOutput
from lionx.train.tasks.base import Task
from lionx.train.tasks.base import get_task
from lionx.train.tasks.base import register_task

for _module in pkgutil.iter_modules(__path__):
  if _module.name != 'base':
    importlib.import_module(f'{__name__}.{_module.name}')

__all__ = ('TASKS', 'LossOutput', 'Task', 'get_task', 'register_task')
