"""Triton as CMS runs it (SONIC): CMS's own model repositories (cms-data RecoBTag-Combined: config.pbtxt
with label_filename, preferred batch sizes and a checksum agent) served by the local server, and an
analyst's client-only bundle (only preprocess.json, no weights) that reproduces NanoAOD's stored scores."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

import jettagger_coffea
from jettagger_coffea import JetTagger
from jettagger_coffea._errors import JetTaggerError
from jettagger_coffea.bundle import Bundle
from jettagger_coffea.evaluation import predict_files
from jettagger_coffea.triton import local_server

from .conftest import SHARED, run_cli, shared_file

pytest.importorskip("tritonclient.grpc")

PYTHON = Path(
    os.environ.get("JETTAGGER_TRITON_PYTHON")
    or Path(__file__).resolve().parents[1] / ".venv-triton" / "bin" / "python"
)
CMS = SHARED / "reference" / "cms"
NANO = SHARED / "reference" / "nanoaod"


@pytest.fixture(scope="module")
def cms_server(tmp_path_factory):
    """A Triton server on loopback serving CMS's repository folder as cms-data ships it."""
    repo = shared_file(CMS / "triton")
    if not PYTHON.is_file():
        pytest.skip(f"no Triton server environment at {PYTHON} (make triton, or set JETTAGGER_TRITON_PYTHON)")
    with local_server(repo, PYTHON, tmp_path_factory.mktemp("triton-log") / "server.log") as (grpc, _):
        yield grpc


@pytest.fixture(scope="module")
def client_only(tmp_path_factory):
    """`import-weaver --preprocess ... --served-model particlenet`: a bundle without weights."""
    out = tmp_path_factory.mktemp("sonic") / "pn-ak8-client"
    pre = shared_file(CMS / "ParticleNetAK8_General_V01" / "preprocess.json")
    r = run_cli("import-weaver", "--preprocess", pre, "--served-model", "particlenet", "-o", out)
    assert r.returncode == 0, r.stderr
    return out


def test_client_only_bundle_has_no_weights(client_only):
    b = Bundle.load(client_only)
    assert not (client_only / "model.onnx").exists()
    assert b.served_model == "particlenet" and b.default_backend == "triton"
    assert len(b.classes) == 20 and "TvsQCD" in b.discriminants
    with pytest.raises(JetTaggerError, match="client-only bundle for Triton model 'particlenet'"):
        JetTagger(b, backend="onnx")
    with pytest.raises(JetTaggerError, match="needs a server URL"):
        JetTagger(b)


def test_cms_repository_served_reproduces_the_in_process_and_stored_scores(client_only, cms_server, tmp_path):
    """The client-only bundle against CMS's `particlenet` repository: the CMS model's in-process scores
    (<= 1e-6) and, through NanoAOD's discriminants, the scores NanoAOD stored."""
    pfnano = shared_file(NANO / "pfnano.root")
    out = tmp_path / "served.root"
    r = run_cli("predict", "--model", client_only, "--server", cms_server, "--input", pfnano, "-o", out)
    assert r.returncode == 0, r.stderr
    served = uproot.open(out)["Events"].arrays(library="np")
    local_bundle = tmp_path / "pn-ak8"
    ak8 = CMS / "ParticleNetAK8_General_V01"
    r = run_cli(
        "import-weaver",
        "--onnx",
        ak8 / "model.onnx",
        "--preprocess",
        ak8 / "preprocess.json",
        "-o",
        local_bundle,
    )
    assert r.returncode == 0, r.stderr
    local = predict_files(JetTagger(local_bundle), [pfnano])
    classes = Bundle.load(client_only).classes
    for c in classes:
        np.testing.assert_allclose(served[f"score_{c}"], local[f"score_{c}"], rtol=0, atol=1e-6)
    ev = uproot.open(pfnano)["Events"]
    top = sum(served[f"score_{c}"] for c in ("Top_bcq", "Top_bqq"))
    qcd = sum(served[f"score_{c}"] for c in classes if c.startswith("QCD_"))
    stored = ak.to_numpy(ak.flatten(ev["FatJet_particleNet_TvsQCD"].array()))
    assert np.abs(top / (top + qcd) - stored).mean() <= 3e-3


def test_a_served_model_that_does_not_match_the_bundle_is_named(cms_server, tmp_path):
    """A weight-less AK4 bundle pointed at the AK8 model: one line, before any jet is read."""
    out = tmp_path / "ak4-client"
    pre = shared_file(CMS / "ParticleNetAK4_CHS_V00" / "preprocess.json")
    r = run_cli(
        "import-weaver", "--preprocess", pre, "--served-model", "particlenet", "--jets", "Jet", "-o", out
    )
    assert r.returncode == 0, r.stderr
    assert Bundle.load(out).preset.name == "cms-pfnano-ak4"
    r = run_cli(
        "predict",
        "--model",
        out,
        "--server",
        cms_server,
        "--input",
        NANO / "pfnano.root",
        "-o",
        tmp_path / "x.root",
    )
    assert r.returncode == 2
    line = r.stderr.strip().splitlines()
    assert len(line) == 1
    assert (
        f"Triton server {cms_server}, model 'particlenet': input 'pf_features' has dims [25, -1]" in line[0]
    )
    assert "gives 20 variables" in line[0]


def _server_module():
    spec = importlib.util.spec_from_file_location(
        "triton_server", Path(jettagger_coffea.__file__).with_name("triton_server.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_checksum_agent_is_honoured(tmp_path):
    """CMS's config.pbtxt carries an MD5 of 1/model.onnx: the server checks it and refuses a changed file."""
    server = _server_module()
    folder = tmp_path / "particlenet_AK4"
    shutil.copytree(shared_file(CMS / "triton" / "particlenet_AK4"), folder)
    cfg = server._config(folder / "config.pbtxt")
    assert list(cfg.dynamic_batching.preferred_batch_size) == [200]
    server._verify_checksums(folder, cfg)  # as shipped: fine
    (folder / "1" / "model.onnx").chmod(0o644)
    with (folder / "1" / "model.onnx").open("ab") as f:
        f.write(b"\0")
    with pytest.raises(SystemExit, match=r"checksum agent: 1/model\.onnx has MD5"):
        server._verify_checksums(folder, cfg)
