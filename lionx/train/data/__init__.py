"""Data sets of the harness's tasks, one module per kind of data.

* :mod:`lionx.train.data.images`: image classification sets (digits,
  CIFAR, synthetic, and loaders registered by the user);
* :mod:`lionx.train.data.imagefolder`: ImageNet-style folders of JPEGs
  (``data.name=imagefolder``, registered here beside the sets of
  :mod:`~lionx.train.data.images`);
* :mod:`lionx.train.data.text`: the language models' token data.

Nothing is downloaded: data come from a local path, from a package that
ships them, or are generated.
"""

from lionx.train.data import imagefolder
from lionx.train.data import images

images.register_dataset(imagefolder.NAME, imagefolder.load_imagefolder)
