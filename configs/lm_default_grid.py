"""The learning-rate grid behind configs/lm_default.py's rates.

Setting: configs/lm_default.py with Lion, SGD and AdamW each trained at
every rate of a grid wide enough for all three; the rate with the lowest
final validation loss is kept per optimizer (lr_select='val_loss').

Command (24 runs; about 15 minutes on 2 idle CPU cores):

  lionx-compare --config configs/lm_default_grid.py \\
      --workdir runs/lm_default_grid
"""

from configs import lm_default

GRID = (1.0, 3e-1, 1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4)


def get_config():
  config = lm_default.get_config()
  config.optimizer.lr_grid = GRID
  config.lr_select = 'val_loss'
  return config
