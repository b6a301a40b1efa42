"""Compare two dumps tensor by tensor and name the first place where B (a port) diverges from A (the reference).

Walk order. Forward tensors (every name not ending in ``.grad``) in A's order: the dump order (forward order)
for a file written by :func:`~.dump.save_dump` or an ``.npz``; for a safetensors file without a stored order,
B's order if B has one, else the official forward order (:func:`~.dump.canonical_order`). Then the gradients
in **backward** order: by the position of the module that owns them, last module first (``pred.*.grad``, then
``head.*``, ..., ``input.grad`` last; ``layer_scale_1`` / ``_2`` of a block belong to its ``attn`` / ``mlp``
branch). A wrong backward rule corrupts every gradient upstream of it, so the first wrong gradient in backward
order is the one at the fault, and a gradient only counts as the first divergence when every forward tensor
agrees. The table lists the rows in this walk order; the first NOT OK row is the first divergence.

Criterion, per tensor, with ``a`` the reference (A) and ``b`` the tensor under test (B), both widened to
float64::

    max|a - b|  <=  atol + rtol * scale,      scale = max|a| over finite entries (1 when a is all zeros)

The "max rel err" column is ``max|a - b| / scale``: the scaled max error of :mod:`c2f_numpy.testing`, immune
to the meaningless elementwise relative error of entries that cancel to ~0. By default ``atol = 0`` and
``rtol`` is the tolerance table's entry (:data:`c2f_numpy.testing.TOLERANCES`: 1e-10 for float64, 1e-4 for
float32) for the less precise of the two dtypes, 0 (exact) for integer and bool tensors; ``rtol`` / ``atol``
replace these for every tensor. A NaN or inf where the other side has a different value is never OK. A shape
mismatch is a NOT OK row (and can be the first divergence); names only in A ("missing from B") or only in B
("extra in B") are listed but are not divergences unless ``strict``. Nothing in common is a failure.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

import numpy as np

from ..testing import TOLERANCES, tolerance
from ..testing import compare as scaled_compare
from .dump import ORDER_SOURCE_KEY, canonical_order, forward_key, load_dump

__all__ = ["CompareError", "CompareReport", "Row", "compare", "compare_arrays", "compare_loaded", "walk_order"]

DEFAULT_MAX_ROWS: Final = 20
DEFAULT_MAX_NAMES: Final = 10

Source = Mapping[str, np.ndarray] | str | os.PathLike[str]


class CompareError(ValueError):
    """The comparison cannot be made as asked (bad tolerance, a dtype with no default tolerance ...)."""


@dataclass(frozen=True)
class Row:
    """One compared tensor."""

    name: str
    shape: tuple[int, ...]  # A's
    shape_b: tuple[int, ...]
    dtype: str  # "float64", or "float64/float32" when A and B differ
    max_abs: float  # NaN for a shape mismatch
    max_rel: float  # max_abs / scale
    rtol: float
    atol: float
    ok: bool
    note: str = ""

    @property
    def is_grad(self) -> bool:
        return self.name.endswith(".grad")

    @property
    def verdict(self) -> str:
        return "OK" if self.ok else "NOT OK"

    def why(self) -> str:
        """A short reason, for the last line of a report."""
        if self.note:
            return self.note
        bound = f"rtol {self.rtol:.0e}" + (f" + atol {self.atol:.0e}" if self.atol else "")
        return f"max abs err {self.max_abs:.3e}, max rel err {self.max_rel:.3e} > {bound}"


def _shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape)) if shape else "()"


@dataclass
class CompareReport:
    """Rows in walk order, names present on one side only, and the verdict."""

    rows: list[Row]
    missing: list[str]  # in A, not in B
    extra: list[str]  # in B, not in A
    rtol: float | None  # as given (None: by dtype)
    atol: float | None
    strict: bool = False
    a_label: str = "A"
    b_label: str = "B"
    order_source: str = "A"
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[Row]:
        return [r for r in self.rows if not r.ok]

    @property
    def shape_mismatches(self) -> list[Row]:
        return [r for r in self.rows if r.shape != r.shape_b]

    @property
    def first_divergence(self) -> Row | None:
        return next((r for r in self.rows if not r.ok), None)

    @property
    def ok(self) -> bool:
        if not self.rows or self.failed:
            return False
        return not (self.strict and (self.missing or self.extra))

    def last_line(self) -> str:
        first = self.first_divergence
        if first is not None:
            return f"first divergence: {first.name} ({first.why()})"
        if not self.rows:
            return "nothing compared: A and B have no tensor name in common (names: see docs/porting.md)"
        n = len(self.rows)
        if self.strict and (self.missing or self.extra):
            return (
                f"no divergence in the {n} compared tensors, but {len(self.missing)} missing from B and "
                f"{len(self.extra)} extra in B (strict)"
            )
        return f"no divergence: all {n} compared tensors OK"

    def criterion(self) -> str:
        if self.rtol is None:
            table = ", ".join(f"{k} {v:.0e}" for k, v in TOLERANCES.items())
            rtol = f"rtol by dtype ({table}; the less precise of A and B; integers exact)"
        else:
            rtol = f"rtol {self.rtol:.3g}"
        return f"criterion: max|a-b| <= atol + rtol * max|a| (a: A, the reference); {rtol}, atol {self.atol or 0:.3g}"

    def lines(
        self, all_rows: bool = False, max_rows: int = DEFAULT_MAX_ROWS, max_names: int = DEFAULT_MAX_NAMES
    ) -> list[str]:
        """The report as lines: criterion, table, summary; the last line names the first divergence."""
        out = [self.criterion(), *self.notes]
        shown = self.rows if all_rows else self.failed
        hidden = 0
        if not all_rows and len(shown) > max_rows:
            shown, hidden = shown[:max_rows], len(shown) - max_rows
        if shown:
            w = max(len("tensor"), *(len(r.name) for r in shown))
            s = max(len("shape"), *(len(_shape_text(r.shape)) for r in shown))
            out.append(
                f"{'tensor':<{w}}  {'shape':<{s}}  {'max abs err':>11}  {'max rel err':>11}  {'tol':>7}  verdict"
            )
            for r in shown:
                abs_text = "-" if math.isnan(r.max_abs) else f"{r.max_abs:.3e}"
                rel_text = "-" if math.isnan(r.max_rel) else f"{r.max_rel:.3e}"
                line = (
                    f"{r.name:<{w}}  {_shape_text(r.shape):<{s}}  {abs_text:>11}  {rel_text:>11}  "
                    f"{r.rtol:>7.0e}  {r.verdict}"
                )
                out.append(line + (f"  ({r.note})" if r.note else ""))
        if hidden:
            out.append(f"... {hidden} more NOT OK rows (--all prints every row)")
        if not all_rows and len(self.rows) > len(self.failed):
            out.append(f"({len(self.rows) - len(self.failed)} OK rows not shown; --all prints every row)")
        n_bad = len(self.failed)
        out.append(
            f"compared {len(self.rows)} tensors: {len(self.rows) - n_bad} OK, {n_bad} NOT OK "
            f"({len(self.shape_mismatches)} shape mismatches); walk order from {self.order_source}"
        )
        for title, names in (("in A but missing from B", self.missing), ("extra in B (not in A)", self.extra)):
            if names:
                listed = names if all_rows else names[:max_names]
                more = f", ... ({len(names) - len(listed)} more)" if len(listed) < len(names) else ""
                out.append(f"{len(names)} {title}, not compared: {', '.join(listed)}{more}")
        first = self.first_divergence
        if first is not None:
            i = self.rows.index(first)
            if i > 0:
                out.append(f"last agreeing tensor before it: {self.rows[i - 1].name}")
            if first.is_grad:
                out.append("every forward tensor agrees: the divergence is in the backward pass")
        out.append(self.last_line())
        return out

    def format(self, all_rows: bool = False, max_rows: int = DEFAULT_MAX_ROWS) -> str:
        return "\n".join(self.lines(all_rows, max_rows))

    def __str__(self) -> str:
        return self.format()


# ------------------------------------------------------------------------------------------------------------
# Order.


def _owner_output(grad_name: str) -> str:
    """The forward tensor of the module that owns a gradient: ``stages.0.1.mlp.fc1.weight.grad`` -> ``...fc1.out``."""
    base = grad_name[: -len(".grad")]
    if base == "input":
        return "input"
    parts = base.split(".")
    module, param = ".".join(parts[:-1]), parts[-1]
    branch = {"layer_scale_1": "attn", "layer_scale_2": "mlp"}.get(param)
    if branch is not None:
        module = f"{module}.{branch}" if module else branch
    return f"{module}.out" if module else "logits"


def walk_order(names: list[str]) -> list[str]:
    """Forward tensors in the given order, then gradients in backward order (see the module docstring)."""
    forward = [n for n in names if not n.endswith(".grad")]
    grads = [n for n in names if n.endswith(".grad")]
    pos = {n: i for i, n in enumerate(forward)}
    owners = {g: _owner_output(g) for g in grads}
    if all(o in pos for o in owners.values()):
        backward = sorted(grads, key=lambda g: pos[owners[g]], reverse=True)  # stable: ties keep A's order
    else:  # a gradients-only dump: place the owners by the official forward order (ties: named_parameters order)
        backward = sorted(canonical_order(grads), key=lambda g: forward_key(owners[g]), reverse=True)
    return forward + backward


def _resolve(source: Source, label: str) -> tuple[dict[str, np.ndarray], str, str]:
    """(tensors, order source, label) for a mapping or a dump file."""
    if isinstance(source, Mapping):
        return dict(source), "given", label
    tensors, meta = load_dump(source)
    return tensors, meta.get(ORDER_SOURCE_KEY, "file"), str(source)


# ------------------------------------------------------------------------------------------------------------
# Comparing.


def _default_rtol(name: str, a: np.ndarray, b: np.ndarray) -> float:
    try:
        return max(tolerance(a.dtype), tolerance(b.dtype))
    except ValueError:
        raise CompareError(
            f"{name}: no default tolerance for {a.dtype} vs {b.dtype} (the table has {', '.join(TOLERANCES)}); "
            "pass rtol (--rtol)"
        ) from None


def _shape_hint(a: tuple[int, ...], b: tuple[int, ...]) -> str:
    if len(a) == 4 and b == (a[0], a[2], a[3], a[1]):
        return "; B looks channels-last (NHWC), c2f_numpy is NCHW"
    if len(a) == 4 and b == (a[2], a[3], a[1], a[0]):
        return "; B looks like an HWIO kernel, c2f_numpy keeps (out, in/groups, kh, kw)"
    if len(a) == 2 and b == (a[1], a[0]):
        return "; B looks transposed (Linear weights are (out, in))"
    return ""


def compare_arrays(name: str, a: np.ndarray, b: np.ndarray, rtol: float | None, atol: float | None) -> Row:
    """One row: ``b`` (under test) against ``a`` (the reference)."""
    a, b = np.asarray(a), np.asarray(b)
    for side, arr in (("A", a), ("B", b)):
        if arr.dtype.kind not in "biuf":
            raise CompareError(f"{name}: {side} has dtype {arr.dtype}; dumps hold real numeric arrays")
    dtype = a.dtype.name if a.dtype == b.dtype else f"{a.dtype.name}/{b.dtype.name}"
    r = _default_rtol(name, a, b) if rtol is None else rtol
    t = 0.0 if atol is None else atol
    if a.shape != b.shape:
        note = f"shape mismatch: A {_shape_text(a.shape)} vs B {_shape_text(b.shape)}{_shape_hint(a.shape, b.shape)}"
        return Row(name, a.shape, b.shape, dtype, math.nan, math.nan, r, t, False, note)
    c = scaled_compare(name, b, a, tol=0.0)
    scale = c.scale if c.scale > 0 else 1.0
    ok = c.max_abs <= t + r * scale  # inf (NaN vs a number, inf vs finite) is never <= a finite bound
    return Row(name, a.shape, b.shape, dtype, c.max_abs, c.max_abs / scale, r, t, bool(ok))


def compare(
    a: Source,
    b: Source,
    rtol: float | None = None,
    atol: float | None = None,
    *,
    strict: bool = False,
) -> CompareReport:
    """Compare dump ``b`` (the port) with dump ``a`` (the reference), tensor by tensor in walk order.

    ``a`` and ``b`` are mappings of name -> array (as :func:`~.dump.dump` returns) or paths of ``.npz`` /
    ``.safetensors`` files of named arrays (read with :func:`~.dump.load_dump`; files from anywhere, no
    metadata needed). ``rtol`` / ``atol`` override the per-dtype defaults (see the module docstring for the
    criterion). ``strict`` makes names present on one side only a failure too.
    Raises :class:`~.dump.DumpFileError` for unreadable files, :class:`CompareError` for a negative or
    non-finite tolerance or a dtype without a default tolerance.
    """
    ta, src_a, label_a = _resolve(a, "A")
    tb, src_b, label_b = _resolve(b, "B")
    return compare_loaded(ta, tb, rtol, atol, strict=strict, sources=(src_a, src_b), labels=(label_a, label_b))


def compare_loaded(
    ta: Mapping[str, np.ndarray],
    tb: Mapping[str, np.ndarray],
    rtol: float | None = None,
    atol: float | None = None,
    *,
    strict: bool = False,
    sources: tuple[str, str] = ("given", "given"),
    labels: tuple[str, str] = ("A", "B"),
) -> CompareReport:
    """:func:`compare` on tensors already loaded; ``sources`` are the order sources ("canonical" = no order)."""
    for label, value in (("rtol", rtol), ("atol", atol)):
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise CompareError(f"{label} must be a finite number >= 0, got {value}")
    src_a, src_b = sources
    if src_a != "canonical":
        names, order_source = list(ta), "A"
    elif src_b != "canonical":
        names = [n for n in tb if n in ta]
        names += canonical_order([n for n in ta if n not in tb])
        order_source = "B (A's file has no order)"
    else:
        names, order_source = list(ta), "the official forward order (neither file has one)"
    rows: list[Row] = []
    missing: list[str] = []
    for name in walk_order(names):
        if name not in tb:
            missing.append(name)
            continue
        rows.append(compare_arrays(name, ta[name], tb[name], rtol, atol))
    extra = [n for n in tb if n not in ta]
    return CompareReport(rows, missing, extra, rtol, atol, strict, labels[0], labels[1], order_source)
