"""Networks: weaver compatibility, invariances (padding, order, batch), IRC safety, empty jets, ONNX."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import uproot

torch = pytest.importorskip("torch")

from jettagger_coffea.dataconfig import DataConfig
from jettagger_coffea.features import featurize
from jettagger_coffea.nn import NETWORKS, build, load_state
from jettagger_coffea.nn.export import example_inputs, export_onnx, max_difference

from .conftest import PN_KIN_WEIGHTS, shared_file

NAMES = ["pf_points", "pf_features", "pf_vectors", "pf_mask"]
DIMS = {"pf_points": 2, "pf_features": 7, "pf_vectors": 4, "pf_mask": 1}
ROLES = {"pf_points": "points", "pf_features": "features", "pf_vectors": "vectors", "pf_mask": "mask"}
SMALL = {  # small widths keep the suite fast; the structure is the real one
    "particlenet": {},
    "particlenet-lite": {},
    "part": {"num_layers": 2, "embed_dims": (32, 64, 32), "pair_embed_dims": (16, 16), "num_heads": 4},
    "part-plain": {"num_layers": 2, "embed_dims": (32, 64, 32), "num_heads": 4},
    "part-irc": {
        "num_layers": 2,
        "embed_dims": (32, 64, 32),
        "pair_embed_dims": (16, 16),
        "num_heads": 4,
        "jet_kinematics": True,
    },
    "pfn": {},
    "efn": {},
}


def _model(name, dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    m = build(name, NAMES, DIMS, 4, roles=ROLES, **SMALL[name]).eval().to(dtype)
    for mod in m.modules():  # non-trivial batch-norm statistics
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            mod.running_mean.normal_(0, 0.2)
            mod.running_var.uniform_(0.5, 2.0)
    return m


@pytest.fixture(scope="module")
def jets(shipped_config, tbqq_jetclass):
    cfg = DataConfig.from_yaml(shipped_config("kin"))
    f = featurize(uproot.open(tbqq_jetclass)["tree"], cfg)
    return [torch.from_numpy(f.inputs[k][:6]) for k in NAMES], f.counts[:6]


def test_particlenet_kin_matches_weaver(jetclass_config, tbqq_jetclass):
    weaver_pn = pytest.importorskip("weaver.nn.model.ParticleNet")
    logging.getLogger("weaver").setLevel(logging.WARNING)
    weights = shared_file(PN_KIN_WEIGHTS)
    cfg = DataConfig.from_yaml(jetclass_config("kin"))
    f = featurize(uproot.open(tbqq_jetclass)["tree"], cfg)
    dims = {k: v.shape[1] for k, v in f.inputs.items()}
    ours = build("particlenet", list(cfg.input_names), dims, 10, roles=ROLES)
    load_state(ours, weights)
    ours.eval()
    ref = weaver_pn.ParticleNet(
        7,
        10,
        conv_params=[(16, (64, 64, 64)), (16, (128, 128, 128)), (16, (256, 256, 256))],
        fc_params=[(256, 0.1)],
        use_fusion=False,
        for_inference=True,
    )
    sd = torch.load(weights, map_location="cpu", weights_only=True)
    ref.load_state_dict({k.removeprefix("mod."): v for k, v in sd.items()}, strict=True)
    ref.eval()
    x = [torch.from_numpy(f.inputs[k][:120]) for k in cfg.input_names]
    # 120 jets (two full-size networks in torch: 300 took 24 s), 15 at a time (each jet's scores are its own):
    # the largest edge tensors (15 x 256 x 128 x 16 floats, 31 MB) stay under glibc's 32 MB mmap threshold,
    # so they are reused instead of page-faulted anew: 0.7 instead of 2.3 GB, half the CPU time
    with torch.no_grad():
        parts = [[t[i : i + 15] for t in x] for i in range(0, 120, 15)]
        a = torch.cat([ours(*p) for p in parts])
        b = torch.cat([ref(p[0], p[1], p[3]) for p in parts])
    assert torch.max(torch.abs(a - b)) <= 1e-5
    assert a.argmax(1).eq(8).float().mean() > 0.6, "the JetClass model should call our top jets Tbqq"


@pytest.mark.parametrize("pre_activation", [False, True])
def test_part_state_dict_from_weaver(pre_activation, jets):
    weaver_part = pytest.importorskip("weaver.nn.model.ParticleTransformer")
    logging.getLogger("weaver").setLevel(logging.WARNING)
    torch.manual_seed(3)
    ref = weaver_part.ParticleTransformer(
        7, 4, use_pre_activation_pair=pre_activation, num_layers=3, for_inference=True
    ).eval()
    for mod in ref.modules():
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            mod.running_mean.normal_(0, 0.2)
            mod.running_var.uniform_(0.5, 2.0)
    ours = build(
        "part", NAMES, DIMS, 4, roles=ROLES, use_pre_activation_pair=pre_activation, num_layers=3
    ).eval()
    ours.load_state_dict({f"mod.{k}": v for k, v in ref.state_dict().items()}, strict=True)
    x, _ = jets
    with torch.no_grad():
        assert torch.max(torch.abs(ours(*x) - ref(x[1], v=x[2], mask=x[3]))) <= 1e-5


def _repad(x, counts, length):
    out = []
    for t in x:
        new = torch.zeros(t.shape[0], t.shape[1], length, dtype=t.dtype)
        for j, n in enumerate(counts):
            new[j, :, :n] = t[j, :, :n]
        out.append(new)
    return out


@pytest.mark.parametrize("name", list(NETWORKS))
def test_padding_batch_and_order_invariance(name, jets):
    m = _model(name)
    x, counts = jets
    x = _repad(x, counts, 128)  # constant padding: padded slots are all zero
    with torch.no_grad():
        ref = m(*x)
        for length in (int(counts.max()), 64, 128):
            if length < counts.max():
                continue
            torch.testing.assert_close(m(*_repad(x, counts, length)), ref, atol=1e-5, rtol=0)
        for j, n in enumerate(counts):  # alone, padded to its own length
            alone = m(*[t[j : j + 1, :, :n] for t in x])
            torch.testing.assert_close(alone, ref[j : j + 1], atol=1e-5, rtol=0)
        perm = torch.randperm(int(counts.min()), generator=torch.Generator().manual_seed(1))
        shuffled = [t.clone() for t in x]
        for t in shuffled:
            t[:, :, : len(perm)] = t[:, :, perm]
        torch.testing.assert_close(m(*shuffled), ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", list(NETWORKS))
def test_empty_jet_gives_nan(name, jets):
    m = _model(name)
    x = [t.clone() for t in jets[0]]
    for t in x:
        t[2] = 0
    with torch.no_grad():
        out = m(*x)
    assert torch.isnan(out[2]).all()
    assert torch.isfinite(out[[0, 1, 3, 4, 5]]).all()
    torch.testing.assert_close(out[[0, 1, 3, 4, 5]].sum(1), torch.ones(5))


def split_and_soften(v, mask, frac=0.3, eps=1e-6, nsoft=3, seed=0):
    """Split ``frac`` of each jet's particles collinearly (random lambda), add ``nsoft`` particles carrying
    ``eps`` of the jet energy, shuffle."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for j in range(v.shape[0]):
        n = int(mask[j, 0].sum())
        vj = v[j, :, :n]
        idx = torch.randperm(n, generator=g)[: int(frac * n)]
        lam = torch.rand(len(idx), generator=g, dtype=v.dtype)
        kept = vj.clone()
        kept[:, idx] = vj[:, idx] * lam
        soft = vj[:, :nsoft] / vj[3, :nsoft] * vj[3].sum() * eps
        c, s = 0.6, 0.8  # rotate in phi: a new direction
        soft = torch.stack([soft[0] * c - soft[1] * s, soft[0] * s + soft[1] * c, soft[2], soft[3]])
        new = torch.cat([kept, vj[:, idx] * (1 - lam), soft], 1)
        out.append(new[:, torch.randperm(new.shape[1], generator=g)])
    length = max(t.shape[1] for t in out)
    vv = torch.zeros(v.shape[0], 4, length, dtype=v.dtype)
    mm = torch.zeros(v.shape[0], 1, length, dtype=v.dtype)
    for j, t in enumerate(out):
        vv[j, :, : t.shape[1]], mm[j, :, : t.shape[1]] = t, 1
    return vv, mm


def split_inputs(x, eps=1e-6):
    """Network inputs for the split-and-softened jets of ``x`` (vectors, mask; other inputs zero)."""
    vv, mm = split_and_soften(x[2], x[3], eps=eps)
    out = [torch.zeros(x[0].shape[0], DIMS[k], vv.shape[-1], dtype=vv.dtype) for k in NAMES]
    out[2], out[3] = vv, mm
    return out


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-6), (torch.float32, 1e-4)])
@pytest.mark.parametrize("name", ["part-irc", "efn"])
def test_irc_safe_models(name, dtype, tol):
    m = build(name, NAMES, DIMS, 4, roles=ROLES).eval().to(dtype)  # full default size
    x = [t.to(dtype) for t in example_inputs(m, DIMS, n=8, length=60, seed=5)]
    other = split_inputs(x)
    with torch.no_grad():
        assert torch.max(torch.abs(m(*x) - m(*other))) <= tol


def test_plain_part_is_not_irc_safe():
    m = _model("part", torch.float64)
    x = [t.double() for t in example_inputs(m, DIMS, n=8, length=60, seed=5)]
    vv, mm = split_and_soften(x[2], x[3])
    feats = torch.randn(8, 7, vv.shape[-1], dtype=torch.float64) * mm
    with torch.no_grad():
        assert torch.max(torch.abs(m(*x) - m(x[0], feats, vv, mm))) > 1e-3


@pytest.mark.parametrize("name", list(NETWORKS))
def test_onnx_export_equals_torch(name, tmp_path):
    pytest.importorskip("onnxruntime")
    m = _model(name)
    path = export_onnx(m, DIMS, tmp_path / f"{name}.onnx")
    assert max_difference(m, DIMS, path, lengths=(17, 40, 128)) <= 1e-5
    import onnx

    proto = onnx.load(str(path))
    assert proto.opset_import[0].version >= 15
    dims = proto.graph.input[-1].type.tensor_type.shape.dim
    assert dims[0].dim_param and dims[2].dim_param, "batch and particle axes must be dynamic"


def test_parameter_counts():
    counts = {
        n: sum(p.numel() for p in build(n, NAMES, DIMS, 10, roles=ROLES).parameters()) for n in NETWORKS
    }
    assert 360_000 < counts["particlenet"] < 380_000  # seed table: 370k
    assert 2_100_000 < counts["part"] < 2_200_000  # seed table: 2.14M
    assert counts["part-plain"] < counts["part"]
    assert np.isclose(counts["pfn"], 86_100, rtol=0.1)  # seed table: 86.1k (JetClass, 17 inputs)


def test_irc_part_with_energy_free_features():
    """IRC-safe ParT fed charge/PID/IP-like features: still IRC safe when split halves share them."""
    m = build("part-irc", NAMES, DIMS, 4, roles=ROLES, token_features=[5, 6], num_layers=2).eval().double()
    x = [t.double() for t in example_inputs(m, DIMS, n=4, length=40, seed=7)]
    vv, mm = split_and_soften(x[2], x[3], eps=1e-9)

    # features follow the particles: rebuild them from the (shuffled) vectors' directions
    def feats(v, mask):
        f = torch.zeros(v.shape[0], 7, v.shape[-1], dtype=v.dtype)
        f[:, 5] = torch.sign(v[:, 0]) * mask[:, 0]  # a direction-only "charge"
        f[:, 6] = (v[:, 1] > 0).double() * mask[:, 0]
        return f

    a = m(x[0], feats(x[2], x[3]), x[2], x[3])
    b = m(torch.zeros(4, 2, vv.shape[-1], dtype=torch.float64), feats(vv, mm), vv, mm)
    assert torch.max(torch.abs(a - b)) <= 1e-6
    assert m.mod.uses == ("features", "vectors", "mask")


@pytest.mark.parametrize("energy_bias", ["energy", "fraction"])
def test_irc_part_energy_scale(energy_bias):
    """ln E (the seed's bias) lets class attention see the jet energy scale (an IRC-safe quantity: the
    class token's key competes with sum_j E_j); ln z makes the network blind to it. Both stay IRC safe."""
    m = (
        build(
            "part-irc",
            NAMES,
            DIMS,
            4,
            roles=ROLES,
            energy_bias=energy_bias,
            num_layers=1,
            num_cls_layers=1,
            embed_dims=(16, 16),
            pair_embed_dims=(8,),
            num_heads=2,
        )
        .eval()
        .double()
    )
    x = [t.double() for t in example_inputs(m, DIMS, n=6, length=30, seed=3)]
    x[2] = x[2] / x[2][:, 3:].sum(-1, keepdim=True)  # jets of 1 GeV: the class token's key (bias 0) competes
    boosted = [x[0], x[1], x[2] * 3.0, x[3]]  # every four-vector x 3: same directions, 3x the energy
    split = split_inputs(x, eps=1e-9)
    with torch.no_grad():
        ref, scaled, irc = m(*x), m(*boosted), m(*split)
    assert torch.max(torch.abs(ref - irc)) <= 1e-6
    change = torch.max(torch.abs(ref - scaled))
    assert (change > 1e-3) if energy_bias == "energy" else (change <= 1e-6)
    with pytest.raises(ValueError, match="energy_bias"):
        build("part-irc", NAMES, DIMS, 4, roles=ROLES, energy_bias="pt")


def test_irc_part_with_jet_kinematics():
    """The jet's four-vector sum (pT, mass) is IRC safe: feeding it keeps the network IRC safe."""
    m = (
        build(
            "part-irc",
            NAMES,
            DIMS,
            4,
            roles=ROLES,
            jet_kinematics=True,
            num_layers=2,
            embed_dims=(16, 16),
            pair_embed_dims=(8,),
            num_heads=2,
        )
        .eval()
        .double()
    )
    x = [t.double() for t in example_inputs(m, DIMS, n=6, length=30, seed=4)]
    split = split_inputs(x, eps=1e-9)
    with torch.no_grad():
        assert torch.max(torch.abs(m(*x) - m(*split))) <= 1e-6
        assert torch.max(torch.abs(m(*x) - m(x[0], x[1], x[2] * 1.5, x[3]))) > 1e-4  # the scale is seen


def test_particlenet_with_secondary_vertices(tmp_path):
    """ParticleNet with sv_* inputs (as weaver's ParticleNetTagger): roles from the spec, SV padding and
    order do not matter, an unknown option is named, ONNX == torch."""
    from jettagger_coffea._errors import JetTaggerError

    names = ["pf_points", "pf_features", "pf_mask", "sv_points", "sv_features", "sv_mask"]
    roles = {n: n.removeprefix("pf_") for n in names}
    dims = {"pf_points": 2, "pf_features": 25, "pf_mask": 1, "sv_points": 2, "sv_features": 11, "sv_mask": 1}
    torch.manual_seed(1)
    m = build("particlenet-lite", names, dims, 5, roles=roles).eval()
    assert m.roles == ["points", "features", "mask", "sv_points", "sv_features", "sv_mask"]
    g = torch.Generator().manual_seed(2)
    n, p, s = 3, 20, 4
    pf = [torch.randn(n, 2, p, generator=g), torch.randn(n, 25, p, generator=g), torch.ones(n, 1, p)]
    sv = [torch.randn(n, 2, s, generator=g), torch.randn(n, 11, s, generator=g), torch.ones(n, 1, s)]
    with torch.no_grad():
        ref = m(*pf, *sv)
        padded = [torch.nn.functional.pad(x, (0, 6)) for x in sv]  # zero-padded, masked SV slots
        assert torch.allclose(m(*pf, *padded), ref, atol=1e-5)
        perm = torch.randperm(s, generator=g)
        assert torch.allclose(m(*pf, *[x[..., perm] for x in sv]), ref, atol=1e-5)
        no_sv = m(*pf, *[x * 0 for x in sv])
        assert (no_sv - ref).abs().max() > 1e-4  # the SVs are used
    with pytest.raises(JetTaggerError, match=r"unknown option\(s\) \['kk'\]"):
        build("particlenet-lite", names, dims, 5, roles=roles, kk=3)
    with pytest.raises(JetTaggerError, match="takes no secondary-vertex inputs"):
        build(
            "pfn",
            ["pf_features", "pf_mask", "sv_features", "sv_mask"],
            {"pf_features": 7, "pf_mask": 1, "sv_features": 11, "sv_mask": 1},
            5,
            roles={
                "pf_features": "features",
                "pf_mask": "mask",
                "sv_features": "sv_features",
                "sv_mask": "sv_mask",
            },
        )
    path = export_onnx(m, dims, tmp_path / "m.onnx")
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {k: x.numpy() for k, x in zip(names, [*pf, *sv])}
    np.testing.assert_allclose(sess.run(None, feed)[0], ref.numpy(), atol=1e-5)
