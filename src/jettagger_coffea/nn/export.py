"""ONNX export with dynamic batch and particle axes (opset 17), checked against torch."""

from __future__ import annotations

import io
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..bundle import MODEL, STATE
from .model import Tagger


def example_inputs(
    model: Tagger, input_dims: dict[str, int], n: int = 2, length: int = 32, seed: int = 0
) -> list[torch.Tensor]:
    """Random jets (realistic-ish four-vectors) in the model's input layout."""
    g = torch.Generator().manual_seed(seed)
    length = max(length, model.min_length)
    out = []
    mask = torch.ones(n, 1, length)
    mask[:, :, length * 3 // 4 :] = 0
    for name, role in zip(model.input_names, model.roles):
        c = input_dims[name]
        if role == "mask":
            out.append(mask)
        elif role == "vectors":
            pt = torch.rand(n, 1, length, generator=g) * 50 + 1
            eta = torch.randn(n, 1, length, generator=g) * 0.3
            phi = torch.randn(n, 1, length, generator=g) * 0.3
            v = torch.cat(
                (pt * torch.cos(phi), pt * torch.sin(phi), pt * torch.sinh(eta), pt * torch.cosh(eta)), 1
            )
            out.append(v * mask)
        else:
            out.append(torch.randn(n, c, length, generator=g) * mask)
    return out


def export_onnx(model: Tagger, input_dims: dict[str, int], path: str | Path, opset: int = 17) -> Path:
    """Write ``model`` as ONNX with inputs named after the data-config groups and outputs as the model names
    them (:attr:`Tagger.output_names`: ``softmax``, then one per regression target, in its unit)."""
    model = model.eval()
    args = tuple(example_inputs(model, input_dims))
    dynamic_axes = {name: {0: "N", 2: "n_pf"} for name in model.input_names}
    dynamic_axes |= {name: {0: "N"} for name in model.output_names}
    path = Path(path)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            args,
            buf,  # type: ignore[arg-type]
            input_names=model.input_names,
            output_names=model.output_names,
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            dynamo=False,
        )
    path.write_bytes(buf.getvalue())
    return path


def save_model(model: Tagger, input_dims: dict[str, int], folder: str | Path) -> tuple[Path, Path]:
    """The files of a bundle that come from a torch model, in ``folder`` under the bundle's names: the ONNX
    export and the weights (torch names the archive inside after the file: saved elsewhere, the bytes
    differ). For :func:`jettagger_coffea.bundle.write_bundle`."""
    folder = Path(folder)
    onnx = export_onnx(model, input_dims, folder / MODEL)
    torch.save(model.state_dict(), folder / STATE)
    return onnx, folder / STATE


def write_torch_bundle(
    path: str | Path, model: Tagger, input_dims: dict[str, int], *, config: Any, card: dict[str, Any]
) -> Any:
    """A torch model as a bundle: :func:`save_model` into a temporary folder, then the one bundle writer
    with the network's traits (``min_length``, ``pairwise``). Returns the loaded bundle."""
    from ..bundle import write_bundle

    with tempfile.TemporaryDirectory() as tmp:
        onnx, state = save_model(model.eval(), input_dims, tmp)
        return write_bundle(
            path,
            onnx=onnx,
            config=config,
            card=card,
            state=state,
            min_length=model.min_length,
            pairwise=model.pairwise,
        )


def max_difference(
    model: Tagger, input_dims: dict[str, int], onnx_path: str | Path, lengths=(20, 37, 64, 128), n: int = 5
) -> float:
    """Largest |onnxruntime - torch| over random jets of several lengths, over every output."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}
    worst = 0.0
    for i, length in enumerate(lengths):
        xs = example_inputs(model, input_dims, n=n, length=length, seed=i + 1)
        with torch.no_grad():
            out = model(*xs)
        refs = [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]
        gots = sess.run(
            model.output_names, {k: x.numpy() for k, x in zip(model.input_names, xs) if k in names}
        )
        for ref, got in zip(refs, gots):
            if not np.array_equal(np.isnan(ref), np.isnan(got)):
                return float("inf")
            finite = ~np.isnan(ref)
            if finite.any():
                worst = max(worst, float(np.abs(ref[finite] - got[finite]).max()))
    return worst
