"""Stateful modules (parameters, buffers, gradients) that compose the ops: the PyTorch-like layer."""

from .layers import GELU, BatchNorm2d, Conv2d, LayerNorm, Linear, ModuleList, Sequential
from .module import LoadReport, Module, Parameter, StateDictError, emit, observe

__all__ = [
    "GELU",
    "BatchNorm2d",
    "Conv2d",
    "LayerNorm",
    "Linear",
    "LoadReport",
    "Module",
    "ModuleList",
    "Parameter",
    "Sequential",
    "StateDictError",
    "emit",
    "observe",
]
