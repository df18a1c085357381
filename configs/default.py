"""The embedded default: Lion vs SGD vs AdamW on scikit-learn's digits.

Setting: the papers' CIFAR recipe (batch size 64, cosine annealing to 0,
weight decay 0.1 for every optimizer) scaled down to a data set that ships
with scikit-learn (1797 8x8 images, split 1437 / 360, no download) and a
small CNN (d = 151,306). Each optimizer runs at the best rate of the grid
in configs/default_grid.py (lowest final full training loss f(θ)); see the
README's Training section for the measured numbers.

Command (the README's main command):

  lionx-compare --config configs/default.py --workdir runs/default
"""

from lionx.train.config import Config


def get_config() -> Config:
  config = Config()
  config.seed = 0
  config.num_epochs = 30
  config.batch_size = 64
  config.eval_batch_size = 512
  config.checkpoint_every_evals = 10
  config.compare_optimizers = ('lion', 'sgd', 'adamw')

  config.data.name = 'digits'
  config.data.augment = False

  config.model.name = 'cnn'

  config.optimizer.name = 'lion'
  config.optimizer.weight_decay = 0.1
  # The best rates of configs/default_grid.py (measured, see the README).
  config.optimizer.learning_rates = {
      'lion': 3e-3, 'sgd': 1e-1, 'adamw': 3e-3, 'cautious_lion': 3e-3,
      # Lion's rate: the vote moves each coordinate by the same eta.
      'distributed_lion': 3e-3}

  config.schedule.name = 'cosine'
  return config
