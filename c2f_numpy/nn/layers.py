"""The layers Conv2Former is built from, as thin stateful wrappers around the ops of ``self.F`` (either copy:
:mod:`c2f_numpy.backend`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import ops
from ..ops.checks import as_pair
from ..ops.conv import Padding, conv_output_size, resolve_padding
from .init import trunc_normal
from .module import Module, Parameter, Shape

INIT_STD = 0.02  # trunc_normal(std=0.02) for conv and linear weights, zero biases (official _init_weights)


class Conv2d(Module):
    """``nn.Conv2d``: weight (C_out, C_in/groups, kH, kW), optional bias (C_out,).

    Pointwise convolutions (1x1, stride 1, no padding, groups 1) run as a GEMM (``F.conv1x1``), the rest
    through ``F.conv2d``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: Padding = 0,
        groups: int = 1,
        bias: bool = True,
        *,
        dtype: np.dtype | type = np.float32,
        rng: np.random.Generator | None = None,
    ) -> None:
        super().__init__()
        kh, kw = as_pair("Conv2d", "kernel_size", kernel_size, 1)
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"Conv2d: groups={groups} must divide in_channels={in_channels} and out_channels")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size, self.stride, self.padding = (kh, kw), as_pair("Conv2d", "stride", stride, 1), padding
        rng = rng if rng is not None else np.random.default_rng(0)
        self.weight = Parameter(trunc_normal(rng, (out_channels, in_channels // groups, kh, kw), INIT_STD, dtype))
        self.bias = Parameter(np.zeros(out_channels, dtype=dtype)) if bias else None
        self.pointwise = (kh, kw) == (1, 1) and self.stride == (1, 1) and padding in (0, "valid") and groups == 1
        self._cache: Any = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        b = self.bias.data if self.bias is not None else None
        if self.pointwise:
            out, self._cache = self.F.conv1x1_forward(x, self.weight.data, b)
        else:
            out, self._cache = self.F.conv2d_forward(
                x, self.weight.data, b, stride=self.stride, padding=self.padding, groups=self.groups
            )
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        cache = self._need_cache(self._cache)
        back = self.F.conv1x1_backward if self.pointwise else self.F.conv2d_backward
        dx, dw, db = back(dout, cache)
        self.weight.accumulate(dw)
        if self.bias is not None and db is not None:
            self.bias.accumulate(db)
        return dx

    def count_macs(self, shape: Shape) -> tuple[Shape, int]:
        n, _, h, w = shape
        kh, kw = self.kernel_size
        pads = resolve_padding("Conv2d", self.padding, (kh, kw), self.stride, (1, 1))
        ho = conv_output_size(h, pads[0] + pads[1], kh, self.stride[0], 1)
        wo = conv_output_size(w, pads[2] + pads[3], kw, self.stride[1], 1)
        if ho < 1 or wo < 1:
            raise ValueError(f"Conv2d{self.kernel_size}: input {h}x{w} gives an empty output")
        macs = n * self.out_channels * (self.in_channels // self.groups) * kh * kw * ho * wo
        return (n, self.out_channels, ho, wo), macs

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, groups={self.groups}, bias={self.bias is not None}"
        )


class Linear(Module):
    """``nn.Linear``: weight (out, in), bias (out,)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        dtype: np.dtype | type = np.float32,
        rng: np.random.Generator | None = None,
    ) -> None:
        super().__init__()
        rng = rng if rng is not None else np.random.default_rng(0)
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(trunc_normal(rng, (out_features, in_features), INIT_STD, dtype))
        self.bias = Parameter(np.zeros(out_features, dtype=dtype)) if bias else None
        self._cache: Any = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        out, self._cache = self.F.linear_forward(x, self.weight.data, self.bias.data if self.bias is not None else None)
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dx, dw, db = self.F.linear_backward(dout, self._need_cache(self._cache))
        self.weight.accumulate(dw)
        if self.bias is not None and db is not None:
            self.bias.accumulate(db)
        return dx

    def count_macs(self, shape: Shape) -> tuple[Shape, int]:
        rows = int(np.prod(shape[:-1]))
        return (*shape[:-1], self.out_features), rows * self.in_features * self.out_features

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}"


class LayerNorm(Module):
    """Channels-first LayerNorm over axis 1 (the official ``LayerNorm(data_format="channels_first")``)."""

    def __init__(self, num_channels: int, eps: float = 1e-6, *, dtype: np.dtype | type = np.float32) -> None:
        super().__init__()
        self.eps = eps
        self.weight = Parameter(np.ones(num_channels, dtype=dtype))
        self.bias = Parameter(np.zeros(num_channels, dtype=dtype))
        self._cache: Any = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        out, self._cache = self.F.layer_norm_forward(x, self.weight.data, self.bias.data, self.eps)
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dx, dw, db = self.F.layer_norm_backward(dout, self._need_cache(self._cache))
        self.weight.accumulate(dw)
        self.bias.accumulate(db)
        return dx

    def extra_repr(self) -> str:
        return f"{self.weight.data.shape[0]}, eps={self.eps}, data_format=channels_first"


class BatchNorm2d(Module):
    """``nn.BatchNorm2d``: batch statistics in train mode (updating the running ones), running ones in eval."""

    running_mean: np.ndarray
    running_var: np.ndarray
    num_batches_tracked: np.ndarray  # 0-d int64, as in PyTorch's state dict

    def __init__(
        self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, *, dtype: np.dtype | type = np.float32
    ) -> None:
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = Parameter(np.ones(num_features, dtype=dtype))
        self.bias = Parameter(np.zeros(num_features, dtype=dtype))
        self.register_buffer("running_mean", np.zeros(num_features, dtype=dtype))
        self.register_buffer("running_var", np.ones(num_features, dtype=dtype))
        self.register_buffer("num_batches_tracked", np.array(0, dtype=np.int64))
        self._cache: Any = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        stats = ops.BatchNormStats(self.running_mean, self.running_var, int(self.num_batches_tracked))
        out, self._cache, new = self.F.batch_norm2d_forward(
            x, self.weight.data, self.bias.data, stats, training=self.training, momentum=self.momentum, eps=self.eps
        )
        if self.training:  # write in place, so arrays handed out earlier (e.g. to an optimizer) stay valid
            self.running_mean[...] = new.running_mean
            self.running_var[...] = new.running_var
            self.num_batches_tracked[...] = new.num_batches_tracked
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dx, dw, db = self.F.batch_norm2d_backward(dout, self._need_cache(self._cache))
        self.weight.accumulate(dw)
        self.bias.accumulate(db)
        return dx

    def extra_repr(self) -> str:
        return f"{self.weight.data.shape[0]}, eps={self.eps}, momentum={self.momentum}"


class GELU(Module):
    """``nn.GELU``: exact (erf) by default, ``approximate="tanh"`` for the tanh form."""

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        self.approximate = approximate
        self._cache: Any = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        out, self._cache = self.F.gelu_forward(x, self.approximate)
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return self.F.gelu_backward(dout, self._need_cache(self._cache))

    def extra_repr(self) -> str:
        return "" if self.approximate == "none" else f"approximate={self.approximate!r}"


class ModuleList(Module):
    """Children named "0", "1", ... with no forward of their own (``nn.ModuleList``)."""

    def __init__(self, modules: list[Module] | None = None) -> None:
        super().__init__()
        for m in modules or []:
            self.append(m)

    def append(self, module: Module) -> None:
        setattr(self, str(len(self._modules)), module)

    def __getitem__(self, i: int) -> Module:
        return list(self._modules.values())[i]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(list(self._modules.values()))


class Sequential(ModuleList):
    """Children applied in order (``nn.Sequential``); backward runs them in reverse."""

    def __init__(self, *modules: Module) -> None:
        super().__init__(list(modules))

    def forward(self, x: np.ndarray) -> np.ndarray:
        for m in self:
            x = m(x)
        return x

    def backward(self, dout: np.ndarray) -> np.ndarray:
        for m in reversed(list(self)):
            dout = m.backward(dout)
        return dout

    def count_macs(self, shape: Shape) -> tuple[Shape, int]:
        total = 0
        for m in self:
            shape, macs = m.count_macs(shape)
            total += macs
        return shape, total
