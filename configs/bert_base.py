"""BERT-Base on OpenWebText token files: the papers' BERT setting.

Setting (Dong, Li, Lin §4; REFERENCE §6): BERT-Base (12 layers, width 768,
12 heads, 512 positions) pre-trained with the masked-language-model loss
plus the sentence-order loss (task=masked_lm), 50k steps, global batch 640
sequences of 512 tokens, (β1, β2) = (0.9, 0.95), Lion lr 1e-5, SGD lr
1e-4, the logging pass over 100 batches; schedule, weight decay and SGD
momentum as in configs/gpt2_small.py (the papers do not give them).
Expected (their Figure 2, BERT-Small and BERT-Base): Lion's training and
test loss below SGD's, and the gradient norm ratio r of order √d.

The papers ran Megatron-LM with its own BERT vocabulary; lionx reads
nanoGPT's OpenWebText token files (GPT-2's BPE, 50257 tokens) and adds
[CLS], [SEP] and [MASK], so the model's vocabulary is 50260 and d differs
from the usual BERT-Base count (--dry-run prints it).

Commands:

  lionx-train --config configs/bert_base.py --workdir runs/bertb --dry-run
  lionx-compare --config configs/bert_base.py --workdir runs/bert_base \\
      parallel.num_devices=0
"""

from configs import gpt2_small


def get_config():
  return gpt2_small.paper_config('masked_lm', 'bert_base', 512)
