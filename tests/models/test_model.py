"""The Conv2Former model: public API, official sizes, state dicts, input errors, whole-network gradients."""

from __future__ import annotations

import numpy as np
import pytest

import c2f_numpy as c2f
from c2f_numpy.gradcheck import directional_check
from c2f_numpy.models import Conv2Former
from c2f_numpy.nn import StateDictError
from c2f_numpy.ops import OpDTypeError, OpInputError
from c2f_numpy.testing import randomize_for_parity

# Counted on the official code (HVision-NKU/Conv2Former) at 224x224 with 1000 classes: docs/architecture.md,
# "The official variants and their checkpoints".
OFFICIAL = {
    "conv2former_n": (14.99e6, 2.33e9, 7),
    "conv2former_t": (26.70e6, 4.36e9, 11),
    "conv2former_s": (50.03e6, 8.71e9, 11),
    "conv2former_b": (90.03e6, 15.89e9, 11),
    "conv2former_b_22k": (88.78e6, 15.56e9, 7),
    "conv2former_l": (198.89e6, 36.04e9, 11),
}


@pytest.mark.parametrize("name", list(OFFICIAL))
def test_official_sizes_and_default_kernels(name: str) -> None:
    params, macs, k = OFFICIAL[name]
    model = getattr(c2f, name)()
    stats = c2f.model_stats(model, image_size=224)
    assert abs(stats["params"] / params - 1) < 0.01 and abs(stats["macs"] / macs - 1) < 0.01, stats
    assert model.kernel_size == k
    assert model.stages[0][0].attn.att[2].weight.data.shape == (model.dims[0], 1, k, k)


def tiny(**kw: object) -> Conv2Former:
    """Two stages, one block each: every kind of layer, small enough for finite differences."""
    args: dict = dict(dims=(4, 8), depths=(1, 1), kernel_size=3, num_classes=3, dtype=np.float64, seed=1) | kw
    return Conv2Former(**args)


def test_public_api_names() -> None:
    m = c2f.conv2former_n(num_classes=10, kernel_size=None, dtype=np.float32, drop_path_rate=0.0, in_chans=3)
    assert (m.num_classes, m.kernel_size, m.dtype) == (10, 7, np.float32)
    assert c2f.create_model("conv2former_t", num_classes=5).kernel_size == 11
    assert c2f.create_model("t", kernel_size=21).kernel_size == 21
    with pytest.raises(ValueError, match="unknown model 'conv2former_x'"):
        c2f.create_model("conv2former_x")
    keys = list(m.state_dict())
    assert keys[:9] == [
        "downsample_layers.0.0.weight", "downsample_layers.0.2.weight", "downsample_layers.0.2.bias",
        "downsample_layers.0.2.running_mean", "downsample_layers.0.2.running_var",
        "downsample_layers.0.2.num_batches_tracked", "downsample_layers.0.3.weight",
        "downsample_layers.0.5.weight", "downsample_layers.0.5.bias",
    ]  # fmt: skip
    assert "stages.2.5.attn.att.2.weight" in keys and "stages.2.5.layer_scale_1" in keys and keys[-1] == "pred.bias"
    assert keys.index("stages.0.0.layer_scale_1") < keys.index("stages.0.0.attn.norm.weight")  # torch's order
    assert m.state_dict()["downsample_layers.0.2.num_batches_tracked"].dtype == np.int64
    assert set(m.grads()) == {k for k, _ in m.named_parameters()}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forward_backward_shapes_and_dtypes(dtype: type) -> None:
    m = tiny(dtype=dtype)
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 48)).astype(dtype)
    y = m(x)
    assert y.shape == (2, 3) and y.dtype == dtype
    dx = m.backward(np.ones_like(y))
    assert dx.shape == x.shape and dx.dtype == dtype
    assert all(g.dtype == dtype and np.isfinite(g).all() for g in m.grads().values())


def test_gradients_accumulate_until_zero_grad() -> None:
    m = tiny()
    randomize_for_parity(m)
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32))
    m(x)
    m.backward(np.ones((2, 3)))
    first = m.grads()
    m(x)
    m.backward(np.ones((2, 3)))
    assert all(np.allclose(g, 2 * first[k]) for k, g in m.grads().items())
    m.zero_grad()
    assert all(not g.any() for g in m.grads().values())


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_whole_network_gradients_match_finite_differences(training: bool) -> None:
    m = tiny(kernel_size=5)
    randomize_for_parity(m, seed=3)
    m.train(training)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 32, 40))
    r = rng.standard_normal((2, 3))
    params = dict(m.named_parameters())
    snapshot = m.state_dict()

    def loss(inputs: dict[str, np.ndarray]) -> float:
        m.load_state_dict(snapshot | {k: v for k, v in inputs.items() if k != "x"})  # BN stats reset each call
        return float(np.sum(m(inputs["x"]) * r))

    m.zero_grad()
    m(x)
    grads = {"x": m.backward(r)} | m.grads()
    inputs = {"x": x} | {k: p.data.copy() for k, p in params.items()}
    results = directional_check(loss, inputs, grads, rng)
    bad = [str(res) for res in results if not res.ok]
    assert len(results) == len(params) + 1 and not bad, "\n".join(bad)


def test_load_state_dict_names_every_problem() -> None:
    m = tiny()
    sd = m.state_dict()
    del sd["pred.bias"]
    sd["extra.weight"] = np.zeros(3)
    sd["head.0.weight"] = np.zeros((1280, 7, 1, 1))
    with pytest.raises(StateDictError) as err:
        m.load_state_dict(sd)
    text = str(err.value)
    assert "pred.bias" in text and "extra.weight" in text
    assert "head.0.weight: checkpoint (1280, 7, 1, 1) vs model (1280, 8, 1, 1)" in text
    before = m.state_dict()["head.0.weight"].copy()
    report = m.load_state_dict(sd, strict=False)
    assert report.missing == ["pred.bias"] and report.unexpected == ["extra.weight"] and len(report.mismatched) == 1
    assert np.array_equal(m.state_dict()["head.0.weight"], before)  # the mismatched entry was not loaded
    assert np.array_equal(m.state_dict()["pred.weight"], sd["pred.weight"])


def test_kernel_size_mismatch_says_how_to_fix_it() -> None:
    k7 = c2f.conv2former_n(kernel_size=7, num_classes=10).state_dict()
    with pytest.raises(StateDictError, match=r"7x7 depthwise kernels, the model was built for 11x11: build it "
                                             r"with kernel_size=7"):  # fmt: skip
        c2f.conv2former_n(kernel_size=11, num_classes=10).load_state_dict(k7)
    assert c2f.create_model("n", checkpoint=k7).kernel_size == 7  # inferred from the weights


def test_loading_casts_floats_to_the_model_dtype() -> None:
    m64, m32 = tiny(seed=5), tiny(dtype=np.float32, seed=6)
    m32.load_state_dict({k: v.astype(np.float16) if v.dtype.kind == "f" else v for k, v in m64.state_dict().items()})
    sd = m32.state_dict()
    assert sd["pred.weight"].dtype == np.float32 and sd["downsample_layers.0.2.num_batches_tracked"].dtype == np.int64
    np.testing.assert_array_equal(sd["pred.weight"], m64.state_dict()["pred.weight"].astype(np.float16))


def test_drop_path_is_seeded_and_off_in_eval() -> None:
    x = np.random.default_rng(0).standard_normal((8, 3, 32, 32))
    outs = []
    for seed in (0, 0, 1):
        m = tiny(drop_path_rate=0.5, seed=0, drop_path_rng=np.random.default_rng(seed))
        randomize_for_parity(m)
        outs.append(m(x))
    assert np.array_equal(outs[0], outs[1]) and not np.array_equal(outs[0], outs[2])
    m.eval()
    assert np.array_equal(m(x), m(x))


def test_train_step_updates_batch_norm_statistics_only_in_train_mode() -> None:
    m = tiny()
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)) * 3 + 1
    before = m.state_dict()["downsample_layers.0.2.running_mean"].copy()
    m.eval()
    m(x)
    assert np.array_equal(m.state_dict()["downsample_layers.0.2.running_mean"], before)
    m.train()
    m(x)
    sd = m.state_dict()
    assert not np.array_equal(sd["downsample_layers.0.2.running_mean"], before)
    assert sd["downsample_layers.0.2.num_batches_tracked"] == 1


@pytest.mark.parametrize(
    ("x", "exc", "message"),
    [
        (np.zeros((2, 3, 32, 32), np.float32), OpDTypeError, r"input is float32 but the model is float64"),
        (np.zeros((2, 1, 32, 32)), OpInputError, r"expected 3 input channels \(in_chans\), got shape \(2, 1, 32, 32\)"),
        (np.zeros((3, 32, 32)), OpInputError, r"x must have 4 dims"),
        (np.zeros((1, 3, 16, 40)), OpInputError, r"a 16x40 image is too small: the network downsamples by 32"),
        (np.zeros((1, 3, 32, 32), np.int64), OpDTypeError, r"x must be float32 or float64, got int64"),
    ],
)
def test_bad_images_get_clear_errors(x: np.ndarray, exc: type[Exception], message: str) -> None:
    m = c2f.conv2former_n(num_classes=10, dtype=np.float64)
    with pytest.raises(exc, match=message):
        m(x)


def test_backward_before_forward_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="backward called without a forward"):
        tiny().backward(np.zeros((1, 3)))


def test_block_drop_path_expectation_matches_eval() -> None:
    """E[x + drop_path(ls1 * attn(x))] = x + ls1 * attn(x); the MLP branch is switched off (ls2 = 0) so the
    block is linear in the mask and the expectation is exact."""
    from c2f_numpy.models import Block

    block = Block(4, 3, drop_path=0.5, dtype=np.float64, rng=np.random.default_rng(0),
                  drop_path_rng=np.random.default_rng(1))  # fmt: skip
    randomize_for_parity(block)
    block.layer_scale_1.data[:] = 1.0
    block.layer_scale_2.data[:] = 0.0
    n = 20000
    x = np.repeat(np.random.default_rng(2).standard_normal((1, 4, 3, 3)), n, axis=0)
    block.eval()
    expected = block(x[:1])[0]
    block.train()
    y = block(x)
    branch = expected - x[0]  # ls1 * attn(x)
    bound = 5 * np.abs(branch) / np.sqrt(n)  # drop 0.5: the branch is 0 or 2 * branch, std |branch|
    assert (np.abs(y.mean(axis=0) - expected) < bound + 1e-12).all()
    assert np.abs(branch).min() > 1e-3  # O(1) branch: kept and dropped samples are told apart below
    dropped = np.isclose(y[:, 0, 0, 0], x[0, 0, 0, 0], rtol=0, atol=1e-9)
    assert 0.48 < dropped.mean() < 0.52


def test_observe_reports_every_module_output_by_name_in_forward_order() -> None:
    from c2f_numpy.nn import observe

    m = tiny()
    randomize_for_parity(m)
    seen: list[tuple[str, tuple[int, ...]]] = []
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32))
    with observe(m, lambda name, out: seen.append((name, out.shape))):
        logits = m(x)
    names = [n for n, _ in seen]
    want = {name for name, _ in m.named_modules()} - {"downsample_layers", "stages"}  # lists, never called
    assert set(names) == want and len(names) == len(want)
    # children before parents, stages in order, the ConvMod internals with the right shapes
    assert names.index("stages.0.0.attn.att.0") < names.index("stages.0.0.attn") < names.index("stages.0.0")
    assert names.index("stages.0") < names.index("downsample_layers.1") < names.index("head") < names.index("pred")
    assert names[-1] == ""  # the model itself, last
    shapes = dict(seen)
    assert shapes["stages.0.0.attn.att.1"] == shapes["stages.0.0.attn.v"] == (2, 4, 8, 8)
    assert shapes["stages.0.0.mlp.pos"] == (2, 16, 8, 8) and shapes[""] == logits.shape
    m(x)  # outside the block: nothing reported
    assert len(seen) == len(names)
