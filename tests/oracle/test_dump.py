"""dump(): names, order, copies and gradients; save_dump / load_dump round trips; the walk order of compare."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy

from c2f_numpy.oracle import (
    ORDER_KEY,
    ORDER_SOURCE_KEY,
    DumpFileError,
    canonical_order,
    compare,
    dump,
    dump_metadata,
    load_dump,
    save_dump,
    walk_order,
)
from c2f_numpy.version import __version__

from . import reference_model, seeded_batch

Tensors = dict[str, np.ndarray]


@pytest.fixture(scope="module")
def model_and_dump() -> tuple[object, Tensors]:
    model = reference_model()
    x, dlogits = seeded_batch()
    return model, dump(model, x, dlogits)


def test_names_follow_the_official_paths_in_forward_order(model_and_dump: tuple) -> None:
    model, d = model_and_dump
    names = list(d)
    assert names[0] == "input"
    forward = names[: names.index("logits") + 1]
    # every module the issue lists (and every other module that runs), children before parents
    required = ["downsample_layers.0", "downsample_layers.3", "head", "pred"]
    for i, depth in enumerate(model.depths):
        for j in range(depth):
            b = f"stages.{i}.{j}"
            required += [b, f"{b}.attn", f"{b}.attn.v", f"{b}.mlp", f"{b}.mlp.fc1", f"{b}.mlp.pos", f"{b}.mlp.fc2"]
            required += [f"{b}.attn.att.{k}" for k in range(3)]
    for module in required:
        assert f"{module}.out" in forward, module
    expected_modules = [n for n, _ in model.named_modules() if n not in ("", "downsample_layers", "stages")]
    assert sorted(forward[1:-1]) == sorted(f"{n}.out" for n in expected_modules)
    pairs = [("stages.0.0.attn.att.2", "stages.0.0.attn.att"), ("stages.0.0.mlp", "stages.0.0"),
             ("stages.0.1", "stages.0"), ("stages.0", "downsample_layers.1"), ("head", "pred")]  # fmt: skip
    for child, parent in pairs:
        assert forward.index(f"{child}.out") < forward.index(f"{parent}.out")
    assert names[len(forward) : len(forward) + 2] == ["dlogits", "input.grad"]
    params = [k for k, _ in model.named_parameters()]
    assert names[len(forward) + 2 :] == [f"{k}.grad" for k in params]
    assert d["logits"].shape == (1, 10) and d["stages.0.0.mlp.fc1.out"].shape == (1, 256, 8, 12)
    assert all(a.flags.c_contiguous for a in d.values())


def test_the_entries_are_copies_and_the_gradients_those_of_this_pass(model_and_dump: tuple) -> None:
    model, d = model_and_dump
    before = {k: v.copy() for k, v in d.items()}
    x2, dl2 = seeded_batch(seed=5)
    again = dump(model, x2, dl2)  # runs the model again: the first dump must not change
    for k, v in before.items():
        np.testing.assert_array_equal(d[k], v)
    # zero_grad before the backward: dumping twice with the same input gives the same gradients, not twice them
    x, dl = seeded_batch()
    third = dump(model, x, dl)
    np.testing.assert_array_equal(third["pred.weight.grad"], d["pred.weight.grad"])
    assert not np.array_equal(again["logits"], d["logits"])
    assert not model.training  # the mode is left as it was


def test_mlp_pos_is_the_conv_output_before_its_gelu(model_and_dump: tuple) -> None:
    model, d = model_and_dump
    from c2f_numpy import ops

    h = d["stages.0.0.mlp.fc1.out"]
    h = ops.gelu_forward(h)[0]  # the MLP's GELU after fc1
    pos = model.stages[0][0].mlp.pos
    conv = ops.conv2d_forward(h, pos.weight.data, pos.bias.data, padding=1, groups=h.shape[1])[0]
    np.testing.assert_allclose(d["stages.0.0.mlp.pos.out"], conv, rtol=0, atol=1e-12)


def test_a_forward_only_dump_has_no_gradients() -> None:
    model = reference_model()
    d = dump(model, seeded_batch()[0])
    assert list(d)[-1] == "logits" and not any(k.endswith(".grad") for k in d) and "dlogits" not in d


def test_canonical_order_restores_the_dump_order(model_and_dump: tuple) -> None:
    _, d = model_and_dump
    names = list(d)
    assert canonical_order(sorted(names)) == names
    assert canonical_order(sorted([*names, "zzz.extra", "aaa.grad"]))[-1] == "aaa.grad"


def test_walk_order_puts_gradients_in_backward_order(model_and_dump: tuple) -> None:
    _, d = model_and_dump
    walk = walk_order(list(d))
    grads = [n for n in walk if n.endswith(".grad")]
    assert walk[: len(d) - len(grads)] == [n for n in d if not n.endswith(".grad")]
    assert grads[:4] == ["pred.weight.grad", "pred.bias.grad", "head.2.weight.grad", "head.2.bias.grad"]
    assert grads[-1] == "input.grad" and grads[-2] == "downsample_layers.0.0.weight.grad"
    block = [g.removeprefix("stages.3.1.") for g in grads if g.startswith("stages.3.1.")]
    assert block[0] == "layer_scale_2.grad" and block[1].startswith("mlp.fc2")
    assert block.index("layer_scale_1.grad") == block.index("mlp.norm.bias.grad") + 1
    # a gradients-only file: owners placed by the official order, same result
    assert walk_order(sorted(grads)) == grads


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_save_and_load_round_trip_with_order_and_metadata(model_and_dump: tuple, tmp_path: Path, suffix: str) -> None:
    model, d = model_and_dump
    meta = dump_metadata(model, variant="conv2former_n", seed=0)
    assert meta["library"] == f"c2f_numpy {__version__}" and meta["dtype"] == "float64" and meta["mode"] == "eval"
    assert meta["kernel_size"] == "7" and meta["variant"] == "conv2former_n" and meta["seed"] == "0"
    path = save_dump(tmp_path / f"d{suffix}", d, meta)
    loaded, meta2 = load_dump(path)
    assert list(loaded) == list(d)
    for k in d:
        assert loaded[k].dtype == d[k].dtype
        np.testing.assert_array_equal(loaded[k], d[k])
    assert meta2[ORDER_SOURCE_KEY] == "stored" and ORDER_KEY not in meta2
    assert {k: meta2[k] for k in meta} == meta
    assert compare(path, d).ok


def test_a_safetensors_file_without_order_is_read_in_the_official_order(model_and_dump: tuple, tmp_path: Path) -> None:
    _, d = model_and_dump
    path = tmp_path / "port.safetensors"
    safetensors.numpy.save_file(d, str(path))  # as a port would write it: no metadata
    loaded, meta = load_dump(path)
    assert list(loaded) == list(d) and meta[ORDER_SOURCE_KEY] == "canonical"


def test_save_dump_refuses_bad_paths_and_the_reserved_key(model_and_dump: tuple, tmp_path: Path) -> None:
    _, d = model_and_dump
    with pytest.raises(DumpFileError, match=r"\.npz or \.safetensors"):
        save_dump(tmp_path / "d.pth", d)
    with pytest.raises(ValueError, match="reserved"):
        save_dump(tmp_path / "d.npz", d, {ORDER_KEY: "[]"})
    assert not list(tmp_path.iterdir())
