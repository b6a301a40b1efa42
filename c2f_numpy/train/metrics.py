"""Metrics files of a training run: ``metrics.jsonl`` (one JSON object per epoch), ``metrics.csv`` (the same
table for spreadsheets), ``steps.csv`` (one row per optimizer step: lr, loss, batch accuracy) and ``curves.png``
(per-step training loss and accuracy, smoothed over the faint raw series, validation and test per epoch, and
the learning rate). Each is rewritten whole and atomically from the run's history and per-step log, which the
checkpoint also holds: a resumed run rewrites exactly the rows it had, so the files never hold steps the
weights have not seen.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..io import atomic_write


def write_history(out_dir: Path, history: Sequence[dict[str, Any]]) -> None:
    """Rewrite ``metrics.jsonl`` and ``metrics.csv`` in ``out_dir`` from ``history``."""
    lines = "".join(json.dumps(row) + "\n" for row in history)
    atomic_write(out_dir / "metrics.jsonl", lambda fh: fh.write(lines.encode()))
    columns: list[str] = []
    for row in history:
        columns += [k for k in row if k not in columns]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    atomic_write(out_dir / "metrics.csv", lambda fh: fh.write(text.getvalue().encode()))


def write_steps(path: Path, step_log: Mapping[str, Any], steps_per_epoch: int) -> None:
    """Rewrite ``steps.csv``: step (1-based), epoch (fractional: step / steps_per_epoch), lr, loss, acc (%)."""
    first = int(step_log["first"])
    lines = ["step,epoch,lr,loss,acc\n"]
    for i, (lr, loss, acc) in enumerate(zip(step_log["lr"], step_log["loss"], step_log["acc"], strict=True)):
        step = first + i + 1
        lines.append(f"{step},{step / steps_per_epoch:.6g},{lr!r},{loss!r},{acc!r}\n")
    text = "".join(lines)
    atomic_write(path, lambda fh: fh.write(text.encode()))


def smooth(values: Sequence[float], span: int) -> np.ndarray:
    """Bias-corrected exponential moving average (Adam's correction, so the first points are not pulled to 0):
    s_t = b s_(t-1) + (1 - b) v_t, returned as s_t / (1 - b^t), with b = 1 - 1 / span."""
    b = 1.0 - 1.0 / max(1, span)
    out, s = np.empty(len(values)), 0.0
    for t, v in enumerate(values, 1):
        s = b * s + (1.0 - b) * v
        out[t - 1] = s / (1.0 - b**t)
    return out


# per-epoch columns drawn, with their labels; only those a run has appear
_EPOCH_LOSSES = (("val_loss", "validation"), ("test_loss", "test"))
_EPOCH_ACCURACIES = (
    ("val_acc", "validation"),
    ("val_acc_ema", "validation, EMA"),
    ("val_acc_hflip", "validation, with mirror"),
    ("test_acc", "test"),
    ("test_acc_ema", "test, EMA"),
    ("test_acc_hflip", "test, with mirror"),
    ("test_acc_ema_hflip", "test, EMA with mirror"),
)


def plot_history(
    path: Path,
    history: Sequence[dict[str, Any]],
    title: str = "",
    *,
    step_log: Mapping[str, Any] | None = None,
    steps_per_epoch: int = 1,
) -> bool:
    """Draw the run's curves (:func:`draw_history`) to ``path`` (PNG, atomically). False when matplotlib is
    missing."""
    try:
        fig = draw_history(history, title, step_log=step_log, steps_per_epoch=steps_per_epoch)
    except ImportError:
        return False
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    atomic_write(path, lambda fh: fh.write(buf.getvalue()))
    return True


def draw_history(
    history: Sequence[dict[str, Any]],
    title: str = "",
    *,
    step_log: Mapping[str, Any] | None = None,
    steps_per_epoch: int = 1,
) -> Any:
    """A matplotlib Figure of three panels against the epoch: loss, accuracy, learning rate.

    Training: per step from ``step_log`` (raw series faint, smoothed over a 25th of an epoch), else per
    epoch from ``history``. Validation and test: per epoch, at the epoch's end."""
    # a bare Figure draws with Agg without touching pyplot's backend (a notebook keeps its own)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(15, 4.2), layout="constrained")
    ax_loss, ax_acc, ax_lr = fig.subplots(1, 3)
    epochs = [row["epoch"] for row in history]
    n = len(step_log["lr"]) if step_log else 0
    if n:
        assert step_log is not None
        x = (int(step_log["first"]) + 1 + np.arange(n)) / steps_per_epoch
        span = min(100, max(1, steps_per_epoch // 25))
        for ax, key, label in ((ax_loss, "loss", "train (smoothed targets, augmented)"),
                               (ax_acc, "acc", "train batches (augmented)")):  # fmt: skip
            (line,) = ax.plot(x, step_log[key], alpha=0.2, linewidth=0.7)
            ax.plot(x, smooth(step_log[key], span), color=line.get_color(), label=f"{label}, smoothed")
        ax_lr.plot(x, step_log["lr"], color="tab:purple")
    elif history:
        ax_loss.plot(
            epochs, [r["train_loss"] for r in history], marker="o", label="train (smoothed targets, augmented)"
        )
        ax_acc.plot(epochs, [r["train_acc"] for r in history], marker="o", label="train (augmented)")
        ax_lr.plot(epochs, [r["lr"] for r in history], marker="o", color="tab:purple")
    for ax, columns in ((ax_loss, _EPOCH_LOSSES), (ax_acc, _EPOCH_ACCURACIES)):
        for key, label in columns:
            if history and key in history[0]:
                values = [row[key] for row in history]
                ax.plot(epochs, values, marker="o", label=f"{label} {values[-1]:.2f}" + ("%" if "acc" in key else ""))
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="top-1 accuracy (%)", title="accuracy")
    ax_lr.set(xlabel="epoch", ylabel="learning rate", title="learning rate")
    for ax in (ax_loss, ax_acc, ax_lr):
        ax.grid(alpha=0.3)
    for ax in (ax_loss, ax_acc):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return fig
