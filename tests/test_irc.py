"""IRC safety of the product, the seed's test end to end: JetClass-layout files -> `jettagger predict` ->
scores, original vs collinearly split vs with soft photons (float32 onnxruntime, torch float32 / float64)."""

from __future__ import annotations

import numpy as np
import pytest
import uproot

from jettagger_coffea.data import sample_path
from jettagger_coffea.perturb import perturb_jetclass
from jettagger_coffea.tagger import JetTagger

from .conftest import run_cli, train_tiny

MAX_PARTICLES = 70  # 872 of the 2000 jets: a 30 % split stays below the 128-particle truncation
SPLIT_TOLERANCE = 1e-5
TORCH_JETS = 250


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("irc")
    out = {}
    for p in ("tbqq", "qcd"):
        src = sample_path(p, "jetclass")
        out[p, "original"] = perturb_jetclass(src, d / f"{p}.root", max_particles=MAX_PARTICLES)
        out[p, "split"] = perturb_jetclass(
            src, d / f"{p}_split.root", split_fraction=0.3, seed=11, max_particles=MAX_PARTICLES
        )
        for eps in (1e-3, 1e-6, 1e-9):
            out[p, eps] = perturb_jetclass(
                src, d / f"{p}_soft{eps:g}.root", n_soft=2, epsilon=eps, seed=12, max_particles=MAX_PARTICLES
            )
    return out


#: the perturbed copies each model is asked about, beside the originals
CASES = {"part-irc": ("split", 1e-3, 1e-6, 1e-9), "part": ("split", 1e-9), "efn": ("split", 1e-9)}


@pytest.fixture(scope="module")
def predicted(files, tmp_path_factory):
    """``predicted(model, name)``: {file: scores} from one ``jettagger predict`` run of ``model`` over the
    originals and the copies of CASES[name] (``file_index`` keeps the files apart), made on first use and
    shared by the tests (a fresh process per model, as a user runs it)."""
    import awkward as ak

    d = tmp_path_factory.mktemp("predicted")
    done: dict[str, dict] = {}

    def get(model, name: str | None = None) -> dict:
        name = name or str(model)
        if name not in done:
            paths = [files[p, c] for c in ("original", *CASES[name]) for p in ("tbqq", "qcd")]
            out = d / f"{name}.parquet"
            r = run_cli("predict", "--model", model, "--input", *paths, "-o", out)
            assert r.returncode == 0, r.stderr
            a = ak.from_parquet(out)
            scores = np.stack([ak.to_numpy(a[f]) for f in a.fields if f.startswith("score_")], axis=1)
            index = ak.to_numpy(a["file_index"])
            done[name] = {path: scores[index == i] for i, path in enumerate(paths)}
        return done[name]

    return get


def max_change(scores, files, case) -> float:
    """Over the jets whose perturbed copy still fits the 128-particle input (the others lose their softest
    particles to the truncation: docs/irc.md)."""
    worst = 0.0
    for p in ("tbqq", "qcd"):
        fits = uproot.open(files[p, case])["tree"]["npart"].array(library="np") <= 128
        d = np.abs(scores[files[p, case]] - scores[files[p, "original"]])
        worst = max(worst, float(d[fits].max()))
    return worst


def test_perturbed_files_are_what_they_say(files):
    a = uproot.open(files["tbqq", "original"])["tree"].arrays()
    b = uproot.open(files["tbqq", "split"])["tree"].arrays()
    assert np.all(np.asarray(b["npart"]) >= np.asarray(a["npart"]))
    assert np.asarray(b["npart"]).sum() > 1.25 * np.asarray(a["npart"]).sum()
    for f in ("part_px", "part_py", "part_pz", "part_energy"):  # four-momentum conserved per jet
        np.testing.assert_allclose(
            np.asarray([np.sum(x) for x in b[f]]), np.asarray([np.sum(x) for x in a[f]]), rtol=2e-5, atol=1e-2
        )
    s = uproot.open(files["tbqq", 1e-6])["tree"].arrays()
    assert np.all(np.asarray(s["npart"]) == np.asarray(a["npart"]) + 2)


def test_part_irc_is_collinear_safe_through_predict(files, predicted):
    assert max_change(predicted("part-irc"), files, "split") <= SPLIT_TOLERANCE


def test_part_irc_soft_safe_as_epsilon_vanishes(files, predicted):
    changes = [max_change(predicted("part-irc"), files, eps) for eps in (1e-3, 1e-6, 1e-9)]
    assert changes[2] <= SPLIT_TOLERANCE  # at the float32 floor
    assert changes[1] <= 2e-3 * changes[0]  # linear in epsilon: continuous, -> 0
    assert changes[2] <= changes[1] <= changes[0]


def test_plain_part_is_not(files, predicted):
    assert max_change(predicted("part"), files, "split") > 1e-2
    assert max_change(predicted("part"), files, 1e-9) > 1e-2


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_torch_backend(files, dtype):
    pytest.importorskip("torch")
    # a fixed slot budget, the smallest: "auto" would first time every budget on 512 jets (16 s, more than
    # the test's own 12 s), and ParT in torch on one thread is fastest in small batches (their pair tensors
    # are reused, not page-faulted anew); batch composition changes no score
    # the first TORCH_JETS jets of each file: the invariance is jet by jet, and torch on one thread is the
    # slowest backend (all 2000 jets took 38 s in float64)
    tagger = JetTagger("part-irc", backend="torch", dtype=dtype, max_slots=1024)
    worst = 0.0
    for p in ("tbqq", "qcd"):
        a = tagger.score_jets(uproot.open(files[p, "original"])["tree"].arrays(entry_stop=TORCH_JETS)).scores
        split = uproot.open(files[p, "split"])["tree"].arrays(entry_stop=TORCH_JETS)
        fits = np.asarray(split["npart"]) <= 128
        b = tagger.score_jets(split).scores
        worst = max(worst, float(np.abs(a - b)[fits].max()))
    assert worst <= (SPLIT_TOLERANCE if dtype == "float32" else 1e-5)


@pytest.fixture(scope="module")
def efn_bundle(tmp_path_factory):
    """An EFN trained for a few seconds on the bundled samples."""
    pytest.importorskip("torch")
    return train_tiny("efn", tmp_path_factory.mktemp("efn"), epochs=3, max_jets=2000, seed=5, reference=False)


def test_efn_is_irc_safe_through_predict(files, efn_bundle, predicted):
    assert max_change(predicted(efn_bundle, "efn"), files, "split") <= SPLIT_TOLERANCE
    assert max_change(predicted(efn_bundle, "efn"), files, 1e-9) <= SPLIT_TOLERANCE


def test_odd_jets_stay_defined():
    """Zero-energy particles, a jet of collinear particles, a jet of one particle: finite scores, and the
    same invariances."""
    tagger = JetTagger("part-irc")
    t = uproot.open(sample_path("tbqq", "jetclass"))["tree"].arrays(entry_stop=3)
    cols = {k: t[k] for k in t.fields}
    import awkward as ak

    one = {k: (v[:1, :1] if k.startswith("part_") else v[:1]) for k, v in cols.items()}
    base = tagger.score_jets(one).scores
    split = {k: (ak.concatenate([v, v], axis=1) if k.startswith("part_") else v) for k, v in one.items()}
    for f in ("part_px", "part_py", "part_pz", "part_energy"):
        split[f] = split[f] * 0.5  # one particle -> two collinear halves
    zero = {k: (ak.concatenate([v, v * 0], axis=1) if k.startswith("part_") else v) for k, v in one.items()}
    for case in (split, zero):
        s = tagger.score_jets(case).scores
        assert np.isfinite(s).all()
        np.testing.assert_allclose(s, base, atol=SPLIT_TOLERANCE)
