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


# --- tracks as JetClass's Delphes makes them ------------------------------------------------------------


def test_helix_impact_parameters_against_a_traced_helix():
    """d0 / dz of the closest approach found by walking along the helix; straight tracks: the textbook."""
    from jettagger_coffea.generate.detector import BZ_TESLA, C_LIGHT, helix_impact_parameters

    rng = np.random.default_rng(3)
    n = 6
    phi = rng.uniform(-np.pi, np.pi, n)
    pt = np.array([1e5, 1e5, 0.4, 0.8, 2.0, 5.0])
    pz = rng.normal(size=n) * pt
    p4 = np.c_[pt * np.cos(phi), pt * np.sin(phi), pz, np.hypot(pt, pz)]
    vertex = rng.normal(size=(n, 3)) * 20.0
    charge = np.array([1.0, -1.0, 1.0, -1.0, 1.0, -1.0])
    d0, dz = helix_impact_parameters(p4, vertex, charge)
    straight_d0 = (vertex[:, 0] * p4[:, 1] - vertex[:, 1] * p4[:, 0]) / pt
    straight_dz = vertex[:, 2] - (vertex[:, 0] * p4[:, 0] + vertex[:, 1] * p4[:, 1]) * pz / pt**2
    np.testing.assert_allclose(d0[:2], straight_d0[:2], atol=1e-6)
    np.testing.assert_allclose(dz[:2], straight_dz[:2], atol=1e-4)  # 0.1 um: rounding of a 90 km radius
    for i in range(2, n):
        sign = np.sign(charge[i])
        radius = pt[i] / (C_LIGHT * BZ_TESLA) * 1e3
        centre = vertex[i, :2] + sign * radius * np.array([np.sin(phi[i]), -np.cos(phi[i])])
        start = np.arctan2(vertex[i, 1] - centre[1], vertex[i, 0] - centre[0])
        turn = np.linspace(-np.pi, np.pi, 200_001)  # travelled angle, clockwise for positive charge
        for width in (1e-4, 0.0):  # coarse grid, then a fine one around its closest point
            angle = start - sign * turn
            x, y = centre[0] + radius * np.cos(angle), centre[1] + radius * np.sin(angle)
            k = np.argmin(np.hypot(x, y))
            if width:
                turn = np.linspace(turn[k] - width, turn[k] + width, 200_001)
        vx, vy = sign * np.sin(angle[k]), -sign * np.cos(angle[k])
        assert d0[i] == pytest.approx(x[k] * vy - y[k] * vx, abs=1e-5)
        assert dz[i] == pytest.approx(vertex[i, 2] + turn[k] * radius * pz[i] / pt[i], abs=1e-5)
        assert abs(d0[i] - straight_d0[i]) > 1e-4, "low-pT displaced tracks curve"


def test_track_resolution_is_delphes_one():
    """The packaged table gives the errors that real Delphes output (JetClass-II chain, same table as
    JetClass's card) stores for its tracks: quantiles of sigma(d0) at the tracks' (pT, eta)."""
    from jettagger_coffea.generate.detector import ip_resolution

    from .conftest import SHARED, shared_file

    path = shared_file(SHARED / "reference" / "delphes" / "events_delphes_higgs2p_example.root")
    prefix = "ParticleFlowCandidate/ParticleFlowCandidate."
    names = ("Charge", "PT", "Eta", "ErrorD0", "ErrorDZ", "D0", "DZ")
    with uproot.open(path) as f:
        arrays = f["Delphes"].arrays([prefix + n for n in names], library="np")
    c = {n: np.concatenate(arrays[prefix + n]).astype(np.float64) for n in names}
    neutral = c["Charge"] == 0
    for name in ("D0", "DZ", "ErrorD0", "ErrorDZ"):
        assert np.all(c[name][neutral] == 0), f"Delphes neutrals carry 0 {name}"
    tracks = ~neutral & (c["PT"] > 0)  # PUPPI sets pileup candidates' pT to 0
    s_d0, s_dz = ip_resolution(c["PT"][tracks], c["Eta"][tracks])
    q = [10, 25, 50, 75, 90]
    np.testing.assert_allclose(np.percentile(s_d0, q), np.percentile(c["ErrorD0"][tracks], q), rtol=0.03)
    assert np.median(s_dz) == pytest.approx(np.median(c["ErrorDZ"][tracks]), rel=0.03)


def test_generated_tracks_look_like_delphes(tbqq_jetclass):
    """Bundled jets: neutrals 0, errors from the table, displaced-track fractions like Delphes's."""
    from jettagger_coffea.data import sample_path
    from jettagger_coffea.generate.detector import ip_resolution

    def tracks(path):
        t = uproot.open(path)["tree"].arrays(
            [
                "part_px",
                "part_py",
                "part_pz",
                "part_charge",
                "part_d0val",
                "part_d0err",
                "part_dzval",
                "part_dzerr",
            ]
        )
        return {k: ak.to_numpy(ak.flatten(t[k])).astype(np.float64) for k in t.fields}

    top = tracks(tbqq_jetclass)
    neutral = top["part_charge"] == 0
    for k in ("part_d0val", "part_d0err", "part_dzval", "part_dzerr"):
        assert np.all(top[k][neutral] == 0)
    pt = np.hypot(top["part_px"], top["part_py"])
    eta = np.arcsinh(top["part_pz"] / pt)
    s_d0, s_dz = ip_resolution(pt[~neutral], eta[~neutral])
    np.testing.assert_allclose(top["part_d0err"][~neutral], s_d0, rtol=1e-6)
    np.testing.assert_allclose(top["part_dzerr"][~neutral], s_dz, rtol=1e-6)

    def displaced(c):
        ch = (c["part_charge"] != 0) & (c["part_d0err"] > 0)
        return np.mean(np.abs(c["part_d0val"][ch]) > 5 * c["part_d0err"][ch])

    qcd = tracks(sample_path("qcd", "jetclass"))
    # real Delphes (H -> 2 prongs incl. bb, cc): 10 % of tracks beyond 5 sigma; K0S / Lambda decays in
    # flight give QCD jets a similar share, b hadrons give top jets more
    assert 0.05 < displaced(qcd) < 0.15
    assert displaced(top) > displaced(qcd) + 0.03
    pulls = top["part_d0val"][~neutral] / top["part_d0err"][~neutral]
    core = np.abs(pulls) < 3
    assert np.std(pulls[core]) == pytest.approx(1.0, abs=0.1), "prompt tracks: unit pulls"


# --- mass-regression targets (CMS's fj_gen_mass, fj_genjet_sdmass; GenJetAK8) -------------------------


@pytest.fixture(scope="module")
def targets(tmp_path_factory):
    """W, Z, H and QCD jets (no MPI for speed) in both formats; top jets come from ``small``."""
    out = {}
    for process, njets in (("wqq", 60), ("zqq", 30), ("hbb", 20), ("qcd", 40)):
        s = GenerationSettings(process=process, njets=njets, seed=11, mpi=False)
        out[process] = generate(s, tmp_path_factory.mktemp(process), progress=False)
    return out


# Pythia 8 defaults (particleData m0, mWidth); CMS's top samples use 172.5 GeV, Pythia's default is 173.0
RESONANCES = {"wqq": (80.385, 2.085), "zqq": (91.1876, 2.4952), "tbqq": (173.0, 1.4), "hbb": (125.0, 0.004)}


@pytest.mark.parametrize("process", list(RESONANCES))
def test_gen_mass_is_the_resonance_mass(process, targets, small):
    """The matched resonance's mass: Breit-Wigner around the pole, interquartile range ~ the width."""
    path = small["a"]["jetclass"] if process == "tbqq" else targets[process]["jetclass"]
    m = ak.to_numpy(_arrays(path, "tree").jet_gen_mass).astype(np.float64)
    mass, width = RESONANCES[process]
    q25, q50, q75 = np.percentile(m, [25, 50, 75])
    assert abs(q50 - mass) < (1.0 if process == "hbb" else 1.5), f"{process} median gen mass {q50}"
    assert q75 - q25 < 2.5 * width + 0.05, f"{process} IQR {q75 - q25} for width {width}"
    assert np.mean(np.abs(m - mass) < 2.5 * width + 0.05) > 0.6
    if process == "wqq":
        assert np.mean((m > 78) & (m < 83)) > 0.6


def test_qcd_targets_are_the_gen_jet(targets):
    """QCD: no resonance (0, as CMS), a matched gen jet whose soft-drop mass is the reco one's where the
    tracker loses nothing: our detector only drops particles born outside it."""
    t = _arrays(targets["qcd"]["jetclass"], "tree")
    assert np.all(t.jet_gen_mass == 0)
    assert np.all(t.jet_genjet_sdmass > 0) and np.all(t.jet_genjet_pt > 0)
    assert np.all(t.jet_genjet_mass >= t.jet_genjet_sdmass - 1e-3)
    agree = np.mean(np.abs(t.jet_genjet_sdmass - t.jet_sdmass) < 1.0)
    assert agree > 0.6, f"{agree:.0%} of QCD jets' gen-jet soft-drop masses within 1 GeV of the reco one"
    # the rest lose what is born outside the tracker (boosted K0S, Lambda decaying beyond 1.29 m)
    ratio = ak.to_numpy(t.jet_genjet_pt / t.jet_pt)
    assert np.mean(np.abs(ratio - 1) < 1e-4) > 0.6 and np.all((ratio > 0.95) & (ratio < 1.5))


@pytest.mark.parametrize("process", ["qcd", "wqq"])
def test_nanoaod_genjetak8_cross_reference(process, targets):
    """FatJet_genJetAK8Idx -> GenJetAK8 through coffea's own cross-reference (PFNano and NanoAOD schema),
    and both formats' gen jets are the same ones."""
    from coffea.nanoevents import NanoAODSchema, NanoEventsFactory

    paths = targets[process]
    t = _arrays(paths["jetclass"], "tree")
    ev = open_events(str(paths["nanoaod"]))
    gj = ev.GenJetAK8
    assert ak.all(gj.pt > 100) and ak.all(gj.pt[:, :-1] >= gj.pt[:, 1:])
    fj = ev.FatJet
    assert ak.all(fj.genJetAK8Idx >= 0) and ak.all(fj.genJetAK8Idx < ak.num(gj))
    gen = ak.flatten(fj.matched_gen)
    assert ak.all(ak.flatten(fj.delta_r(fj.matched_gen)) < 0.4)
    np.testing.assert_array_equal(gen.msoftdrop, t.jet_genjet_sdmass)
    np.testing.assert_array_equal(gen.pt, t.jet_genjet_pt)
    np.testing.assert_allclose(gen.mass, t.jet_genjet_mass, rtol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NanoAODSchema names every collection a PFNano file lacks
        plain = NanoEventsFactory.from_root(
            {str(paths["nanoaod"]): "Events"}, schemaclass=NanoAODSchema, mode="eager"
        ).events()
    np.testing.assert_array_equal(ak.flatten(plain.FatJet.matched_gen.pt), t.jet_genjet_pt)


def test_match_genjet_closest_within_half_radius():
    from jettagger_coffea.generate.jets import GenJet, match_genjet

    def p4(eta, phi, pt=500.0):
        return np.array([pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta), pt * np.cosh(eta) + 1.0])

    jet = p4(0.2, np.pi - 0.05)
    gen = [GenJet(p4(*x), 1.0) for x in ((0.2, -np.pi + 0.25), (0.3, -np.pi + 0.05), (1.0, 0.0))]
    assert match_genjet(jet, gen, 0.8) == 1  # across phi = +-pi
    assert match_genjet(jet, gen, 0.2) == -1  # closest at dR 0.14 > R/2
    assert match_genjet(jet, [], 0.8) == -1


@pytest.mark.parametrize("process", ["wqq", "qcd"])
def test_true_mass_from_nanoaod_equals_the_jetclass_target(process, targets):
    """What a mass regression should give, read two ways from the same jets: from NanoAOD's GenPart and
    GenJetAK8 (:func:`truth.fatjet_true_mass`, as on CMS files) and from the JetClass file's target
    branches (resonance mass, or the generated jet's soft-drop mass for QCD)."""
    from jettagger_coffea.sources import Events
    from jettagger_coffea.truth import fatjet_true_mass, fatjet_truth

    paths = targets[process]
    t = _arrays(paths["jetclass"], "tree")
    ev = Events(uproot.open(paths["nanoaod"])["Events"], "generated")
    labels = fatjet_truth(ev)
    want = np.where(ak.to_numpy(t.label_QCD), ak.to_numpy(t.jet_genjet_sdmass), ak.to_numpy(t.jet_gen_mass))
    assert (labels == ("QCD" if process == "qcd" else "Wqq")).all()
    np.testing.assert_allclose(fatjet_true_mass(ev), want, rtol=1e-4)
