"""Conv2Former, built as the official code builds it (github.com/HVision-NKU/Conv2Former, models/conv2former.py).

    stem            conv3x3 s2 -> GELU -> BN -> conv3x3 -> GELU -> BN -> conv2x2 s2      downsample_layers.0.{0..6}
    downsampling    LayerNorm -> conv2x2 s2 (with bias)                                  downsample_layers.{1,2,3}.{0,1}
    stage i         depths[i] Blocks at width dims[i]                                     stages.i.j
    Block           x = x + drop_path(layer_scale_1 * attn(x))                           attn = ConvMod
                    x = x + drop_path(layer_scale_2 * mlp(x))                            mlp with its 3x3 pos conv
    head            conv1x1 -> 1280, GELU, LayerNorm; global average pool; Linear        head.{0,2}, pred

Where the paper's figure and the code differ (the stem, the MLP's 3x3 ``pos`` conv) the code wins: the
released checkpoints follow it. Attribute names equal the official ones, so state-dict keys match.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backend import FAST, resolve, select
from ..nn import GELU, BatchNorm2d, Conv2d, LayerNorm, Linear, Module, ModuleList, Parameter, Sequential, emit
from ..nn.module import Shape, observing
from ..ops.checks import OpDTypeError, OpInputError, check_array

HEAD_DIM = 1280
STEM_STRIDES = (4, 2, 1)  # 4 is the official stem; 2 and 1 are for small images (see SMALL_VARIANTS)
LN_EPS = 1e-6


@dataclass(frozen=True)
class Variant:
    """One Conv2Former configuration: widths and depths of the stages, the default kernel size, and (for the
    small-image configurations) the stem's downsampling factor and the width of the head's 1x1 conv."""

    dims: tuple[int, ...]
    depths: tuple[int, ...]
    kernel_size: int
    mlp_ratio: int = 4
    stem_stride: int = 4
    head_dim: int = HEAD_DIM


# The official variants (latest official code: N and B_22k use k=7, the others k=11).
VARIANTS: dict[str, Variant] = {
    "conv2former_n": Variant((64, 128, 256, 512), (2, 2, 8, 2), 7),
    "conv2former_t": Variant((72, 144, 288, 576), (3, 3, 12, 3), 11),
    "conv2former_s": Variant((72, 144, 288, 576), (4, 4, 32, 4), 11),
    "conv2former_b": Variant((96, 192, 384, 768), (4, 4, 34, 4), 11),
    "conv2former_b_22k": Variant((96, 192, 384, 768), (4, 4, 34, 4), 7),
    "conv2former_l": Variant((128, 256, 512, 1024), (4, 4, 48, 4), 11),
}

# Small-image configurations (ours, not the paper's). The official network downsamples by 32, so a 28x28 or
# 32x32 image reaches stage 1 at 7x7 or 8x8 and ends at 1x1, where a k=7 or k=11 kernel mostly sees padding.
# These use three stages and a stride-2 stem (stage 1 at 14x14 for 28x28 input, 16x16 for 32x32; the last
# stage at 3x3 / 4x4) and a narrower head; the blocks are the official ones. docs/training.md has the costs.
SMALL_VARIANTS: dict[str, Variant] = {
    "conv2former_micro": Variant((32, 64, 128), (2, 2, 2), 7, stem_stride=2, head_dim=256),
    "conv2former_mini": Variant((48, 96, 192), (2, 2, 2), 7, stem_stride=2, head_dim=384),
}


class SpatialAttention(Module):
    """Convolutional modulation (``attn``): out = proj(DWConv_k(GELU(att.0(LN x))) * v(LN x)).

    The parameters live in child modules named as in the checkpoint; the math is ``ops.convmod``. Two paths,
    chosen in :meth:`forward` as in :class:`MLP`: training (or an observer) layer by layer with caches; inference
    ``F.convmod_inference`` (fused in the fast copy), a later backward recomputing the caches first.
    """

    def __init__(self, dim: int, kernel_size: int, *, dtype: Any, rng: np.random.Generator) -> None:
        super().__init__()
        self.norm = LayerNorm(dim, LN_EPS, dtype=dtype)
        self.att = Sequential(
            Conv2d(dim, dim, 1, dtype=dtype, rng=rng),
            GELU(),
            Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim, dtype=dtype, rng=rng),
        )
        self.v = Conv2d(dim, dim, 1, dtype=dtype, rng=rng)
        self.proj = Conv2d(dim, dim, 1, dtype=dtype, rng=rng)
        self._cache: Any = None
        self._inference_input: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        if not self.training and not observing():
            self._cache, self._inference_input = None, x
            return self.F.convmod_inference(x, self._param_arrays())
        out, c = self.F.convmod_forward(x, self._param_arrays())
        self._cache, self._inference_input = c, None
        emitted = ((self.norm, c.att0.conv.x), (self.att[0], lambda: c.att0.pre_activation), (self.att[1], c.att2.x),
                   (self.att[2], c.mod.a), (self.att, c.mod.a), (self.v, c.mod.v), (self.proj, out))  # fmt: skip
        for child, value in emitted:
            emit(child, value)  # the children's outputs, for an observer (a no-op otherwise)
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        cache = self._cache
        if cache is None and self._inference_input is not None:  # an inference forward kept no cache
            _, cache = self.F.convmod_forward(self._inference_input, self._param_arrays())
        dx, grads = self.F.convmod_backward(dout, self._need_cache(cache))
        self._accumulate(grads)
        return dx

    def count_macs(self, shape: Shape) -> tuple[Shape, int]:
        total = 0
        for conv in (self.att, self.v, self.proj):
            total += conv.count_macs(shape)[1]
        return shape, total


class MLP(Module):
    """The MLP branch (``mlp``): fc2(h + GELU(pos(h))), h = GELU(fc1(LN x)); the math is ``ops.mlp``.

    Two paths, chosen in :meth:`forward`: training (or an observer watching the children) runs the ops layer by
    layer and keeps their caches; inference runs ``F.mlp_inference`` (in the fast copy one fused pass over groups
    of images, kernels/fused.py) and keeps only the input, so that a backward after an eval-mode forward (the
    ERF analysis does this) recomputes the caches first and still gets the gradient.
    """

    def __init__(self, dim: int, mlp_ratio: int, *, dtype: Any, rng: np.random.Generator) -> None:
        super().__init__()
        hidden = dim * mlp_ratio
        self.norm = LayerNorm(dim, LN_EPS, dtype=dtype)
        self.fc1 = Conv2d(dim, hidden, 1, dtype=dtype, rng=rng)
        self.pos = Conv2d(hidden, hidden, 3, padding=1, groups=hidden, dtype=dtype, rng=rng)
        self.fc2 = Conv2d(hidden, dim, 1, dtype=dtype, rng=rng)
        self._cache: Any = None
        self._inference_input: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        if not self.training and not observing():
            self._cache, self._inference_input = None, x
            return self.F.mlp_inference(x, self._param_arrays())
        out, c = self.F.mlp_forward(x, self._param_arrays())
        self._cache, self._inference_input = c, None
        emitted = ((self.norm, c.fc1.conv.x), (self.fc1, lambda: c.fc1.pre_activation), (self.pos, c.pos.act.x),
                   (self.fc2, out))  # fmt: skip
        for child, value in emitted:
            emit(child, value)  # the children's outputs (pos: the conv, before its GELU and the residual)
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        cache = self._cache
        if cache is None and self._inference_input is not None:  # an inference forward kept no cache
            _, cache = self.F.mlp_forward(self._inference_input, self._param_arrays())
        dx, grads = self.F.mlp_backward(dout, self._need_cache(cache))
        self._accumulate(grads)
        return dx

    def count_macs(self, shape: Shape) -> tuple[Shape, int]:
        s1, m1 = self.fc1.count_macs(shape)
        _, m2 = self.pos.count_macs(s1)
        s3, m3 = self.fc2.count_macs(s1)
        return s3, m1 + m2 + m3


class Block(Module):
    """x = x + drop_path(ls1 * attn(x)); x = x + drop_path(ls2 * mlp(x)). Drop path draws from ``rng``."""

    def __init__(
        self,
        dim: int,
        kernel_size: int,
        mlp_ratio: int = 4,
        drop_path: float = 0.0,
        layer_scale_init_value: float = 1e-6,
        *,
        dtype: Any,
        rng: np.random.Generator,
        drop_path_rng: np.random.Generator,
    ) -> None:
        super().__init__()
        self.attn = SpatialAttention(dim, kernel_size, dtype=dtype, rng=rng)
        self.mlp = MLP(dim, mlp_ratio, dtype=dtype, rng=rng)
        self.layer_scale_1 = Parameter(np.full(dim, layer_scale_init_value, dtype=dtype))
        self.layer_scale_2 = Parameter(np.full(dim, layer_scale_init_value, dtype=dtype))
        self.drop_path = drop_path
        self.drop_path_rng = drop_path_rng
        self._cache: Any = None

    def _residual(self, x: np.ndarray, y: np.ndarray, gamma: Parameter) -> tuple[np.ndarray, Any]:
        """x + drop_path(gamma * y), one op (layer scale, drop path and the add fused in the fast copy)."""
        return self.F.residual_branch_forward(x, y, gamma.data, self.drop_path, training=self.training,
                                              rng=self.drop_path_rng)  # fmt: skip

    def forward(self, x: np.ndarray) -> np.ndarray:
        h, c1 = self._residual(x, self.attn(x), self.layer_scale_1)
        out, c2 = self._residual(h, self.mlp(h), self.layer_scale_2)
        self._cache = (c1, c2)
        return out

    def _branch_backward(self, dout: np.ndarray, cache: Any, branch: Module, gamma: Parameter) -> np.ndarray:
        dy, dgamma = self.F.residual_branch_backward(dout, cache)
        gamma.accumulate(dgamma)
        return branch.backward(dy)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        c1, c2 = self._need_cache(self._cache)
        dh = dout + self._branch_backward(dout, c2, self.mlp, self.layer_scale_2)
        return dh + self._branch_backward(dh, c1, self.attn, self.layer_scale_1)

    def count_macs(self, shape: Shape) -> tuple[Shape, int]:
        return shape, self.attn.count_macs(shape)[1] + self.mlp.count_macs(shape)[1]

    def extra_repr(self) -> str:
        return f"drop_path={self.drop_path:.4g}"


class Conv2Former(Module):
    """The Conv2Former network. Input (N, in_chans, H, W) in the model's dtype -> logits (N, num_classes).

    ``seed`` fixes the initialisation; drop path draws its per-sample masks from ``drop_path_rng`` (a
    ``np.random.Generator``, seeded from ``seed`` unless given), shared by all blocks in forward order.
    """

    def __init__(
        self,
        dims: tuple[int, ...] = (64, 128, 256, 512),
        depths: tuple[int, ...] = (2, 2, 8, 2),
        kernel_size: int = 7,
        mlp_ratio: int = 4,
        in_chans: int = 3,
        num_classes: int = 1000,
        drop_path_rate: float = 0.0,
        layer_scale_init_value: float = 1e-6,
        *,
        dtype: Any = np.float32,
        seed: int = 0,
        drop_path_rng: np.random.Generator | None = None,
        backend: str = FAST,
        stem_stride: int = 4,
        head_dim: int = HEAD_DIM,
    ) -> None:
        super().__init__()
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"Conv2Former: dtype must be float32 or float64, got {dtype}")
        if len(dims) != len(depths) or not dims:
            raise ValueError(f"Conv2Former: dims {dims} and depths {depths} must be non-empty and of equal length")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"Conv2Former: kernel_size must be odd (padding k//2 keeps H, W), got {kernel_size}")
        if stem_stride not in STEM_STRIDES:
            raise ValueError(f"Conv2Former: stem_stride must be one of {STEM_STRIDES}, got {stem_stride!r}")
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"Conv2Former: drop_path_rate must be in [0, 1), got {drop_path_rate}")
        self.dims, self.depths, self.kernel_size, self.mlp_ratio = tuple(dims), tuple(depths), kernel_size, mlp_ratio
        self.in_chans, self.num_classes, self.dtype = in_chans, num_classes, dtype
        self.stem_stride, self.head_dim = stem_stride, head_dim
        rng = np.random.default_rng(seed)
        self.drop_path_rng = drop_path_rng if drop_path_rng is not None else np.random.default_rng([seed, 1])
        kw: dict[str, Any] = {"dtype": dtype, "rng": rng}

        # The stem: official (stride 4) = conv3x3 s2, conv3x3, conv2x2 s2. The small-image stems keep its seven
        # modules (so the state-dict keys stay the same) and drop the downsampling: stride 2 makes the first
        # conv stride 1; stride 1 also turns the last conv into a 1x1.
        half = dims[0] // 2
        s1, (k3, s3) = (2, (2, 2)) if stem_stride == 4 else (1, (2, 2) if stem_stride == 2 else (1, 1))
        self.downsample_layers = ModuleList()
        self.downsample_layers.append(
            Sequential(
                Conv2d(in_chans, half, 3, stride=s1, padding=1, bias=False, **kw),
                GELU(),
                BatchNorm2d(half, dtype=dtype),
                Conv2d(half, half, 3, stride=1, padding=1, bias=False, **kw),
                GELU(),
                BatchNorm2d(half, dtype=dtype),
                Conv2d(half, dims[0], k3, stride=s3, bias=False, **kw),
            )
        )
        for i in range(len(dims) - 1):
            self.downsample_layers.append(
                Sequential(LayerNorm(dims[i], LN_EPS, dtype=dtype), Conv2d(dims[i], dims[i + 1], 2, stride=2, **kw))
            )
        # Stochastic depth grows linearly with depth. The official code takes the rates from a float32
        # torch.linspace, whose last bit depends on the CPU's vector width; exact float64 rates here.
        rates = np.linspace(0.0, drop_path_rate, sum(depths))
        self.stages = ModuleList()
        cur = 0
        for i, (dim, depth) in enumerate(zip(dims, depths, strict=True)):
            blocks = [
                Block(dim, kernel_size, mlp_ratio, float(rates[cur + j]), layer_scale_init_value,
                      drop_path_rng=self.drop_path_rng, **kw)
                for j in range(depth)
            ]  # fmt: skip
            self.stages.append(Sequential(*blocks))
            cur += depths[i]
        self.head = Sequential(Conv2d(dims[-1], head_dim, 1, **kw), GELU(), LayerNorm(head_dim, LN_EPS, dtype=dtype))
        self.pred = Linear(head_dim, num_classes, **kw)
        self._cache: Any = None
        self.set_backend(backend)

    def set_backend(self, backend: str) -> Conv2Former:
        """Compute with "fast" (default: the Numba kernels, channels-last inside) or "teaching" (the NumPy ops).

        "numba" and "numpy" are accepted aliases (:mod:`c2f_numpy.backend`); both copies take and return NCHW at
        the model's boundary. Switch between steps, not between a forward and its backward: the caches belong to
        the copy that made them.
        """
        try:
            namespace, layout = select(backend)
        except ValueError as e:
            raise ValueError(f"Conv2Former: {e}") from None
        self.set_ops(namespace, layout)
        self.backend = resolve(backend)
        return self

    # ---------------------------------------------------------------------------------------------- compute
    def forward(self, x: np.ndarray) -> np.ndarray:
        """Logits (N, num_classes) for images x (N, in_chans, H, W) of the model's dtype."""
        self.check_input(x)
        if self.layout == "NHWC":  # the one layout conversion of the forward
            x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        for down, stage in zip(self.downsample_layers, self.stages, strict=True):
            x = stage(down(x))
        x = self.head(x)
        pooled, pool_cache = self.F.global_avg_pool_forward(x)
        self._cache = pool_cache
        return self.pred(pooled)

    def backward(self, dlogits: np.ndarray) -> np.ndarray:
        """Gradient of the input image; parameter gradients accumulate into ``grads()``."""
        pool_cache = self._need_cache(self._cache)
        d = self.F.global_avg_pool_backward(self.pred.backward(dlogits), pool_cache)
        d = self.head.backward(d)
        for down, stage in reversed(list(zip(self.downsample_layers, self.stages, strict=True))):
            d = down.backward(stage.backward(d))
        return np.ascontiguousarray(d.transpose(0, 3, 1, 2)) if self.layout == "NHWC" else d

    def check_input(self, x: np.ndarray) -> None:
        """Clear errors for images the network cannot take (dtype, channels, too small for stride 32)."""
        name = type(self).__name__
        if isinstance(x, np.ndarray) and x.dtype != self.dtype and x.dtype in (np.float32, np.float64):
            raise OpDTypeError(
                f"{name}: input is {x.dtype} but the model is {self.dtype}: pass x.astype(np.{self.dtype}) or "
                f"build the model with dtype=np.{x.dtype}"
            )
        check_array(name, "x", x, 4, "(N, C, H, W)", dtype=self.dtype)
        if x.shape[1] != self.in_chans:
            raise OpInputError(f"{name}: expected {self.in_chans} input channels (in_chans), got shape {x.shape}")
        try:
            self.count_macs(x.shape)
        except ValueError as err:
            raise OpInputError(
                f"{name}: a {x.shape[2]}x{x.shape[3]} image is too small: the network downsamples by "
                f"{self.stem_stride * 2 ** (len(self.dims) - 1)} "
                f"and a stage would be empty ({err})"
            ) from None

    def count_macs(self, shape: Shape) -> tuple[Shape, int]:
        total = 0
        for down, stage in zip(self.downsample_layers, self.stages, strict=True):
            shape, m1 = down.count_macs(shape)
            shape, m2 = stage.count_macs(shape)
            total += m1 + m2
        shape, m = self.head.count_macs(shape)
        _, mp = self.pred.count_macs((shape[0], self.head_dim))
        return (shape[0], self.num_classes), total + m + mp

    # ---------------------------------------------------------------------------------------------- state
    def _describe_mismatch(self, key: str, got: Shape, want: Shape) -> str:
        if key.endswith("attn.att.2.weight") and len(got) == 4 and got[2:] != want[2:]:
            return (
                f"{key}: checkpoint has {got[2]}x{got[3]} depthwise kernels, the model was built for "
                f"{want[2]}x{want[3]}: build it with kernel_size={got[2]}"
            )
        return super()._describe_mismatch(key, got, want)

    def set_drop_path_rng(self, rng: np.random.Generator) -> None:
        """Use ``rng`` for every block's drop-path masks (e.g. a generator restored from a checkpoint)."""
        self.drop_path_rng = rng
        for stage in self.stages:
            for block in stage:
                block.drop_path_rng = rng

    def extra_repr(self) -> str:
        return (
            f"dims={self.dims}, depths={self.depths}, kernel_size={self.kernel_size}, stem_stride={self.stem_stride}, "
            f"head_dim={self.head_dim}, dtype={self.dtype}, backend={self.backend!r}"
        )
