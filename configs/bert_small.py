"""BERT-Small on OpenWebText token files: the papers' BERT setting.

Setting: configs/bert_base.py (MLM + sentence order, 50k steps, global
batch 640 of 512 tokens, (β1, β2) = (0.9, 0.95), Lion lr 1e-5, SGD lr
1e-4, logging over 100 batches) with BERT-Small. The papers do not define
BERT-Small; lionx takes the 4-layer, 512-wide miniature (8 heads, MLP
2048) of Turc et al. (2019), "Well-Read Students Learn Better". The
vocabulary is GPT-2's 50257 plus [CLS], [SEP] and [MASK].

Commands:

  lionx-train --config configs/bert_small.py --workdir runs/berts --dry-run
  lionx-compare --config configs/bert_small.py --workdir runs/bert_small \\
      parallel.num_devices=0
"""

from configs import gpt2_small


def get_config():
  return gpt2_small.paper_config('masked_lm', 'bert_small', 512)
