"""The embedded language-model default: a small GPT on the byte corpus.

Setting: the papers' GPT-2 runs (Dong, Li, Lin §4: Lion, SGD and AdamW
trained by steps, (β1, β2) = (0.9, 0.95), a logging pass over 100 batches)
scaled down to a CPU: ``gpt_tiny`` (2 pre-LN blocks, width 64, 4 heads,
context 64; d = 120,576) on ``text_bytes``, the source of the running
interpreter's standard library as bytes (about 11.5 M training and 0.66 M
validation bytes for CPython 3.11; nothing is downloaded). 1000 steps of
16 windows of 64 bytes, a linear warm-up over 50 steps then cosine to 0,
weight decay 0.1 for every optimizer (decoupled for Lion and AdamW, L2 for
SGD with momentum 0.9). Every 200 steps the logging pass reads 100
batches of 16 windows evenly spaced over the training bytes, and the
held-out loss 50 batches evenly spread over the validation bytes. Each
optimizer runs at the best rate of configs/lm_default_grid.py (lowest
final validation loss); docs/language_models.md ("Measured") has the
measured numbers, the grid and the time.

``configs/lm_default.py:masked_lm`` is the same setting with BERT
(``bert_tiny``: the same 2 blocks, width 64, 4 heads, context 64, an MLM
and a sentence-order head; the papers' MLM + sentence-order loss) at the
same rates, which were tuned for the GPT only.

Command (Lion, SGD and AdamW; about 3 minutes on 2 idle CPU cores):

  lionx-compare --config configs/lm_default.py --workdir runs/lm_default
  lionx-compare --config configs/lm_default.py:masked_lm \\
      --workdir runs/lm_default_bert
"""

from lionx.train.config import Config


TASKS = {'language_model': 'gpt_tiny', 'masked_lm': 'bert_tiny'}


def get_config(task: str = 'language_model') -> Config:
  """The GPT setting, or with ``task='masked_lm'`` the BERT one."""
  if task not in TASKS:
    raise ValueError(f'configs/lm_default.py:{task}: expected one of '
                     f'{tuple(TASKS)}.')
  config = Config(task=task)
  config.seed = 0
  config.num_epochs = 0
  config.num_steps = 1000
  config.eval_every_steps = 200
  config.batch_size = 16
  config.eval_batch_size = 16
  config.logging_max_batches = 100
  config.checkpoint_every_evals = 5
  config.log_every_steps = 20  # train_log.jsonl: the running loss
  config.compare_optimizers = ('lion', 'sgd', 'adamw')
  config.lr_select = 'val_loss'

  config.data.name = 'text_bytes'
  config.data.val_max_batches = 50

  config.model.name = TASKS[task]

  config.optimizer.name = 'lion'
  config.optimizer.b1 = 0.9
  config.optimizer.b2 = 0.95
  config.optimizer.weight_decay = 0.1
  # The best rates of configs/lm_default_grid.py (measured, see the README).
  config.optimizer.learning_rates = {
      'lion': 1e-3, 'sgd': 3e-2, 'adamw': 3e-3,
      # Lion's rate for its relatives (not part of the grid).
      'lion_lp': 1e-3, 'cautious_lion': 1e-3}

  config.schedule.name = 'warmup_cosine'
  config.schedule.warmup_steps = 50
  return config
