"""Fixed costs of a process: the tuned slot budget read from the user cache instead of measured again, and
a start-up that imports only what the command needs."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest
import uproot

from jettagger_coffea import backends, cache
from jettagger_coffea.data import sample_path
from jettagger_coffea.features import make_table, standardise
from jettagger_coffea.tagger import JetTagger

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
