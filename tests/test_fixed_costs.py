"""Fixed costs of a process: the tuned slot budget read from the user cache instead of measured again, and
a start-up that imports only what the command needs. Fixed costs of a file (issue #32, part 3): a file
opened once per worker for all its chunks, and NanoEvents made of the branches the processor reads only,
with the outputs of coffea's open per chunk of every branch."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys

import awkward as ak
import numpy as np
import pytest
import uproot

from jettagger_coffea import backends, cache, execution, reading
from jettagger_coffea.data import sample_path
from jettagger_coffea.execution import run_fileset
from jettagger_coffea.features import make_table, standardise
from jettagger_coffea.processor import TaggerProcessor
from jettagger_coffea.tagger import JetTagger

from .compare import same_results
from .conftest import SHARED, shared_file

NANO = SHARED / "reference" / "nanoaod"

#: run in a fresh process: ``jettagger predict`` with the measuring spied on, then what it imported
CHILD = """
import json, logging, sys
from jettagger_coffea import backends
from jettagger_coffea.cli import main

measured, lines = [], []
real = backends._measure_budgets
backends._measure_budgets = lambda *a, **k: measured.append(1) or real(*a, **k)
handler = logging.Handler()
handler.emit = lambda record: lines.append(record.getMessage())
logging.getLogger("jettagger_coffea.backends").addHandler(handler)
logging.getLogger("jettagger_coffea.backends").setLevel(logging.DEBUG)
rc = main(["predict", "--model", "pfn", "--input", sys.argv[1], "-o", sys.argv[2]])
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"torch", "matplotlib", "mplhep", "distributed"})
print(json.dumps({"rc": rc, "measured": len(measured), "budgets": list(backends._BUDGETS.values()),
                  "log": lines, "heavy": heavy}))
"""


@pytest.fixture(scope="module")
def pfn():
    """The shipped PFN and 1000 standardised JetClass jets (enough to measure a budget on)."""
    tagger = JetTagger("pfn")
    tree = uproot.open(sample_path("tbqq", "jetclass"))["tree"]
    table = make_table(tree, tagger.config, tagger.preset, "tbqq")
    return tagger, standardise(table, tagger.config, tagger.bundle.primary)


@pytest.fixture
def measured(monkeypatch):
    """How many times a budget was measured (not read from the process or the user cache)."""
    calls: list[int] = []
    real = backends._measure_budgets
    monkeypatch.setattr(backends, "_measure_budgets", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(backends, "_BUDGETS", {})
    return calls


def entries(folder):
    return sorted((folder / backends.BUDGET_CACHE).glob("*.json"))


def test_a_fresh_process_reads_the_budget_this_one_measured(pfn, measured, tmp_path, monkeypatch):
    tagger, std = pfn
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "cache"))
    tagger.run_model(std)
    assert len(measured) == 1
    (entry,) = entries(tmp_path / "cache")
    doc = json.loads(entry.read_text())
    assert doc["value"]["budget"] in backends.BUDGETS
    assert doc["key"]["models"] == [tagger.backend.model.digest]
    assert doc["key"]["runtime"]["threads"] == 1  # conftest: JETTAGGER_THREADS=1, which the child inherits
    assert set(doc["value"]["seconds"]) == {str(b) for b in backends.BUDGETS}

    out = tmp_path / "jets.parquet"
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(sample_path("wqq")), str(out)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert child.returncode == 0, child.stderr[-2000:]
    got = json.loads(child.stdout.splitlines()[-1])
    assert got["rc"] == 0 and out.stat().st_size > 0
    assert got["measured"] == 0  # read, not measured
    assert got["budgets"] == [doc["value"]["budget"]]
    assert any("read from the cache" in line for line in got["log"]), got["log"]
    assert got["heavy"] == []  # predict imports no torch, matplotlib, mplhep or distributed
    assert entries(tmp_path / "cache") == [entry]


@pytest.mark.parametrize(
    "text",
    ["{not json", json.dumps({"key": {}, "value": {"budget": 4096}}), "BAD"],
    ids=["not-json", "another-key", "budget-not-tried"],
)
def test_a_corrupt_or_foreign_entry_is_measured_again(pfn, measured, tmp_path, monkeypatch, text):
    """Garbage, an entry of another key, a budget outside BUDGETS: never trusted, measured and rewritten."""
    tagger, std = pfn
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path))
    tagger.run_model(std)
    (entry,) = entries(tmp_path)
    good = json.loads(entry.read_text())
    if text == "BAD":
        text = json.dumps({"key": good["key"], "value": {"budget": 12345}})
    entry.write_text(text)
    monkeypatch.setattr(backends, "_BUDGETS", {})
    tagger.run_model(std)
    assert len(measured) == 2
    assert json.loads(entry.read_text())["value"]["budget"] in backends.BUDGETS


def test_cache_off_measures_each_process_and_writes_nothing(pfn, measured, tmp_path, monkeypatch):
    tagger, std = pfn
    monkeypatch.setenv(cache.CACHE_ENV, "OFF")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    tagger.run_model(std)
    monkeypatch.setattr(backends, "_BUDGETS", {})  # a new process
    tagger.run_model(std)
    assert len(measured) == 2
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_cache_is_harmless(pfn, measured, tmp_path, monkeypatch, caplog):
    """A cache folder that cannot be made (here: below a file; a read-only home on a worker alike): the
    budget is measured and used, with nothing louder than a debug line."""
    tagger, std = pfn
    (tmp_path / "file").write_text("")
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "file" / "cache"))
    with caplog.at_level(logging.DEBUG, logger="jettagger_coffea"):
        scores = tagger.run_model(std)
    assert len(measured) == 1 and len(scores) == len(std)
    assert set(backends._BUDGETS.values()) <= set(backends.BUDGETS)
    assert {r.levelname for r in caplog.records if r.name.startswith("jettagger_coffea")} == {"DEBUG"}
    assert "not written" in caplog.text and "not cached" in caplog.text


def test_the_default_cache_folder(monkeypatch, tmp_path):
    monkeypatch.delenv(cache.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache.cache_dir("budgets") == tmp_path / "jettagger-coffea" / "budgets"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache.cache_dir("budgets") == tmp_path / ".cache" / "jettagger-coffea" / "budgets"


def test_the_parser_imports_no_numpy():
    """``jettagger --help`` (and every argument error) builds the parser only: no numpy, no model runtime."""
    code = (
        "import sys; from jettagger_coffea.cli import build_parser; build_parser(); "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'numpy', 'awkward', 'onnxruntime', 'torch', 'matplotlib', 'distributed', 'coffea'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_default_threads_on_a_dask_worker_and_off_one(monkeypatch):
    """Off a worker the cores, without importing distributed; on one its thread count."""
    from distributed import Client, LocalCluster

    monkeypatch.delenv("JETTAGGER_THREADS")
    assert backends.default_threads() == (os.cpu_count() or 1)
    local = {"processes": False, "dashboard_address": "127.0.0.1:0"}
    cluster = LocalCluster(n_workers=1, threads_per_worker=3, **local)
    with cluster, Client(cluster) as client:
        assert client.submit(backends.default_threads).result() == 3


def test_the_key_names_what_a_budget_depends_on(pfn, monkeypatch):
    """Model, padding, runtime, threads and device: another of any is another entry; a backend whose speed
    is not this machine's (a Triton server) is not cached on disk."""
    tagger, _ = pfn
    key = backends.budget_cache_key(tagger.backend, "dynamic", 1, None)
    assert key is not None and key["machine"]["cores"] >= 1 and key["machine"]["cpu"]
    assert backends.budget_cache_key(tagger.backend, "fixed", 1, None) != key
    monkeypatch.setenv("JETTAGGER_THREADS", "2")
    assert backends.budget_cache_key(tagger.backend, "dynamic", 1, None)["runtime"]["threads"] == 2
    pytest.importorskip("torch")
    torch_key = backends.budget_cache_key(backends.TorchBackend(tagger.bundle), "dynamic", 1, None)
    assert torch_key["runtime"]["device"] in ("cpu", "cuda:0", "cuda")
    assert torch_key["models"] != key["models"]  # model.pt, not model.onnx
    assert backends.budget_cache_key(object(), "dynamic", 1, None) is None


# -- fixed costs of a file --------------------------------------------------------------------------------
QCD = {"executor": "iterative", "chunksize": 250, "progress": False, "per_jet": True}  # 688 events: 3 chunks


def same_jets(a: dict, b: dict) -> None:
    """Two runs' outputs: histograms and cutflow (:func:`.compare.same_results`) and every per-jet column."""
    same_results(a, b)
    assert a["jets"].keys() == b["jets"].keys()
    for k, v in a["jets"].items():
        np.testing.assert_array_equal(v, b["jets"][k], err_msg=k)


@pytest.fixture
def tree_reads(monkeypatch):
    """[open handles after each chunk] of the Runner's chunks, one entry per TTree deserialised while the
    Runner runs (the preflight's opens are not counted)."""
    model = type(uproot.open(sample_path("qcd"))["Events"])  # (uproot's versioned TTree model)
    real_read, real_runner, reads, running = model.read.__func__, execution._runner, [], []

    def read(cls, *a, **k):
        if running:
            reads.append(reading.open_count())
        return real_read(cls, *a, **k)

    def runner(*a, **k):
        running.append(True)
        try:
            return real_runner(*a, **k)
        finally:
            running.clear()

    monkeypatch.setattr(model, "read", classmethod(read))
    monkeypatch.setattr(execution, "_runner", runner)
    return reads


def test_a_file_is_opened_once_for_its_chunks(tree_reads, monkeypatch):
    """Three chunks of one file: its TTree read once (coffea's Runner reads it for each), the same
    histograms and jets as with every chunk opening the file, and no file left open after the run."""
    fileset = {"qcd": [str(sample_path("qcd"))]}
    reused = run_fileset("pfn", fileset, **QCD)
    assert len(tree_reads) == 1 and reading.open_count() == 0
    monkeypatch.setattr(reading, "OPEN_FILES", 0)
    tree_reads.clear()
    fresh = run_fileset("pfn", fileset, **QCD)
    assert tree_reads == [0, 0, 0] and reading.open_count() == 0  # one open per chunk, none kept
    same_jets(reused, fresh)


def test_nothing_stays_open_after_a_failed_run(monkeypatch):
    """A chunk that fails closes its file, and the run's end closes the others."""

    def fail(self, events):
        raise RuntimeError("a processor's bug")

    monkeypatch.setattr(TaggerProcessor, "process", fail)
    with pytest.raises(ValueError, match=r"processing failed: Failed processing file: .*a processor's bug"):
        run_fileset("pfn", {"qcd": [str(sample_path("qcd"))]}, **QCD)
    assert reading.open_count() == 0


def test_a_rewritten_file_is_opened_again(tmp_path):
    """The handle is the file's: the same one for the next chunk of an unchanged file, a new one (with the
    new file's content) once it is rewritten, or for another ROOT file UUID; an evicted one is closed."""
    path = tmp_path / "events.root"
    shutil.copy(sample_path("qcd"), path)
    key, first = reading.acquire(str(path), "u1", {})
    reading.release(key, first, keep=True)
    key, again = reading.acquire(str(path), "u1", {})
    assert again is first and again["Events"].num_entries == 688
    reading.release(key, again, keep=True)
    shutil.copy(sample_path("tbqq"), path)
    key, new = reading.acquire(str(path), "u1", {})
    assert new is not first and new["Events"].num_entries == 762
    reading.release(key, new, keep=True)
    key, other = reading.acquire(str(path), "u2", {})
    assert other is not new
    reading.release(key, other, keep=True)
    assert reading.open_count() == 3
    for i in range(reading.OPEN_FILES):  # other files: the oldest handles are closed
        copy = tmp_path / f"copy{i}.root"
        shutil.copy(sample_path("qcd"), copy)
        reading.release(*reading.acquire(str(copy), "", {}), keep=True)
    assert first.closed and new.closed and reading.open_count() == reading.OPEN_FILES
    assert reading.close_all() == reading.OPEN_FILES and reading.open_count() == 0


def _with_and_without_filter(model: str, fileset: dict, monkeypatch) -> tuple[dict, dict, list, list]:
    """The run with the processor's branch filter and with every branch, and the fields of their events."""
    fields: dict[bool, list] = {True: [], False: []}
    process = TaggerProcessor.process

    def spy(self, events):
        fields[filtered].append(set(ak.fields(events)))
        return process(self, events)

    monkeypatch.setattr(TaggerProcessor, "process", spy)
    filtered = True
    a = run_fileset(model, fileset, **{**QCD, "chunksize": 100_000})
    filtered = False
    with monkeypatch.context() as m:
        m.setattr(TaggerProcessor, "branch_filter", lambda _: None)
        b = run_fileset(model, fileset, **{**QCD, "chunksize": 100_000})
    return a, b, fields[True], fields[False]


def test_the_branch_filter_keeps_every_branch_the_processor_reads(monkeypatch):
    """Generated NanoAOD (the tests' samples) and the real PFNano layouts (TTree, RNTuple, the 2020
    layout): the same histograms, cutflow and jets, one score at a time, with NanoEvents of the filtered
    branches only (PFNano's 1800 branches: no Jet, Electron, Muon, trigger ...)."""
    samples = {"qcd": [str(sample_path("qcd"))]}
    real = {n: [str(NANO / f"{n}.root")] for n in ("pfnano", "pfnano_rntuple", "pfnano_2020_layout")}
    if not all((NANO / f"{n}.root").exists() for n in real):
        real = {}
    a, b, kept, full = _with_and_without_filter("pfn", {**samples, **real}, monkeypatch)
    same_jets(a, b)
    assert a["cutflow"]["qcd"]["tagged_jets"] > 0
    if real:
        assert all({"FatJet", "FatJetPFCands", "GenPart", "genWeight"} <= f for f in kept)
        assert not any({"Jet", "Electron", "Muon", "HLT"} & f for f in kept)
        assert any({"Jet", "Electron", "Muon"} <= f for f in full)


def test_the_branch_filter_on_nanoaod_v15(monkeypatch):
    """NanoAOD v15 (FatJetPFCand -> PFCand, the jetclass family's other member): the same outputs."""
    v15 = {"tt": [str(shared_file(NANO / "nano_tt_v15.root"))]}
    a, b, kept, _ = _with_and_without_filter("pfn-kinpid", v15, monkeypatch)
    same_jets(a, b)
    assert a["cutflow"]["tt"]["tagged_jets"] > 0 and all({"FatJetPFCand", "PFCand"} <= f for f in kept)


def test_a_subclass_reads_every_branch():
    """A user's processor (a subclass) may read anything: no filter."""

    class Mine(TaggerProcessor):
        pass

    names = TaggerProcessor("pfn").branch_filter()
    assert names is not None
    assert {"FatJet_*", "nFatJet", "PFCands_*", "FatJetPFCand_*", "genWeight"} <= set(names)
    assert "Jet_*" not in names and Mine("pfn").branch_filter() is None
