"""ImageNet-1K, ResNet-50: the papers' ImageNet schedule (REFERENCE §6).

Setting: 90 epochs, the first 10 a linear warm-up, then cosine annealing;
batch size 2048. SGD uses lr 0.5; Lion uses the papers' grid (--lr-grid).
ResNet-50 with the ImageNet stem (7x7/2 conv + max-pool) has d = 25,557,032.
The papers give no weight decay for ImageNet; 0.1 is that of their CIFAR
runs (for SGD at lr 0.5, 1e-4 is the usual choice: optimizer.weight_decay).

Data: lionx ships no ImageNet reader. This config needs a user-provided
loader registered under the name 'imagenet', e.g. in an override file
configs/my_imagenet.py:

  from configs import imagenet_resnet50
  from lionx.train import data

  def load(data_config):   # -> data.Dataset; np.memmap arrays are fine
    ...                    # (N, 224, 224, 3) uint8 images, int labels

  data.register_dataset('imagenet', load)
  get_config = imagenet_resnet50.get_config

Without one, the command below stops with a one-line error.

Commands:

  lionx-train --config configs/my_imagenet.py --workdir runs/in1k_sgd \\
      optimizer.name=sgd
  lionx-train --config configs/my_imagenet.py --workdir runs/in1k_lion \\
      optimizer.name=lion --lr-grid
"""

from configs import cifar10_resnet18


def get_config():
  config = cifar10_resnet18.get_config()
  config.num_epochs = 90
  config.batch_size = 2048
  config.eval_batch_size = 1024
  config.logging_max_batches = 100  # the logging epoch on 100 batches
  config.compare_optimizers = ('lion', 'sgd')
  config.data.name = 'imagenet'
  config.data.data_dir = 'data/imagenet'
  config.data.augment = True
  config.model.name = 'resnet50'
  config.model.stem = 'imagenet'
  config.optimizer.name = 'sgd'
  config.optimizer.learning_rates = {'sgd': 0.5}
  config.schedule.name = 'warmup_cosine'
  config.schedule.warmup_epochs = 10
  return config
