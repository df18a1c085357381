"""CIFAR-10/100 with ResNet-18, ResNet-50 or ViT-S/16: the papers' setting.

Setting (Dong, Li, Lin §4 and Appendix C; Table 2 of the Chinese version;
REFERENCE §6): 100 epochs, batch size 64, cosine annealing to 0, weight
decay 0.1 for every optimizer, random crop (4 px padding) and horizontal
flip, and the best Lion / SGD rates the papers report:

  | model    | CIFAR-10      | CIFAR-100     | d (10 / 100 classes)      |
  |----------|---------------|---------------|---------------------------|
  | resnet18 | 3e-6 / 1e-6   | 3e-5 / 3e-4   | 11,173,962 / 11,220,132   |
  | resnet50 | 3e-6 / 3e-6   | 3e-5 / 1e-4   | 23,520,842 / 23,705,252   |
  | vit_s    | 1e-6 / 1e-6   | 1e-6 / 1e-6   | 21,669,514 / 21,704,164   |

so sqrt(d) is the papers' 3343 / 3350, 4850 / 4869 and 4655 / 4659. The
paper does not give SGD's momentum; here it is 0.9
(optimizer.sgd.momentum=0 gives plain SGD). The papers fine-tune ViT-S from
ImageNet weights at 224 px; lionx downloads no weights, so vit_s trains
from scratch on the images resized to 224 px in the model (slow on a CPU).
Expected: Lion's training loss below SGD's (their Figure 1).

Data: cifar-10-python.tar.gz / cifar-100-python.tar.gz (or the folders
extracted from them) from https://www.cs.toronto.edu/~kriz/cifar.html in
./data, or data.data_dir=...; nothing is downloaded.

Commands (the argument is DATASET,MODEL):

  lionx-compare --config configs/cifar.py:cifar10,resnet18 \\
      --workdir runs/cifar10_resnet18 data.data_dir=data
  lionx-train --config configs/cifar.py:cifar100,vit_s --dry-run \\
      --workdir runs/x
  # the papers' grid [3e-3 ... 1e-6], keeping the best rate per optimizer:
  lionx-compare --config configs/cifar.py:cifar100,resnet50 \\
      --workdir runs/cifar100_resnet50_grid --lr-grid
"""

from configs import default
from lionx.train.config import ConfigError

# (dataset, model) -> (Lion's rate, SGD's rate), REFERENCE §6.
PAPER_RATES = {
    ('cifar10', 'resnet18'): (3e-6, 1e-6),
    ('cifar100', 'resnet18'): (3e-5, 3e-4),
    ('cifar10', 'resnet50'): (3e-6, 3e-6),
    ('cifar100', 'resnet50'): (3e-5, 1e-4),
    ('cifar10', 'vit_s'): (1e-6, 1e-6),
    ('cifar100', 'vit_s'): (1e-6, 1e-6),
}


def get_config(arg: str = 'cifar10,resnet18'):
  dataset, _, model = arg.partition(',')
  if (dataset, model) not in PAPER_RATES:
    raise ConfigError(
        f'argument {arg!r}: expected DATASET,MODEL, one of '
        f'{sorted(",".join(k) for k in PAPER_RATES)}.')
  lion, sgd = PAPER_RATES[dataset, model]
  config = default.get_config()
  config.num_epochs = 100
  config.batch_size = 64
  config.eval_batch_size = 500
  config.checkpoint_every_evals = 1
  config.compare_optimizers = ('lion', 'sgd')
  config.data.name = dataset
  config.data.data_dir = 'data'
  config.data.augment = True
  config.model.name = model
  config.model.stem = 'cifar'
  if model == 'vit_s':
    config.model.image_size = 224  # inputs are resized 32 -> 224 px
    config.model.patch_size = 16
  config.optimizer.weight_decay = 0.1
  config.optimizer.sgd.momentum = 0.9
  config.optimizer.learning_rates = {'lion': lion, 'sgd': sgd}
  config.schedule.name = 'cosine'
  return config
