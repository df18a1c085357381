"""ImageNet-1K with ResNet-50 or ViT-S/16: the papers' ImageNet schedule.

Setting (REFERENCE §6): 90 epochs, the first 10 a linear warm-up, then
cosine annealing; batch size 2048. SGD uses lr 0.5; Lion uses the papers'
grid (--lr-grid). ResNet-50 with the ImageNet stem (7x7/2 conv + max-pool)
has d = 25,557,032; ViT-S/16 at 224 px has d = 22,050,664 (the papers:
sqrt(d) ≈ 5484 for ViT-S on ImageNet... their count; see the README). The
papers give no weight decay for ImageNet; 0.1 is that of their CIFAR runs
(for SGD at lr 0.5, 1e-4 is the usual choice: optimizer.weight_decays.sgd).
The logging pass runs over 100 batches.

Data: ImageNet in the usual folder layout, read by grain worker processes
(data.name=imagefolder, lionx.train.data.imagefolder): data.data_dir holds
train/<wnid>/*.JPEG (1,281,167 images) and val/<wnid>/*.JPEG (50,000, in
class folders, e.g. by the valprep.sh script of the PyTorch ImageNet
example); classes sorted by name. Training: random-resized crop to 224 +
flip; evaluation: resize to 256, central 224 crop. data.workers sets the
decoding processes (-1: one per CPU core). lionx downloads nothing.

Commands (the argument is the model):

  lionx-train --config configs/imagenet.py:resnet50 --workdir runs/in1k \\
      --dry-run data.data_dir=/data/imagenet
  lionx-train --config configs/imagenet.py:resnet50 \\
      --workdir runs/in1k_sgd optimizer.name=sgd data.data_dir=/data/imagenet
  lionx-compare --config configs/imagenet.py:vit_s \\
      --workdir runs/in1k_vit_s --lr-grid data.data_dir=/data/imagenet
"""

from configs import default
from lionx.train.config import ConfigError

MODELS = ('resnet50', 'vit_s')


def get_config(arg: str = 'resnet50'):
  if arg not in MODELS:
    raise ConfigError(f'argument {arg!r}: expected one of {MODELS}.')
  config = default.get_config()
  config.num_epochs = 90
  config.batch_size = 2048
  config.eval_batch_size = 1024
  config.checkpoint_every_evals = 1
  config.logging_max_batches = 100  # the logging pass on 100 batches
  config.compare_optimizers = ('lion', 'sgd')
  config.data.name = 'imagefolder'
  config.data.data_dir = 'data/imagenet'
  config.data.image_size = 224
  config.data.augment = True
  config.model.name = arg
  config.model.stem = 'imagenet'
  if arg == 'vit_s':
    config.model.image_size = 224
    config.model.patch_size = 16
  config.optimizer.name = 'sgd'
  config.optimizer.weight_decay = 0.1
  config.optimizer.learning_rates = {'sgd': 0.5}
  config.schedule.name = 'warmup_cosine'
  config.schedule.warmup_epochs = 10
  return config
