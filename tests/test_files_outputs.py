"""Issue #30, items 4, 5 and 7 as a hostile user meets them: one file under several names, in two datasets
or with 0 events (accounted exactly); outputs that are whole or absent (kill -9, Ctrl-C, a folder in use,
an output location that cannot be written: one line, exit 2, before the job); the dask-awkward executor
from the CLI, quiet without -v and equal to the iterative one; a failing chunk tried once."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import awkward as ak
import pytest
import uproot

from jettagger_coffea._errors import JetTaggerError
from jettagger_coffea.data import sample_path
from jettagger_coffea.execution import run_fileset
from jettagger_coffea.outputs import claim_output
from jettagger_coffea.processor import Selection, TaggerProcessor

from .compare import same_hists
from .conftest import SHARED, run_cli, shared_file

PFNANO = SHARED / "reference" / "nanoaod" / "pfnano.root"
CLI = [sys.executable, "-m", "jettagger_coffea.cli"]
PT = ("--pt-min", "250")  # pfnano.root's FatJets start at 250 GeV


def _zero_events(src: Path, dst: Path) -> Path:
    """pfnano.root's Events branches (FatJets, PF candidates, SVs) with 0 entries."""
    tree = uproot.open(src)["Events"]
    colls = ("FatJet", "FatJetPFCands", "PFCands", "FatJetSVs", "SV")
    scalars = ["run", "luminosityBlock", "event", "genWeight"]
    arrays = tree.arrays(filter_name=[f"{c}_*" for c in colls] + scalars, entry_stop=1)[:0]
    data = {
        c: ak.zip({k[len(c) + 1 :]: arrays[k] for k in arrays.fields if k.startswith(f"{c}_")}) for c in colls
    }
    data |= {k: arrays[k] for k in scalars}
    with uproot.recreate(dst) as f:
        f.mktree("Events", {k: v.type for k, v in data.items()}).extend(data)
    return dst


def _patched(src: Path, dst: Path, *, unreadable: bool, pt: float = 777.0) -> Path:
    """A byte copy of ``src`` (the same ROOT file UUID) with FatJet_pt's first basket changed: its values
    (a different file that reads), or its key's length (a chunk that fails in processing, after a
    preflight that reads nFatJet only)."""
    shutil.copy(src, dst)
    with uproot.open(src) as f:
        seek = int(f["Events"]["FatJet_pt"].member("fBasketSeek")[0])
    data = bytearray(dst.read_bytes())
    keylen = struct.unpack(">h", data[seek + 14 : seek + 16])[0]
    if unreadable:
        data[seek + 6 : seek + 10] = struct.pack(">i", 100_000)  # fObjlen: "compressed", and it is not
    else:
        data[seek + keylen : seek + keylen + 4] = struct.pack(">f", pt)  # the first FatJet's pT
    dst.write_bytes(bytes(data))
    return dst


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """x.root (a copy of pfnano.root) in d/, a link to it, a file with 0 events, an unreadable chunk."""
    src = shared_file(PFNANO)
    root = tmp_path_factory.mktemp("hostile")
    (root / "d").mkdir()
    x = root / "d" / "x.root"
    shutil.copy(src, x)
    (root / "link.root").symlink_to(x)
    return {
        "root": root,
        "x": x,
        "spellings": [str(x), f"{root}/d/./x.root", f"{root}/d/../d/x.root", str(root / "link.root")],
        "zero": _zero_events(src, root / "zero.root"),
        "bad": _patched(src, root / "bad.root", unreadable=True),
        "other": _patched(src, root / "other.root", unreadable=False),
    }


def _fileset(folder: Path, fileset: dict) -> Path:
    path = folder / "fileset.json"
    path.write_text(json.dumps(fileset))
    return path


def _one_line(r: subprocess.CompletedProcess) -> str:
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


@pytest.fixture(scope="module")
def accounted_run(hostile):
    """One `jettagger run`: x.root under four names, a dataset whose file has 0 events, a file whose
    chunk fails (skipped)."""
    out = hostile["root"] / "out"
    fs = {
        "qcd": {"files": hostile["spellings"], "metadata": {"xsec": 2.0}},
        "empty": {"files": [str(hostile["zero"])]},
        "bad": {"files": [str(hostile["bad"])]},
    }
    r = run_cli(
        "run", "--model", "pfn", "--fileset", _fileset(hostile["root"], fs), "--executor", "iterative",
        "--skip-bad-files", *PT, "-o", out,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return r, out, json.loads((out / "metrics.json").read_text())


def test_one_file_under_four_names_is_read_once(hostile, accounted_run):
    r, _, m = accounted_run
    names = hostile["spellings"]
    line = f"dataset 'qcd': {names[0]} is listed 4 times ({', '.join(names)}): read once"
    assert f"  warning: {line}" in r.stdout.splitlines()
    assert line in m["warnings"]
    n = uproot.open(PFNANO)["Events"].num_entries
    assert m["cutflow"]["qcd"]["events"] == n == 10  # not 40
    assert m["cutflow"]["qcd"]["selected_jets"] == 21
    assert m["normalisation"]["qcd"]["sumw_source"] == "Runs.genEventSumw"


def test_a_file_with_no_events_stays_in_the_cutflow(accounted_run):
    r, _, m = accounted_run
    row = m["cutflow"]["empty"]
    assert row["events"] == 0 and set(row.values()) == {0}
    assert (
        "  warning: dataset 'empty': no events (its 1 readable file(s) hold 0 events)"
        in r.stdout.splitlines()
    )
    assert not [s for s in m["skipped"] if s["dataset"] == "empty"]


def test_a_failing_chunk_is_tried_once_and_accounted(hostile, accounted_run):
    r, _, m = accounted_run
    assert m["skipped"] == [
        {
            "dataset": "bad",
            "file": str(hostile["bad"]),
            "error": "chunk(s) failed during processing",
            "events": 10,
        }
    ]
    assert m["cutflow"]["bad"]["events"] == 0  # 0 processed + 10 skipped = the 10 in the file
    assert "  warning: dataset 'bad': no events processed (its chunks failed, see skipped)" in r.stdout
    assert f"  skipped {hostile['bad']}: 10 events (chunk(s) failed during processing)" in r.stdout
    assert "Skipping bad file after 1 attempts" in r.stderr and "Performed attempt" not in r.stderr


def test_copies_read_once_and_a_failing_chunk_tried_once(hostile, tmp_path, monkeypatch):
    """A byte copy keeps the ROOT file UUID: read once in a dataset, refused in two; a copy with other
    bytes (the same UUID) is another file. A chunk that always fails is tried once (coffea's Runner
    retried it 3 times), then skipped and accounted, or named in the error."""
    copy = shutil.copy(hostile["x"], tmp_path / "copy.root")
    failing = _patched(hostile["x"], tmp_path / "failing.root", unreadable=False, pt=778.0)
    calls = []
    real = TaggerProcessor.process

    def process(self, events):
        calls.append(events.metadata["filename"])
        if events.metadata["filename"] == str(failing):
            raise RuntimeError("this chunk always fails")
        return real(self, events)

    monkeypatch.setattr(TaggerProcessor, "process", process)
    kw = {"executor": "iterative", "progress": False, "selection": Selection(pt_min=250.0)}
    fs = {"a": [str(hostile["x"]), str(copy), str(hostile["other"])], "b": [str(failing)]}
    out = run_fileset("pfn", fs, skip_bad_files=True, **kw)
    assert out["warnings"] == [
        f"dataset 'a': {copy} is a copy of {hostile['x']} (the same ROOT file UUID, 10 events): read once",
        "dataset 'b': no events processed (its chunks failed, see skipped)",
    ]
    assert sorted(calls) == sorted(map(str, (hostile["x"], hostile["other"], failing)))  # each once
    assert out["cutflow"]["a"]["events"] == 20 and out["cutflow"]["b"]["events"] == 0
    assert out["skipped"] == [
        {"dataset": "b", "file": str(failing), "error": "chunk(s) failed during processing", "events": 10}
    ]
    calls.clear()
    with pytest.raises(JetTaggerError, match=r"processing failed: .*this chunk always fails"):
        run_fileset("pfn", {"b": [str(failing)]}, **kw)
    assert calls == [str(failing)]
    with pytest.raises(
        JetTaggerError, match=r"copy\.root \(dataset 'b'\) and .*x\.root \(dataset 'a'\) are one"
    ):
        run_fileset("pfn", {"a": [str(hostile["x"])], "b": [str(copy)]}, **kw)


def test_one_file_in_two_datasets_is_refused(hostile, tmp_path):
    x, dotted = hostile["spellings"][:2]
    fs = _fileset(tmp_path, {"a": [x], "b": [dotted]})
    r = run_cli("run", "--model", "pfn", "--fileset", fs, "-o", tmp_path / "o")
    assert r.returncode == 2
    assert _one_line(r) == (
        f"jettagger run: error: {dotted} is in datasets 'a' (as {x}) and 'b': a file belongs to one dataset"
    )
    assert "Processing" not in r.stdout + r.stderr and not (tmp_path / "o").exists()


def _partial(target: Path) -> list[Path]:
    return list(target.parent.glob(f".{target.name}.partial-*"))


def _wait_for_writing(proc: subprocess.Popen, target: Path, timeout: float = 300) -> None:
    """Until the run writes its outputs: the temporary folder beside ``target`` holds hists.pkl."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if any((p / "hists.pkl").exists() for p in _partial(target)):
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.01)
    raise AssertionError("the run never started writing")


def _complete(folder: Path) -> set[str]:
    """The files of a complete output folder, each read back."""
    names = {p.name for p in folder.iterdir()}
    assert {"hists.pkl", "hists.root", "metrics.json", "msoftdrop.png"} <= names
    with (folder / "hists.pkl").open("rb") as f:
        assert "hists" in pickle.load(f)
    json.loads((folder / "metrics.json").read_text())
    with uproot.open(folder / "hists.root") as f:
        assert len(f.keys()) > 0
    assert all((folder / n).stat().st_size > 1000 for n in names if n.endswith(".png"))
    return names


def test_kill_9_while_writing_leaves_a_complete_output(accounted_run, tmp_path):
    """SIGKILL while the outputs are written: the previous complete output stays (or the new complete
    one); the next claim takes the dead run's lock over and clears its temporary folder."""
    target = tmp_path / "out"
    shutil.copytree(accounted_run[1], target)
    old = {p.name: p.read_bytes() for p in target.iterdir()}
    fs = _fileset(tmp_path, {"qcd": [str(sample_path("qcd"))]})
    proc = subprocess.Popen(
        [*CLI, "run", "--model", "pfn", "--fileset", str(fs), "--executor", "iterative", "-o", str(target)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_for_writing(proc, target)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    names = _complete(target)
    if (target / "metrics.json").read_bytes() == old["metrics.json"]:  # the previous output, whole
        assert {p.name: p.read_bytes() for p in target.iterdir()} == old
    else:  # the new one, whole
        assert json.loads((target / "metrics.json").read_text())["cutflow"]["qcd"]["events"] == 688
    lock = tmp_path / ".out.jettagger-lock"
    assert lock.read_text().strip() == str(proc.pid) and _partial(target)  # what the killed run left
    with claim_output(target, folder=True):  # its lock is taken over, its temporary folder cleared
        assert not _partial(target) and lock.read_text().strip() == str(os.getpid())
    assert not lock.exists() and {p.name for p in target.iterdir()} == names


def test_ctrl_c_ends_with_one_line_and_nothing_half_written(tmp_path):
    target = tmp_path / "out"
    fs = _fileset(tmp_path, {"qcd": [str(shared_file(PFNANO))]})
    proc = subprocess.Popen(
        [
            *CLI,
            "run",
            "--model",
            "pfn",
            "--fileset",
            str(fs),
            "--executor",
            "iterative",
            *PT,
            "-o",
            str(target),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for_writing(proc, target)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert err.strip().splitlines()[-1] == "jettagger run: interrupted" and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fileset.json"]  # no output, partial or lock


def test_a_folder_in_use_is_refused(tmp_path):
    target = tmp_path / "busy"
    with claim_output(target, folder=True):
        r = run_cli("run", "--model", "pfn", "-o", target)
    assert r.returncode == 2
    lock = tmp_path / ".busy.jettagger-lock"
    assert _one_line(r) == (
        f"jettagger run: error: -o {target}: in use by another jettagger (pid {os.getpid()}, "
        f"lock file {lock})"
    )
    assert r.stdout == "" and not target.exists() and not lock.exists()


def _writable(folder: Path) -> bool:
    try:
        (folder / "jettagger-probe").mkdir()
    except OSError:
        return False
    (folder / "jettagger-probe").rmdir()
    return True


def test_output_location_checked_before_the_job(tmp_path):
    """One line, exit 2, before any file is read: /sys, onto a file, under a file, a folder with other
    files; predict onto a folder."""
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "thesis.tex").write_text("mine")
    cases = [
        (a_file, f"-o {a_file}: exists and is not a folder"),
        (a_file / "sub", f"-o {a_file / 'sub'}: {a_file} is a file, not a folder"),
        (
            theirs,
            f"-o {theirs}: holds files jettagger does not write (thesis.tex); outputs replace the whole",
        ),
    ]
    if not _writable(Path("/sys")):
        cases.append((Path("/sys/x"), "-o /sys/x: cannot write in /sys ("))
    for target, message in cases:
        t0 = time.perf_counter()
        r = run_cli("run", "--model", "pfn", "-o", target)
        assert r.returncode == 2, r.stderr
        assert _one_line(r).startswith(f"jettagger run: error: {message}"), r.stderr
        assert r.stdout == "" and time.perf_counter() - t0 < 60
    assert a_file.read_text() == "mine" and [p.name for p in theirs.iterdir()] == ["thesis.tex"]
    folder = tmp_path / "jets.parquet"
    folder.mkdir()
    r = run_cli("predict", "--model", "pfn", "--input", sample_path("qcd"), "-o", folder)
    assert (
        r.returncode == 2
        and _one_line(r) == f"jettagger predict: error: -o {folder}: is a folder, not a file"
    )


def test_predict_replaces_its_file_whole(tmp_path):
    target = tmp_path / "jets.parquet"
    target.write_bytes(b"an older, truncated table")
    r = run_cli("predict", "--model", "pfn", "--input", shared_file(PFNANO), "-o", target)
    assert r.returncode == 0, r.stderr
    assert len(ak.from_parquet(target)) == 24  # every FatJet of the 10 events
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jets.parquet"]  # no partial file, no lock


@pytest.mark.slow
def test_dask_awkward_from_the_cli_equals_iterative(tmp_path):
    """The bundled samples under `--executor dask-awkward` (a LocalCluster): exit 0, no INFO lines without
    -v, the cutflow and every histogram of the iterative run."""
    fs = {
        p: {"files": [str(sample_path(p))], "metadata": {"xsec": 1.0 + i}}
        for i, p in enumerate(("qcd", "tbqq"))
    }
    ref = run_fileset("pfn", fs, executor="iterative", chunksize=400, progress=False)
    r = run_cli(
        "run", "--model", "pfn", "--fileset", _fileset(tmp_path, fs), "--executor", "dask-awkward",
        "--workers", "1", "--chunksize", "1000", "-o", tmp_path / "out",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "pfn on dask-awkward: 2000 jets" in r.stdout
    assert not [line for line in r.stderr.splitlines() if "INFO" in line], r.stderr
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert m["cutflow"].keys() == ref["cutflow"].keys()
    for ds, row in ref["cutflow"].items():
        assert m["cutflow"][ds] == pytest.approx(row, rel=1e-12)
    with (tmp_path / "out" / "hists.pkl").open("rb") as f:
        hists = pickle.load(f)["hists"]
    names = [n for n in ref["hists"] if n != "counts"]  # counts: per file under the Runner, per dataset
    same_hists(hists, ref["hists"], names=names)  # under dask-awkward: the cutflow above compares them
