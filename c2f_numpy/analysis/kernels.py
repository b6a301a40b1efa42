"""The learned depthwise kernels of ConvMod: the k x k weights of every block's ``attn.att.2``.

In a Conv2Former block the modulation weights are A = DWConv_k(GELU(Conv1x1(LN x))); the depthwise kernel
(C, 1, k, k) is where the block looks in space. Averaged magnitudes per stage show how much of the kernel a
trained network uses away from the centre.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..models import Conv2Former

if TYPE_CHECKING:
    from matplotlib.figure import Figure

KERNEL_KEY = "attn.att.2.weight"


@dataclass(frozen=True)
class LearnedKernels:
    """The depthwise kernels of a model.

    ``blocks``: ``"stages.i.j"`` -> (C, k, k) weights, in model order; ``stage_mean_abs``: per stage (0-based
    position in the list), the (k, k) mean of |w| over the stage's blocks and channels.
    """

    blocks: dict[str, np.ndarray]
    stage_mean_abs: list[np.ndarray]
    kernel_size: int

    def summary(self) -> dict[str, Any]:
        """JSON-able numbers: per stage the mean |w|, the share of sum |w| in the central 3x3 (and what a kernel
        of equal magnitudes would have there), and the (k, k) mean |w| map; per block the mean |w|."""
        k = self.kernel_size
        c = min(3, k)
        lo = (k - c) // 2
        stages = []
        for i, m in enumerate(self.stage_mean_abs):
            stages.append({
                "stage": i + 1,
                "mean_abs": float(m.mean()),
                "centre_3x3_share": float(m[lo : lo + c, lo : lo + c].sum() / m.sum()) if m.sum() > 0 else None,
                "uniform_centre_3x3_share": c * c / (k * k),
                "mean_abs_map": m.tolist(),
            })  # fmt: skip
        blocks = {key: float(np.abs(w).mean()) for key, w in self.blocks.items()}
        return {"kernel_size": k, "stages": stages, "block_mean_abs": blocks}


def learned_kernels(model: Conv2Former) -> LearnedKernels:
    """The depthwise k x k kernels of every block (float64 copies) and their mean magnitude per stage."""
    state = model.state_dict()
    blocks: dict[str, np.ndarray] = {}
    means = []
    for i, stage in enumerate(model.stages):
        per_stage = []
        for j in range(len(stage)):
            w = np.asarray(state[f"stages.{i}.{j}.{KERNEL_KEY}"], dtype=np.float64)[:, 0]  # (C, 1, k, k) -> (C, k, k)
            blocks[f"stages.{i}.{j}"] = w
            per_stage.append(np.abs(w).mean(axis=0))
        means.append(np.mean(per_stage, axis=0))
    return LearnedKernels(blocks, means, model.kernel_size)


def kernel_table(kernels: LearnedKernels) -> str:
    """A text table: per stage the mean |w| and the central 3x3's share of it."""
    s = kernels.summary()
    lines = [f"{'stage':<7} {'blocks':>6} {'mean |w|':>10} {'centre 3x3 share':>17} {'(if uniform)':>13}"]
    for st in s["stages"]:
        n = sum(1 for key in kernels.blocks if key.startswith(f"stages.{st['stage'] - 1}."))
        share = "n/a" if st["centre_3x3_share"] is None else f"{st['centre_3x3_share']:.3f}"
        lines.append(
            f"{st['stage']:<7} {n:>6} {st['mean_abs']:>10.4g} {share:>17} {st['uniform_centre_3x3_share']:>13.3f}"
        )
    return "\n".join(lines)


def kernel_figure(kernels: LearnedKernels, channels: int = 4, title: str = "") -> Figure:
    """One row per stage: the mean |w| map of the stage, then ``channels`` channels of its last block (signed,
    on a symmetric colour scale). A matplotlib Figure drawn with Agg, independent of pyplot's backend."""
    from matplotlib.figure import Figure

    n_stages = len(kernels.stage_mean_abs)
    fig = Figure(figsize=(1.9 * (channels + 1) + 0.6, 1.9 * n_stages + 0.6), layout="constrained")
    axes = fig.subplots(n_stages, channels + 1, squeeze=False)
    for i, mean_abs in enumerate(kernels.stage_mean_abs):
        last = kernels.blocks[max((key for key in kernels.blocks if key.startswith(f"stages.{i}.")),
                                  key=lambda key: int(key.rsplit(".", 1)[1]))]  # fmt: skip
        fig.colorbar(axes[i, 0].imshow(mean_abs, cmap="magma", vmin=0), ax=axes[i, 0], shrink=0.8)
        axes[i, 0].set_title(f"stage {i + 1}: mean |w|", fontsize=8)
        for c in range(channels):
            ax = axes[i, c + 1]
            if c < last.shape[0]:
                w = last[c]
                lim = float(np.abs(w).max()) or 1.0
                ax.imshow(w, cmap="RdBu_r", vmin=-lim, vmax=lim)
                ax.set_title(f"last block, ch {c}", fontsize=8)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=9)
    return fig
