"""GPT-2 Medium on OpenWebText token files: the papers' GPT-2 setting.

Setting: configs/gpt2_small.py (the papers' 50k steps, global batch 640,
(β1, β2) = (0.9, 0.95), Lion lr 1e-5, SGD lr 1e-4, logging over 100
batches) with GPT-2 Medium: 24 layers, width 1024, 16 heads, context
1024; d = 354,823,168. Expected (their Table B.1): zero-shot WikiText-103
log-perplexity from 8.03 (10k steps) to 7.71 (50k) for SGD and from 3.22
to 2.88 for Lion; lionx's ``val_loss`` is the log-perplexity on
OpenWebText's val.bin instead.

Commands:

  lionx-train --config configs/gpt2_medium.py --workdir runs/gpt2m --dry-run
  lionx-compare --config configs/gpt2_medium.py \\
      --workdir runs/gpt2_medium parallel.num_devices=0
"""

from configs import gpt2_small


def get_config():
  return gpt2_small.paper_config('language_model', 'gpt2_medium', 1024)
