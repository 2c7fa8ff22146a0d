"""Two runs' outputs compared the way a physicist would: histograms bin by bin by category label (growth
axes fill in arrival order, which differs between executors), counts exact, weighted sums to rtol 1e-9."""

from __future__ import annotations

import itertools
import json
import math
import pickle
from pathlib import Path
from typing import Any

import hist
import numpy as np

#: what legitimately differs between two runs of the same job: timing, where it ran, what travelled
RUN_SPECIFIC = {"seconds", "jets_per_second", "executor", "shipping"}


def by_label(h: Any, drop: tuple[str, ...] = ("file",), datasets: Any = None) -> dict[tuple, Any]:
    """{(category labels): view with flow}, category axes in ``drop`` summed over (file paths differ
    between a local run and one over root:// URLs); only ``datasets`` where given."""
    for name in drop:
        if name in h.axes.name:
            h = h[{name: sum}]
    cats = [i for i, a in enumerate(h.axes) if isinstance(a, (hist.axis.StrCategory, hist.axis.IntCategory))]
    ds_at = [k for k, i in enumerate(cats) if h.axes[i].name == "dataset"]
    view = np.asarray(h.view(flow=True))
    out = {}
    for labels in itertools.product(*(list(h.axes[i]) for i in cats)):
        if datasets is not None and ds_at and labels[ds_at[0]] not in datasets:
            continue
        index: list[Any] = [slice(None)] * h.ndim
        for i, v in zip(cats, labels):
            index[i] = h.axes[i].index(v) + (1 if h.axes[i].traits.underflow else 0)
        out[labels] = np.asarray(view[tuple(index)])
    return out


def same_hists(a: dict[str, Any], b: dict[str, Any], names: Any = None, datasets: Any = None) -> None:
    """Histograms ``names`` (default: all, the same set in both) equal bin by bin by label."""
    if names is None:
        assert a.keys() == b.keys()
        names = list(a)
    for name in names:
        ha, hb = by_label(a[name], datasets=datasets), by_label(b[name], datasets=datasets)
        assert ha.keys() == hb.keys(), name
        for k in ha:
            va, vb = ha[k], hb[k]
            for field in va.dtype.names or (None,):
                x, y = (va, vb) if field is None else (va[field], vb[field])
                np.testing.assert_allclose(x, y, rtol=1e-9, atol=0, err_msg=f"{name} {k} {field}")


def same_results(got: dict[str, Any], want: dict[str, Any], names: Any = None, subset: bool = False) -> None:
    """Two ``run_fileset`` outputs: the cutflow (counts exact, sums of weights to 1e-12) and the
    histograms; with ``subset``, only the datasets ``got`` has."""
    datasets = set(got["cutflow"]) if subset else None
    if not subset:
        assert got["cutflow"].keys() == want["cutflow"].keys()
    for ds, row in got["cutflow"].items():
        assert row.keys() == want["cutflow"][ds].keys(), ds
        for key, v in row.items():
            assert math.isclose(v, want["cutflow"][ds][key], rel_tol=1e-12), (ds, key)
    same_hists(got["hists"], want["hists"], names=names, datasets=datasets)


def same_values(a: Any, b: Any, where: str = "") -> None:
    """JSON documents equal: ints and strings exactly, floats to rtol 1e-9 (NaN equal to NaN)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            same_values(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            same_values(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=0), where
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def same_runs(a: Path, b: Path) -> None:
    """Two ``jettagger run`` output folders: the same histograms and metrics.json (timing aside)."""
    ha = pickle.loads((Path(a) / "hists.pkl").read_bytes())
    hb = pickle.loads((Path(b) / "hists.pkl").read_bytes())
    same_hists(ha["hists"], hb["hists"])
    ma, mb = (json.loads((Path(p) / "metrics.json").read_text()) for p in (a, b))
    same_values(
        {k: v for k, v in ma.items() if k not in RUN_SPECIFIC},
        {k: v for k, v in mb.items() if k not in RUN_SPECIFIC},
    )
