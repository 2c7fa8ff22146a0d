"""The model travels with the job, to workers that never see the client's files (issue #27).

A real external cluster (``dask scheduler`` + ``dask worker`` processes, each worker in a mount namespace
with a tmpfs over the client's bundles, the input files and ../shared) reads the inputs over XRootD from
a real server on 127.0.0.1. ``jettagger run --scheduler`` there must give what a local iterative run on
local paths gives, with the model sent once per worker, also when a worker is killed mid-run."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from jettagger_coffea import backends, shipping
from jettagger_coffea.bundle import resolve
from jettagger_coffea.data import default_fileset

from .compare import same_runs
from .conftest import SHARED, import_cms, run_cli, shared_file
from .external_cluster import ExternalCluster, can_isolate

NANO = SHARED / "reference" / "nanoaod"
CMS = SHARED / "reference" / "cms" / "ParticleNetAK8_General_V01"


# -- the model's bytes in the pickle (no cluster) ---------------------------------------------------------
def test_a_pickled_tagger_runs_where_its_bundle_folder_is_gone(tmp_path):
    """The bundle folder deleted after pickling: another process still scores the same."""
    bundle = tmp_path / "bundle"
    shutil.copytree(resolve("pfn"), bundle)
    from jettagger_coffea import JetTagger
    from jettagger_coffea.nanoevents import open_events

    tagger = JetTagger(bundle)
    events = open_events(str(default_fileset()["tbqq"]["files"].popitem()[0]), entry_stop=50)
    want = tagger(events)
    blob = tmp_path / "tagger.pkl"
    blob.write_bytes(pickle.dumps(tagger))
    shutil.rmtree(bundle)
    code = (
        "import pickle, sys, numpy as np, awkward as ak;"
        "from jettagger_coffea.nanoevents import open_events;"
        f"t = pickle.loads(open({str(blob)!r}, 'rb').read());"
        f"ev = open_events({str(default_fileset()['tbqq']['files'].popitem()[0])!r}, entry_stop=50);"
        "np.save(sys.argv[1], ak.to_numpy(ak.flatten(t(ev))))"
    )
    out = tmp_path / "got.npy"
    cmd = [sys.executable, "-c", code, str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    import awkward as ak

    np.testing.assert_array_equal(np.load(out), ak.to_numpy(ak.flatten(want)))


def test_a_worker_the_model_never_reached_names_it():
    """Pickled as a hash (its cluster's workers hold the bytes) but unpickled where they are not: one
    line naming the model."""
    from jettagger_coffea._errors import JetTaggerError

    model = shipping.ModelBytes(b"not really onnx", "bundle-x/model.onnx")
    shipping._ON_WORKERS.add(model.digest)
    try:
        blob = pickle.dumps(model)
    finally:
        shipping._ON_WORKERS.discard(model.digest)
    assert len(blob) < 300  # the hash, not the bytes
    shipping._BLOBS.pop(model.digest, None)
    line = r"model bundle-x/model.onnx \(sha256 [0-9a-f]{12}\) has not reached this worker"
    with pytest.raises(JetTaggerError, match=line):
        _ = pickle.loads(blob).data


def test_auto_runs_a_small_job_on_a_given_cluster():
    """``--scheduler`` or a client: the job runs there, however small (it used to run on the client)."""
    from jettagger_coffea.execution import Execution

    assert Execution("auto").resolved(100).executor == "iterative"
    assert Execution("auto", scheduler="tcp://127.0.0.1:8786").resolved(100).executor == "dask"
    assert Execution("auto", client=object()).resolved(100).executor == "dask"
    assert Execution("auto", workers=1).resolved(10**6).executor == "iterative"


# -- a real external cluster reading over XRootD -----------------------------------------------------------
@pytest.fixture(scope="module")
def client_area(tmp_path_factory):
    """What only the client sees: bundles, filesets, local inputs and outputs."""
    return tmp_path_factory.mktemp("client")


@pytest.fixture(scope="module")
def cluster(xrootd, client_area, tmp_path_factory):
    why = can_isolate()
    if why:
        pytest.skip(f"workers cannot be isolated: {why}")
    hide = [client_area, Path(xrootd.folder)] + ([SHARED] if SHARED.is_dir() else [])
    ec = ExternalCluster(tmp_path_factory.mktemp("cluster"), hide, n_workers=2).start()
    yield ec
    ec.close()


def _filesets(xrootd, client_area, datasets: dict[str, list[Path]], name: str) -> tuple[Path, Path]:
    """The same inputs twice: local copies (client only) and root:// URLs of the served copies."""
    local, remote = {}, {}
    for ds, paths in datasets.items():
        for where, fs in ((client_area / name / "local", local), (Path(xrootd.folder) / name, remote)):
            where.mkdir(parents=True, exist_ok=True)
            for p in paths:
                shutil.copy(p, where / p.name)
                (where / p.name).chmod(0o644)
            files = [str(where / p.name) for p in paths]
            fs[ds] = {"files": [xrootd.url(f) for f in files] if fs is remote else files,
                      "metadata": {"xsec": 1.0}}  # fmt: skip
    out = []
    for label, fs in (("local", local), ("remote", remote)):
        path = client_area / f"{name}_{label}.json"
        path.write_text(json.dumps(fs))
        out.append(path)
    return out[0], out[1]


def _bundled(*datasets: str) -> dict[str, list[Path]]:
    """Bundled NanoAOD samples (a background and a signal: enough for every histogram and metric)."""
    return {ds: [Path(p) for p in default_fileset()[ds]["files"]] for ds in datasets}


def _run(*args: object) -> subprocess.CompletedProcess:
    r = run_cli("run", *args, "--pt-min", "200")
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def _worker_counts(ec: ExternalCluster) -> tuple[dict, dict]:
    with ec.client() as c:
        return c.run(backends.jets_run), c.run(shipping.received)


def _default_bundle(client_area: Path, name: str) -> Path:
    """A copy of the default bundle where only the client sees it."""
    bundle = client_area / name
    shutil.copytree(resolve(None), bundle)
    return bundle


def _digest(bundle: Path) -> str:
    return shipping.ModelBytes.read(bundle / "model.onnx").digest


@pytest.fixture(scope="module")
def default_run(xrootd, client_area):
    """The default bundle where only the client sees it, the bundled qcd + tbqq samples (local and served)
    and the iterative run of them here: the reference of the tests below."""
    bundle = _default_bundle(client_area, "default")
    local, remote = _filesets(xrootd, client_area, _bundled("qcd", "tbqq"), "bundled")
    _run("--executor", "iterative", "--model", bundle, "--fileset", local, "-o", client_area / "b_local")
    return bundle, remote, client_area / "b_local"


@pytest.mark.slow
def test_the_default_bundle_runs_on_external_workers_over_xrootd(cluster, xrootd, client_area, default_run):
    bundle, remote, reference = default_run
    served = Path(xrootd.folder) / "bundled" / "qcd_nanoaod.root"
    with cluster.client() as c:  # nothing of the client's disk reaches the workers, only the network
        for path in (bundle / "model.onnx", served, client_area / "bundled" / "local" / served.name):
            assert path.is_file()
            assert not any(c.run(os.path.exists, str(path)).values()), path
    before, _ = _worker_counts(cluster)
    # 20 chunks: enough that both workers take some, however fast the first one is ready
    _run("--scheduler", cluster.address, "--model", bundle, "--fileset", remote, "--chunksize", "100",
         "-o", client_area / "b_ext")  # fmt: skip
    same_runs(reference, client_area / "b_ext")
    ran, received = _worker_counts(cluster)
    digest = _digest(bundle)
    tagged = json.loads((client_area / "b_ext" / "metrics.json").read_text())
    jets = {w: n.get(digest, 0) - before.get(w, {}).get(digest, 0) for w, n in ran.items()}
    assert all(n > 0 for n in jets.values()), jets  # both workers scored jets
    assert sum(jets.values()) == sum(
        c["tagged_jets"] + c.get("invalid_score_jets", 0) for c in tagged["cutflow"].values()
    )
    assert all(r.get(digest) == 1 for r in received.values()), received  # once per worker, not per chunk
    ship = tagged["shipping"]
    assert ship["model_bytes_per_worker"] == (bundle / "model.onnx").stat().st_size
    assert ship["processor_bytes_per_task"] < ship["model_bytes_per_worker"] / 4


@pytest.mark.slow
def test_cms_particlenet_runs_on_external_workers_over_xrootd(cluster, xrootd, client_area):
    bundle = import_cms(CMS, client_area / "cms-pn-ak8")
    local, remote = _filesets(xrootd, client_area, {"qcd": [shared_file(NANO / "pfnano.root")]}, "cms")
    _run("--executor", "iterative", "--model", bundle, "--fileset", local, "-o", client_area / "c_local")
    _run("--scheduler", cluster.address, "--model", bundle, "--fileset", remote, "--chunksize", "3",
         "-o", client_area / "c_ext")  # fmt: skip
    same_runs(client_area / "c_local", client_area / "c_ext")
    ran, received = _worker_counts(cluster)
    digest = _digest(bundle)
    assert sum(n.get(digest, 0) for n in ran.values()) > 0
    assert all(r.get(digest) == 1 for r in received.values()), received


@pytest.mark.slow
def test_a_worker_killed_mid_run_changes_nothing(cluster, client_area, default_run):
    bundle, remote, reference = default_run
    cmd = [sys.executable, "-m", "jettagger_coffea.cli", "run", "--scheduler", cluster.address, "--model",
           str(bundle), "--fileset", str(remote), "--chunksize", "100", "--pt-min", "200",
           "-o", str(client_area / "k_ext")]  # fmt: skip
    digest = _digest(bundle)
    before, _ = _worker_counts(cluster)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = None
    with cluster.client() as c:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            ran = c.run(backends.jets_run)  # a worker that has scored chunks (its results die with it)
            busy = [w for w, n in ran.items() if n.get(digest, 0) > before.get(w, {}).get(digest, 0)]
            if busy:
                killed = cluster.kill_worker(c, busy[0])
                break
            time.sleep(0.1)
        assert killed is not None and proc.poll() is None, "the run ended before a worker could be killed"
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        c.wait_for_workers(2, timeout=60)  # the nanny's new worker, for the tests after this one
    same_runs(reference, client_area / "k_ext")


@pytest.mark.slow
def test_the_processor_under_coffeas_runner_on_the_users_client(cluster, xrootd, client_area):
    """An analyst's own coffea Runner on their own client (as on coffea-casa or dask-gateway): the
    processor's model reaches the isolated workers inside the job; with ``shipped`` once per worker."""
    from coffea import processor

    from jettagger_coffea import PFNanoSchema, TaggerProcessor, shipped

    from .compare import same_hists

    bundle = _default_bundle(client_area, "default-runner")
    local, remote = _filesets(xrootd, client_area, _bundled("tbqq"), "runner")
    proc = TaggerProcessor(bundle)
    files = {kind: json.loads(path.read_text()) for kind, path in (("local", local), ("remote", remote))}
    want = processor.Runner(processor.IterativeExecutor(status=False), schema=PFNanoSchema, chunksize=400)(
        files["local"], proc, treename="Events"
    )
    digest = _digest(bundle)
    with cluster.client() as c:
        runner = processor.Runner(
            processor.DaskExecutor(client=c, status=False), schema=PFNanoSchema, chunksize=400
        )
        inside = runner(files["remote"], proc, treename="Events")  # the bytes inside the pickled job
        _, before = _worker_counts(cluster)
        with shipped(c, proc) as sent:  # the bytes once per worker, the tasks with the hash
            once = runner(files["remote"], proc, treename="Events")
        _, after = _worker_counts(cluster)
    assert sent["model_bytes"] == (bundle / "model.onnx").stat().st_size
    assert {w: after[w].get(digest, 0) - before.get(w, {}).get(digest, 0) for w in after} == dict.fromkeys(
        after, 1
    )
    for got in (inside, once):
        same_hists(got["hists"], want["hists"])
