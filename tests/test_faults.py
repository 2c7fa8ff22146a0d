"""Faults and hostile input: nothing lost, everything named."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time

import awkward as ak
import numpy as np
import pytest
import uproot

from jettagger_coffea._errors import JetTaggerError
from jettagger_coffea.backends import run_batched
from jettagger_coffea.data import default_fileset, sample_path
from jettagger_coffea.execution import run_fileset
from jettagger_coffea.features import make_table, standardise
from jettagger_coffea.tagger import JetTagger


def _corrupt_copy(src, dst):
    data = bytearray(src.read_bytes())
    half = len(data) // 3
    data[half:] = bytes(len(data) - half)  # baskets zeroed, header intact
    dst.write_bytes(bytes(data))
    return dst


def test_bad_files_skipped_and_accounted(tiny_bundle, tmp_path):
    corrupt = _corrupt_copy(sample_path("wqq"), tmp_path / "wqq_corrupt.root")
    missing = tmp_path / "missing.root"
    fs = {"qcd": default_fileset()["qcd"], "wqq": {"files": {str(corrupt): "Events", str(missing): "Events"}}}
    out = run_fileset(
        tiny_bundle, fs, executor="iterative", chunksize=300, skip_bad_files=True, progress=False
    )
    skipped = {s["file"]: s for s in out["skipped"]}
    assert set(skipped) == {str(corrupt), str(missing)}
    assert skipped[str(corrupt)]["events"] == 1000  # the header still says how many it held
    assert skipped[str(missing)]["events"] is None
    processed = sum(c["events"] for c in out["cutflow"].values())
    n_qcd = uproot.open(sample_path("qcd"))["Events"].num_entries
    assert processed == n_qcd
    assert processed + sum(s["events"] or 0 for s in out["skipped"]) == n_qcd + 1000
    with pytest.raises(JetTaggerError, match=r"missing\.root"):
        run_fileset(
            tiny_bundle, fs, executor="iterative", chunksize=300, skip_bad_files=False, progress=False
        )
    del fs["wqq"]["files"][str(missing)]
    with pytest.raises(JetTaggerError, match=r"wqq_corrupt\.root"):
        run_fileset(
            tiny_bundle, fs, executor="iterative", chunksize=300, skip_bad_files=False, progress=False
        )


@pytest.mark.slow
def test_killed_worker_gives_identical_histograms(tiny_bundle):
    from distributed import Client, LocalCluster

    fs = {p: default_fileset()[p] for p in ("qcd", "tbqq")}
    clean = run_fileset(tiny_bundle, fs, executor="iterative", chunksize=50, progress=False)
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        pids = client.run(os.getpid)
        victim = min(pids.values())
        killer = threading.Timer(4.0, os.kill, (victim, signal.SIGKILL))
        killer.start()
        t0 = time.perf_counter()
        out = run_fileset(
            tiny_bundle,
            fs,
            executor="dask",
            scheduler=cluster.scheduler_address,
            chunksize=50,
            progress=False,
        )
        killer.join()
        assert time.perf_counter() - t0 > 4.0, "the worker must die while chunks are in flight"
        assert victim not in client.run(os.getpid).values()
    assert out["cutflow"] == clean["cutflow"]
    for name in ("jets", "msoftdrop", "predicted", "scores", "wp_pt"):
        for ds in ("qcd", "tbqq"):
            np.testing.assert_array_equal(
                out["hists"][name][{"dataset": ds}]
                .project(*[a.name for a in out["hists"][name].axes if a.name not in ("dataset", "truth")])
                .values(),
                clean["hists"][name][{"dataset": ds}]
                .project(*[a.name for a in clean["hists"][name].axes if a.name not in ("dataset", "truth")])
                .values(),
            )


def _records(n=6):
    t = uproot.open(sample_path("tbqq", "jetclass"))["tree"].arrays(entry_stop=n)
    return {k: t[k] for k in t.fields}


def test_odd_jets_defined_and_counted(tiny_bundle):
    tagger = JetTagger(tiny_bundle)
    cols = _records()
    ref = tagger.score_jets(cols).scores
    odd = dict(cols)
    n0 = int(ak.num(cols["part_px"])[0])
    reps = -(-1500 // n0)
    for k, v in cols.items():  # jet 0: 1500+ constituents (its own particles repeated, pT order kept)
        if k.startswith("part_"):
            big = ak.concatenate([ak.flatten(v[:1])] * reps)
            rest = ak.to_list(v[1:])
            odd[k] = ak.Array([ak.to_list(big), *rest])
    e = ak.to_numpy(ak.flatten(cols["part_energy"])).copy()
    px = ak.to_numpy(ak.flatten(cols["part_px"])).copy()
    offs = np.r_[0, np.cumsum(ak.to_numpy(ak.num(cols["part_px"])))]
    px[offs[1]] = np.nan  # jet 1: a NaN momentum
    e[offs[2]] = np.inf  # jet 2: infinite energy
    e[offs[3]] = 0.0  # jet 3: a zero-energy particle
    e[offs[4]] = 1e-3  # jet 4: negative mass^2 (E < |p|)
    counts = ak.num(cols["part_px"])
    for k, arr in (("part_energy", e), ("part_px", px)):
        flat = ak.unflatten(arr, counts)
        odd[k] = ak.concatenate([odd[k][:1], flat[1:]])
    res = tagger.score_jets(odd)
    assert res.n_jets == 6
    assert res.n_nonfinite > 0
    assert np.isfinite(res.scores).all()
    # weaver truncates to the config length: the 1500-particle jet scores like its first 128 particles
    trunc = {k: (v[:1, :128] if k.startswith("part_") else v[:1]) for k, v in odd.items()}
    np.testing.assert_allclose(res.scores[0], tagger.score_jets(trunc).scores[0], atol=1e-6)
    np.testing.assert_allclose(res.scores[5], ref[5], atol=1e-6)


def test_batches_bounded(tiny_bundle):
    tagger = JetTagger(tiny_bundle)
    t = uproot.open(sample_path("qcd", "jetclass"))["tree"]
    std = standardise(make_table(t, tagger.config), tagger.config)
    big = std.take(np.tile(np.arange(len(std)), 25))  # 25 000 jets
    shapes = []

    class Recorder:
        input_names = tagger.backend.input_names

        def run(self, inputs):
            shapes.append(inputs["pf_features"].shape)
            return tagger.backend.run(inputs)

    scores = run_batched(Recorder(), big, 4, "dynamic", 1, max_slots=8192)
    assert len(scores) == 25_000
    assert max(s[0] * s[2] for s in shapes) <= 8192
    np.testing.assert_allclose(scores[:1000], scores[1000:2000], atol=1e-6)
    # pairwise networks: the (N, P, P) budget binds at high multiplicity, the slot budget at low
    shapes.clear()
    paired = run_batched(Recorder(), big, 4, "dynamic", 1, max_slots=8192, max_pairs=100_000)
    assert max(s[0] * s[2] ** 2 for s in shapes) <= 100_000
    assert max(s[0] * s[2] for s in shapes) <= 8192
    assert sum(s[0] for s in shapes) == 25_000
    np.testing.assert_allclose(paired, scores, atol=1e-6)


def test_pickle_checkpoint_refused(tmp_path):
    torch = pytest.importorskip("torch")
    from jettagger_coffea.nn import build, load_state

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"model": Evil()}, tmp_path / "evil.pt")
    roles = {"pf_features": "features", "pf_mask": "mask"}
    model = build("pfn", ["pf_features", "pf_mask"], {"pf_features": 7, "pf_mask": 1}, 4, roles=roles)
    with pytest.raises(JetTaggerError, match=r"evil\.pt"):
        load_state(model, tmp_path / "evil.pt")
    assert not marker.exists()


def test_two_runs_bit_identical(tiny_bundle):
    fs = {p: default_fileset()[p] for p in ("zqq",)}
    a = run_fileset(tiny_bundle, fs, executor="iterative", chunksize=333, progress=False)
    b = run_fileset(tiny_bundle, fs, executor="iterative", chunksize=333, progress=False)
    for name in a["hists"]:
        np.testing.assert_array_equal(a["hists"][name].values(flow=True), b["hists"][name].values(flow=True))
    shutil.rmtree(tiny_bundle.parent / "nothing", ignore_errors=True)
