"""CIFAR-10, ResNet-18: the papers' CIFAR setting (REFERENCE §6).

Setting (Dong, Li, Lin §4 and Appendix C; Table 2 of the Chinese version):
100 epochs, batch size 64, cosine annealing to 0, weight decay 0.1 for every
optimizer, random crop (4 px padding) and horizontal flip. Best rates
reported: Lion 3e-6, SGD 1e-6. ResNet-18 with the CIFAR stem has
d = 11,173,962 (sqrt(d) = 3342.7; the paper: 3343). The paper does not give
SGD's momentum; here it is 0.9 (optimizer.momentum=0 gives plain SGD).
Expected: Lion's training loss below SGD's (their Figure 1).

Data: cifar-10-python.tar.gz (or its cifar-10-batches-py/ folder) from
https://www.cs.toronto.edu/~kriz/cifar.html in ./data, or set
data.data_dir=...; nothing is downloaded.

Commands:

  lionx-compare --config configs/cifar10_resnet18.py \\
      --workdir runs/cifar10_resnet18 data.data_dir=data
  # the papers' grid [3e-3 ... 1e-6], keeping the best rate per optimizer:
  lionx-compare --config configs/cifar10_resnet18.py \\
      --workdir runs/cifar10_resnet18_grid --lr-grid
"""

from configs import default


def get_config():
  config = default.get_config()
  config.num_epochs = 100
  config.batch_size = 64
  config.eval_batch_size = 500
  config.checkpoint_every_epochs = 1
  config.compare_optimizers = ('lion', 'sgd')
  config.data.name = 'cifar10'
  config.data.data_dir = 'data'
  config.data.augment = True
  config.model.name = 'resnet18'
  config.model.stem = 'cifar'
  config.optimizer.weight_decay = 0.1
  config.optimizer.momentum = 0.9
  config.optimizer.learning_rates = {'lion': 3e-6, 'sgd': 1e-6}
  config.schedule.name = 'cosine'
  return config
