"""Featurization: weaver-identical on JetClass files, same on PFNano, eager == virtual == dask, padding."""

from __future__ import annotations

import logging

import awkward as ak
import numpy as np
import pytest
import uproot

from jettagger_coffea._errors import JetTaggerError
from jettagger_coffea.batching import dynamic_length, pad
from jettagger_coffea.dataconfig import DataConfig
from jettagger_coffea.features import featurize
from jettagger_coffea.nanoevents import open_events


@pytest.mark.parametrize("name", ["kin", "kinpid", "full"])
def test_equals_weaver_data_pipeline(name, jetclass_config, tbqq_jetclass):
    pytest.importorskip("weaver")
    from weaver.utils.data.config import DataConfig as WeaverConfig
    from weaver.utils.dataset import _load_next

    logging.getLogger("weaver").setLevel(logging.WARNING)
    yml = jetclass_config(name)
    wdc = WeaverConfig.load(str(yml))
    table, _ = _load_next(
        wdc,
        [str(tbqq_jetclass)],
        None,
        {"training": False, "mode": "test", "reweight": False, "shuffle": False},
    )
    ours = featurize(uproot.open(tbqq_jetclass)["tree"], DataConfig.from_yaml(yml))
    assert set(ours.inputs) == set(wdc.input_names)
    for g, arr in ours.inputs.items():
        assert arr.shape == table["_" + g].shape
        np.testing.assert_allclose(arr, table["_" + g], atol=1e-6, rtol=0)


@pytest.fixture(scope="module")
def full_config(shipped_config):
    return DataConfig.from_yaml(shipped_config("full"))


@pytest.mark.parametrize("mode", ["eager", "virtual", "uproot"])
def test_pfnano_equals_jetclass(mode, full_config, tbqq_nanoaod, tbqq_jetclass):
    """The same jets through the PFNano link tables (jetclass preset: cm -> mm, -1 -> 0) and as JetClass."""
    ev = (
        uproot.open(tbqq_nanoaod)["Events"] if mode == "uproot" else open_events(str(tbqq_nanoaod), mode=mode)
    )
    a = featurize(ev, full_config, where=str(tbqq_nanoaod))
    b = featurize(uproot.open(tbqq_jetclass)["tree"], full_config)
    for g in a.inputs:
        # four-vectors in GeV: float32 rounding of (pt, eta, phi, m) vs (px, py, pz, E); d0 via cm in float32
        tol = {"atol": 2e-4, "rtol": 1e-5} if g == "pf_vectors" else {"atol": 1e-5, "rtol": 1e-5}
        np.testing.assert_allclose(a.inputs[g], b.inputs[g], **tol)


def test_typetracer_touches_only_needed_branches(shipped_config):
    from jettagger_coffea.sources import load_preset, needed_branches

    kin = needed_branches(DataConfig.from_yaml(shipped_config("kin")), load_preset("jetclass"))
    assert kin == {("FatJet", f) for f in ("pt", "eta", "phi", "mass")} | {
        ("FatJetPFCands", f) for f in ("jetIdx", "pFCandsIdx", "pt", "eta", "phi", "mass")
    } | {("PFCands", f) for f in ("pt", "eta", "phi", "mass")}
    full = needed_branches(DataConfig.from_yaml(shipped_config("full")), load_preset("jetclass"))
    assert {("PFCands", "d0"), ("PFCands", "d0Err"), ("PFCands", "pdgId")} <= full
    assert not any(f.startswith("tau") for _, f in full)


def test_padding_modes():
    content = np.array([1, 2, 3, 4, 5, 6], dtype=np.float32)
    counts = np.array([3, 0, 1, 2])
    np.testing.assert_array_equal(
        pad(content, counts, 4, "constant", -1),
        [[1, 2, 3, -1], [-1, -1, -1, -1], [4, -1, -1, -1], [5, 6, -1, -1]],
    )
    np.testing.assert_array_equal(
        pad(content, counts, 4, "wrap"), [[1, 2, 3, 1], [0, 0, 0, 0], [4, 4, 4, 4], [5, 6, 5, 6]]
    )
    np.testing.assert_array_equal(pad(content, counts, 2, "constant"), [[1, 2], [0, 0], [4, 0], [5, 6]])
    assert dynamic_length(counts, 128) == 3
    assert dynamic_length(np.array([300]), 128) == 128
    assert dynamic_length(np.array([0, 0]), 128) == 1


def _jets(full_config, tbqq_jetclass):
    t = uproot.open(tbqq_jetclass)["tree"].arrays(entry_stop=5)
    return {k: t[k] for k in t.fields}


def test_dynamic_padding_and_empty_jets(full_config, tbqq_jetclass):
    cols = _jets(full_config, tbqq_jetclass)
    empty = {k: (v[:0] if False else v) for k, v in cols.items()}
    for k, v in cols.items():  # make jet 2 empty
        if k.startswith("part_"):
            empty[k] = ak.concatenate([v[:2], v[2:3][:, :0], v[3:]])
    f = featurize(empty, full_config, length="dynamic")
    assert f.length == int(ak.max(ak.num(cols["part_px"])))
    assert f.empty_jets.tolist() == [False, False, True, False, False]
    assert np.all(f.inputs["pf_mask"][2] == 0) and np.all(f.inputs["pf_features"][2] == 0)
    fixed = featurize(empty, full_config)
    np.testing.assert_array_equal(
        fixed.inputs["pf_features"][:, :, : f.length][:, :, :40], f.inputs["pf_features"][:, :, :40]
    )


def test_nonfinite_replaced_and_counted(full_config, tbqq_jetclass):
    cols = _jets(full_config, tbqq_jetclass)
    e = ak.to_numpy(ak.flatten(cols["part_energy"])).copy()
    e[0], e[5] = np.nan, np.inf
    cols["part_energy"] = ak.unflatten(e, ak.num(cols["part_energy"]))
    f = featurize(cols, full_config)
    assert f.n_nonfinite > 0
    assert all(np.isfinite(x).all() for x in f.inputs.values())


def test_missing_branch_named(full_config, tmp_path, tbqq_jetclass):
    t = uproot.open(tbqq_jetclass)["tree"].arrays(entry_stop=3)
    path = tmp_path / "nod0.root"
    with uproot.recreate(path) as f:
        cols = {k: t[k] for k in t.fields if k not in ("part_d0val",) and not k.startswith("part_")}
        cols["part"] = ak.zip({k[5:]: t[k] for k in t.fields if k.startswith("part_") and k != "part_d0val"})
        f.mktree("tree", {k: v.type for k, v in cols.items()}).extend(cols)
    with pytest.raises(JetTaggerError, match=r"nod0.root.*part_d0val"):
        featurize(uproot.open(path)["tree"], full_config, where=str(path))


def test_pfnano_four_vectors_equal_vector(tbqq_nanoaod):
    """The jetclass preset's (px, py, pz, E) equal scikit-hep `vector`'s, constituents and jets."""
    vector = pytest.importorskip("vector")
    from jettagger_coffea.sources import load_preset, nano_columns

    ev = open_events(tbqq_nanoaod, entry_stop=100)
    get, _ = nano_columns(ev, load_preset("jetclass"), "test")
    fj = ak.flatten(ev.FatJet, axis=1)
    pf = ak.flatten(ev.FatJet.constituents.pf, axis=1)  # coffea's own cross-reference: an independent check
    pf = pf[ak.argsort(pf.pt, axis=-1, ascending=False, stable=True)]
    for obj, names in (
        (pf, ("part_px", "part_py", "part_pz", "part_energy")),
        (fj, (None, None, None, "jet_energy")),
    ):
        ref = vector.zip({"pt": obj.pt, "eta": obj.eta, "phi": obj.phi, "mass": obj.mass})
        for name, want in zip(names, (ref.px, ref.py, ref.pz, ref.energy)):
            if name is None:
                continue
            got, want = np.asarray(ak.flatten(get(name), axis=None)), np.asarray(ak.flatten(want, axis=None))
            np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-4)
