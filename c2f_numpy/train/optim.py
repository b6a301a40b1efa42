"""Optimizers over ``Module.named_parameters()``, with PyTorch's update rules (``torch.optim.AdamW`` / ``SGD``).

Weight decay is decoupled in AdamW (Loshchilov & Hutter 2019): p <- p - lr * wd * p before the Adam step. By
default no decay is applied to 1-d parameters: biases, LayerNorm/BatchNorm scales and layer scales (the usual
ConvNeXt / timm recipe). Updates are in place, so arrays held elsewhere stay the model's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np

from ..nn.module import Parameter

NamedParams = Iterable[tuple[str, Parameter]]


def default_no_decay(name: str, p: Parameter) -> bool:
    """True for parameters that get no weight decay: every 1-d one (biases, norm scales, layer scales)."""
    return p.data.ndim <= 1


class Optimizer:
    """Holds (name, Parameter) pairs, per-parameter state, and the step count."""

    def __init__(
        self, params: NamedParams, lr: float, weight_decay: float, no_decay: Callable[[str, Parameter], bool]
    ) -> None:
        self.params = list(params)
        if not self.params:
            raise ValueError(f"{type(self).__name__}: no parameters to optimise")
        self.lr, self.weight_decay, self.steps = lr, weight_decay, 0
        self.decay = {name: weight_decay if not no_decay(name, p) else 0.0 for name, p in self.params}
        self.state: dict[str, dict[str, np.ndarray]] = {}

    def zero_grad(self) -> None:
        for _, p in self.params:
            p.grad = None

    def step(self) -> None:
        self.steps += 1
        for name, p in self.params:
            if p.grad is not None:
                self._update(name, p, p.grad)

    def _update(self, name: str, p: Parameter, g: np.ndarray) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict[str, np.ndarray]:
        """Flat arrays (for npz/safetensors checkpoints): ``<param>.<buffer>`` plus ``steps`` and ``lr``."""
        out = {f"{name}.{k}": v.copy() for name, buffers in self.state.items() for k, v in buffers.items()}
        return out | {"steps": np.array(self.steps, dtype=np.int64), "lr": np.array(self.lr, dtype=np.float64)}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        names = {n for n, _ in self.params}
        self.steps, self.lr = int(state["steps"]), float(state["lr"])
        self.state = {}
        for key, value in state.items():
            if key in ("steps", "lr"):
                continue
            name, _, buf = key.rpartition(".")
            if name not in names:
                raise KeyError(f"{type(self).__name__}.load_state_dict: state for unknown parameter {name!r}")
            self.state.setdefault(name, {})[buf] = value.copy()


class AdamW(Optimizer):
    """``torch.optim.AdamW``: m, v moving averages of g and g^2, bias-corrected; decoupled weight decay.

    p <- p * (1 - lr * wd);  m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
    p <- p - (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
    """

    def __init__(
        self,
        params: NamedParams,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.05,
        no_decay: Callable[[str, Parameter], bool] = default_no_decay,
        fused: bool = True,
    ) -> None:
        super().__init__(params, lr, weight_decay, no_decay)
        self.betas, self.eps, self.fused = betas, eps, fused

    def _update(self, name: str, p: Parameter, g: np.ndarray) -> None:
        st = self.state.setdefault(name, {"exp_avg": np.zeros_like(p.data), "exp_avg_sq": np.zeros_like(p.data)})
        m, v = st["exp_avg"], st["exp_avg_sq"]
        if self.fused and p.data.flags.c_contiguous and g.flags.c_contiguous:  # one Numba pass (kernels.optim)
            from ..kernels.optim import adamw_update

            b1, b2 = self.betas
            adamw_update(p.data.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1), self.lr, b1, b2, self.eps,
                         self.decay[name], 1 - b1**self.steps, 1 - b2**self.steps)  # fmt: skip
        else:
            self._update_numpy(name, p, g, m, v)

    def _update_numpy(self, name: str, p: Parameter, g: np.ndarray, m: np.ndarray, v: np.ndarray) -> None:
        """The readable form of the update (the fused kernel computes the same, element by element)."""
        b1, b2 = self.betas
        if self.decay[name]:
            p.data *= 1 - self.lr * self.decay[name]
        m *= b1
        m += (1 - b1) * g
        v *= b2
        v += (1 - b2) * g * g
        bc1, bc2 = 1 - b1**self.steps, 1 - b2**self.steps
        p.data -= (self.lr / bc1) * m / (np.sqrt(v) / math.sqrt(bc2) + self.eps)


class SGD(Optimizer):
    """``torch.optim.SGD`` with momentum (and Nesterov by default); L2 weight decay added to the gradient.

    g <- g + wd p;  buf <- mu buf + g (buf = g at the first step);  g <- g + mu buf (Nesterov) or buf;
    p <- p - lr g
    """

    def __init__(
        self,
        params: NamedParams,
        lr: float = 0.1,
        momentum: float = 0.9,
        nesterov: bool = True,
        weight_decay: float = 5e-4,
        no_decay: Callable[[str, Parameter], bool] = default_no_decay,
    ) -> None:
        super().__init__(params, lr, weight_decay, no_decay)
        self.momentum, self.nesterov = momentum, nesterov

    def _update(self, name: str, p: Parameter, g: np.ndarray) -> None:
        if self.decay[name]:
            g = g + self.decay[name] * p.data
        if self.momentum:
            st = self.state.get(name)
            if st is None:
                buf = self.state.setdefault(name, {"momentum_buffer": g.copy()})["momentum_buffer"]
            else:
                buf = st["momentum_buffer"]
                buf *= self.momentum
                buf += g
            g = g + self.momentum * buf if self.nesterov else buf
        p.data -= self.lr * g
