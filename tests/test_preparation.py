"""Issue #27, item 4: preparation where the files are. Each file is opened once before the first chunk,
on the dask workers when a client is given (the same checked files, events, chunks and errors as in this
process), and not at all for preparation on a second run over unchanged files (a per-file cache on disk);
a changed file is checked again and a corrupt cache entry is never trusted."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import uproot

from jettagger_coffea._errors import JetTaggerError
from jettagger_coffea.bundle import Bundle
from jettagger_coffea.data import PROCESSES, sample_path
from jettagger_coffea.execution import CheckedFiles, _work_items, run_fileset
from jettagger_coffea.fileset import check_fileset, preflight
from jettagger_coffea.preparation import FileCache, ModelCheck, steps


@pytest.fixture(scope="module")
def check() -> ModelCheck:
    b = Bundle.load("pfn")
    return ModelCheck(b.config, b.preset)


@pytest.fixture
def opens(monkeypatch) -> list[str]:
    """Every ``uproot.open`` in this process, by file."""
    calls: list[str] = []
    real = uproot.open

    def counting(path, *args, **kwargs):
        calls.append(str(next(iter(path)) if isinstance(path, dict) else path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(uproot, "open", counting)
    return calls


@pytest.fixture
def files(tmp_path) -> dict[str, Path]:
    """Copies of the bundled PFNano-like samples (own paths and stamps), and a file that is not ROOT."""
    out = {p: Path(shutil.copy(sample_path(p), tmp_path / f"{p}.root")) for p in PROCESSES}
    out["bad"] = tmp_path / "bad.root"
    out["bad"].write_bytes(b"not a ROOT file")
    return out


def _fileset(files: dict[str, Path]) -> dict:
    return check_fileset(
        {"sig": [str(files["tbqq"]), str(files["bad"])], "bkg": [str(files[p]) for p in PROCESSES[:3]]}
    )


def _summary(good: dict) -> dict:
    """What a preflight told per file (the presets by name)."""
    keep = ("files", "events", "sumw", "uuid", "rntuple", "duplicates")
    return {
        ds: {**{k: e[k] for k in keep}, "sources": {p: s.name for p, s in e["sources"].items()}}
        for ds, e in good.items()
    }


def test_workers_prepare_what_this_process_does(files, check, tmp_path):
    """One task per file on a LocalCluster: the same files, events, UUIDs, presets, skipped files and
    chunks as here, the chunks equal to coffea's own preprocessing (DataGroupSpec, no dict), and the same
    one-line errors."""
    from coffea.dataset_tools import DataGroupSpec, preprocess
    from distributed import Client, LocalCluster

    fs = _fileset(files)
    here = preflight(fs, True, check)
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cl,
        Client(cl) as client,
    ):
        there = preflight(fs, True, check, client=client, cache=FileCache(tmp_path / "cache"))
        jetclass = str(sample_path("qcd", "jetclass"))
        errors = []
        for c in (None, client):
            with pytest.raises(JetTaggerError) as err:
                preflight(check_fileset({"j": {"files": {jetclass: "tree"}}}), True, check, client=c)
            errors.append(str(err.value))
            with pytest.raises(JetTaggerError) as err:
                preflight(fs, False, check, client=c)
            errors.append(str(err.value))
    assert _summary(there[0]) == _summary(here[0])
    assert (
        there[1]
        == here[1]
        == [{"dataset": "sig", "file": str(files["bad"]), "error": here[1][0]["error"], "events": None}]
    )
    assert errors[:2] == errors[2:]
    assert errors[0] == f"{jetclass}: no FatJet collection in this NanoAOD"
    assert errors[1].startswith(f"cannot read {files['bad']} (dataset 'sig'): ")
    assert here[0]["bkg"]["events"] == {
        str(files[p]): uproot.open(files[p])["Events"].num_entries for p in PROCESSES[:3]
    }
    assert {s.name for e in here[0].values() for s in e["sources"].values()} == {"jetclass"}

    good = {ds: {"files": dict.fromkeys(e["files"], "Events")} for ds, e in here[0].items()}
    theirs, _ = preprocess(DataGroupSpec.model_validate(good), step_size=300, save_form=False)
    ours = _checked(here, chunksize=300).to_run()
    for ds, spec in ours.items():
        for path, f in spec["files"].items():
            t = theirs[ds].files[path]
            assert (f["steps"], f["num_entries"], f["uuid"]) == (t.steps, t.num_entries, t.uuid)
    assert len(_work_items(ours)) == sum(len(f["steps"]) for s in ours.values() for f in s["files"].values())


def _checked(prepared: tuple, chunksize: int) -> CheckedFiles:
    good, skipped = prepared
    return CheckedFiles(
        trees={ds: e["files"] for ds, e in good.items()},
        expected={ds: e["events"] for ds, e in good.items()},
        runs_sumw={ds: e["sumw"] for ds, e in good.items()},
        uuids={ds: e["uuid"] for ds, e in good.items()},
        sources=[],
        rntuples=[],
        skipped=skipped,
        warnings=[],
        chunksize=chunksize,
    )


def test_a_second_run_opens_no_file(files, check, tmp_path, opens):
    """The second preparation with the same check opens nothing (the unreadable file is opened again: a
    failure is never cached), and tells the same; another check (another model) opens every file."""
    fs, cache = _fileset(files), FileCache(tmp_path / "cache")
    first = preflight(fs, True, check, cache=cache)
    assert sorted(set(opens)) == sorted(str(f) for f in files.values())
    opens.clear()
    second = preflight(fs, True, check, cache=cache)
    assert opens == [str(files["bad"])] * 2  # the open, then the header's event count for the record
    assert _summary(second[0]) == _summary(first[0]) and second[1] == first[1]
    opens.clear()
    preflight(fs, True, None, cache=cache)
    assert len(set(opens)) == len(files)


def test_a_changed_file_is_checked_again(files, check, tmp_path, opens):
    """Touched: opened again (the same answer); rewritten with other events: opened again, the new count."""
    fs, cache = check_fileset({"a": [str(files["qcd"]), str(files["wqq"])]}), FileCache(tmp_path / "c")
    before = preflight(fs, False, check, cache=cache)[0]["a"]
    opens.clear()
    os.utime(files["qcd"])
    assert preflight(fs, False, check, cache=cache)[0]["a"]["events"] == before["events"]
    assert opens == [str(files["qcd"])]
    opens.clear()
    shutil.copy(sample_path("zqq"), files["qcd"])
    after = preflight(fs, False, check, cache=cache)[0]["a"]
    assert opens == [str(files["qcd"])]
    assert (
        after["events"][str(files["qcd"])]
        == uproot.open(sample_path("zqq"))["Events"].num_entries
        != (before["events"][str(files["qcd"])])
    )
    assert after["uuid"][str(files["qcd"])] != before["uuid"][str(files["qcd"])]


@pytest.mark.parametrize(
    "spoil",
    [
        lambda e: json.dumps(e)[:-9],
        lambda e: json.dumps({**e, "events": -5}),
        lambda e: json.dumps({**e, "events": "688"}),
        lambda e: json.dumps({k: v for k, v in e.items() if k != "uuid"}),
        lambda e: json.dumps({**e, "format": 0}),
        lambda e: json.dumps([e]),
    ],
    ids=["truncated", "negative", "string", "missing", "format", "list"],
)
def test_a_corrupt_entry_is_ignored(files, check, tmp_path, opens, spoil):
    """A spoilt entry is a miss: the file is opened, the right values come back, the entry is rewritten."""
    fs, cache = check_fileset({"a": [str(files["qcd"])]}), FileCache(tmp_path / "c")
    want = preflight(fs, False, check, cache=cache)[0]
    (entry,) = (tmp_path / "c").rglob("*.json")
    entry.write_text(spoil(json.loads(entry.read_text())))
    opens.clear()
    assert _summary(preflight(fs, False, check, cache=cache)[0]) == _summary(want)
    assert opens == [str(files["qcd"])]
    assert json.loads(entry.read_text())["events"] == want["a"]["events"][str(files["qcd"])]


def test_the_runner_opens_files_only_for_chunks(files, tmp_path, monkeypatch, opens):
    """coffea's Runner gets pre-made chunks: no metadata fetch of its own. The first run opens each file
    once to prepare and once for all its chunks (:mod:`.reading`); with the cache warm, once for its
    chunks only."""
    from coffea.processor import Runner

    def no_fetch(*args, **kwargs):
        raise AssertionError("the Runner fetched metadata")

    monkeypatch.setattr(Runner, "metadata_fetcher_root", staticmethod(no_fetch))
    monkeypatch.setenv("JETTAGGER_CACHE", str(tmp_path / "cache"))
    fs = {"a": [str(files["qcd"]), str(files["wqq"])]}
    kw = {"executor": "iterative", "chunksize": 400, "progress": False}
    n = {p: uproot.open(files[p])["Events"].num_entries for p in ("qcd", "wqq")}
    chunks = sum(len(steps(v, 400)) for v in n.values())
    opens.clear()
    first = run_fileset("pfn", fs, **kw)
    assert chunks > len(n) and len(opens) == 2 * len(n)
    opens.clear()
    second = run_fileset("pfn", fs, **kw)
    assert len(opens) == len(n)
    assert first["cutflow"] == second["cutflow"] and first["cutflow"]["a"]["events"] == sum(n.values())
