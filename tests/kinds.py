"""One number in every kind a hyperparameter may come as (issue 27).

Exact float32 values, so that every kind holds the same number; none is a
power of two, so a step that rounds differently shows.
"""

import jax.numpy as jnp
import numpy as np

LR = float(np.float32(3e-3))
WD = float(np.float32(0.7))
PEAK = float(np.float32(5e-3))
KINDS = {
    'python': float,
    'np.float32': np.float32,
    'np.float64': np.float64,
    'np 0-d': lambda v: np.asarray(v, np.float32),
    'jnp 0-d': lambda v: jnp.asarray(v, jnp.float32),
}
