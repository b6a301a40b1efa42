"""The teaching copy: every Conv2Former op as a readable NumPy forward/backward pair.

Each op is ``<name>_forward(...) -> (out, cache)`` and ``<name>_backward(dout, cache) -> grads``; the cache is
a small frozen dataclass holding exactly what the backward needs. Layout is NCHW throughout.

The fast copy, :mod:`c2f_numpy.kernels.nhwc`, has the same ops with the same signatures, channels-last; the ops
the model calls and their signatures are the contract :class:`c2f_numpy.backend.Ops`.
"""

from .activation import gelu_backward, gelu_forward
from .checks import OpDTypeError, OpInputError, OpTypeError
from .conv import (
    conv1x1_backward,
    conv1x1_forward,
    conv1x1_gelu_backward,
    conv1x1_gelu_forward,
    conv2d_backward,
    conv2d_forward,
    linear_backward,
    linear_forward,
)
from .loss import cross_entropy_backward, cross_entropy_forward
from .mlp import MLP_KEYS, mlp_backward, mlp_forward, mlp_inference, pos_residual_backward, pos_residual_forward
from .modulation import (
    CONVMOD_KEYS,
    convmod_backward,
    convmod_forward,
    convmod_inference,
    modulate_backward,
    modulate_forward,
)
from .norm import (
    BatchNormStats,
    batch_norm2d_backward,
    batch_norm2d_forward,
    layer_norm_backward,
    layer_norm_forward,
)
from .pool import global_avg_pool_backward, global_avg_pool_forward
from .regularize import (
    drop_path_backward,
    drop_path_forward,
    layer_scale_backward,
    layer_scale_forward,
    residual_branch_backward,
    residual_branch_forward,
)

# The layout of the activations every op here takes: composites read it to find the channel axis.
CHANNEL_AXIS = 1
LAYOUT = "(N, C, H, W)"

__all__ = [
    "CHANNEL_AXIS",
    "CONVMOD_KEYS",
    "LAYOUT",
    "MLP_KEYS",
    "BatchNormStats",
    "OpDTypeError",
    "OpInputError",
    "OpTypeError",
    "batch_norm2d_backward",
    "batch_norm2d_forward",
    "conv1x1_backward",
    "conv1x1_forward",
    "conv1x1_gelu_backward",
    "conv1x1_gelu_forward",
    "conv2d_backward",
    "conv2d_forward",
    "convmod_backward",
    "convmod_forward",
    "convmod_inference",
    "cross_entropy_backward",
    "cross_entropy_forward",
    "drop_path_backward",
    "drop_path_forward",
    "gelu_backward",
    "gelu_forward",
    "global_avg_pool_backward",
    "global_avg_pool_forward",
    "layer_norm_backward",
    "layer_norm_forward",
    "layer_scale_backward",
    "layer_scale_forward",
    "linear_backward",
    "linear_forward",
    "mlp_backward",
    "mlp_forward",
    "mlp_inference",
    "modulate_backward",
    "modulate_forward",
    "pos_residual_backward",
    "pos_residual_forward",
    "residual_branch_backward",
    "residual_branch_forward",
]
