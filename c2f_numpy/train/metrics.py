"""Metrics files of a training run: ``metrics.jsonl`` (one JSON object per epoch), ``metrics.csv`` (the same
table for spreadsheets) and ``curves.png`` (loss and accuracy against the epoch). Each is rewritten whole and
atomically after every epoch from the run's history, which the checkpoint also holds: a resumed run rewrites
exactly the rows it had, so the files never hold epochs the weights have not seen.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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


def plot_history(path: Path, history: Sequence[dict[str, Any]], title: str = "") -> bool:
    """Draw loss and accuracy curves to ``path`` (PNG, atomically). Returns False when matplotlib is missing."""
    try:  # a bare Figure draws with Agg without touching pyplot's backend (a notebook keeps its own)
        from matplotlib.figure import Figure
    except ImportError:
        return False
    epochs = [row["epoch"] for row in history]
    fig = Figure(figsize=(10, 4), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    for key, label in (("train_loss", "train (smoothed targets, augmented)"), ("test_loss", "test")):
        ax_loss.plot(epochs, [row[key] for row in history], marker="o", label=label)
    accuracies = (
        ("train_acc", "train (augmented)"),
        ("test_acc", "test"),
        ("test_acc_ema", "test, EMA"),
        ("test_acc_hflip", "test, with mirror"),
        ("test_acc_ema_hflip", "test, EMA with mirror"),
    )
    for key, label in accuracies:
        if history and key in history[0]:
            ax_acc.plot(epochs, [row[key] for row in history], marker="o", label=label)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="top-1 accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    atomic_write(path, lambda fh: fh.write(buf.getvalue()))
    return True
