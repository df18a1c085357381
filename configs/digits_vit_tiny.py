"""The embedded default with a tiny ViT (2 blocks, width 32, patch 4).

Setting: configs/default.py with the CNN replaced by a ViT small enough to
train on a CPU in seconds; an example of an override file.

Command:

  lionx-compare --config configs/digits_vit_tiny.py \\
      --workdir runs/digits_vit_tiny
"""

from configs import default


def get_config():
  config = default.get_config()
  config.model.name = 'vit_tiny'
  return config
