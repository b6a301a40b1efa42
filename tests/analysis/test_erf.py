"""The ERF map (c2f_numpy.analysis.erf) against torch autograd, its summary numbers on maps with known answers,
and its determinism.

The reference: the PyTorch replica of the official model (c2f_numpy/torch_reference.py) with the same weights,
autograd from the sum over channels of the chosen output's centre unit to the image, |.| summed over the input
channels and averaged over the images. float64, the table's float64 tolerance (c2f_numpy.testing). The model is
tiny (dims 8-16, depths 1-2, 5x5 kernels, 32x32 images) with O(1) weights and layer scales
(randomize_for_parity), so every block contributes to the map.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from c2f_numpy import Conv2Former
from c2f_numpy.analysis import (
    ERFError,
    area_ratios,
    centre_gradient,
    effective_receptive_field,
    erf_summary,
    log_score,
    noise_images,
)
from c2f_numpy.testing import assert_close, randomize_for_parity
from c2f_numpy.torch_reference import Conv2Former as TorchConv2Former

DIMS, DEPTHS, K, SIZE = (8, 16), (1, 2), 5, 32


def tiny(dtype: type = np.float64, backend: str = "numpy") -> Conv2Former:
    model = Conv2Former(DIMS, DEPTHS, K, in_chans=3, num_classes=3, head_dim=16, layer_scale_init_value=1.0,
                        dtype=dtype, backend=backend)  # fmt: skip
    randomize_for_parity(model, seed=3)
    return model


def torch_erf(model: Conv2Former, x: np.ndarray, stage: int, block: int | None) -> np.ndarray:
    """The same map by autograd on the torch replica holding the model's weights."""
    ref = TorchConv2Former(K, DIMS, DEPTHS, num_classes=3, head_dim=16).to(torch.float64)
    ref.load_state_dict({k: torch.tensor(v) for k, v in model.state_dict().items()}, strict=True)
    ref.eval()
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    h = xt
    for i in range(stage):
        h = ref.downsample_layers[i](h)
        blocks = list(ref.stages[i]) if i < stage - 1 or block is None else list(ref.stages[i])[:block]
        for b in blocks:
            h = b(h)
    h[:, :, h.shape[2] // 2, h.shape[3] // 2].sum().backward()
    return xt.grad.abs().sum(dim=(0, 1)).numpy() / len(x)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize(("stage", "block"), [(1, None), (2, 1), (2, None)])
def test_erf_map_matches_torch_autograd(stage: int, block: int | None, backend: str) -> None:
    model = tiny(backend=backend)
    x = np.random.default_rng(0).standard_normal((3, 3, SIZE, SIZE))
    got = effective_receptive_field(model, x, stage=stage, block=block, batch_size=2)
    want = torch_erf(model, x, stage, block)
    assert_close(f"ERF stage {stage} block {block} ({backend})", got.map, want)
    assert got.num_images == 3 and got.dtype == "float64"
    h = SIZE // 4 // 2 ** (stage - 1)
    assert got.feature_shape == (DIMS[stage - 1], h, h) and got.centre == (h // 2, h // 2)
    # the map is not trivial: it spreads beyond one pixel, and stays inside the image
    assert (want > 1e-3 * want.max()).sum() > 9


def test_a_wrong_centre_would_be_caught() -> None:
    """The comparison can fail: the gradient of a unit one pixel off the centre gives another map."""
    model = tiny()
    x = np.random.default_rng(0).standard_normal((2, 3, SIZE, SIZE))
    got = effective_receptive_field(model, x, stage=2).map
    shifted = np.roll(torch_erf(model, x, 2, None), 8, axis=1)  # one unit of stride 8
    with pytest.raises(AssertionError):
        assert_close("shifted", got, shifted)


def test_float32_agrees_with_float64_and_the_model_is_left_as_it_was() -> None:
    model = tiny(np.float64, "numba").train()
    g64 = effective_receptive_field(model, 4, stage=2, size=SIZE).map
    g32 = effective_receptive_field(model, 4, stage=2, size=SIZE, dtype=np.float32)
    assert g32.dtype == "float32"
    assert_close("float32 ERF", g32.map, g64, tol=1e-4)
    assert model.training and model.dtype == np.float64
    assert not any(g.any() for g in model.grads().values())  # zeroed, not left as a by-product


def test_deterministic_for_a_seed_and_independent_of_the_batch_size() -> None:
    model = tiny(np.float32, "numba")
    a = effective_receptive_field(model, 5, stage=2, size=SIZE, seed=7, batch_size=2).map
    b = effective_receptive_field(model, 5, stage=2, size=SIZE, seed=7, batch_size=2).map
    c = effective_receptive_field(model, 5, stage=2, size=SIZE, seed=7, batch_size=5).map
    d = effective_receptive_field(model, 5, stage=2, size=SIZE, seed=8, batch_size=2).map
    assert np.array_equal(a, b)
    assert_close("batch 5 vs 2", c, a, tol=1e-5)  # same images, other BLAS blocking
    assert np.abs(d - a).max() > 1e-3 * a.max()  # another seed, other images
    np.testing.assert_array_equal(noise_images(3, (3, 4, 4), 7, start=2)[0], noise_images(5, (3, 4, 4), 7)[2])


def test_centre_gradient_is_one_units_gradient() -> None:
    """Summed over the images, the map is linear in them: two copies of one image give that image's gradient."""
    model = tiny()
    x = np.random.default_rng(1).standard_normal((1, 3, SIZE, SIZE))
    one = centre_gradient(model, x, 2)
    two = centre_gradient(model, np.concatenate([x, x]), 2)
    assert_close("duplicated image", two[1], one[0])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"stage": 3}, "stage must be 1..2"),
        ({"stage": 0}, "stage must be 1..2"),
        ({"stage": 2, "block": 3}, "stage 2 has blocks 1..2"),
        ({"stage": 2, "size": 4}, "does not survive the downsampling to stage 2 (stride 8)"),
        ({"stage": 1, "size": None}, "give size="),
        ({"stage": 1, "batch_size": 0}, "batch_size must be a positive int"),
    ],
)
def test_bad_requests_raise_clear_errors(kwargs: dict, message: str) -> None:
    kw = {"size": SIZE} | kwargs
    with pytest.raises(ERFError, match=message.replace("(", r"\(").replace(")", r"\)")):
        effective_receptive_field(tiny(), 1, **kw)


def test_images_of_the_wrong_shape_or_kind_raise() -> None:
    with pytest.raises(ERFError, match=r"images must be \(N >= 1, 3, H, W\)"):
        effective_receptive_field(tiny(), np.zeros((2, 1, SIZE, SIZE)), stage=1)
    with pytest.raises(ERFError, match="images must be floating point"):
        effective_receptive_field(tiny(), np.zeros((2, 3, SIZE, SIZE), np.uint8), stage=1)


# ------------------------------------------------------------------------------------------- area ratios
def test_a_delta_gives_the_one_pixel_square() -> None:
    g = np.zeros((15, 21))
    g[4, 13] = 2.5
    for score in ("log", "linear"):
        assert area_ratios(g, (0.2, 0.5, 0.99, 1.0), score=score) == [1 / g.size] * 4
    # centred on the image instead, the square must grow until it reaches the delta at (4, 13) from (7, 10)
    assert area_ratios(g, (0.5,), centre="image") == [7 * 7 / g.size]


@pytest.mark.parametrize("side", [1, 5, 9])
def test_a_uniform_square_gives_the_smallest_odd_square_holding_each_share(side: int) -> None:
    g = np.zeros((31, 31))
    lo = 15 - side // 2
    g[lo : lo + side, lo : lo + side] = 1.0
    shares = (0.2, 0.5, 0.99)
    want = [min(s for s in range(1, 32, 2) if min(s, side) ** 2 >= t * side**2) ** 2 / g.size for t in shares]
    assert area_ratios(g, shares) == want
    assert area_ratios(g, shares, score="linear") == want
    # e.g. side 9: 20% of 81 needs a 5x5 (25 >= 16.2), 50% a 7x7 (49 >= 40.5), 99% the 9x9 itself
    if side == 9:
        assert want == [25 / 961, 49 / 961, 81 / 961]


def test_the_log_score_is_normalised_and_compresses() -> None:
    g = np.array([[0.0, 1e-3, 1.0]])
    np.testing.assert_allclose(log_score(g), [[0.0, np.log10(2.0) / np.log10(1001.0), 1.0]])
    np.testing.assert_allclose(log_score(g, peak=None), np.log10(1 + g) / np.log10(2.0))
    s = erf_summary(np.outer(np.hanning(21), np.hanning(21)) + 1e-9)
    assert s["area_ratio"][0] < s["area_ratio"][1] < s["area_ratio"][2] <= 1.0
    # the log flattens the map, so its squares are larger than the linear map's
    assert all(a >= b for a, b in zip(s["area_ratio"], s["area_ratio_linear"], strict=True))


@pytest.mark.parametrize("bad", [np.zeros((4, 4)), -np.ones((3, 3)), np.ones(4), np.full((2, 2), np.nan)])
def test_maps_without_an_answer_raise(bad: np.ndarray) -> None:
    with pytest.raises(ERFError, match="area_ratios"):
        area_ratios(bad)


def test_shares_outside_the_unit_interval_raise() -> None:
    with pytest.raises(ERFError, match=r"shares must be in \(0, 1\]"):
        area_ratios(np.ones((3, 3)), (0.0, 0.5))
