"""Tasks: what the harness trains (see :mod:`lionx.train.tasks.base`).

* ``classification`` (:mod:`~lionx.train.tasks.classification`): images to
  one of :math:`C` classes; cross-entropy, top-1 accuracy;
* ``language_model`` (:mod:`~lionx.train.tasks.language_model`): next-token
  prediction with a GPT;
* ``masked_lm`` (:mod:`~lionx.train.tasks.masked_lm`): BERT's masked tokens
  and sentence order.

They are registered here, explicitly; a new task is a module with a
:class:`~lionx.train.tasks.base.Task` and one
:func:`~lionx.train.tasks.base.register_task` call (here, or in a config
file).
"""

from lionx.train.tasks import classification
from lionx.train.tasks import language_model
from lionx.train.tasks import masked_lm
from lionx.train.tasks.base import TASKS
from lionx.train.tasks.base import LossOutput
from lionx.train.tasks.base import Task
from lionx.train.tasks.base import get_task
from lionx.train.tasks.base import register_task

register_task(classification.ImageClassification())
register_task(language_model.LanguageModelling())
register_task(masked_lm.MaskedLanguageModelling())

__all__ = ('TASKS', 'LossOutput', 'Task', 'get_task', 'register_task')
