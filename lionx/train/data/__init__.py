"""Data sets of the harness's tasks, one module per kind of data.

* :mod:`lionx.train.data.images`: image classification sets (digits,
  CIFAR, synthetic, and loaders registered by the user);
* :mod:`lionx.train.data.imagefolder`: ImageNet-style folders of JPEGs
  (``data.name=imagefolder``, registered by the classification task);
* :mod:`lionx.train.data.text`: the language models' token data.

Nothing is downloaded: data come from a local path, from a package that
ships them, or are generated.
"""
