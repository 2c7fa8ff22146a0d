"""ONNX export with dynamic batch and particle axes (opset 17), checked against torch."""

from __future__ import annotations

import copy
import io
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..bundle import MODEL, STATE
from . import particlenet as pn
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


# -- ParticleNet's 1x1 convolutions as MatMul ------------------------------------------------------------
def _affine(bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """An inference BatchNorm as scale and shift."""
    assert isinstance(bn, nn.modules.batchnorm._BatchNorm)
    assert bn.running_var is not None and bn.running_mean is not None
    with torch.no_grad():
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        return scale, bn.bias - bn.running_mean * scale


def _linear(weight: torch.Tensor, bn: nn.Module | None = None, bias: bool = True) -> nn.Linear:
    """A 1x1 convolution's (out, in) weight with the BatchNorm after it folded in, as one channels-last
    Linear (ONNX MatMul + Add: the weight is the right operand, quantised per output channel)."""
    scale, shift = (
        _affine(bn) if bn is not None else (torch.ones(weight.shape[0]), torch.zeros(weight.shape[0]))
    )
    lin = nn.Linear(weight.shape[1], weight.shape[0], bias=bias)
    with torch.no_grad():
        lin.weight.copy_(weight * scale[:, None])
        if lin.bias is not None:
            lin.bias.copy_(shift)
    return lin


class Knn(nn.Module):
    """:func:`.particlenet.knn` on channels-last (N, P, C) coordinates. Its own module so that its nodes
    are named ``.../knn/...``: the int8 quantiser leaves the distances in fp32 (quantised, they move
    neighbours)."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inner = -2 * torch.matmul(x, x.transpose(1, 2))
        xx = x.square().sum(dim=-1, keepdim=True)
        dist = (xx + inner + xx.transpose(1, 2)).clamp(min=0)
        return dist.topk(k=self.k + 1, dim=-1, largest=False, sorted=True)[1][:, :, 1:]


class MatMulEdgeConv(nn.Module):
    """:class:`.particlenet.EdgeConvBlock` channels-last, BatchNorms folded: the first layer per particle
    before the gather (as its export), then MatMul + Add + ReLU per layer, mean over neighbours."""

    def __init__(self, block: pn.EdgeConvBlock) -> None:
        super().__init__()
        self.knn = Knn(block.k)
        w = block.convs[0].weight[:, :, 0, 0]  # type: ignore[index]
        c = w.shape[1] // 2
        self.centre = _linear(w[:, :c] - w[:, c:], block.bns[0])
        self.neighbour = _linear(_affine(block.bns[0])[0][:, None] * w[:, c:], None, bias=False)
        self.layers = nn.ModuleList(
            _linear(conv.weight[:, :, 0, 0], bn)  # type: ignore[index]
            for conv, bn in zip(list(block.convs)[1:], list(block.bns)[1:])
        )
        self.sc = None if block.sc is None else _linear(block.sc.weight[:, :, 0], block.sc_bn)

    def forward(self, points: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        idx = self.knn(points)
        n, p, k = idx.shape
        y = self.neighbour(features)
        base = torch.arange(n, device=y.device).view(-1, 1, 1) * p
        gathered = y.reshape(n * p, -1)[(idx + base).reshape(-1)].view(n, p, k, -1)
        x = torch.relu(self.centre(features).unsqueeze(2) + gathered)
        for layer in self.layers:
            x = torch.relu(layer(x))
        sc = features if self.sc is None else self.sc(features)
        return torch.relu(sc + x.mean(dim=2))


class MatMulParticleNet(nn.Module):
    """:class:`.particlenet.ParticleNet` at inference, channels-last between input and head: every 1x1
    convolution a MatMul (onnxruntime's int8 MatMul kernels use VNNI; its ConvInteger was 5.4x slower),
    the same scores to float rounding (:func:`matmul_form`)."""

    def __init__(self, net: pn.ParticleNet) -> None:
        super().__init__()
        self.net = net  # the SV embeddings and the head, unchanged
        self.convs = nn.ModuleList(MatMulEdgeConv(b) for b in net.edge_convs)  # type: ignore[arg-type]
        self.fts = _affine(net.bn_fts) if net.use_fts_bn else None
        self.uses = net.uses
        self.pairwise = False

    def forward(self, points, features, mask, sv_points=None, sv_features=None, sv_mask=None):
        net = self.net
        if net.sv:
            features = torch.cat((net.pf_conv(features) * mask, net.sv_conv(sv_features) * sv_mask), dim=2)
            points, mask = torch.cat((points, sv_points), dim=2), torch.cat((mask, sv_mask), dim=2)
        pad = (mask == 0).transpose(1, 2)
        counts = (~pad).float().sum(dim=1).clamp(min=1)
        fts = features.transpose(1, 2)
        if self.fts is not None:
            fts = (fts * self.fts[0] + self.fts[1]).masked_fill(pad, 0)
        for i, conv in enumerate(self.convs):
            pts = (points.transpose(1, 2) if i == 0 else fts).masked_fill(pad, 1e9)
            fts = conv(pts, fts).masked_fill(pad, 0)
        x = fts.sum(dim=1) / counts if net.use_counts else fts.mean(dim=1)
        return net.fc(x)


_FIRST_LAYER = pn.EdgeConvBlock.first_layer


def matmul_form(model: Tagger) -> Tagger:
    """``model`` as exported: a copy whose ParticleNet (if it is one) is :class:`MatMulParticleNet`;
    other networks unchanged, and so are a ParticleNet whose ``EdgeConvBlock.first_layer`` the caller
    replaced (the weaver form of benchmarks/_models.py: the Conv graph it asks for) and one with the
    fusion block (CMS's, converted: the Conv form, per particle before the gather all the same)."""
    net = model.mod
    plain = isinstance(net, pn.ParticleNet) and net.fusion_block is None
    if not plain or pn.EdgeConvBlock.first_layer is not _FIRST_LAYER:
        return model
    out = copy.deepcopy(model)
    assert isinstance(out.mod, pn.ParticleNet)
    out.mod = MatMulParticleNet(out.mod)
    return out.eval()


def export_onnx(
    model: Tagger, input_dims: dict[str, int], path: str | Path, opset: int = 17, matmul: bool = True
) -> Path:
    """Write ``model`` as ONNX with inputs named after the data-config groups and outputs as the model names
    them (:attr:`Tagger.output_names`: ``softmax``, then one per regression target, in its unit).
    ``matmul``: ParticleNet's 1x1 convolutions as MatMul (:func:`matmul_form`); False: as Conv."""
    model = model.eval()
    model = matmul_form(model) if matmul else model
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
