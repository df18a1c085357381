"""The learning-rate grid behind configs/default.py's rates.

Setting: configs/default.py with each optimizer trained at every rate of a
grid wide enough for all three (SGD wants rates far above the papers'
[3e-3 ... 1e-6]); the rate with the lowest final full training loss f(θ) is
kept per optimizer.

Command:

  lionx-compare --config configs/default_grid.py --workdir runs/default_grid
"""

from configs import default

GRID = (1.0, 3e-1, 1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5)


def get_config():
  config = default.get_config()
  config.optimizer.lr_grid = GRID
  config.lr_select = 'full_loss'
  return config
