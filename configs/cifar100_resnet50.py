"""CIFAR-100, ResNet-50: the papers' CIFAR setting (REFERENCE §6).

Setting: that of configs/cifar10_resnet18.py (100 epochs, batch size 64,
cosine annealing, weight decay 0.1, crop + flip) with CIFAR-100, ResNet-50.
Best rates reported: Lion 3e-5, SGD 1e-4.
d = 23,705,252 (sqrt(d) = 4868.8; the paper: 4869).

Data: cifar-100-python.tar.gz (or its cifar-100-python/ folder)
in ./data, or data.data_dir=...; nothing is downloaded.

Commands:

  lionx-compare --config configs/cifar100_resnet50.py \\
      --workdir runs/cifar100_resnet50 data.data_dir=data
  # the papers' grid [3e-3 ... 1e-6], keeping the best rate per optimizer:
  lionx-compare --config configs/cifar100_resnet50.py \\
      --workdir runs/cifar100_resnet50_grid --lr-grid
"""

from configs import cifar10_resnet18


def get_config():
  config = cifar10_resnet18.get_config()
  config.data.name = 'cifar100'
  config.model.name = 'resnet50'
  config.optimizer.learning_rates = {'lion': 3e-5, 'sgd': 1e-4}
  return config
