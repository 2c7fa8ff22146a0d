"""An exported ParticleNet ONNX (weaver's export, CMS's ParticleNet-AK8/AK4 files) converted into our
:class:`~jettagger_coffea.nn.particlenet.ParticleNet`: its structure read from the graph (EdgeConv blocks
between the TopK nodes, channels from the Conv weights, the head from the Gemm nodes), its weights from the
initialisers, and the result checked against the original graph in onnxruntime before it is used. Our
export then applies each block's first layer per particle before the neighbour gather (k times fewer
FLOPs than the original's concatenated edge features).

Every normalisation is read as a per-channel affine map ``scale * x + shift``, whatever the exporter made
of it: a BatchNormalization node, a Mul + Add of constants, or folded into the Conv's weights and bias
(torch >= 1.7 folds Conv + BatchNorm); it is loaded into our BatchNorm layers as their weight and bias
over unit variance. Needs the ``train`` extra (torch) and ``onnx``.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ._errors import JetTaggerError
from .dataconfig import CLASS_OUTPUT
from .nn.model import Tagger
from .nn.particlenet import ParticleNet

#: largest |converted - original| over the generated check jets for a conversion to be used
TOLERANCE = 1e-4
#: the generated check jets: lengths (each with a quarter padding), jets per length, seeds
CHECK_LENGTHS = (20, 37, 64, 128)
CHECK_JETS = 8
#: the fraction of check jets that may differ by more than TOLERANCE (neighbours at near-ties)
MAX_FLIPPED = 0.1


@dataclass
class Layer:
    """A 1x1 convolution or linear layer (weight as torch lays it out) and the affine map after it."""

    weight: np.ndarray
    scale: np.ndarray
    shift: np.ndarray

    @property
    def channels(self) -> tuple[int, int]:
        return int(self.weight.shape[0]), int(self.weight.shape[1])


@dataclass
class Structure:
    """What the graph holds, in our network's terms."""

    blocks: list[tuple[int, list[Layer], Layer | None]] = field(default_factory=list)  # k, convs, shortcut
    embeds: dict[str, tuple[Layer, Layer]] = field(default_factory=dict)  # features role -> (input BN, conv)
    fts_bn: Layer | None = None
    fusion: Layer | None = None
    fc: list[Layer] = field(default_factory=list)
    use_counts: bool = True
    softmax: bool = True
    output: str = CLASS_OUTPUT


class _Graph:
    """The nodes of an ONNX graph with its constants (initialisers and Constant nodes) by name."""

    def __init__(self, path: Path) -> None:
        import onnx
        from onnx import numpy_helper

        self.where = str(path)
        try:
            model = onnx.load(str(path))
        except Exception as err:  # noqa: BLE001 - any parse failure is the file's fault
            raise JetTaggerError(f"{path}: not a readable ONNX file ({type(err).__name__})") from None
        g = model.graph
        self.consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
        for n in g.node:
            if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
                self.consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
        self.nodes = [n for n in g.node if n.op_type != "Constant"]
        self.order = {id(n): i for i, n in enumerate(self.nodes)}
        self.producer = {o: n for n in self.nodes for o in n.output}
        self.consumers: dict[str, list[Any]] = defaultdict(list)
        for n in self.nodes:
            for x in n.input:
                self.consumers[x].append(n)
        self.inputs = [i.name for i in g.input if i.name not in self.consts]
        self.outputs = [o.name for o in g.output]

    def fail(self, what: str) -> JetTaggerError:
        return JetTaggerError(f"{self.where}: not a ParticleNet the converter can map: {what}")

    @staticmethod
    def attr(node: Any, name: str, default: Any = None) -> Any:
        import onnx

        for a in node.attribute:
            if a.name == name:
                return onnx.helper.get_attribute_value(a)
        return default

    def only_consumer(self, tensor: str, skip: tuple[str, ...] = ()) -> Any:
        """The one node reading ``tensor``, past element-wise ``skip`` ops (a mask's Mul); None if not one."""
        users = self.consumers.get(tensor, [])
        while len(users) == 1 and users[0].op_type in skip:
            users = self.consumers.get(users[0].output[0], [])
        return users[0] if len(users) == 1 else None

    def const(self, name: str) -> np.ndarray | None:
        return self.consts.get(name)

    def affine_after(self, tensor: str, channels: int) -> tuple[np.ndarray, np.ndarray, str]:
        """The per-channel ``scale * x + shift`` that follows ``tensor`` (a BatchNormalization node, or a
        Mul then an Add of constants; none: identity), and the tensor it gives."""
        one, zero = np.ones(channels), np.zeros(channels)
        user = self.only_consumer(tensor)
        if user is not None and user.op_type == "BatchNormalization":
            params = [self.const(x) for x in user.input[1:5]]
            if any(p is None for p in params):
                raise self.fail(
                    f"BatchNormalization {user.name or user.output[0]} has non-constant parameters"
                )
            gamma, beta, mean, var = (np.asarray(p) for p in params)
            scale = gamma.astype(np.float64) / np.sqrt(
                var.astype(np.float64) + self.attr(user, "epsilon", 1e-5)
            )
            return scale, beta - mean * scale, user.output[0]
        if user is not None and user.op_type == "Mul":
            scale_c = self._per_channel(user, channels)
            after = self.only_consumer(user.output[0])
            if scale_c is not None and after is not None and after.op_type == "Add":
                shift_c = self._per_channel(after, channels)
                if shift_c is not None:
                    return scale_c, shift_c, after.output[0]
        return one, zero, tensor

    def _per_channel(self, node: Any, channels: int) -> np.ndarray | None:
        """The constant operand of an element-wise node, as one value per channel (None if not that)."""
        for x in node.input:
            c = self.const(x)
            if c is not None and c.size == channels and (c.ndim <= 1 or c.shape[0] in (1, channels)):
                return c.reshape(-1).astype(np.float64)
        return None

    def conv(self, node: Any) -> Layer:
        """A 1x1 Conv node and the normalisation after it, its bias folded into the shift."""
        w = self.const(node.input[1])
        if (
            w is None
            or w.ndim not in (3, 4)
            or any(s != 1 for s in w.shape[2:])
            or self.attr(node, "group", 1) != 1
        ):
            raise self.fail(
                f"Conv {node.name or node.output[0]} is not a 1x1 convolution of constant weights"
            )
        bias = self.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        scale, shift, _ = self.affine_after(node.output[0], w.shape[0])
        if bias is not None:
            shift = shift + scale * bias
        return Layer(w.reshape(w.shape[0], w.shape[1]), scale, shift)

    def linear(self, node: Any) -> Layer:
        """A Gemm node as torch's Linear (out, in), alpha and beta folded in."""
        w, b = self.const(node.input[1]), self.const(node.input[2]) if len(node.input) > 2 else None
        if w is None or w.ndim != 2 or self.attr(node, "transA", 0):
            raise self.fail(f"Gemm {node.name or node.output[0]} is not a linear layer of constant weights")
        w = w * self.attr(node, "alpha", 1.0)
        w = w if self.attr(node, "transB", 0) else w.T
        bias = np.zeros(w.shape[0]) if b is None else b.reshape(-1) * self.attr(node, "beta", 1.0)
        return Layer(w, np.ones(w.shape[0]), bias)


def read_structure(path: str | Path, roles: dict[str, str]) -> Structure:
    """ParticleNet's layers in the graph at ``path``, its inputs in ``roles`` (input name -> role); a
    graph of another shape is refused in one line naming the file and what does not fit."""
    g = _Graph(Path(path))
    unknown = [x for x in g.inputs if x not in roles]
    if unknown:
        raise g.fail(f"inputs {unknown} are not among the data config's {list(roles)}")
    needed = {"points", "features", "mask"} | (
        {"sv_points", "sv_mask"} if "sv_features" in roles.values() else set()
    )
    absent = sorted(needed - {roles[x] for x in g.inputs})
    if absent:
        raise g.fail(f"no input in the role(s) {absent} (ParticleNet's inputs)")
    if len(g.outputs) != 1:
        raise g.fail(f"{len(g.outputs)} outputs ({g.outputs}); ParticleNet has one")
    s = Structure(output=g.outputs[0])
    by_role = {r: name for name, r in roles.items()}
    embed_convs: set[int] = set()
    for role in ("features", "sv_features") if "sv_features" in by_role else ():
        bn = g.only_consumer(by_role[role], skip=("Mul",))
        if bn is None or bn.op_type != "BatchNormalization":
            raise g.fail(f"input {by_role[role]} does not start with a BatchNorm (weaver's FeatureConv)")
        scale, shift, out = g.affine_after(bn.input[0], len(g.const(bn.input[1])))  # type: ignore[arg-type]
        conv = g.only_consumer(out)
        if conv is None or conv.op_type != "Conv":
            raise g.fail(f"input {by_role[role]}: no 1x1 convolution after its BatchNorm")
        embed_convs.add(id(conv))
        s.embeds[role] = (Layer(np.eye(len(scale)), scale, shift), g.conv(conv))
    topks = [n for n in g.nodes if n.op_type == "TopK"]
    if not topks:
        raise g.fail("no TopK node (no k-nearest-neighbour graph)")
    _read_blocks(g, s, topks, embed_convs)
    _read_fts_bn(g, s, topks[0], embed_convs)
    _read_head(g, s, topks[-1])
    return s


def _read_blocks(g: _Graph, s: Structure, topks: list, embed_convs: set[int]) -> None:
    """The EdgeConv blocks: each TopK's k (it takes k + 1, the point itself first), the 2-d convolutions
    up to the next TopK, and a shortcut 1-d convolution where the block changes the width."""
    bounds = [g.order[id(t)] for t in topks] + [len(g.nodes)]
    for i, t in enumerate(topks):
        k = g.const(t.input[1])
        if k is None:
            raise g.fail(f"TopK {t.name or t.output[0]} has no constant k")
        segment = g.nodes[bounds[i] + 1 : bounds[i + 1]]
        convs = [n for n in segment if n.op_type == "Conv" and id(n) not in embed_convs]
        ndim = {id(n): getattr(g.const(n.input[1]), "ndim", 0) for n in convs}
        edge_nodes = [n for n in convs if ndim[id(n)] == 4]
        ones = [n for n in convs if ndim[id(n)] == 3]
        first = g.producer.get(edge_nodes[0].input[0]) if edge_nodes else None
        if first is None or first.op_type != "Concat" or g.attr(first, "axis") != 1:
            raise g.fail(
                f"block {i}: no convolution of the concatenated edge features [x_i, x_j - x_i] after its "
                "TopK (a graph already in our export's form is used as it is, without --convert)"
            )
        edge = [g.conv(n) for n in edge_nodes]
        c_in, c_out = edge[0].channels[1] // 2, edge[-1].channels[0]
        sc = [g.conv(n) for n in ones if g.conv(n).channels == (c_out, c_in)]
        if c_in != c_out and len(sc) != 1:
            raise g.fail(f"block {i}: {c_in} -> {c_out} channels but {len(sc)} shortcut convolutions")
        s.blocks.append((int(k.reshape(-1)[0]) - 1, edge, sc[0] if c_in != c_out else None))
        rest = [n for n in ones if g.conv(n).channels != (c_out, c_in)]
        if rest and i == len(topks) - 1:
            s.fusion = g.conv(rest[0])
        if len(rest) > (i == len(topks) - 1):
            raise g.fail(f"block {i}: {len(rest)} convolution(s) that are neither EdgeConv nor shortcut")
    widths = [b[1][-1].channels[0] for b in s.blocks]
    if s.fusion is not None and s.fusion.channels[1] != sum(widths):
        raise g.fail(f"a fusion convolution of {s.fusion.channels[1]} inputs, not the blocks' {sum(widths)}")
    for i in range(1, len(s.blocks)):
        if s.blocks[i][1][0].channels[1] != 2 * widths[i - 1]:
            raise g.fail(
                f"block {i} takes {s.blocks[i][1][0].channels[1] // 2} channels, "
                f"block {i - 1} gives {widths[i - 1]}"
            )


def _read_fts_bn(g: _Graph, s: Structure, first_topk: Any, embed_convs: set[int]) -> None:
    """A BatchNorm on the point cloud's features before the first block (weaver's ``bn_fts``): one not
    after a convolution nor opening an embedding."""
    loose = [
        n
        for n in g.nodes[: g.order[id(first_topk)]]
        if n.op_type == "BatchNormalization"
        and not (n.input[0] in g.producer and g.producer[n.input[0]].op_type == "Conv")
        and id(g.only_consumer(n.output[0])) not in embed_convs
    ]
    if len(loose) > 1:
        raise g.fail(f"{len(loose)} BatchNorms on the features before the first EdgeConv block")
    if loose:
        c = len(g.const(loose[0].input[1]))  # type: ignore[arg-type]
        scale, shift, _ = g.affine_after(loose[0].input[0], c)
        s.fts_bn = Layer(np.eye(c), scale, shift)


def _read_head(g: _Graph, s: Structure, last_topk: Any) -> None:
    """The pooling (sum / counts, or mean), the fully connected layers (ReLU between) and the softmax."""
    gemms = [n for n in g.nodes[g.order[id(last_topk)] :] if n.op_type == "Gemm"]
    if not gemms:
        raise g.fail("no fully connected (Gemm) layer after the last EdgeConv block")
    pool = g.producer.get(gemms[0].input[0])
    if pool is None or pool.op_type not in ("Div", "ReduceMean"):
        raise g.fail(f"the head reads {pool.op_type if pool else 'an input'}, not the pooled features")
    s.use_counts = pool.op_type == "Div"
    s.fc = [g.linear(n) for n in gemms]
    for a, b in zip(gemms, gemms[1:]):
        act = g.only_consumer(a.output[0])
        if act is None or act.op_type != "Relu" or act.output[0] != b.input[0]:
            raise g.fail("fully connected layers not joined by a ReLU")
    after = g.nodes[g.order[id(gemms[-1])] + 1 :]
    s.softmax = any(n.op_type == "Softmax" for n in after)
    if not s.softmax and s.fc[-1].channels[0] != 1:
        raise g.fail(
            f"a head of {s.fc[-1].channels[0]} outputs without a softmax (one regression is supported)"
        )
    others = sorted({n.op_type for n in after} & {"Conv", "Gemm", "MatMul", "Softmax", "Sigmoid", "Tanh"})
    if others != (["Softmax"] if s.softmax else []):
        raise g.fail(f"after the head's last layer: {others} (a softmax or nothing is mapped)")


def build_network(s: Structure, input_dims: int, sv_input_dims: int | None) -> ParticleNet:
    """Our ParticleNet (with the fusion block where the graph has one) carrying the graph's weights."""
    options: dict[str, Any] = {
        "conv_params": [(k, tuple(c.channels[0] for c in convs)) for k, convs, _ in s.blocks],
        "fc_params": [(f.channels[0], 0.0) for f in s.fc[:-1]],  # dropout: not in an inference graph
        "use_fts_bn": s.fts_bn is not None,
        "use_counts": s.use_counts,
    }
    if s.embeds:
        options |= {"sv_input_dims": sv_input_dims, "sv_embed": s.embeds["features"][1].channels[0]}
    n_out = s.fc[-1].channels[0]
    if s.fusion is not None:
        options["fusion"] = s.fusion.channels[0]
    net = ParticleNet(input_dims, n_out, **options)
    with torch.no_grad():
        for role, name in (("features", "pf_conv"), ("sv_features", "sv_conv")):
            if role in s.embeds:
                seq = getattr(net, name)
                _load_norm(seq[0], s.embeds[role][0])
                _load(seq[1], seq[2], s.embeds[role][1])
        if s.fts_bn is not None:
            _load_norm(net.bn_fts, s.fts_bn)
        for block, (_, convs, sc) in zip(net.edge_convs, s.blocks):
            for conv, bn, layer in zip(block.convs, block.bns, convs):  # type: ignore[arg-type]
                _load(conv, bn, layer)
            if sc is not None:
                _load(block.sc, block.sc_bn, sc)
        if s.fusion is not None:
            fusion: Any = net.fusion_block
            _load(fusion[0], fusion[1], s.fusion)
        linears = [m for m in net.fc.modules() if isinstance(m, nn.Linear)]
        for lin, layer in zip(linears, s.fc):
            lin.weight.copy_(torch.from_numpy(layer.weight.astype(np.float32)))
            lin.bias.copy_(torch.from_numpy(layer.shift.astype(np.float32)))
    return net.eval()


def _load(conv: Any, bn: Any, layer: Layer) -> None:
    w = torch.from_numpy(layer.weight.astype(np.float32))
    conv.weight.copy_(w.view(conv.weight.shape))
    _load_norm(bn, layer)


def _load_norm(bn: Any, layer: Layer) -> None:
    """``scale * x + shift`` as a BatchNorm: that weight and bias over mean 0 and variance 1 - eps."""
    assert bn.weight.shape[0] == len(layer.scale), (bn, len(layer.scale))
    bn.weight.copy_(torch.from_numpy(layer.scale.astype(np.float32)))
    bn.bias.copy_(torch.from_numpy(layer.shift.astype(np.float32)))
    bn.running_mean.zero_()
    bn.running_var.fill_(1.0 - bn.eps)


def sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def convert_particlenet(
    onnx: str | Path, input_names: list[str], roles: list[str], input_dims: dict[str, int]
) -> Tagger:
    """The ParticleNet ONNX at ``onnx`` (inputs ``input_names`` in ``roles``, of ``input_dims`` channels)
    as our :class:`Tagger`, checked against the graph (:func:`differences`, :func:`check`) before it is
    returned."""
    role_of = dict(zip(input_names, roles))
    s = read_structure(onnx, role_of)
    by_role = {r: n for n, r in role_of.items()}
    sv_dims = input_dims[by_role["sv_features"]] if "sv_features" in by_role else None
    net = build_network(s, input_dims[by_role["features"]], sv_dims)
    n_out = s.fc[-1].channels[0]
    if s.softmax:
        tagger = Tagger(net, input_names, roles, net.min_length, n_classes=n_out)
    else:
        tagger = Tagger(net, input_names, roles, net.min_length, n_classes=0, targets=[(s.output, 0.0, 1.0)])
    check(onnx, differences(onnx, tagger, input_dims, lengths=CHECK_LENGTHS[:1]))  # torch: slow, so short
    return tagger.eval()


def check_inputs(
    tagger: Tagger, input_dims: dict[str, int], lengths: tuple[int, ...] = CHECK_LENGTHS, seed: int = 100
) -> list[dict[str, np.ndarray]]:
    """The generated jets of the checks: :data:`CHECK_JETS` jets at each of ``lengths``
    particles (an eighth of that in SVs), a quarter of each padded; coordinates spread as in a jet
    (0.3 in eta and phi), features standard normal, zero where padded."""
    rng = np.random.default_rng(seed)
    feeds = []
    for length in lengths:
        feed = {}
        for name, role in zip(tagger.input_names, tagger.roles):
            n = length if not role.startswith("sv_") else max(2, length // 8)
            mask = np.ones((CHECK_JETS, 1, n), np.float32)
            mask[:, :, n - n // 4 :] = 0
            if role.endswith("mask"):
                feed[name] = mask
            else:
                width = 0.3 if role.endswith("points") else 1.0
                x = rng.normal(0, width, (CHECK_JETS, input_dims[name], n)).astype(np.float32)
                feed[name] = x * mask
        feeds.append(feed)
    return feeds


def differences(
    original: str | Path,
    tagger: Tagger,
    input_dims: dict[str, int],
    exported: str | Path | None = None,
    lengths: tuple[int, ...] = CHECK_LENGTHS,
) -> np.ndarray:
    """Per generated jet (:func:`check_inputs`), the largest |converted - original graph| over its
    outputs (relative where the original's output exceeds 1, as a regressed mass): ``tagger`` in
    torch, or its ``exported`` ONNX in onnxruntime (NaN: infinite)."""
    import onnxruntime as ort

    def session(path: str | Path) -> Any:
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def run(sess: Any, feed: dict[str, np.ndarray]) -> np.ndarray:
        return sess.run(None, {i.name: feed[i.name] for i in sess.get_inputs()})[0]

    ref, got = session(original), (session(exported) if exported is not None else None)
    out = []
    for feed in check_inputs(tagger, input_dims, lengths):
        want = run(ref, feed)
        if got is not None:
            have = run(got, feed)
        else:
            with torch.no_grad():
                res = tagger(*(torch.from_numpy(feed[k]) for k in tagger.input_names))
            have = (res[0] if isinstance(res, tuple) else res).numpy()
        diff = np.abs(have.astype(np.float64) - want) / np.maximum(1, np.abs(want))  # a mass: relative
        diff = diff.reshape(len(want), -1)
        out.append(np.where(np.isfinite(diff).all(axis=1), diff.max(axis=1), np.inf))
    return np.concatenate(out)


def check(where: str | Path, diffs: np.ndarray) -> dict[str, Any]:
    """The check's summary for the card; a conversion that differs on more than :data:`MAX_FLIPPED` of
    the jets is refused (a mis-read network differs on all of them; a few may differ where two
    neighbours are at nearly the same distance and rounding picks the other)."""
    over = int((diffs > TOLERANCE).sum())
    if over > MAX_FLIPPED * len(diffs):
        raise JetTaggerError(
            f"{where}: converted ParticleNet differs from the graph by more than {TOLERANCE:g} on {over} "
            f"of {len(diffs)} generated jets (max {diffs.max():.2g}); not a ParticleNet the converter maps"
        )
    return {
        "jets": len(diffs),
        "particles": list(CHECK_LENGTHS),
        "max_abs_diff": float(diffs.max()),
        "median_abs_diff": float(np.median(diffs)),
        f"jets_over_{TOLERANCE:g}": over,
    }


def export_converted(
    tagger: Tagger, input_dims: dict[str, int], original: str | Path, path: str | Path
) -> Path:
    """Our export of the converted network, its inputs' and output's names and axes as the original's
    (CMSSW's name for the output, ``n_sv`` for the SV axis), so that the same bundle card fits it."""
    import onnx

    from .nn.export import export_onnx

    with tempfile.TemporaryDirectory() as tmp:
        exported = onnx.load(str(export_onnx(tagger, input_dims, Path(tmp) / "model.onnx")))
    ref = onnx.load(str(original)).graph
    g = exported.graph
    shapes = {i.name: i.type.tensor_type.shape for i in list(ref.input) + list(ref.output)}
    for value in g.input:
        if value.name in shapes:
            value.type.tensor_type.shape.CopyFrom(shapes[value.name])
    (out,), (want,) = g.output, ref.output
    if out.name != want.name:
        for node in g.node:
            node.output[:] = [want.name if o == out.name else o for o in node.output]
        out.name = want.name
    out.type.tensor_type.shape.CopyFrom(shapes[want.name])
    onnx.checker.check_model(exported)
    Path(path).write_bytes(exported.SerializeToString())
    return Path(path)


def registry_options(net: ParticleNet) -> dict[str, Any] | None:
    """The options that rebuild ``net`` from the network registry (``particlenet``), for a bundle's card
    and its model.pt."""
    options: dict[str, Any] = {
        "conv_params": [[b.k, [c.out_channels for c in b.convs]] for b in net.edge_convs],  # type: ignore[union-attr]
        "fc_params": [[m.out_features, 0.0] for m in net.fc.modules() if isinstance(m, nn.Linear)][:-1],
        "use_fts_bn": net.use_fts_bn,
        "use_counts": net.use_counts,
    }
    if net.sv:
        options["sv_embed"] = net.pf_conv[1].out_channels  # type: ignore[index]
    if net.fusion_block is not None:
        options["fusion"] = net.fusion_block[0].out_channels  # type: ignore[index]
    return options


def convert_onnx(
    onnx: str | Path, input_names: list[str], roles: list[str], input_dims: dict[str, int], folder: Path
) -> tuple[Path, Path | None, dict[str, Any]]:
    """The ParticleNet ONNX converted and exported into ``folder``: (our model.onnx, the torch weights
    where the registry rebuilds the network, else None, the card's ``converted_from``: the original's
    path and sha256 and our export's |Δ| against it on the generated jets)."""
    tagger = convert_particlenet(onnx, input_names, roles, input_dims)
    exported = export_converted(tagger, input_dims, onnx, folder / "model.onnx")
    summary = check(onnx, differences(onnx, tagger, input_dims, exported))
    options = registry_options(tagger.mod)  # type: ignore[arg-type]
    state = None
    if options is not None:
        state = folder / "model.pt"
        torch.save(tagger.state_dict(), state)
    section = {
        "onnx": str(onnx),
        "sha256": sha256(onnx),
        "network": type(tagger.mod).__name__,
        "check": summary,
    }
    return exported, state, {"converted_from": section, "network_options": options}
