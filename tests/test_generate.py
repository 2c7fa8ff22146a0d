"""Generator: physics sanity, reproducibility, both formats describe the same jets, bad input."""

from __future__ import annotations

import subprocess
import sys
import warnings

import awkward as ak
import numpy as np
import pytest
import uproot

pytest.importorskip("pythia8mc")
pytest.importorskip("fastjet")

from jettagger_coffea.generate import GenerationSettings, generate
from jettagger_coffea.nanoevents import open_events


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """40 top jets (no MPI for speed) in both formats, twice with the same seed, once with --jobs 2."""
    out = {}
    for name, jobs in (("a", 1), ("b", 1), ("c", 2)):
        s = GenerationSettings(process="tbqq", njets=40, seed=7, mpi=False, block_size=20)
        out[name] = generate(s, tmp_path_factory.mktemp(name), jobs=jobs, progress=False)
    return out


def _arrays(path, tree):
    return uproot.open(path)[tree].arrays()


def test_same_seed_identical(small):
    for fmt, tree in (("nanoaod", "Events"), ("jetclass", "tree")):
        a, b, c = (_arrays(small[k][fmt], tree) for k in "abc")
        assert ak.to_list(a) == ak.to_list(b)
        assert ak.to_list(a) == ak.to_list(c), "output must not depend on --jobs"
        assert small["a"][fmt].read_bytes() == small["b"][fmt].read_bytes()


def test_njets_and_constituents_sum_to_jet(small):
    t = _arrays(small["a"]["jetclass"], "tree")
    assert len(t) == 40
    px, py = ak.sum(t.part_px, axis=1), ak.sum(t.part_py, axis=1)
    e = ak.sum(t.part_energy, axis=1)
    np.testing.assert_allclose(np.hypot(px, py), t.jet_pt, rtol=1e-4)
    np.testing.assert_allclose(e, t.jet_energy, rtol=1e-4)
    assert ak.all(t.jet_nparticles == ak.num(t.part_px))
    assert ak.all((t.jet_pt > 500) & (t.jet_pt < 1000) & (abs(t.jet_eta) < 2))
    # pT-descending particles, one-hot labels
    pt = np.hypot(t.part_px, t.part_py)
    assert ak.all(pt[:, :-1] >= pt[:, 1:])
    assert np.all(t.label_Tbqq) and not np.any(t.label_QCD)


def test_formats_describe_same_jets(small):
    t = _arrays(small["a"]["jetclass"], "tree")
    ev = open_events(str(small["a"]["nanoaod"]))
    fj = ak.flatten(ev.FatJet, axis=1)
    assert len(fj) == len(t) == 40
    np.testing.assert_allclose(fj.pt, t.jet_pt, rtol=1e-6)
    np.testing.assert_allclose(fj.msoftdrop, t.jet_sdmass, rtol=1e-6)
    pf = fj.constituents.pf
    np.testing.assert_array_equal(ak.num(pf, axis=1), t.jet_nparticles)
    np.testing.assert_allclose(ak.flatten(pf.pt), ak.flatten(np.hypot(t.part_px, t.part_py)), rtol=1e-5)
    assert ak.all(fj.truthLabel == 8)  # Tbqq in JetClass order


def test_coffea_reads_bundled_nanoaod_quietly(tbqq_nanoaod):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ev = open_events(str(tbqq_nanoaod))
        fj = ev.FatJet
        n = ak.num(fj.constituents.pf, axis=2)
    assert ak.all(n == fj.nConstituents)
    assert ak.sum(ak.num(fj)) == 1000


@pytest.mark.parametrize(("process", "lo", "hi"), [("tbqq", 160, 185), ("wqq", 72, 88), ("zqq", 82, 97)])
def test_softdrop_mass_peaks(process, lo, hi):
    from jettagger_coffea.data import sample_path

    t = _arrays(sample_path(process, "jetclass"), "tree")
    msd = ak.to_numpy(t.jet_sdmass)
    hist, edges = np.histogram(msd, bins=np.arange(40, 250, 5))
    peak = edges[hist.argmax()] + 2.5
    assert lo <= peak <= hi, f"{process} soft-drop mass peak at {peak}"
    q = _arrays(sample_path("qcd", "jetclass"), "tree")
    assert np.median(q.jet_sdmass) < 0.6 * np.median(msd)
    # two-/three-prong substructure: tau21 (W, Z) and tau32 (top) lower than for QCD jets
    num, den = ("jet_tau3", "jet_tau2") if process == "tbqq" else ("jet_tau2", "jet_tau1")
    assert np.median(t[num] / t[den]) < np.median(q[num] / q[den]) - 0.1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--process", "foo"], "unknown process"),
        (["--radius", "0"], "--radius must be > 0"),
        (["--pt-min", "900", "--pt-max", "800"], "empty pT window"),
        (["--njets", "0"], "--njets must be > 0"),
        (["--output-dir", "/proc/forbidden"], "not writable"),
    ],
)
def test_cli_bad_input(args, message):
    r = subprocess.run(
        [sys.executable, "-m", "jettagger_coffea.cli", "generate", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]
