"""Numerical oracle: layer-by-layer dumps of c2f_numpy (the float64 ground truth) and of a port, and a report
that names the first tensor where the port diverges.

    from c2f_numpy.oracle import dump, save_dump, load_dump, compare, torch_dump
    ours = dump(model.eval(), x, dlogits)            # {"input", "<module>.out"..., "logits", "dlogits", "*.grad"}
    theirs = torch_dump(official_model.eval(), x, dlogits)   # same names from a PyTorch model (torch optional)
    print(compare(ours, theirs))                     # table in forward order; last line: the first divergence

CLI: ``c2f-oracle run`` / ``c2f-oracle compare A B`` (also ``python -m c2f_numpy.oracle``). The workflow and
the usual porting mistakes: docs/porting.md.
"""

from .compare import CompareError, CompareReport, Row, compare, walk_order
from .dump import (
    FORMAT_KEY,
    ORDER_KEY,
    ORDER_SOURCE_KEY,
    DumpFileError,
    canonical_order,
    dump,
    dump_metadata,
    load_dump,
    save_dump,
)
from .torch_dump import torch_dump

__all__ = [
    "FORMAT_KEY",
    "ORDER_KEY",
    "ORDER_SOURCE_KEY",
    "CompareError",
    "CompareReport",
    "DumpFileError",
    "Row",
    "canonical_order",
    "compare",
    "dump",
    "dump_metadata",
    "load_dump",
    "save_dump",
    "torch_dump",
    "walk_order",
]
