"""Tests for :mod:`c2f_numpy.torch_reference`, the PyTorch replica of the official Conv2Former.

The replica is the yardstick for the NumPy model, so it is checked against things that do not come from it:
hand-written official checkpoint keys, the official parameter and MAC counts, closed-form counts, a
functional forward written from the architecture notes, and the NumPy drop-path op.
"""

from __future__ import annotations

import importlib
import math
import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from c2f_numpy.ops import drop_path_forward
from c2f_numpy.torch_reference import (
    SMALL_VARIANTS,
    VARIANTS,
    Block,
    DropPath,
    VariantSpec,
    build_torch_conv2former,
    count_macs,
    count_params,
    drop_path_rates,
    official_init,
    set_drop_path_rng,
)

# Official counts at 224x224, 1000 classes (conv + linear MACs), from docs: N with k=7, B_22k with k=7.
OFFICIAL_COUNTS = {
    "n": (14.99e6, 2.33e9),
    "t": (26.70e6, 4.36e9),
    "s": (50.03e6, 8.71e9),
    "b": (90.03e6, 15.89e9),
    "b_22k": (88.78e6, 15.56e9),
    "l": (198.89e6, 36.04e9),
}


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    """One intra-op thread: these models are small, and on a shared 2-core machine torch's 2-thread OpenMP
    regions stall behind any other busy process (a 0.25 s forward was measured at 27 s)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _meta_model(variant: str, **kwargs: object) -> nn.Module:
    with torch.device("meta"):
        return build_torch_conv2former(variant, dtype=torch.float32, **kwargs)  # type: ignore[arg-type]


def _randomize(model: nn.Module, seed: int) -> None:
    """Weights of order 1 everywhere (layer scales and norm affines included) so every branch matters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                r = torch.randn(t.shape, generator=gen, dtype=torch.float64)
                if name.endswith("running_var"):
                    r = 0.5 + r.abs()
                elif name.endswith(".weight") and t.ndim == 4:
                    r = r / math.sqrt(t[0].numel())  # fan-in scaling keeps activations O(1)
                elif name.endswith(".weight") and t.ndim == 2:
                    r = r / math.sqrt(t.shape[1])
                else:
                    r = 0.5 * r
                t.copy_(r)


# ------------------------------------------------------------------------------------------------------------
# State-dict keys


def _official_keys(spec: VariantSpec) -> list[str]:
    """The official key list, written out from the official module tree (not from the replica)."""
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    keys = ["downsample_layers.0.0.weight"]
    keys += [f"downsample_layers.0.2.{s}" for s in bn]
    keys += ["downsample_layers.0.3.weight"]
    keys += [f"downsample_layers.0.5.{s}" for s in bn]
    keys += ["downsample_layers.0.6.weight"]
    for i in range(1, len(spec.dims)):
        keys += [f"downsample_layers.{i}.{m}.{p}" for m in (0, 1) for p in ("weight", "bias")]
    for i, depth in enumerate(spec.depths):
        for j in range(depth):
            pre = f"stages.{i}.{j}."
            keys += [pre + "layer_scale_1", pre + "layer_scale_2"]
            keys += [f"{pre}attn.{m}.{p}" for m in ("norm", "att.0", "att.2", "v", "proj") for p in ("weight", "bias")]
            keys += [f"{pre}mlp.{m}.{p}" for m in ("norm", "fc1", "pos", "fc2") for p in ("weight", "bias")]
    keys += [f"{m}.{p}" for m in ("head.0", "head.2", "pred") for p in ("weight", "bias")]
    return keys


def test_state_dict_keys_are_the_official_ones() -> None:
    sd = build_torch_conv2former("n").state_dict()
    keys = list(sd)
    assert keys[:22] == [
        "downsample_layers.0.0.weight",
        "downsample_layers.0.2.weight",
        "downsample_layers.0.2.bias",
        "downsample_layers.0.2.running_mean",
        "downsample_layers.0.2.running_var",
        "downsample_layers.0.2.num_batches_tracked",
        "downsample_layers.0.3.weight",
        "downsample_layers.0.5.weight",
        "downsample_layers.0.5.bias",
        "downsample_layers.0.5.running_mean",
        "downsample_layers.0.5.running_var",
        "downsample_layers.0.5.num_batches_tracked",
        "downsample_layers.0.6.weight",
        "downsample_layers.1.0.weight",
        "downsample_layers.1.0.bias",
        "downsample_layers.1.1.weight",
        "downsample_layers.1.1.bias",
        "downsample_layers.2.0.weight",
        "downsample_layers.2.0.bias",
        "downsample_layers.2.1.weight",
        "downsample_layers.2.1.bias",
        "downsample_layers.3.0.weight",
    ]
    assert keys[25:29] == [
        "stages.0.0.layer_scale_1",
        "stages.0.0.layer_scale_2",
        "stages.0.0.attn.norm.weight",
        "stages.0.0.attn.norm.bias",
    ]
    assert keys[-6:] == ["head.0.weight", "head.0.bias", "head.2.weight", "head.2.bias", "pred.weight", "pred.bias"]
    # 13 stem + 12 downsampling + 14 blocks * 20 + 6 head/pred
    assert len(keys) == 311
    assert keys == _official_keys(VARIANTS["n"])

    assert sd["downsample_layers.0.2.running_var"].shape == (32,)
    assert sd["downsample_layers.0.2.num_batches_tracked"].dtype == torch.int64
    assert sd["downsample_layers.0.0.weight"].shape == (32, 3, 3, 3)
    assert sd["downsample_layers.0.6.weight"].shape == (64, 32, 2, 2)
    assert sd["downsample_layers.3.1.weight"].shape == (512, 256, 2, 2)
    assert sd["stages.2.5.attn.att.2.weight"].shape == (256, 1, 7, 7)
    assert sd["stages.2.5.mlp.pos.weight"].shape == (1024, 1, 3, 3)
    assert sd["stages.2.5.mlp.pos.bias"].shape == (1024,)
    assert sd["stages.2.5.layer_scale_1"].shape == (256,)
    assert torch.all(sd["stages.2.5.layer_scale_1"] == 1e-6)
    assert sd["head.0.weight"].shape == (1280, 512, 1, 1)
    assert sd["head.2.weight"].shape == (1280,)
    assert sd["pred.weight"].shape == (1000, 1280)
    assert sd["pred.bias"].shape == (1000,)
    assert all(t.dtype == torch.float64 for t in sd.values() if t.is_floating_point())


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_variant_has_the_official_keys_and_kernel(variant: str) -> None:
    spec = VARIANTS[variant]
    sd = _meta_model(variant).state_dict()
    assert list(sd) == _official_keys(spec)
    k = 7 if variant in ("n", "b_22k") else 11
    assert spec.kernel_size == k
    assert sd["stages.0.0.attn.att.2.weight"].shape == (spec.dims[0], 1, k, k)


def test_build_options() -> None:
    m = _meta_model("t", kernel_size=5, num_classes=10, in_chans=1)
    sd = m.state_dict()
    assert sd["stages.3.2.attn.att.2.weight"].shape == (576, 1, 5, 5)
    assert sd["downsample_layers.0.0.weight"].shape == (36, 1, 3, 3)
    assert sd["pred.weight"].shape == (10, 1280)
    assert build_torch_conv2former("n", dtype=torch.float32).pred.weight.dtype == torch.float32
    for bad in ("x", ""):
        with pytest.raises(ValueError, match="unknown variant"):
            build_torch_conv2former(bad)
    for k in (0, 4, -3):
        with pytest.raises(ValueError, match="kernel_size"):
            build_torch_conv2former("n", kernel_size=k)
    with pytest.raises(ValueError, match="drop_path_rate"):
        build_torch_conv2former("n", drop_path_rate=1.5)
    with pytest.raises(ValueError, match="dtype"):
        build_torch_conv2former("n", dtype=torch.int32)


@pytest.mark.parametrize("variant", sorted(SMALL_VARIANTS))
@pytest.mark.parametrize("stem_stride", [4, 2, 1])
def test_small_configs_keys_and_shapes(variant: str, stem_stride: int) -> None:
    spec = SMALL_VARIANTS[variant]
    assert len(spec.dims) == len(spec.depths) == 3
    model = _meta_model(variant, stem_stride=stem_stride, in_chans=1, num_classes=10)
    sd = model.state_dict()
    assert list(sd) == _official_keys(spec)  # the official pattern, with one downsampling layer per later stage
    half, first, last = spec.dims[0] // 2, 2 if stem_stride == 4 else 1, 1 if stem_stride == 1 else 2
    assert sd["downsample_layers.0.0.weight"].shape == (half, 1, 3, 3)
    assert sd["downsample_layers.0.6.weight"].shape == (spec.dims[0], half, last, last)
    stem = model.downsample_layers[0]
    assert [stem[i].stride for i in (0, 3, 6)] == [(first, first), (1, 1), (last, last)]
    assert sd["head.0.weight"].shape == (spec.head_dim, spec.dims[-1], 1, 1)
    assert sd["head.2.weight"].shape == (spec.head_dim,)
    assert sd["pred.weight"].shape == (10, spec.head_dim)
    x = torch.zeros(2, 1, 28, 28, device="meta")
    assert model.forward_features(x).shape == (2, spec.head_dim)


def test_generalised_options() -> None:
    spec = VariantSpec((8, 16), (1, 2), 3, stem_stride=1, head_dim=12)
    m = build_torch_conv2former(spec, num_classes=4, layer_scale_init_value=0.25)
    assert list(m.state_dict()) == _official_keys(spec)
    assert m.pred.weight.shape == (4, 12)
    assert all(torch.all(p == 0.25) for n, p in m.named_parameters() if "layer_scale" in n)
    _randomize(m, 0)
    official_init(m, 0)
    assert all(torch.all(p == 0.25) for n, p in m.named_parameters() if "layer_scale" in n)
    assert m(torch.randn(2, 3, 5, 7, dtype=torch.float64)).shape == (2, 4)
    assert build_torch_conv2former("micro", head_dim=20).head[2].weight.shape == (20,)
    assert build_torch_conv2former("MINI", stem_stride=4).downsample_layers[0][0].stride == (2, 2)
    with pytest.raises(ValueError, match="stem_stride"):
        build_torch_conv2former("micro", stem_stride=3)
    with pytest.raises(ValueError, match="head_dim"):
        build_torch_conv2former("micro", head_dim=0)
    with pytest.raises(ValueError, match="dims and depths"):
        build_torch_conv2former(VariantSpec((8, 16), (1,), 3))
    with pytest.raises(ValueError, match="dims and depths"):
        build_torch_conv2former(VariantSpec((), (), 3))


def test_official_checkpoint_layout_loads_strictly() -> None:
    """A state dict with the official layout (here: another replica's) loads with strict=True, shapes included."""
    src = build_torch_conv2former("n", num_classes=7)
    _randomize(src, 0)
    dst = build_torch_conv2former("n", num_classes=7)
    dst.load_state_dict(src.state_dict(), strict=True)
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values(), strict=True))


# ------------------------------------------------------------------------------------------------------------
# Forward: against a functional forward written from the architecture notes


def _ln(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
    mu = x.mean(1, keepdim=True)
    var = ((x - mu) ** 2).mean(1, keepdim=True)
    return (x - mu) / torch.sqrt(var + 1e-6) * w[:, None, None] + b[:, None, None]


def _functional_forward(sd: dict[str, Tensor], x: Tensor, depths: tuple[int, ...], stem_stride: int = 4) -> Tensor:
    """Eval-mode Conv2Former with F.* ops only (BatchNorm from running statistics, eps 1e-5).

    The stem downsamples by ``stem_stride``: 4 = 2 (first conv) * 2 (last conv), 2 = 1 * 2, 1 = 1 * 1.
    """

    def bn(x: Tensor, p: str) -> Tensor:
        return F.batch_norm(x, sd[p + "running_mean"], sd[p + "running_var"], sd[p + "weight"], sd[p + "bias"])

    def dw(x: Tensor, p: str) -> Tensor:
        w = sd[p + "weight"]
        return F.conv2d(x, w, sd[p + "bias"], padding=w.shape[-1] // 2, groups=w.shape[0])

    def pw(x: Tensor, p: str) -> Tensor:
        return F.conv2d(x, sd[p + "weight"], sd[p + "bias"])

    s1, s3 = {4: (2, 2), 2: (1, 2), 1: (1, 1)}[stem_stride]
    x = bn(F.gelu(F.conv2d(x, sd["downsample_layers.0.0.weight"], stride=s1, padding=1)), "downsample_layers.0.2.")
    x = bn(F.gelu(F.conv2d(x, sd["downsample_layers.0.3.weight"], padding=1)), "downsample_layers.0.5.")
    x = F.conv2d(x, sd["downsample_layers.0.6.weight"], stride=s3)
    for i, depth in enumerate(depths):
        if i > 0:
            p = f"downsample_layers.{i}."
            x = _ln(x, sd[p + "0.weight"], sd[p + "0.bias"])
            x = F.conv2d(x, sd[p + "1.weight"], sd[p + "1.bias"], stride=2)
        for j in range(depth):
            p = f"stages.{i}.{j}."
            n = _ln(x, sd[p + "attn.norm.weight"], sd[p + "attn.norm.bias"])
            a = dw(F.gelu(pw(n, p + "attn.att.0.")), p + "attn.att.2.")
            x = x + sd[p + "layer_scale_1"][:, None, None] * pw(a * pw(n, p + "attn.v."), p + "attn.proj.")
            n = _ln(x, sd[p + "mlp.norm.weight"], sd[p + "mlp.norm.bias"])
            h = F.gelu(pw(n, p + "mlp.fc1."))
            h = h + F.gelu(dw(h, p + "mlp.pos."))
            x = x + sd[p + "layer_scale_2"][:, None, None] * pw(h, p + "mlp.fc2.")
    x = _ln(F.gelu(pw(x, "head.0.")), sd["head.2.weight"], sd["head.2.bias"])
    return F.linear(x.mean((2, 3)), sd["pred.weight"], sd["pred.bias"])


@pytest.mark.parametrize(("kernel_size", "size"), [(7, 64), (5, 45)])
def test_forward_matches_a_functional_forward(kernel_size: int, size: int) -> None:
    model = build_torch_conv2former("n", kernel_size=kernel_size, num_classes=11, in_chans=2).eval()
    _randomize(model, 1)
    x = torch.randn(3, 2, size, size, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with torch.no_grad():
        got = model(x)
        want = _functional_forward(model.state_dict(), x, VARIANTS["n"].depths)
    assert got.shape == (3, 11)
    assert want.abs().max() > 1e-2  # not a degenerate comparison
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    ("variant", "stem_stride", "in_chans", "size"), [("micro", 2, 1, 28), ("micro", 1, 3, 32), ("mini", 4, 3, 37)]
)
def test_small_configs_match_a_functional_forward(variant: str, stem_stride: int, in_chans: int, size: int) -> None:
    model = build_torch_conv2former(variant, stem_stride=stem_stride, num_classes=10, in_chans=in_chans).eval()
    _randomize(model, 7)
    x = torch.randn(2, in_chans, size, size, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    with torch.no_grad():
        got = model(x)
        want = _functional_forward(model.state_dict(), x, SMALL_VARIANTS[variant].depths, stem_stride)
    assert got.shape == (2, 10)
    assert want.abs().max() > 1e-2
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------------------------------------------------
# Official init


def test_official_init() -> None:
    a = build_torch_conv2former("n")
    b = build_torch_conv2former("n")
    _randomize(a, 3)
    official_init(a, 123)
    official_init(b, 123)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    c = build_torch_conv2former("n")
    official_init(c, 124)
    assert not torch.equal(a.pred.weight, c.pred.weight)

    sd = a.state_dict()
    for name, t in sd.items():
        if name.endswith("num_batches_tracked"):
            assert t.item() == 0
        elif "layer_scale" in name:
            assert torch.all(t == 1e-6), name
        elif name.endswith("running_mean"):
            assert torch.all(t == 0), name
        elif name.endswith("running_var") or (t.ndim == 1 and name.endswith(".weight")):  # incl. LN/BN affine
            assert torch.all(t == 1), name
        elif name.endswith(".bias"):
            assert torch.all(t == 0), name
        else:  # conv / linear weight
            assert t.ndim in (2, 4), name
            assert t.abs().max() < 0.2, name  # +-2 cut: no effect at std 0.02; 10 sigma never happens here
    big = sd["stages.2.0.mlp.fc1.weight"]  # 1024 x 256 draws
    assert abs(big.std().item() - 0.02) < 0.0005
    assert abs(big.mean().item()) < 0.0005


# ------------------------------------------------------------------------------------------------------------
# Drop path


def test_drop_path_rates_and_identity_blocks() -> None:
    model = build_torch_conv2former("n", drop_path_rate=0.5)
    blocks = [m for m in model.modules() if isinstance(m, Block)]
    assert len(blocks) == 14
    want = [x.item() for x in torch.linspace(0, 0.5, 14)]  # the official expression
    assert drop_path_rates(14, 0.5) == want
    assert isinstance(blocks[0].drop_path, nn.Identity)
    for blk, rate in zip(blocks[1:], want[1:], strict=True):
        assert isinstance(blk.drop_path, DropPath)
        assert blk.drop_path.drop_prob == rate
    assert blocks[-1].drop_path.drop_prob == 0.5
    assert set_drop_path_rng(model, np.random.default_rng(0)) == 13
    assert not any(isinstance(m, DropPath) for m in build_torch_conv2former("n").modules())
    with pytest.raises(TypeError, match="Generator"):
        set_drop_path_rng(model, np.random.RandomState(0))  # type: ignore[arg-type]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("drop_prob", [0.3, 0.75, 1.0])
def test_drop_path_op_matches_numpy_op_bitwise(dtype: torch.dtype, drop_prob: float) -> None:
    x = torch.randn(64, 3, 2, 2, generator=torch.Generator().manual_seed(4), dtype=dtype)
    dp = DropPath(drop_prob).train()
    dp.rng = np.random.default_rng(9)
    got = dp(x).numpy()
    want, _ = drop_path_forward(x.numpy(), drop_prob, training=True, rng=np.random.default_rng(9))
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)
    dropped = np.all(got == 0, axis=(1, 2, 3))
    if drop_prob < 1:
        assert 0 < dropped.sum() < 64
    else:
        assert dropped.all()


def _train_model(drop_path_rate: float = 0.5) -> nn.Module:
    model = build_torch_conv2former("n", drop_path_rate=drop_path_rate, num_classes=5)
    _randomize(model, 5)
    return model.train()


X_DP = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(6), dtype=torch.float64)


def test_seeded_drop_path_is_reproducible_and_seed_dependent() -> None:
    model = _train_model()
    outs = {}
    for name, seed in (("a", 11), ("b", 11), ("c", 12)):
        set_drop_path_rng(model, np.random.default_rng(seed))
        with torch.no_grad():
            outs[name] = model(X_DP)
    assert torch.equal(outs["a"], outs["b"])
    assert not torch.allclose(outs["a"], outs["c"])


def test_seeded_drop_path_draws_in_forward_order() -> None:
    """Each active DropPath call uses the next rng.random(N) < keep, attn before mlp, blocks in order."""
    model = _train_model()
    calls: list[tuple[str, Tensor, Tensor]] = []
    names = {m: n for n, m in model.named_modules()}
    hooks = [
        m.register_forward_hook(lambda m, i, o: calls.append((names[m], i[0], o)))
        for m in model.modules()
        if isinstance(m, DropPath)
    ]
    rng = np.random.default_rng(21)
    set_drop_path_rng(model, rng)
    with torch.no_grad():
        model(X_DP)
    for h in hooks:
        h.remove()

    blocks = [(n, m) for n, m in model.named_modules() if isinstance(m, Block)]
    assert [n for n, _ in blocks][:3] == ["stages.0.0", "stages.0.1", "stages.1.0"]  # forward order
    active: list[tuple[str, DropPath]] = []
    for n, blk in blocks:
        if isinstance(blk.drop_path, DropPath):
            active += [(f"{n}.drop_path", blk.drop_path)] * 2  # attn branch, then mlp branch
    assert len(active) == 26
    assert [c[0] for c in calls] == [n for n, _ in active]
    ref = np.random.default_rng(21)
    n_dropped = 0
    for (_, inp, out), (_, dp) in zip(calls, active, strict=True):
        keep = 1.0 - dp.drop_prob
        scale = (ref.random(8) < keep).astype(np.float64) / np.float64(keep)
        n_dropped += int((scale == 0).sum())
        assert torch.equal(out, inp * torch.from_numpy(scale).reshape(8, 1, 1, 1))
    assert n_dropped > 0
    assert rng.random() == ref.random()  # nothing else was drawn


def test_eval_mode_drop_path_is_identity() -> None:
    model = _train_model()
    plain = build_torch_conv2former("n", num_classes=5)
    plain.load_state_dict(model.state_dict())
    model.eval()
    plain.eval()
    rng = np.random.default_rng(3)
    set_drop_path_rng(model, rng)
    with torch.no_grad():
        got = model(X_DP)
        want = plain(X_DP)
    assert torch.equal(got, want)
    assert rng.random() == np.random.default_rng(3).random()  # the generator was not touched


def test_none_restores_torch_bernoulli() -> None:
    model = _train_model()
    rng = np.random.default_rng(8)
    set_drop_path_rng(model, rng)
    assert set_drop_path_rng(model, None) == 13
    assert all(m.rng is None for m in model.modules() if isinstance(m, DropPath))
    outs = []
    for seed in (1, 1, 2):
        torch.manual_seed(seed)
        with torch.no_grad():
            outs.append(model(X_DP))
    assert torch.equal(outs[0], outs[1])
    assert not torch.allclose(outs[0], outs[2])
    assert rng.random() == np.random.default_rng(8).random()


def test_torch_bernoulli_drop_path_statistics() -> None:
    torch.manual_seed(0)
    dp = DropPath(0.25).train()
    y = dp(torch.ones(20000, 1, dtype=torch.float64)).squeeze(1)
    assert set(y.unique().tolist()) == {0.0, 1 / 0.75}
    assert abs((y == 0).double().mean().item() - 0.25) < 0.015


# ------------------------------------------------------------------------------------------------------------
# Parameter and MAC counts


def _closed_form(
    spec: VariantSpec, k: int, size: int, in_chans: int, num_classes: int, stem_stride: int | None = None
) -> tuple[int, int]:
    """(params, MACs per image) from the architecture notes; square input of side ``size``."""
    d, hd = spec.dims, spec.head_dim
    s1, kk = {4: (2, 2), 2: (1, 2), 1: (1, 1)}[spec.stem_stride if stem_stride is None else stem_stride]
    c = d[0] // 2
    h1 = (size - 1) // s1 + 1  # conv3x3, stride s1, padding 1
    params = in_chans * c * 9 + 2 * c + c * c * 9 + 2 * c + c * d[0] * kk * kk
    macs = h1 * h1 * c * (in_chans * 9 + c * 9)
    r = h1 // kk  # conv kk x kk, stride kk
    macs += r * r * d[0] * c * kk * kk
    for i in range(len(d)):
        if i > 0:
            r //= 2
            params += 2 * d[i - 1] + d[i - 1] * d[i] * 4 + d[i]
            macs += r * r * d[i] * d[i - 1] * 4
        e = d[i]
        params += spec.depths[i] * (11 * e * e + e * k * k + 55 * e)
        macs += spec.depths[i] * r * r * (3 * e * e + e * k * k + 8 * e * e + 36 * e)
    params += d[-1] * hd + hd + 2 * hd + hd * num_classes + num_classes
    macs += r * r * d[-1] * hd + hd * num_classes
    return params, macs


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_params_and_macs_match_official(variant: str) -> None:
    model = _meta_model(variant)
    params, macs = count_params(model), count_macs(model, (3, 224, 224))
    official_params, official_macs = OFFICIAL_COUNTS[variant]
    assert abs(params / official_params - 1) < 0.01, params
    assert abs(macs / official_macs - 1) < 0.01, macs
    assert (params, macs) == _closed_form(VARIANTS[variant], VARIANTS[variant].kernel_size, 224, 3, 1000)


@pytest.mark.parametrize(("variant", "k", "size", "in_chans", "num_classes"), [("n", 5, 97, 1, 10), ("t", 9, 64, 4, 3)])
def test_counts_match_closed_form_off_default(variant: str, k: int, size: int, in_chans: int, num_classes: int) -> None:
    model = _meta_model(variant, kernel_size=k, in_chans=in_chans, num_classes=num_classes)
    got = count_params(model), count_macs(model, (in_chans, size, size))
    assert got == _closed_form(VARIANTS[variant], k, size, in_chans, num_classes)


@pytest.mark.parametrize(
    ("variant", "stem_stride", "size", "in_chans"),
    [("micro", 2, 28, 1), ("micro", 1, 32, 3), ("mini", 2, 32, 3), ("mini", 1, 28, 1), ("mini", 4, 64, 3)],
)
def test_small_config_counts_match_closed_form(variant: str, stem_stride: int, size: int, in_chans: int) -> None:
    model = _meta_model(variant, stem_stride=stem_stride, in_chans=in_chans, num_classes=10)
    got = count_params(model), count_macs(model, (in_chans, size, size))
    assert got == _closed_form(SMALL_VARIANTS[variant], 7, size, in_chans, 10, stem_stride)


def test_count_macs_real_forward_equals_meta_and_is_per_image() -> None:
    real = build_torch_conv2former("n", dtype=torch.float32, drop_path_rate=0.2).train()
    real.stages[0].eval()  # a mixed mode, to be restored as it was
    modes = [m.training for m in real.modules()]
    macs = count_macs(real, (1, 3, 64, 64))
    assert [m.training for m in real.modules()] == modes
    assert macs == count_macs(_meta_model("n"), (3, 64, 64))
    assert macs == count_macs(real, (3, 3, 64, 64))
    assert macs == _closed_form(VARIANTS["n"], 7, 64, 3, 1000)[1]
    with pytest.raises(ValueError, match="input_shape"):
        count_macs(real, (64, 64))


def test_without_torch_the_import_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "c2f_numpy.torch_reference")
    monkeypatch.setitem(sys.modules, "torch", None)  # what Python does for a package that is not installed
    with pytest.raises(ImportError, match=r"pip install torch==2\.13\.0"):
        importlib.import_module("c2f_numpy.torch_reference")


def test_importing_c2f_numpy_does_not_import_torch() -> None:
    code = "import sys, c2f_numpy, c2f_numpy.models, c2f_numpy.oracle; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
