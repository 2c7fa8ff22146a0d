"""Shared fixtures: the bundled samples, ../shared reference material (skipped where absent)."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

# One compute thread per process (torch, onnxruntime, BLAS; subprocesses inherit it), unless set: on 2 cores
# a second intra-op thread doubled the CPU time of ParT in torch for no gain in wall time, and while worker
# processes, a Triton server or other jobs share the cores it doubled the wall time too.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("JETTAGGER_THREADS", "1")
# The user cache (tuned batch budgets, file metadata) of the test run's own: nothing read from or left in the
# tester's ~/.cache, nothing carried over between runs (subprocesses and the external cluster inherit it).
os.environ.setdefault("JETTAGGER_CACHE", tempfile.mkdtemp(prefix="jettagger-test-cache-"))

from jettagger_coffea.data import sample_path

SHARED = Path(os.environ.get("JETTAGGER_SHARED") or Path(__file__).resolve().parents[1].parent / "shared")
JETCLASS_CONFIGS = SHARED / "reference" / "jetclass"
PN_KIN_WEIGHTS = SHARED / "reference" / "weights" / "ParticleNet_kin.pt"


def shared_file(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not available (../shared is absent)")
    return path


def _trim_heap() -> None:
    """Give the heap's free pages back to the system (glibc only; elsewhere nothing to do)."""
    libc = ctypes.util.find_library("c")
    if libc and hasattr(ctypes.CDLL(libc), "malloc_trim"):
        ctypes.CDLL(libc).malloc_trim(0)


@pytest.fixture(autouse=True)
def _release_sessions():
    """After each test: no cached inference session and no free heap left behind. A cached onnxruntime
    session keeps its arena at the largest batch it ever ran (0.4 GB for ParticleNet), and glibc keeps the
    heap that torch's freed buffers left; without this the process grows by every test's peak (5.7 GB by
    the networks' tests) instead of staying near the largest one. Sessions are a per-process cache: the next
    test makes its own (milliseconds)."""
    yield
    from jettagger_coffea import backends

    getattr(backends, "_SESSIONS", {}).clear()
    _trim_heap()


@pytest.fixture(autouse=True, scope="module")
def _collect_garbage():
    """After each module, what only the cycle collector frees (0.2 s a run: per module, not per test)."""
    yield
    gc.collect()
    _trim_heap()


@pytest.fixture(scope="session")
def jetclass_config():
    def get(name: str = "kin") -> Path:
        return shared_file(JETCLASS_CONFIGS / f"JetClass_{name}.yaml")

    return get


@pytest.fixture(scope="session")
def shipped_config():
    """The project's own configs with the JetClass variables (kin: 7 features, full: 17): tests that are
    not about weaver compatibility use these, so that they run on a clone without ../shared."""
    from jettagger_coffea.configs import config_path

    def get(name: str = "kin") -> Path:
        return Path(config_path({"kin": "wz_r10_kin", "full": "wzt_full"}[name]))

    return get


@pytest.fixture(scope="session")
def xrootd():
    """Debian's xrootd serving a fresh temporary folder to 127.0.0.1 for the whole session (skipped, with
    the reason, where /usr/bin/xrootd or the XRootD Python bindings are missing). Its API
    (tests/xrootd_server.py): ``folder`` (copy files into it), ``url(path)`` -> ``root://127.0.0.1:PORT//...``,
    ``http_url(path)``, ``stop()`` and ``start()`` (the same port: a restart). A test that stops it starts
    it again before it ends."""
    from .xrootd_server import XRootDServer, unavailable

    reason = unavailable()
    if reason:
        pytest.skip(reason)
    server = XRootDServer()
    try:
        server.start()
    except RuntimeError as err:  # e.g. no unprivileged user to run it as
        server.close()
        pytest.skip(str(err))
    yield server
    server.close()


@pytest.fixture(scope="session")
def tbqq_jetclass() -> Path:
    return sample_path("tbqq", "jetclass")


@pytest.fixture(scope="session")
def tbqq_nanoaod() -> Path:
    return sample_path("tbqq", "nanoaod")


ALL_JETCLASS = ("qcd", "wqq", "zqq", "tbqq")


def run_cli(*args: object, timeout: int = 600) -> subprocess.CompletedProcess:
    """``jettagger ARGS`` in a fresh process, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "jettagger_coffea.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def import_cms(model_dir: Path, out: Path) -> Path:
    """A CMS model folder of ../shared (model.onnx + preprocess.json) imported as a bundle, as a user does."""
    onnx, pre = shared_file(model_dir / "model.onnx"), shared_file(model_dir / "preprocess.json")
    r = run_cli(
        "import-weaver", "--onnx", onnx, "--preprocess", pre, "--stored-prefix", "particleNet", "-o", out
    )
    assert r.returncode == 0, r.stderr
    return out


def train_tiny(
    network: str, work: Path, epochs: int, max_jets: int, seed: int, reference: bool = True
) -> Path:
    """A small ``network`` trained for seconds on the bundled samples, exported as a bundle."""
    from jettagger_coffea.configs import config_path
    from jettagger_coffea.training import export, train

    files = [sample_path(p, "jetclass") for p in ALL_JETCLASS]
    train(
        config_path("wzt_full"),
        network,
        files,
        work / "train",
        epochs=epochs,
        max_train_jets=max_jets,
        batch_size=64,
        lr=3e-3,
        network_options={"phi_sizes": [32, 32], "f_sizes": [32]},
        progress=False,
        seed=seed,
    )
    refs = files[:2] + files[3:] if reference else None
    return export(work / "train", work / "bundle", name=f"tiny-{network}", reference_files=refs)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    """A PFN trained for a few seconds on the bundled samples, exported with working points."""
    pytest.importorskip("torch")
    return train_tiny("pfn", tmp_path_factory.mktemp("tiny"), epochs=4, max_jets=2400, seed=3)


def odd_pfnano(path: Path) -> Path:
    """A PFNano file with events without FatJets and a FatJet without constituents (5 events, 4 jets)."""
    import awkward as ak
    import numpy as np
    import uproot

    from jettagger_coffea.generate.jets import Jet
    from jettagger_coffea.generate.writers import write_nanoaod

    t = uproot.open(sample_path("tbqq", "jetclass"))["tree"].arrays(entry_stop=3)

    def jet(i: int, empty: bool = False) -> Jet:
        c = np.stack([ak.to_numpy(t[f"part_{k}"][i]) for k in ("px", "py", "pz", "energy")], 1).astype(float)
        if empty:
            c = c[:0]
        pdg = np.where(
            ak.to_numpy(t.part_isPhoton[i]) > 0,
            22,
            np.where(
                ak.to_numpy(t.part_charge[i]) != 0,
                211 * np.sign(ak.to_numpy(t.part_charge[i])).astype(int),
                130,
            ),
        )[: len(c)]
        p4 = np.array(
            [
                t.jet_pt[i] * np.cos(t.jet_phi[i]),
                t.jet_pt[i] * np.sin(t.jet_phi[i]),
                t.jet_pt[i] * np.sinh(t.jet_eta[i]),
                t.jet_energy[i],
            ],
            dtype=float,
        )
        z = np.zeros(len(c))
        return Jet(
            p4=p4,
            msoftdrop=float(t.jet_sdmass[i]),
            tau=np.zeros(4),
            label="Tbqq",
            c_p4=c,
            c_mass=np.sqrt(np.maximum(c[:, 3] ** 2 - (c[:, :3] ** 2).sum(1), 0)),
            c_pdg=pdg,
            c_charge=ak.to_numpy(t.part_charge[i])[: len(c)].astype(float),
            c_d0=z,
            c_d0err=z,
            c_dz=z,
            c_dzerr=z,
        )

    events = [
        (1, 0, [jet(0), jet(1)], []),
        (2, 0, [], []),
        (3, 0, [jet(2, empty=True)], []),
        (4, 0, [jet(2)], []),
        (5, 0, [], []),
    ]
    write_nanoaod(path, events)
    return path
