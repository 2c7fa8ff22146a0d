"""Data configs: weaver YAML and preprocess.json, the restricted evaluator, auto preprocessing."""

from __future__ import annotations

import json

import awkward as ak
import numpy as np
import pytest
import uproot

from jettagger_coffea._errors import JetTaggerError
from jettagger_coffea.dataconfig import DataConfig
from jettagger_coffea.expressions import Expression
from jettagger_coffea.features import featurize


@pytest.mark.parametrize(
    "source",
    [
        "__import__('os').system('true')",
        "().__class__.__bases__[0].__subclasses__()",
        "np.load('x')",
        "np.__dict__",
        "(lambda: 1)()",
        "[x for x in part_px]",
        "open('/etc/passwd')",
        "part_px.__class__",
        "np.lib.format",
        "getattr(np, 'load')",
    ],
)
def test_hostile_expressions_refused(source):
    with pytest.raises(JetTaggerError, match=r"refused|cannot parse"):
        Expression(source, where="cfg.yaml: new_variables.x")


def test_expressions_compute_like_numpy():
    px = ak.Array([[3.0, 1.0], [4.0]])
    py = ak.Array([[4.0, 0.0], [3.0]])
    e = Expression("np.log(np.hypot(part_px, part_py)) * (part_px > 1) + ak.ones_like(part_px) - math.pi")
    out = e({"part_px": px, "part_py": py})
    expected = np.log(np.hypot(px, py)) * (px > 1) + 1 - np.pi
    assert ak.all(abs(out - expected) < 1e-12)
    assert e.names == {"part_px", "part_py"}
    sel = Expression("(jet_pt > 500) & ~(jet_eta > 1)")
    assert sel({"jet_pt": np.array([400.0, 600, 700]), "jet_eta": np.array([0, 0, 2])}).tolist() == [0, 1, 0]


def test_unknown_variable_named(tmp_path, tbqq_jetclass):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(
        "new_variables:\n  part_x: np.log(part_nonexistent)\ninputs:\n  pf_features:\n"
        "    length: 16\n    vars:\n      - [part_x, null]\n  pf_mask:\n    length: 16\n"
        "    vars:\n      - [part_px, null]\n"
    )
    dc = DataConfig.from_yaml(cfg)
    with pytest.raises(JetTaggerError, match=r"part_nonexistent") as err:
        featurize(uproot.open(tbqq_jetclass)["tree"], dc, where=str(tbqq_jetclass))
    assert "tbqq_jetclass.root" in str(err.value)


def test_hostile_config_refused_at_load(tmp_path):
    cfg = tmp_path / "evil.yaml"
    cfg.write_text(
        "new_variables:\n  part_x: __import__('os').system('touch pwned')\ninputs:\n"
        "  pf_mask:\n    vars: [[part_px, null]]\n"
    )
    with pytest.raises(JetTaggerError, match=r"evil.yaml.*refused"):
        DataConfig.from_yaml(cfg)


@pytest.mark.parametrize("name", ["kin", "full"])
def test_preprocess_json_roundtrip(name, shipped_config, tbqq_jetclass, tmp_path):
    dc = DataConfig.from_yaml(shipped_config(name))
    path = tmp_path / "preprocess.json"
    path.write_text(json.dumps(dc.preprocess_json()))
    again = DataConfig.from_preprocess_json(path, base=dc)
    assert again.input_shapes == dc.input_shapes
    tree = uproot.open(tbqq_jetclass)["tree"]
    a, b = featurize(tree, dc), featurize(tree, again)
    for g in a.inputs:
        np.testing.assert_array_equal(a.inputs[g], b.inputs[g])
    # without the YAML: built-in JetClass formulas, constant padding; the real particles agree
    bare = DataConfig.from_preprocess_json(path)
    c = featurize(tree, bare)
    mask = a.inputs["pf_mask"].astype(bool)
    for g in a.inputs:
        np.testing.assert_array_equal(np.where(mask, a.inputs[g], 0), np.where(mask, c.inputs[g], 0))


def test_auto_preprocess_matches_weaver_definition(shipped_config, tbqq_jetclass, tmp_path):
    import yaml

    opts = yaml.safe_load(shipped_config("kin").read_text())
    opts["preprocess"]["method"] = "auto"
    opts["inputs"]["pf_features"]["vars"] = [[v[0]] for v in opts["inputs"]["pf_features"]["vars"]]
    dc = DataConfig.from_dict(opts, source="auto.yaml")
    assert dc.needs_auto
    with pytest.raises(JetTaggerError, match="auto"):
        featurize(uproot.open(tbqq_jetclass)["tree"], dc)
    from jettagger_coffea.features import make_table

    table = make_table(uproot.open(tbqq_jetclass)["tree"], dc)
    resolved = dc.resolve_auto(table)
    assert not resolved.needs_auto
    x = ak.to_numpy(ak.flatten(table["part_pt_log"]))
    lo, med, hi = np.percentile(x, [16, 50, 84])
    v = resolved.inputs["pf_features"].vars[0]
    assert v.center == pytest.approx(med)
    assert v.scale == pytest.approx(1 / max(hi - med, med - lo))
    resolved.dump_yaml(tmp_path / "resolved.yaml")
    again = DataConfig.from_yaml(tmp_path / "resolved.yaml")
    assert again.inputs["pf_features"].vars[0].center == pytest.approx(med)
