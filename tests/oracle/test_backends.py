"""The two copies agree layer by layer: a float64 dump on the fast copy (Numba, NHWC inside) equals the dump on
the teaching copy (NumPy, NCHW) at the float64 tolerance, every module output and every gradient."""

from __future__ import annotations

import numpy as np

import c2f_numpy as c2f
from c2f_numpy.oracle import compare, dump
from c2f_numpy.testing import randomize_for_parity


def test_fast_and_teaching_backends_agree_on_every_tensor() -> None:
    rng = np.random.default_rng(0)
    x, dlogits = rng.standard_normal((2, 3, 32, 48)), rng.standard_normal((2, 10))
    dumps = []
    for backend in ("teaching", "fast"):
        model = c2f.conv2former_n(num_classes=10, kernel_size=11, dtype=np.float64, backend=backend)
        randomize_for_parity(model, seed=3)
        model.train()  # batch statistics and the BN buffers' update on both paths
        dumps.append(dump(model, x, dlogits))
    report = compare(dumps[0], dumps[1])
    assert len(dumps[0]) > 500 and report.ok, str(report)
