"""Networks of the harness's tasks, one module per family, in flax.nnx.

* :mod:`lionx.train.models.vision`: ResNet-18/50, ViT, a small CNN, an MLP.
"""
