"""GPT-2 Small on OpenWebText token files: the papers' GPT-2 setting.

Setting (Dong, Li, Lin §4 and Appendix C; REFERENCE §6): GPT-2 Small (12
layers, width 768, 12 heads, context 1024, GPT-2's vocabulary of 50257,
tied embeddings; d = 124,439,808) trained for 50k steps with a global
batch of 640 windows of 1024 tokens, (β1, β2) = (0.9, 0.95), Lion at lr
1e-5 and SGD at lr 1e-4; the logging pass runs over 100 batches (of 640
windows) at every evaluation, every 2000 steps (so the checkpoints 10k,
20k, ..., 50k of their Table B.1 are among them). The papers do not give
the schedule, the weight decay or SGD's momentum: here a linear warm-up
over 500 steps then cosine to 0, weight decay 0.1 (that of their CIFAR
runs) and momentum 0.9. Expected (their Figure 3, GPT-2 Small and
Medium, and Table B.1): Lion's training and test loss far below SGD's, the
gradient norm ratio r of order √d; zero-shot WikiText-103
log-perplexity from 8.20 (10k) to 7.89 (50k) for SGD and from 3.66 to 3.28
for Lion. lionx's ``val_loss`` is the log-perplexity on OpenWebText's
val.bin, not on WikiText-103.

Data: nanoGPT's data/openwebtext/prepare.py writes train.bin and val.bin
(uint16 GPT-2 token ids) into data/openwebtext; nothing is downloaded by
lionx. A batch of 640 x 1024 tokens needs many devices
(parallel.num_devices=0 uses them all), gradient accumulation
(grad_accum_steps=k) or a smaller batch_size; model.remat=true keeps one
device's step small (docs/language_models.md, "Training at scale").
Check the memory with --dry-run.

Commands:

  lionx-train --config configs/gpt2_small.py --workdir runs/gpt2s --dry-run
  lionx-compare --config configs/gpt2_small.py --workdir runs/gpt2_small \\
      parallel.num_devices=0
"""

from lionx.train.config import Config

# The papers' BERT and GPT-2 settings (REFERENCE §6).
PAPER_RATES = {'lion': 1e-5, 'sgd': 1e-4}


def paper_config(task: str, model: str, seq_len: int) -> Config:
  """The settings the papers' four language-model runs share."""
  config = Config(task=task)
  config.seed = 0
  config.num_epochs = 0
  config.num_steps = 50_000
  config.eval_every_steps = 2_000
  config.batch_size = 640
  config.eval_batch_size = 640
  config.logging_max_batches = 100
  config.checkpoint_every_evals = 1
  config.compare_optimizers = ('lion', 'sgd')
  config.lr_select = 'val_loss'

  config.data.name = 'token_files'
  config.data.data_dir = 'data/openwebtext'
  config.data.vocab_size = 50257
  config.data.seq_len = seq_len
  config.data.val_max_batches = 0

  config.model.name = model

  config.optimizer.name = 'lion'
  config.optimizer.b1 = 0.9
  config.optimizer.b2 = 0.95
  config.optimizer.weight_decay = 0.1
  config.optimizer.learning_rates = dict(PAPER_RATES)
  config.optimizer.sgd.momentum = 0.9

  config.schedule.name = 'warmup_cosine'
  config.schedule.warmup_steps = 500
  return config


def get_config() -> Config:
  return paper_config('language_model', 'gpt2_small', 1024)
