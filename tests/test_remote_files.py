"""Issue #27, part 3 and the XRootD half of part 5: filesets of ``root://`` (and ``http://``) URLs read from a
real xrootd on 127.0.0.1 (tests/xrootd_server.py) give the histograms of the same files read locally; an
unreachable file is named (exit 2), or skipped and accounted with ``--skip-bad-files``; a server restarted
mid-run is retried to the identical result; one stopped for good ends the run with the file named and no
output written."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import time

import pytest

from jettagger_coffea import remote
from jettagger_coffea.cli import main
from jettagger_coffea.data import sample_path
from jettagger_coffea.execution import run_fileset
from jettagger_coffea.processor import TaggerProcessor

from .compare import same_results
from .xrootd_server import XRootDServer

KW = {"executor": "iterative", "chunksize": 250, "progress": False}  # qcd: 688 events, 3 chunks
#: short enough to keep the faults cheap: a dead server costs (1 + RETRIES) x TIMEOUT + the backoff
TIMEOUT, RETRIES = 1, 2


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


def assert_same_result(got: dict, want: dict) -> None:
    """For each dataset ``got`` has: exact counts (cutflow) and every histogram to 1e-9 of ``want``'s."""
    assert got["skipped"] == want["skipped"] == []
    same_results(got, want, subset=True)


def test_root_urls_read_like_local_paths(xrootd, served, local):
    fs = {p: [xrootd.url(f)] for p, f in served.items()}
    out = run_fileset("pfn", fs, **KW)
    assert out["cutflow"].keys() == {"qcd", "tbqq"}
    assert out["cutflow"]["qcd"]["events"] == 688 and out["cutflow"]["tbqq"]["selected_jets"] == 1000
    assert_same_result(out, local)
    assert sorted(out["hists"]["counts"].axes["file"]) == sorted(u for urls in fs.values() for u in urls)


def test_http_urls_read_like_local_paths(xrootd, served, local):
    """XrdHttp on the same server: uproot's range requests through fsspec's aiohttp filesystem."""
    pytest.importorskip("aiohttp")
    out = run_fileset("pfn", {"qcd": [xrootd.http_url(served["qcd"])]}, **KW)
    assert out["cutflow"].keys() == {"qcd"}
    assert_same_result(out, local)


def test_an_unreachable_url_is_named_and_exits_2(tmp_path, short_timeouts, monkeypatch, capsys):
    """Nothing listens on the port: tried 1 + 1 times, then one line names the URL, before any work."""
    monkeypatch.setattr(remote, "REMOTE_RETRIES", 1)
    with XRootDServer() as gone:
        url = gone.url(gone.folder / "qcd.root")
    fileset = tmp_path / "fileset.json"
    fileset.write_text(json.dumps({"qcd": [url]}))
    start = time.perf_counter()
    argv = ["run", "--model", "pfn", "--fileset", str(fileset), "--executor", "iterative"]
    code = main([*argv, "-o", str(tmp_path / "out")])
    assert time.perf_counter() - start < 30
    assert code == 2
    *warnings, error = capsys.readouterr().err.strip().splitlines()  # (warnings: where logging prints)
    assert error == (
        f"jettagger run: error: cannot read {url} (dataset 'qcd'): OSError: Failed to open file: [ERROR] "
        "Operation expired (tried 2 times)"
    )
    assert all("trying again in 1 s" in w for w in warnings), warnings
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fileset.json"]


def test_timeout_and_retries_from_the_environment():
    env = {**os.environ, "JETTAGGER_REMOTE_TIMEOUT": "7", "JETTAGGER_REMOTE_RETRIES": "0"}
    code = "from jettagger_coffea import remote as r; print(r.REMOTE_TIMEOUT, r.REMOTE_RETRIES)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert r.stdout.split() == ["7", "0"]


def test_an_unreachable_url_is_skipped_and_accounted(xrootd, served, local, short_timeouts, monkeypatch):
    monkeypatch.setattr(remote, "REMOTE_RETRIES", 0)
    with XRootDServer() as gone:
        dead = gone.url(gone.folder / "qcd.root")
    fs = {"qcd": [xrootd.url(served["qcd"]), dead]}
    out = run_fileset("pfn", fs, skip_bad_files=True, **KW)
    assert [(s["dataset"], s["file"], s["events"]) for s in out["skipped"]] == [("qcd", dead, None)]
    # the client's answer for a host that does not answer (its state tells which: expired or refused)
    assert re.search(r"Operation expired|Connection error", out["skipped"][0]["error"])
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
    restarted = threading.Timer(TIMEOUT + 0.5, xrootd.start)  # the try at 0 expires, the one at 2 s reads

    def stop() -> None:
        xrootd.stop()
        restarted.start()

    _after_first_chunk(monkeypatch, stop)
    caplog.set_level(logging.WARNING, logger="jettagger_coffea.remote")
    try:
        out = run_fileset("pfn", {"qcd": [xrootd.url(served["qcd"])]}, **KW)
    finally:
        restarted.join()
        xrootd.start()  # (a no-op where it runs)
    assert_same_result(out, local)
    retried = [r.getMessage() for r in caplog.records if "trying again" in r.getMessage()]
    assert retried and all(m.startswith(xrootd.url(served["qcd"])) for m in retried), caplog.text


@pytest.mark.filterwarnings("ignore:Skipping bad file:UserWarning")  # coffea's word for the skipped chunk
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
        time.sleep(1.5)  # past the XRootD client's error window (1 s): the preflight is not retried
        _after_first_chunk(monkeypatch, server.stop)
        monkeypatch.setattr(remote, "REMOTE_RETRIES", 0)
        out = run_fileset("pfn", {"qcd": [url]}, **{**KW, "chunksize": 344, "skip_bad_files": True})
    assert [(s["file"], s["events"]) for s in out["skipped"]] == [(url, 344)]
    assert out["cutflow"]["qcd"]["events"] == 344
