"""A PyTorch replica of the official Conv2Former (HVision-NKU/Conv2Former, models/conv2former.py), torch only.

It is the independent reference the NumPy model is checked against (the tests, ``benchmarks/``) and a starting
point for porters (docs/porting.md). Optional: importing it needs torch (``pip install torch==2.13.0``);
``import c2f_numpy`` never imports it. The module tree and attribute names are
those of the official code, so ``state_dict()`` has exactly the official checkpoint keys and an official
checkpoint loads with ``load_state_dict(..., strict=True)``:

    downsample_layers.0.{0,2,3,5,6}     stem: conv3x3/s2 (no bias), GELU, BN, conv3x3/s1 (no bias), GELU, BN,
                                        conv2x2/s2 (no bias)
    downsample_layers.{1,2,3}.{0,1}     channels-first LayerNorm (eps 1e-6), conv2x2/s2 with bias
    stages.i.j.layer_scale_{1,2}        per-channel branch scales
    stages.i.j.attn.{norm,att.0,att.2,v,proj}
    stages.i.j.mlp.{norm,fc1,pos,fc2}
    head.0, head.2, pred                conv1x1 to 1280, (GELU), channels-first LayerNorm(1280), Linear

Forward as the official code: stem and stages, head, mean over H and W, then ``pred``.

Beyond the official network, for the small-image configurations of c2f_numpy (:data:`SMALL_VARIANTS`), the
model also takes ``stem_stride`` (4: the official stem; 2: the first conv has stride 1; 1: also the last conv
is a 1x1 with stride 1), ``head_dim`` (the head's width, official 1280), any number of stages (one
``downsample_layers.i`` per stage after the first) and ``layer_scale_init_value``. The seven stem modules and
all names stay, so the keys have the official pattern. The defaults are the official network.

Differences from the official file, none of which changes keys or numerics: no timm (DropPath and the init are
written here), the unused constructor arguments (window sizes, heads, ...) are gone, and the per-block
drop-path rates are computed on the CPU so the model can also be built under ``torch.device("meta")``.

Drop path can draw its masks from a seeded ``numpy.random.Generator`` (see :func:`set_drop_path_rng`) so a
training-mode forward can be compared sample for sample with the NumPy model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

try:
    import torch
    from torch import Tensor, nn
except ImportError as e:  # pragma: no cover  (torch is installed wherever the tests run)
    raise ImportError(
        "c2f_numpy.torch_reference is the PyTorch replica of the official model and needs PyTorch, which the rest "
        "of c2f_numpy does not: pip install torch==2.13.0 (the version the tests are pinned to; the CPU build is "
        "enough)"
    ) from e

__all__ = [
    "ALL_VARIANTS",
    "SMALL_VARIANTS",
    "STEM_STRIDES",
    "VARIANTS",
    "Block",
    "ChannelsFirstLayerNorm",
    "Conv2Former",
    "ConvMLP",
    "ConvMod",
    "DropPath",
    "VariantSpec",
    "build_torch_conv2former",
    "count_macs",
    "count_params",
    "drop_path_rates",
    "official_init",
    "set_drop_path_rng",
]

LN_EPS = 1e-6
LAYER_SCALE_INIT = 1e-6
HEAD_DIM = 1280
STEM_STRIDES = (4, 2, 1)


class VariantSpec(NamedTuple):
    dims: tuple[int, ...]
    depths: tuple[int, ...]
    kernel_size: int  # default size of the depthwise kernel in attn.att.2
    stem_stride: int = 4  # 4 is the official stem
    head_dim: int = HEAD_DIM


# As the latest official code ("update model config", 2025-01-02): N and B_22k use k=7, the others k=11.
VARIANTS: dict[str, VariantSpec] = {
    "n": VariantSpec((64, 128, 256, 512), (2, 2, 8, 2), 7),
    "t": VariantSpec((72, 144, 288, 576), (3, 3, 12, 3), 11),
    "s": VariantSpec((72, 144, 288, 576), (4, 4, 32, 4), 11),
    "b": VariantSpec((96, 192, 384, 768), (4, 4, 34, 4), 11),
    "b_22k": VariantSpec((96, 192, 384, 768), (4, 4, 34, 4), 7),
    "l": VariantSpec((128, 256, 512, 1024), (4, 4, 48, 4), 11),
}

# The small-image configurations of c2f_numpy (not official): three stages, a stride-2 stem, a narrower head.
SMALL_VARIANTS: dict[str, VariantSpec] = {
    "micro": VariantSpec((32, 64, 128), (2, 2, 2), 7, stem_stride=2, head_dim=256),
    "mini": VariantSpec((48, 96, 192), (2, 2, 2), 7, stem_stride=2, head_dim=384),
}
ALL_VARIANTS: dict[str, VariantSpec] = VARIANTS | SMALL_VARIANTS

_NUMPY_DTYPES: dict[torch.dtype, type[np.floating]] = {
    torch.float64: np.float64,
    torch.float32: np.float32,
    torch.float16: np.float16,
}


# ------------------------------------------------------------------------------------------------------------
# Layers


class ChannelsFirstLayerNorm(nn.Module):
    """LayerNorm over the channel axis of (N, C, H, W): mean and biased variance over C, per-channel affine.

    Computed exactly as the official ``LayerNorm(..., data_format="channels_first")``.
    """

    def __init__(self, num_channels: int, eps: float = LN_EPS) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


def _numpy_drop_scale(rng: np.random.Generator, n: int, keep: float, dtype: torch.dtype) -> Tensor:
    """Per-sample factor m / keep with m = rng.random(n) < keep, computed as the NumPy model computes it."""
    np_dtype = _NUMPY_DTYPES.get(dtype, np.float64)
    mask = np.less(rng.random(n), keep).astype(np_dtype)
    scale = mask / np.asarray(keep, dtype=np_dtype) if keep > 0.0 else mask
    return torch.from_numpy(scale).to(dtype)


class DropPath(nn.Module):
    """Stochastic depth per sample (timm's ``drop_path`` with ``scale_by_keep=True``).

    In training mode each sample of the branch is kept with probability keep = 1 - drop_prob and kept samples
    are scaled by 1/keep; in eval mode, or at drop_prob 0, it is the identity. The mask comes from torch's RNG
    (``bernoulli_``, as timm) unless ``rng`` holds a ``numpy.random.Generator``: then it is
    ``rng.random(N) < keep``, one draw per call.
    """

    def __init__(self, drop_prob: float) -> None:
        super().__init__()
        if not 0.0 <= drop_prob <= 1.0:
            raise ValueError(f"drop_prob must be in [0, 1], got {drop_prob!r}")
        self.drop_prob = float(drop_prob)
        self.scale_by_keep = True
        self.rng: np.random.Generator | None = None

    def forward(self, x: Tensor) -> Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        if self.rng is None:
            scale = x.new_empty(shape).bernoulli_(keep)
            if keep > 0.0 and self.scale_by_keep:
                scale.div_(keep)
        else:
            scale = _numpy_drop_scale(self.rng, x.shape[0], keep, x.dtype).reshape(shape).to(x.device)
        return x * scale

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.4g}"


class ConvMod(nn.Module):
    """Convolutional modulation (official name ``SpatialAttention``): proj(DWConv_k(GELU(conv1x1(n))) * v(n))."""

    def __init__(self, dim: int, kernel_size: int) -> None:
        super().__init__()
        self.norm = ChannelsFirstLayerNorm(dim)
        self.att = nn.Sequential(
            nn.Conv2d(dim, dim, 1),
            nn.GELU(),
            nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim),
        )
        self.v = nn.Conv2d(dim, dim, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm(x)
        x = self.att(x) * self.v(x)
        return self.proj(x)


class ConvMLP(nn.Module):
    """The block's MLP (official name ``MLP``): fc2(h + GELU(pos(h))) with h = GELU(fc1(LN(x)))."""

    def __init__(self, dim: int, mlp_ratio: int = 4) -> None:
        super().__init__()
        hidden = dim * mlp_ratio
        self.norm = ChannelsFirstLayerNorm(dim)
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.pos = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.fc2 = nn.Conv2d(hidden, dim, 1)
        self.act = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm(x)
        x = self.act(self.fc1(x))
        x = x + self.act(self.pos(x))
        return self.fc2(x)


class Block(nn.Module):
    """x + drop_path(ls1 * attn(x)), then + drop_path(ls2 * mlp(x)); one DropPath module serves both branches."""

    def __init__(
        self,
        dim: int,
        kernel_size: int,
        drop_path: float = 0.0,
        mlp_ratio: int = 4,
        layer_scale_init_value: float = LAYER_SCALE_INIT,
    ) -> None:
        super().__init__()
        self.attn = ConvMod(dim, kernel_size)
        self.drop_path: nn.Module = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.mlp = ConvMLP(dim, mlp_ratio)
        self.layer_scale_init_value = float(layer_scale_init_value)
        self.layer_scale_1 = nn.Parameter(layer_scale_init_value * torch.ones(dim))
        self.layer_scale_2 = nn.Parameter(layer_scale_init_value * torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.layer_scale_1.unsqueeze(-1).unsqueeze(-1) * self.attn(x))
        return x + self.drop_path(self.layer_scale_2.unsqueeze(-1).unsqueeze(-1) * self.mlp(x))


def drop_path_rates(total_blocks: int, drop_path_rate: float) -> list[float]:
    """Per-block rates as the official code: ``torch.linspace(0, rate, total)`` (float32), as Python floats."""
    return [
        float(r) for r in torch.linspace(0.0, drop_path_rate, total_blocks, dtype=torch.float32, device="cpu").tolist()
    ]


class Conv2Former(nn.Module):
    """The official Conv2Former; ``stem_stride``, ``head_dim`` and the number of stages generalise it (see top)."""

    def __init__(
        self,
        kernel_size: int,
        dims: Sequence[int],
        depths: Sequence[int],
        *,
        in_chans: int = 3,
        num_classes: int = 1000,
        mlp_ratio: int = 4,
        drop_path_rate: float = 0.0,
        stem_stride: int = 4,
        head_dim: int = HEAD_DIM,
        layer_scale_init_value: float = LAYER_SCALE_INIT,
    ) -> None:
        super().__init__()
        if len(dims) != len(depths) or not dims:
            raise ValueError(f"dims and depths need equally many (>= 1) entries, got {list(dims)}, {list(depths)}")
        if stem_stride not in STEM_STRIDES:
            raise ValueError(f"stem_stride must be one of {STEM_STRIDES}, got {stem_stride!r}")
        self.num_classes = num_classes
        self.depths = list(depths)
        self.stem_stride = stem_stride
        self.head_dim = head_dim

        # official (4): conv3x3 s2, conv3x3, conv2x2 s2; 2: the first conv has stride 1; 1: the last is a 1x1 too
        first_stride = 2 if stem_stride == 4 else 1
        last_kernel = 1 if stem_stride == 1 else 2
        self.downsample_layers = nn.ModuleList()
        half = dims[0] // 2
        self.downsample_layers.append(
            nn.Sequential(
                nn.Conv2d(in_chans, half, 3, stride=first_stride, padding=1, bias=False),
                nn.GELU(),
                nn.BatchNorm2d(half),
                nn.Conv2d(half, half, 3, stride=1, padding=1, bias=False),
                nn.GELU(),
                nn.BatchNorm2d(half),
                nn.Conv2d(half, dims[0], last_kernel, stride=last_kernel, bias=False),
            )
        )
        for i in range(len(dims) - 1):
            self.downsample_layers.append(
                nn.Sequential(ChannelsFirstLayerNorm(dims[i]), nn.Conv2d(dims[i], dims[i + 1], 2, stride=2))
            )

        rates = drop_path_rates(sum(depths), drop_path_rate)
        self.stages = nn.ModuleList()
        cur = 0
        for i, (dim, depth) in enumerate(zip(dims, depths, strict=True)):
            blocks = [Block(dim, kernel_size, rates[cur + j], mlp_ratio, layer_scale_init_value) for j in range(depth)]
            self.stages.append(nn.Sequential(*blocks))
            cur += depths[i]

        self.head = nn.Sequential(nn.Conv2d(dims[-1], head_dim, 1), nn.GELU(), ChannelsFirstLayerNorm(head_dim))
        self.pred = nn.Linear(head_dim, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        for down, stage in zip(self.downsample_layers, self.stages, strict=True):
            x = stage(down(x))
        return self.head(x).mean([-2, -1])

    def forward(self, x: Tensor) -> Tensor:
        return self.pred(self.forward_features(x))


# ------------------------------------------------------------------------------------------------------------
# Construction, init, drop-path RNG, counting


def build_torch_conv2former(
    variant: str | VariantSpec,
    *,
    kernel_size: int | None = None,
    num_classes: int = 1000,
    in_chans: int = 3,
    drop_path_rate: float = 0.0,
    stem_stride: int | None = None,
    head_dim: int | None = None,
    layer_scale_init_value: float = LAYER_SCALE_INIT,
    dtype: torch.dtype = torch.float64,
) -> Conv2Former:
    """The Conv2Former ``variant`` (a key of :data:`ALL_VARIANTS`, or a :class:`VariantSpec`) in ``dtype``,
    with torch's default init (layer scales ``layer_scale_init_value``, official 1e-6).

    ``kernel_size`` overrides the variant's default depthwise kernel (odd, so the padding k // 2 keeps the
    size); ``stem_stride`` and ``head_dim`` override the variant's (None: the variant's). Works under
    ``with torch.device("meta"):`` for shape-only use (counting parameters and MACs).
    """
    if isinstance(variant, VariantSpec):
        spec = variant
    else:
        key = variant.lower()
        if key not in ALL_VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; expected one of {sorted(ALL_VARIANTS)}")
        spec = ALL_VARIANTS[key]
    k = spec.kernel_size if kernel_size is None else kernel_size
    if isinstance(k, bool) or not isinstance(k, int) or k < 1 or k % 2 == 0:
        raise ValueError(f"kernel_size must be an odd positive int, got {k!r}")
    if num_classes < 1 or in_chans < 1:
        raise ValueError(f"num_classes and in_chans must be positive, got {num_classes} and {in_chans}")
    if not 0.0 <= drop_path_rate <= 1.0:
        raise ValueError(f"drop_path_rate must be in [0, 1], got {drop_path_rate!r}")
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating dtype, got {dtype}")
    head = spec.head_dim if head_dim is None else head_dim
    if head < 1:
        raise ValueError(f"head_dim must be positive, got {head}")
    model = Conv2Former(
        k,
        spec.dims,
        spec.depths,
        in_chans=in_chans,
        num_classes=num_classes,
        drop_path_rate=drop_path_rate,
        stem_stride=spec.stem_stride if stem_stride is None else stem_stride,
        head_dim=head,
        layer_scale_init_value=layer_scale_init_value,
    ).to(dtype)
    with torch.no_grad():  # exactly the value in ``dtype`` (1e-6: not float32(1e-6) cast up)
        for m in model.modules():
            if isinstance(m, Block):
                m.layer_scale_1.fill_(layer_scale_init_value)
                m.layer_scale_2.fill_(layer_scale_init_value)
    return model


def official_init(model: nn.Module, seed: int) -> None:
    """The official initialisation, reproducible from ``seed`` (values drawn in float64 on the CPU, then cast).

    Conv and Linear weights ~ trunc_normal(std 0.02) cut at absolute +-2 (timm's ``trunc_normal_`` defaults,
    so in effect an untruncated normal), biases 0; LayerNorm and BatchNorm weight 1, bias 0 (running stats
    reset); layer scales 1e-6 (the block's ``layer_scale_init_value``). Modules are visited in
    ``model.modules()`` order.
    """
    gen = torch.Generator(device="cpu").manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                w = torch.empty(m.weight.shape, dtype=torch.float64)
                nn.init.trunc_normal_(w, mean=0.0, std=0.02, a=-2.0, b=2.0, generator=gen)
                m.weight.copy_(w)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, ChannelsFirstLayerNorm | nn.BatchNorm2d):
                m.weight.fill_(1.0)
                m.bias.zero_()
                if isinstance(m, nn.BatchNorm2d):
                    m.reset_running_stats()
            elif isinstance(m, Block):
                m.layer_scale_1.fill_(m.layer_scale_init_value)
                m.layer_scale_2.fill_(m.layer_scale_init_value)


def set_drop_path_rng(model: nn.Module, rng: np.random.Generator | None) -> int:
    """Make every DropPath of ``model`` draw its masks from ``rng`` (one shared generator); None: torch's RNG.

    With a generator, a training-mode forward draws ``rng.random(N) < keep`` once per active drop path, in
    forward order: block by block through the stages, the attn branch before the mlp branch, only in blocks
    whose rate is > 0 (the others hold ``nn.Identity``) -- the order the NumPy model draws in.
    Returns the number of DropPath modules set.
    """
    if rng is not None and not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator or None, got {type(rng).__name__}")
    n = 0
    for m in model.modules():
        if isinstance(m, DropPath):
            m.rng = rng
            n += 1
    return n


def count_params(model: nn.Module) -> int:
    """Number of parameters (buffers such as BatchNorm running statistics are not counted)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-accumulates of every Conv2d and Linear in one forward, per image.

    ``input_shape`` is (C, H, W) or (N, C, H, W); the result is for one image. Conv: out.numel() / N *
    (C_in / groups) * kH * kW; Linear: in * out per output row. Measured with forward hooks on a forward in
    eval mode under ``no_grad``, on a zero input of the model's dtype and device; a model built under
    ``torch.device("meta")`` gives the same count without computing anything. The model's train/eval flags
    are restored afterwards.
    """
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 3:
        shape = (1, *shape)
    if len(shape) != 4 or min(shape) < 1:
        raise ValueError(f"input_shape must be (C, H, W) or (N, C, H, W) with positive sizes, got {input_shape}")
    total = 0

    def conv_hook(m: nn.Module, inputs: tuple[Tensor, ...], out: Tensor) -> None:
        nonlocal total
        assert isinstance(m, nn.Conv2d)
        kh, kw = m.kernel_size
        total += out.numel() * (m.in_channels // m.groups) * kh * kw

    def linear_hook(m: nn.Module, inputs: tuple[Tensor, ...], out: Tensor) -> None:
        nonlocal total
        assert isinstance(m, nn.Linear)
        total += out.numel() // m.out_features * m.in_features * m.out_features

    param = next(model.parameters())
    modes = {m: m.training for m in model.modules()}
    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(shape, dtype=param.dtype, device=param.device))
    finally:
        for h in handles:
            h.remove()
        for m, training in modes.items():
            m.training = training
    if total % shape[0]:
        raise AssertionError(f"MAC total {total} is not a multiple of the batch size {shape[0]}")
    return total // shape[0]
