"""The Triton backend against a real Triton server on loopback (PyTriton's tritonserver, started here from
its own environment, ``make triton``); skipped with the reason where that environment is absent."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

from jettagger_coffea import JetTagger
from jettagger_coffea._errors import JetTaggerError
from jettagger_coffea.bundle import Bundle
from jettagger_coffea.data import sample_path
from jettagger_coffea.triton import (
    HASH_KEY,
    TritonBackend,
    free_port,
    local_server,
    sha256,
    write_repository,
)

from .conftest import SHARED, run_cli
from .test_output_roles import PFNANO, glopart_like

pytest.importorskip("tritonclient.grpc")
ROOT = Path(__file__).resolve().parents[1]
SERVER = ROOT / "src" / "jettagger_coffea" / "triton_server.py"
PYTHON = Path(os.environ.get("JETTAGGER_TRITON_PYTHON") or ROOT / ".venv-triton" / "bin" / "python")
MODELS = ("pfn", "particlenet-lite")


@pytest.fixture(scope="module")
def glopart(tmp_path_factory) -> Path | None:
    """The GloParT-like bundle of the output-role tests (None without ../shared/reference/cms)."""
    if not (SHARED / "reference" / "cms").is_dir():
        return None
    return glopart_like(tmp_path_factory.mktemp("glopart"))


@pytest.fixture(scope="module")
def repository(tmp_path_factory, glopart) -> Path:
    """pfn and particlenet-lite as exported by the CLI, and pfn again with max_batch_size 7 (so that the
    client must split its batches)."""
    repo = tmp_path_factory.mktemp("triton") / "repo"
    for m in MODELS:
        r = run_cli("export", m, "--triton", repo)
        assert r.returncode == 0, r.stderr
    r = run_cli("export", "pfn", "--triton", repo, "--name", "pfn-mb7", "--max-batch", "7")
    assert r.returncode == 0, r.stderr
    if glopart is not None:  # a model of four outputs (classes, regressions, ...)
        r = run_cli("export", glopart, "--triton", repo, "--name", "glopart-like")
        assert r.returncode == 0, r.stderr
    return repo


@pytest.fixture(scope="module")
def server(repository, tmp_path_factory):
    """(grpc url, http url) of a Triton server serving ``repository``."""
    if not PYTHON.is_file():
        pytest.skip(f"no Triton server environment at {PYTHON} (make triton, or set JETTAGGER_TRITON_PYTHON)")
    if subprocess.run([PYTHON, "-c", "import pytriton"], capture_output=True, check=False).returncode:
        pytest.skip(f"{PYTHON} has no nvidia-pytriton")
    with local_server(repository, PYTHON, tmp_path_factory.mktemp("triton-log") / "server.log") as urls:
        yield urls


@pytest.fixture(scope="module")
def jets():
    """The QCD and top NanoAOD samples' FatJets, as one JetClass-free input (2000 jets)."""
    from coffea.nanoevents import NanoEventsFactory

    from jettagger_coffea.nanoevents import PFNanoSchema

    return [
        NanoEventsFactory.from_root(
            {str(sample_path(p, "nanoaod")): "Events"}, schemaclass=PFNanoSchema, mode="eager"
        ).events()
        for p in ("qcd", "tbqq")
    ]


def test_repository_is_tritons_model_config(repository):
    """config.pbtxt parses as Triton's ModelConfig: onnxruntime platform, dynamic batch and particle axes,
    the bundle's ONNX and its hash."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    bundle = Bundle.load("particlenet-lite")
    folder = repository / "particlenet-lite"
    cfg = text_format.Parse((folder / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert cfg.platform == "onnxruntime_onnx" and cfg.max_batch_size == 1024
    shapes = bundle.config.input_shapes
    assert {i.name: list(i.dims) for i in cfg.input} == {
        k: [shapes[k][1], -1] for k in ("pf_points", "pf_features", "pf_mask")
    }
    assert [list(o.dims) for o in cfg.output] == [[len(bundle.classes)]]
    assert cfg.parameters[HASH_KEY].string_value == sha256(bundle.onnx_path)
    assert (folder / "1" / "model.onnx").read_bytes() == bundle.onnx_path.read_bytes()
    again = write_repository(bundle, repository)  # re-export is idempotent and keeps the other models
    assert again == folder and (repository / "pfn" / "config.pbtxt").is_file()


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("protocol", [0, 1], ids=["grpc", "http"])
def test_scores_equal_onnxruntime(server, jets, model, protocol):
    local, remote = JetTagger(model), JetTagger(model, backend="triton", server=server[protocol])
    for events in jets:
        a, b = local.score_jets(events).scores, remote.score_jets(events).scores
        assert a.shape == b.shape == (len(a), len(local.classes)) and len(a) == 1000
        assert np.array_equal(np.isnan(a), np.isnan(b))
        assert np.nanmax(np.abs(a - b)) <= 1e-6


def test_batches_split_at_max_batch_size(server, jets):
    """The server refuses batches over its max_batch_size (7 here): the client splits them."""
    remote = JetTagger("pfn", backend="triton", server=server[0], served_model="pfn-mb7", max_slots=4096)
    assert remote.backend.metadata()["max_batch_size"] == 7
    a, b = JetTagger("pfn").score_jets(jets[1]).scores, remote.score_jets(jets[1]).scores
    assert np.nanmax(np.abs(a - b)) <= 1e-6


class FlakyProxy:
    """A loopback TCP proxy that drops the first ``drop`` connections, then forwards: a server that is
    restarting, as the client sees it."""

    def __init__(self, target: int, drop: int) -> None:
        self.target, self.drop, self.dropped = target, drop, 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            conn, _ = self.sock.accept()
            if self.dropped < self.drop:
                self.dropped += 1
                conn.close()
                continue
            up = socket.create_connection(("127.0.0.1", self.target))
            for a, b in ((conn, up), (up, conn)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            b.close()


def test_transient_errors_are_retried(server, jets):
    port = int(server[0].rsplit(":", 1)[1])
    proxy = FlakyProxy(port, drop=2)
    backend = TritonBackend(f"grpc://127.0.0.1:{proxy.port}", "pfn", Bundle.load("pfn"), backoff=0.2)
    assert backend.input_names == ["pf_features", "pf_mask"]  # reached through the retries
    assert proxy.dropped == 2
    tagger = JetTagger("pfn")
    tagger.backend = backend
    a = JetTagger("pfn").score_jets(jets[0]).scores
    assert np.nanmax(np.abs(a - tagger.score_jets(jets[0]).scores)) <= 1e-6


def test_unreachable_server_is_one_line():
    backend = TritonBackend(f"grpc://127.0.0.1:{free_port()}", "pfn", retries=1, backoff=0.1)
    with pytest.raises(JetTaggerError, match=r"Triton server grpc://127\.0\.0\.1:\d+, model 'pfn'"):
        backend.metadata()


def test_wrong_served_model_fails_before_work(server, tmp_path):
    """A model name the server does not know, and a served ONNX that is not the bundle's: one line each,
    exit 2, no output written."""
    out = tmp_path / "p.parquet"
    r = run_cli(
        "predict",
        "--model",
        "pfn",
        "--backend",
        "triton",
        "--server",
        server[0],
        "--served-model",
        "nope",
        "--input",
        sample_path("qcd", "nanoaod"),
        "-o",
        out,
    )
    assert r.returncode == 2 and not out.exists()
    assert r.stderr.count("\n") == 1 and "model 'nope'" in r.stderr, r.stderr
    with pytest.raises(JetTaggerError, match=r"serves a different model\.onnx"):
        JetTagger("pfn", backend="triton", server=server[0], served_model="particlenet-lite")


def test_cli_predict_and_run_with_triton(server, tmp_path):
    """``predict`` and ``run`` (2 worker processes) through the server equal onnxruntime's (in this
    process: the same functions the CLI calls)."""
    import json

    import awkward as ak

    from jettagger_coffea.analysis import metrics_from_hists
    from jettagger_coffea.data import default_fileset
    from jettagger_coffea.evaluation import predict_files
    from jettagger_coffea.execution import run_fileset

    src = sample_path("tbqq", "nanoaod")
    extra = ["--backend", "triton", "--server", server[0]]
    r = run_cli("predict", "--model", "pfn", "--input", src, "-o", tmp_path / "triton.parquet", *extra)
    assert r.returncode == 0, r.stderr
    fileset = {ds: default_fileset()[ds] for ds in ("qcd", "tbqq")}  # a background and a signal
    (tmp_path / "fs.json").write_text(json.dumps(fileset))
    r = run_cli(
        "run", "--model", "pfn", "--fileset", tmp_path / "fs.json", "--executor", "futures", "--workers", "2",
        "-o", tmp_path / "t", *extra,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    a = predict_files(JetTagger("pfn"), [src])
    b = ak.from_parquet(tmp_path / "triton.parquet")
    assert len(a["score_Tbqq"]) == len(b) == 1000
    assert np.nanmax(np.abs(a["score_Tbqq"] - ak.to_numpy(b.score_Tbqq))) <= 1e-6
    ma = metrics_from_hists(run_fileset("pfn", fileset, executor="iterative", progress=False))
    mb = json.loads((tmp_path / "t" / "metrics.json").read_text())
    assert ma["discriminants"]["TvsQCD"]["n_signal"] == 1000
    for name, d in ma["discriminants"].items():
        assert mb["discriminants"][name]["auc"] == pytest.approx(d["auc"], abs=1e-6)
        assert mb["discriminants"][name]["n_signal"] == d["n_signal"]


def test_export_options_named(tmp_path):
    """A bundle exports only to a Triton repository; a missing training folder is named."""
    r = run_cli("export", "pfn", "--triton", tmp_path / "repo", "-o", tmp_path / "b")
    assert r.returncode == 2 and "is a tagger bundle" in r.stderr and r.stderr.count("\n") == 1
    r = run_cli("export", tmp_path / "nothing", "-o", tmp_path / "b")
    assert r.returncode == 2 and "nothing: no such training folder" in r.stderr
    assert not (tmp_path / "repo").exists() and not (tmp_path / "b").exists()


def test_a_model_of_several_outputs_served(server, glopart):
    """A GloParT-like model (class probabilities, a discriminant, two mass corrections and hidden neurons as
    four graph outputs): the server serves every output, and every column equals onnxruntime's."""
    if glopart is None:
        pytest.skip("no ../shared/reference/cms (the GloParT-like model takes the CMS model's inputs)")
    import uproot

    events = uproot.open(PFNANO)["Events"]
    local = JetTagger(glopart).score_jets(events)
    remote = JetTagger(glopart, backend="triton", server=server[0], served_model="glopart-like").score_jets(
        events
    )
    assert remote.scores.shape == (24, 17)
    np.testing.assert_allclose(remote.scores, local.scores, atol=1e-6)
    assert set(remote.outputs) == set(local.outputs) >= {"massCorrX2p", "massCorrGeneric", "hidNeuron007"}
    for name, values in local.outputs.items():
        np.testing.assert_allclose(remote.outputs[name], values, atol=1e-5)
