"""c2f_numpy: a pure-NumPy reference implementation of Conv2Former (Hou et al., TPAMI 2024, arXiv 2211.11943).

    import c2f_numpy as c2f
    m = c2f.conv2former_n(num_classes=10)          # the official variants: _n, _t, _s, _b, _b_22k, _l
    logits = m(x)                                  # x: (N, 3, H, W) float32
    m.zero_grad(); dx = m.backward(dlogits); grads = m.grads()

Subpackages: :mod:`c2f_numpy.ops` (the teaching copy of every op, forward and hand-written backward),
:mod:`c2f_numpy.nn` (modules), :mod:`c2f_numpy.models` (Conv2Former), :mod:`c2f_numpy.io` (checkpoints),
:mod:`c2f_numpy.gradcheck` and :mod:`c2f_numpy.testing` (finite differences, the tolerance table).
"""

from .io import load_torch_checkpoint, load_weights, save_weights
from .models import (
    VARIANTS,
    Conv2Former,
    conv2former_b,
    conv2former_b_22k,
    conv2former_l,
    conv2former_n,
    conv2former_s,
    conv2former_t,
    create_model,
    load_model,
    model_stats,
    save_model,
)
from .version import __version__

__all__ = [
    "VARIANTS",
    "Conv2Former",
    "__version__",
    "conv2former_b",
    "conv2former_b_22k",
    "conv2former_l",
    "conv2former_n",
    "conv2former_s",
    "conv2former_t",
    "create_model",
    "load_model",
    "load_torch_checkpoint",
    "load_weights",
    "model_stats",
    "save_model",
    "save_weights",
]
