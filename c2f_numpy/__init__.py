"""c2f_numpy: a pure-NumPy reference implementation of Conv2Former (Hou et al., TPAMI 2024, arXiv 2211.11943).

    import c2f_numpy as c2f
    m = c2f.conv2former_n(num_classes=10)          # the official variants: _n, _t, _s, _b, _b_22k, _l
    logits = m(x)                                  # x: (N, 3, H, W) float32
    m.zero_grad(); dx = m.backward(dlogits); grads = m.grads()

Subpackages and modules (docs/code-map.md shows the layout and which way the imports point):

- :mod:`c2f_numpy.ops`: the teaching copy of every op (NumPy, NCHW), forward and hand-written backward;
- :mod:`c2f_numpy.kernels`: the fast copy of the same ops (Numba and BLAS, channels-last), the default;
- :mod:`c2f_numpy.backend`: the contract both copies satisfy (``Ops``) and the choice between them;
- :mod:`c2f_numpy.nn`: modules (parameters, gradients, state dicts) that call the ops;
- :mod:`c2f_numpy.models`: Conv2Former and its variants;
- :mod:`c2f_numpy.io`: checkpoints in and out (``.pth`` without torch, ``.npz``, ``.safetensors``);
- :mod:`c2f_numpy.data`: data sets, augmentation, the resumable batch loader;
- :mod:`c2f_numpy.train`: training on CPU (``c2f-train``);
- :mod:`c2f_numpy.oracle`: layer-by-layer dumps for porting (``c2f-oracle``);
- :mod:`c2f_numpy.analysis`: effective receptive fields and learned kernels of any model (``c2f-inspect``);
- :mod:`c2f_numpy.gradcheck` and :mod:`c2f_numpy.testing`: finite differences, the tolerance table;
- :mod:`c2f_numpy.torch_reference`: the PyTorch replica of the official model (optional, needs torch);
- :mod:`c2f_numpy.demo`: a first look at one block.
"""

import os as _os

# Threading, decided before NumPy's OpenBLAS and Numba start (they read these once, at start-up).
# C2F_NUM_THREADS is the one knob for the thread count; a value the user set for a library's own variable wins.
# The fast copy runs on one Numba pool (kernels/pool.py chooses its threading layer); NumPy's OpenBLAS serves the
# teaching copy, and a short spin keeps its idle workers from holding the cores after a GEMM (docs/performance.md).
if _os.environ.get("C2F_NUM_THREADS"):
    for _var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        _os.environ.setdefault(_var, _os.environ["C2F_NUM_THREADS"])
_os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

# The environment above must be set before these imports start NumPy and Numba.
from .io import load_torch_checkpoint, load_weights, save_weights
from .models import (
    SMALL_VARIANTS,
    VARIANTS,
    Conv2Former,
    conv2former_b,
    conv2former_b_22k,
    conv2former_l,
    conv2former_micro,
    conv2former_mini,
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
    "SMALL_VARIANTS",
    "VARIANTS",
    "Conv2Former",
    "__version__",
    "conv2former_b",
    "conv2former_b_22k",
    "conv2former_l",
    "conv2former_micro",
    "conv2former_mini",
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
