"""CMS's ParticleNet ONNX files converted into our ParticleNet (``import-weaver --convert``): the same
scores as CMS's own graph on real CMS jets, NanoAOD's stored scores still reproduced, our export in the
bundle, and a graph that is no ParticleNet refused in one line. Skipped where ../shared is absent."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from .conftest import SHARED, shared_file
from .conftest import run_cli as cli
from .test_cms import DISCRIMINANTS, nano_discriminant

CMS = SHARED / "reference" / "cms"
AK8 = CMS / "ParticleNetAK8_General_V01"
MASS = CMS / "ParticleNetAK8_MassRegression_V01"
NANO = SHARED / "reference" / "nanoaod" / "pfnano.root"


def _import(model_dir, out, convert: bool):
    from jettagger_coffea.bundle import Bundle
    from jettagger_coffea.weaver import import_weaver

    onnx, pre = shared_file(model_dir / "model.onnx"), shared_file(model_dir / "preprocess.json")
    path = import_weaver(None, out, onnx=onnx, preprocess=pre, stored_prefix="particleNet", convert=convert)
    return Bundle.load(path)


def _predict(bundle) -> dict[str, np.ndarray]:
    from jettagger_coffea.evaluation import predict_files
    from jettagger_coffea.tagger import JetTagger

    cols = predict_files(JetTagger(bundle), [shared_file(NANO)])
    return {k: np.asarray(v) for k, v in cols.items()}


@pytest.fixture(scope="module")
def ak8(tmp_path_factory):
    """(CMS's graph imported as it is, converted) bundles and their predictions on pfnano.root."""
    tmp = tmp_path_factory.mktemp("convert")
    plain, converted = _import(AK8, tmp / "plain", False), _import(AK8, tmp / "converted", True)
    return plain, converted, _predict(plain), _predict(converted)


def _largest_difference(a: dict, b: dict, columns: list[str]) -> float:
    for k in columns:
        np.testing.assert_array_equal(np.isnan(a[k]), np.isnan(b[k]))
    return max(float(np.nanmax(np.abs(a[k] - b[k]) / np.maximum(1, np.abs(a[k])))) for k in columns)


def test_converted_scores_equal_cms_graph_on_cms_jets(ak8):
    want, got = ak8[2], ak8[3]
    columns = [k for k in want if k.startswith("score_")]
    assert len(columns) >= 20 and len(want[columns[0]]) == 24
    assert _largest_difference(want, got, columns) <= 1e-5


def test_converted_bundle_reproduces_nanoaod_stored_scores(ak8):
    """The test_cms check (NanoAOD's FatJet_particleNet_* from our inputs), on the converted bundle."""
    import awkward as ak
    import uproot

    ev = uproot.open(NANO)["Events"]
    got = ak8[3]
    for name in DISCRIMINANTS:
        stored = ak.to_numpy(ak.flatten(ev[f"FatJet_particleNet_{name}"].array()))
        diff = np.abs(nano_discriminant(got, name) - stored)
        assert diff.mean() <= 3e-3, (name, diff.mean())
        assert (diff < 0.01).sum() >= 22, (name, np.sort(diff))


def test_converted_bundle_is_our_export_with_the_import_card(ak8):
    import onnx

    plain, converted = ak8[0], ak8[1]
    for key in ("discriminants", "stored_scores", "classes", "source", "inputs", "outputs"):
        assert converted.card.get(key) == plain.card.get(key), key
    assert converted.config.preprocess_json() == plain.config.preprocess_json()
    made = converted.card["provenance"]["converted_from"]
    assert made["sha256"] == hashlib.sha256((AK8 / "model.onnx").read_bytes()).hexdigest()
    assert made["network"] == "ParticleNet" and made["check"]["max_abs_diff"] <= 1e-2
    assert made["check"]["median_abs_diff"] <= 1e-5 and made["check"]["jets"] == 32

    def edge_convs(path) -> int:  # 1x1 convolutions over (N, C, P, k) edge tensors
        g = onnx.load(str(path)).graph
        dims = {i.name: len(i.dims) for i in g.initializer}
        return sum(1 for n in g.node if n.op_type == "Conv" and dims.get(n.input[1]) == 4)

    # CMS's graph: 3 x 3 layers on the edge tensors; ours: the first of each block per particle
    assert (edge_convs(plain.onnx_path), edge_convs(converted.onnx_path)) == (9, 6)
    # the fusion block is our ParticleNet's option: the torch backend runs the weights, CMS's scores
    import uproot

    from jettagger_coffea.tagger import JetTagger

    events = uproot.open(shared_file(NANO))["Events"]
    torch_scores = JetTagger(converted, backend="torch").score_jets(events).scores
    np.testing.assert_allclose(torch_scores, JetTagger(plain).score_jets(events).scores, atol=1e-5)


def test_mass_regression_converts(tmp_path):
    """CMS's mass regression (one output, BatchNorm folded into the convolutions) converts too."""
    plain, converted = _import(MASS, tmp_path / "plain", False), _import(MASS, tmp_path / "conv", True)
    want, got = _predict(plain), _predict(converted)
    assert np.isfinite(want["mass"]).sum() == 24 and want["mass"].max() > 100  # GeV
    assert _largest_difference(want, got, ["mass"]) <= 1e-5


def test_a_graph_that_is_no_particlenet_refused_in_one_line(tmp_path):
    pfn = Path(__file__).resolve().parents[1] / "models" / "pfn"
    r = cli(
        "import-weaver",
        "--onnx",
        pfn / "model.onnx",
        "--data-config",
        pfn / "data_config.yaml",
        "--preprocess",
        pfn / "preprocess.json",
        "--convert",
        "-o",
        tmp_path / "b",
    )
    assert r.returncode == 2, r.stderr
    line = r.stderr.strip()
    assert "\n" not in line and str(pfn / "model.onnx") in line and "not a ParticleNet" in line, line
    assert not (tmp_path / "b").exists()


def test_weaver_form_particlenet_converts_with_torch_weights(tmp_path):
    """A ParticleNet exported as weaver does (edge features concatenated; torch folds each BatchNorm into
    its convolution, bn_fts stays), no secondary vertices: converted, and with the registry's network
    the bundle also gets model.pt, which the torch backend loads."""
    import torch

    from jettagger_coffea.backends import TorchBackend
    from jettagger_coffea.bundle import Bundle
    from jettagger_coffea.convert import check_inputs
    from jettagger_coffea.nn import particlenet as pn
    from jettagger_coffea.nn.export import export_onnx
    from jettagger_coffea.weaver import import_weaver

    lite = Bundle.load(Path(__file__).resolve().parents[1] / "models" / "particlenet-lite")
    model = TorchBackend(lite).model
    dims = {k: v[1] for k, v in lite.config.input_shapes.items()}
    concatenated = lambda self, f, idx: self.convs[0](pn.edge_features(f, idx))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pn.EdgeConvBlock, "first_layer", concatenated)
        weaver_form = export_onnx(model, dims, tmp_path / "weaver.onnx")
    out = import_weaver(
        lite.path / "data_config.yaml",
        tmp_path / "b",
        onnx=weaver_form,
        preprocess=lite.path / "preprocess.json",
        convert=True,
    )
    b = Bundle.load(out)
    assert (
        b.card["network"] == "particlenet"
        and b.card["provenance"]["converted_from"]["check"]["max_abs_diff"] < 1e-5
    )
    assert b.card["network_options"]["conv_params"] == [[7, [32, 32, 32]], [7, [64, 64, 64]]]
    torch_model = TorchBackend(b).model
    feed = check_inputs(torch_model, dims, (40,))[0]
    with torch.no_grad():
        want = model(*(torch.from_numpy(feed[k]) for k in model.input_names))
        got = torch_model(*(torch.from_numpy(feed[k]) for k in model.input_names))
    assert float((want - got).abs().max()) < 1e-5


def test_our_own_export_is_named_not_converted():
    """Our export (first layer before the gather) is no weaver graph: refused, saying to use it as it is."""
    from jettagger_coffea._errors import JetTaggerError
    from jettagger_coffea.convert import read_structure

    lite = Path(__file__).resolve().parents[1] / "models" / "particlenet-lite"
    roles = {"pf_points": "points", "pf_features": "features", "pf_vectors": "vectors", "pf_mask": "mask"}
    with pytest.raises(JetTaggerError, match=r"model.onnx: .*block 0: .*already in our export's form"):
        read_structure(lite / "model.onnx", roles)
