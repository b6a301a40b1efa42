"""The same dump from a PyTorch model with the official module structure, via forward hooks (torch optional).

Naming policy, chosen so that a dump of c2f_numpy and a dump of the official PyTorch model with the same
weights have the same names and compare all OK:

* ``input``, ``logits``, ``dlogits``, ``input.grad`` and ``<parameter key>.grad`` as in :func:`~.dump.dump`.
* ``<name>.out`` for every named module whose forward runs **exactly once** per forward pass, in the order the
  hooks fire (children before parents, the order c2f_numpy reports in).
* A module whose forward runs **more than once** has no single output. In the official code these are the
  MLP's one ``act`` GELU (applied after ``fc1`` and again after ``pos``) and a block's one ``drop_path``
  (``nn.Identity`` when the rate is 0, else DropPath; applied to both branches). c2f_numpy reports neither,
  so by default (``repeated="skip"``) they get no entry and no comparison can blame them. With
  ``repeated="record"`` each call is kept as ``<name>.call<k>.out`` (k = 1, 2, ...): extra keys that a
  comparison with a c2f_numpy dump lists as "extra in B" and never as a divergence.
* Modules that never run (the ``downsample_layers`` / ``stages`` ModuleLists) and the model itself (its output
  is ``logits``) have no ``.out`` entry. Hook outputs that are not tensors are ignored.

The official ``mlp.pos`` hook sees the depthwise conv's output (before the GELU and the residual): so does
c2f_numpy's ``mlp.pos.out``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .dump import OutputRecorder, Repeated

__all__ = ["torch_dump"]


def _to_numpy(tensor: Any) -> np.ndarray:
    import torch

    t = tensor.detach().cpu()
    if t.dtype == torch.bfloat16:  # NumPy has no bfloat16; widening to float32 is exact
        t = t.float()
    return np.array(t.numpy(), copy=True)


def torch_dump(
    torch_model: Any,
    x: Any,
    dlogits: Any = None,
    *,
    repeated: Repeated = "skip",
) -> dict[str, np.ndarray]:
    """Every intermediate tensor of ``torch_model(x)`` (and, given ``dlogits``, its gradients), named as ours.

    ``torch_model`` is an ``nn.Module`` with the official structure (e.g. the official Conv2Former, or a port
    with the same attribute names); ``x`` and ``dlogits`` are arrays or tensors, cast to the dtype and device
    of the model's first parameter (the cast input is what ``input`` holds). The model runs in the mode it is
    in (call ``.eval()`` for an inference dump). Gradients come from ``torch.autograd.grad``: the parameters'
    ``.grad`` fields are not touched; parameters with ``requires_grad=False`` have no ``.grad`` entry, and a
    parameter that the forward does not use gets zeros (as c2f_numpy's ``grads()``). See the module docstring
    for the naming policy (``repeated``: "skip" or "record" modules that run more than once).
    """
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is a test dependency
        raise ImportError("torch_dump needs PyTorch (pip install torch); c2f_numpy itself does not") from exc

    if repeated not in ("skip", "record"):
        raise ValueError(f"repeated must be 'skip' or 'record', got {repeated!r}")
    params = list(torch_model.named_parameters())
    ref = params[0][1] if params else torch.empty(0, dtype=torch.float64)
    xt = torch.as_tensor(np.asarray(x) if isinstance(x, np.ndarray) else x)
    xt = xt.detach().to(dtype=ref.dtype, device=ref.device).clone()
    want_grad = dlogits is not None
    if want_grad:
        xt.requires_grad_(True)

    recorder = OutputRecorder()

    def make_hook(name: str) -> Any:
        def hook(module: Any, inputs: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor):
                recorder(name, _to_numpy(output))

        return hook

    handles = [m.register_forward_hook(make_hook(name)) for name, m in torch_model.named_modules() if name]
    try:
        with torch.set_grad_enabled(want_grad):
            logits = torch_model(xt)
    finally:
        for handle in handles:
            handle.remove()

    out: dict[str, np.ndarray] = {"input": _to_numpy(xt)}
    out.update(recorder.tensors(repeated))
    out["logits"] = _to_numpy(logits)
    if want_grad:
        dl = torch.as_tensor(np.asarray(dlogits) if isinstance(dlogits, np.ndarray) else dlogits)
        dl = dl.detach().to(dtype=logits.dtype, device=logits.device)
        trainable = [(key, p) for key, p in params if p.requires_grad]
        grads = torch.autograd.grad(logits, [xt] + [p for _, p in trainable], grad_outputs=dl, allow_unused=True)
        out["dlogits"] = _to_numpy(dl)
        out["input.grad"] = _to_numpy(grads[0]) if grads[0] is not None else np.zeros_like(out["input"])
        for (key, p), g in zip(trainable, grads[1:], strict=True):
            out[f"{key}.grad"] = _to_numpy(g if g is not None else torch.zeros_like(p))
    return out
