"""CIFAR-100, ViT-S/16: the papers' CIFAR setting (REFERENCE §6).

Setting: that of configs/cifar10_resnet18.py (100 epochs, batch size 64,
cosine annealing, weight decay 0.1, crop + flip) with CIFAR-100, ViT-S/16.
Best rates reported: Lion 1e-6, SGD 1e-6.
d = 21,704,164 (sqrt(d) = 4658.8; the paper: 4659).
The papers fine-tune ViT-S from ImageNet weights at 224 px; lionx
downloads no weights, so this trains ViT-S/16 from scratch on the CIFAR
images resized to 224 px in the model (slow on a CPU).

Data: cifar-100-python.tar.gz (or its cifar-100-python/ folder)
in ./data, or data.data_dir=...; nothing is downloaded.

Commands:

  lionx-compare --config configs/cifar100_vit_s.py \\
      --workdir runs/cifar100_vit_s data.data_dir=data
  # the papers' grid [3e-3 ... 1e-6], keeping the best rate per optimizer:
  lionx-compare --config configs/cifar100_vit_s.py \\
      --workdir runs/cifar100_vit_s_grid --lr-grid
"""

from configs import cifar10_resnet18


def get_config():
  config = cifar10_resnet18.get_config()
  config.data.name = 'cifar100'
  config.model.name = 'vit_s'
  config.model.image_size = 224  # inputs are resized 32 -> 224 px
  config.model.patch_size = 16
  config.optimizer.learning_rates = {'lion': 1e-6, 'sgd': 1e-6}
  return config
