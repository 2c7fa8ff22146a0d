"""Issue #27, part 3 and the XRootD half of part 5: filesets of ``root://`` (and ``http://``) URLs read from a
real xrootd on 127.0.0.1 (tests/xrootd_server.py) give the histograms of the same files read locally; an
unreachable file is named (exit 2), or skipped and accounted with ``--skip-bad-files``; a server restarted
mid-run is retried to the identical result; one stopped for good ends the run with the file named and no
output written."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time

import hist
import numpy as np
import pytest

from jettagger_coffea import remote
from jettagger_coffea.cli import main
from jettagger_coffea.data import sample_path
from jettagger_coffea.execution import run_fileset
from jettagger_coffea.processor import TaggerProcessor

from .xrootd_server import XRootDServer

KW = {"executor": "iterative", "chunksize": 250, "progress": False}  # qcd: 688 events, 3 chunks
#: short enough to keep the faults cheap: a dead server costs (1 + RETRIES) x TIMEOUT + the backoff
TIMEOUT, RETRIES = 2, 2


@pytest.fixture(scope="module")
def served(xrootd):
    """Copies of the bundled qcd and tbqq NanoAOD samples in the server's folder."""
    out = {}
    for p in ("qcd", "tbqq"):
        out[p] = xrootd.folder / f"{p}.root"
        shutil.copy(sample_path(p), out[p])
    return out


@pytest.fixture(scope="module")
def local():
    """The reference: the same samples from their local paths."""
    return run_fileset("pfn", {p: [str(sample_path(p))] for p in ("qcd", "tbqq")}, **KW)


@pytest.fixture
def short_timeouts(monkeypatch):
    monkeypatch.setattr(remote, "REMOTE_TIMEOUT", TIMEOUT)
    monkeypatch.setattr(remote, "REMOTE_RETRIES", RETRIES)


def _by_dataset(h) -> dict:
    """{category labels: values and variances with flow}, the file axis summed (its labels are the paths)."""
    if "file" in h.axes.name:
        h = h[{"file": sum}]
    cats = [ax for ax in h.axes if isinstance(ax, hist.axis.StrCategory)]
    out = {}
    for combo in np.ndindex(*[len(ax) for ax in cats]):
        labels = tuple(ax[i] for ax, i in zip(cats, combo, strict=True))
        out[labels] = h[{ax.name: hist.loc(lab) for ax, lab in zip(cats, labels, strict=True)}].view(
            flow=True
        )
    return out


def assert_same_result(got: dict, want: dict) -> None:
    """Exact counts (cutflow) and every histogram's values and variances to 1e-9."""
    assert got["skipped"] == want["skipped"] == []
    assert got["cutflow"] == want["cutflow"]
    assert got["hists"].keys() == want["hists"].keys()
    for name, h in want["hists"].items():
        a, b = _by_dataset(got["hists"][name]), _by_dataset(h)
        assert a.keys() == b.keys(), name
        for k in b:
            for field in ("value", "variance"):
                np.testing.assert_allclose(a[k][field], b[k][field], rtol=1e-9, err_msg=f"{name} {k}")


def test_root_urls_read_like_local_paths(xrootd, served, local):
    fs = {p: [xrootd.url(f)] for p, f in served.items()}
    out = run_fileset("pfn", fs, **KW)
    assert out["cutflow"]["qcd"]["events"] == 688 and out["cutflow"]["tbqq"]["selected_jets"] == 1000
    assert_same_result(out, local)
    assert sorted(out["hists"]["counts"].axes["file"]) == sorted(u for urls in fs.values() for u in urls)


def test_http_urls_read_like_local_paths(xrootd, served, local):
    """XrdHttp on the same server: uproot's range requests through fsspec's aiohttp filesystem."""
    pytest.importorskip("aiohttp")
    out = run_fileset("pfn", {p: [xrootd.http_url(f)] for p, f in served.items()}, **KW)
    assert_same_result(out, local)


def test_an_unreachable_url_is_named_and_exits_2(tmp_path):
    """Nothing listens on the port: the CLI tries 1 + 1 times, then one line names the URL."""
    with XRootDServer() as gone:
        url = gone.url(gone.folder / "qcd.root")
    fileset = tmp_path / "fileset.json"
    fileset.write_text(json.dumps({"qcd": [url]}))
    env = {**os.environ, "JETTAGGER_REMOTE_TIMEOUT": "1", "JETTAGGER_REMOTE_RETRIES": "1"}
    start = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-m", "jettagger_coffea.cli", "run", "--model", "pfn", "--fileset", fileset,
         "--executor", "iterative", "-o", tmp_path / "out"],
        capture_output=True, text=True, timeout=300, env=env, check=False,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f"jettagger run: error: cannot read {url} (dataset 'qcd'): OSError: ")
    assert last.endswith("(tried 2 times)"), last
    assert "trying again in 1 s" in r.stderr  # the one retry, said
    assert not (tmp_path / "out").exists()
    assert time.perf_counter() - start < 60


def test_an_unreachable_url_is_skipped_and_accounted(xrootd, served, local, short_timeouts, monkeypatch):
    monkeypatch.setattr(remote, "REMOTE_RETRIES", 0)
    with XRootDServer() as gone:
        dead = gone.url(gone.folder / "qcd.root")
    fs = {"qcd": [xrootd.url(served["qcd"]), dead]}
    out = run_fileset("pfn", fs, skip_bad_files=True, **KW)
    assert [(s["dataset"], s["file"], s["events"]) for s in out["skipped"]] == [("qcd", dead, None)]
    assert "Operation expired" in out["skipped"][0]["error"]
    assert out["cutflow"]["qcd"] == local["cutflow"]["qcd"]


def test_a_missing_file_on_a_live_server_fails_at_once(xrootd, short_timeouts, caplog):
    """The server's answer ([3011] no such file) is final: not retried, no waiting."""
    url = xrootd.url(xrootd.folder / "absent.root")
    start = time.perf_counter()
    with pytest.raises(ValueError, match=rf"^cannot read {url} \(dataset 'qcd'\): OSError: .*\[3011\]"):
        run_fileset("pfn", {"qcd": [url]}, **KW)
    assert time.perf_counter() - start < TIMEOUT
    assert "trying again" not in caplog.text


def _after_first_chunk(monkeypatch, action) -> None:
    """``action()`` once, right after the first chunk is processed (the Runner reopens the file for each
    chunk: the next one meets what ``action`` did)."""
    original, done = TaggerProcessor.process, []

    def process(self, events):
        out = original(self, events)
        if not done:
            done.append(True)
            action()
        return out

    monkeypatch.setattr(TaggerProcessor, "process", process)


def test_a_server_restarted_mid_run_gives_the_same_result(
    xrootd, served, local, short_timeouts, monkeypatch, caplog
):
    """Down for longer than a timeout: the next chunk's reads expire and are retried until it is back."""
    restarted = threading.Timer(TIMEOUT + 1.5, xrootd.start)

    def stop() -> None:
        xrootd.stop()
        restarted.start()

    _after_first_chunk(monkeypatch, stop)
    caplog.set_level(logging.WARNING, logger="jettagger_coffea.remote")
    try:
        out = run_fileset("pfn", {p: [xrootd.url(f)] for p, f in served.items()}, **KW)
    finally:
        restarted.join()
        xrootd.start()  # (a no-op where it runs)
    assert_same_result(out, local)
    retried = [r.getMessage() for r in caplog.records if "trying again" in r.getMessage()]
    assert retried and all(m.startswith(xrootd.url(served["qcd"])) for m in retried), caplog.text


def test_a_server_stopped_for_good_mid_run(tmp_path, short_timeouts, monkeypatch, capsys):
    """Exit 2 naming the file, no output folder (nothing half-written); with --skip-bad-files the
    unread chunks' events are accounted to the file."""
    with XRootDServer() as server:
        shutil.copy(sample_path("qcd"), server.folder / "qcd.root")
        url = server.url(server.folder / "qcd.root")
        fileset = tmp_path / "fileset.json"
        fileset.write_text(json.dumps({"qcd": [url]}))
        monkeypatch.setattr(remote, "REMOTE_RETRIES", 1)
        _after_first_chunk(monkeypatch, server.stop)
        code = main(
            ["run", "--model", "pfn", "--fileset", str(fileset), "--executor", "iterative",
             "--chunksize", "344", "-o", str(tmp_path / "out")]
        )  # fmt: skip
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2
        assert err[-1].startswith("jettagger run: error: processing failed: ") and url in err[-1], err
        assert sorted(p.name for p in tmp_path.iterdir()) == ["fileset.json"]  # no output, partial or lock

        server.start()
        _after_first_chunk(monkeypatch, server.stop)
        out = run_fileset("pfn", {"qcd": [url]}, **{**KW, "chunksize": 344, "skip_bad_files": True})
    assert [(s["file"], s["events"]) for s in out["skipped"]] == [(url, 344)]
    assert out["cutflow"]["qcd"]["events"] == 344
