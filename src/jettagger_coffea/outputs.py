"""What a run leaves on disk: hists.pkl (hist objects), hists.root (filled 1-D projections), metrics.json,
the per-jet table and PNG plots; and the per-jet table of ``jettagger predict``.

Outputs are whole or absent: a folder is written as a temporary folder beside it and swapped into place
in one rename, a file as a temporary file renamed over it, so that a kill at any moment leaves the
previous complete output or the new complete one. An output location is claimed before any work
(:func:`claim_output`): checked (a folder is not a file, the parent can be written) and locked against a
second run with a lock file beside it holding the owner's PID (taken over when that process is gone).
A folder is replaced whole, so one holding files a run does not write is refused rather than lost."""

from __future__ import annotations

import contextlib
import ctypes
import glob
import json
import os
import pickle
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ._errors import JetTaggerError
from .analysis import (
    efficiency_curves,
    metrics_from_hists,
    roc_curves,
    signal_missing,
    truth_groups,
)

#: files ``run`` and ``evaluate`` write (and ``*.png``): a folder holding anything else is not replaced
OUTPUT_FILES = frozenset({"hists.pkl", "hists.root", "metrics.json", "jets.parquet"})
#: output locations this process holds, with their lock files' descriptors (claims nest:
#: ``write_outputs`` inside the CLI's claim)
_HELD: dict[Path, int] = {}


def write_outputs(out: dict[str, Any], folder: str | Path) -> dict[str, Path]:
    """hists.pkl (hist objects), hists.root (1-D projections), metrics.json, jets.parquet (with
    ``--per-jet``), PNG plots; written beside ``folder`` and swapped into place whole. Returns the
    paths in ``folder``."""
    final = Path(folder)
    with staged(final, folder=True) as tmp:
        paths = {
            "pickle": tmp / "hists.pkl",
            "root": tmp / "hists.root",
            "metrics": tmp / "metrics.json",
        }
        with paths["pickle"].open("wb") as f:
            pickle.dump({k: v for k, v in out.items() if k != "jets"}, f)
        _write_root(out, paths["root"])
        metrics = metrics_from_hists(out)
        paths["metrics"].write_text(json.dumps(metrics, indent=2, allow_nan=False))
        if "jets" in out:
            paths["jets"] = _write_table(out["jets"], tmp / "jets.parquet")
        paths |= _plots(out, metrics, tmp)
    return {k: final / p.name for k, p in paths.items()}


def _lock_path(target: Path) -> Path:
    return target.parent / f".{target.name}.jettagger-lock"


def _partial(target: Path) -> Path:
    """The temporary folder or file beside ``target`` (a file keeps its suffix: writers choose by it)."""
    return target.parent / f".{target.stem}.partial-{os.getpid()}{target.suffix}"


def _check_location(target: Path, *, folder: bool) -> None:
    """One line before any work: a folder that is a file (or a file that is a folder), a folder holding
    files a run does not write, the current folder."""
    if folder:
        if target.exists() and not target.is_dir():
            raise JetTaggerError(f"-o {target}: exists and is not a folder")
        if target.is_dir():
            if Path.cwd().resolve().is_relative_to(target):
                raise JetTaggerError(f"-o {target}: holds the current folder; name a folder for the outputs")
            foreign = sorted(
                p.name for p in target.iterdir() if p.name not in OUTPUT_FILES and not p.name.endswith(".png")
            )
            if foreign:
                raise JetTaggerError(
                    f"-o {target}: holds files jettagger does not write ({', '.join(foreign[:3])}"
                    f"{', ...' if len(foreign) > 3 else ''}); outputs replace the whole folder: use a new "
                    "or empty one"
                )
    elif target.is_dir():
        raise JetTaggerError(f"-o {target}: is a folder, not a file")
    above = next(p for p in target.parents if p.exists())
    if not above.is_dir():
        raise JetTaggerError(f"-o {target}: {above} is a file, not a folder")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise JetTaggerError(f"-o {target}: cannot create {target.parent} ({err.strerror})") from None


def _take_lock(target: Path) -> int:
    """The lock beside ``target``: a file holding the owner's PID, locked with ``flock`` (the system
    releases it when the owner dies, however it dies), so a lock left by a killed run is taken over, and
    the killed run's leftovers cleared. Returns the lock file's descriptor."""
    import fcntl

    lock = _lock_path(target)
    for _ in range(5):
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise JetTaggerError(f"-o {target}: cannot write in {target.parent} ({err.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise JetTaggerError(
                f"-o {target}: in use by another jettagger (pid {holder}, lock file {lock})"
            ) from None
        try:
            same = lock.stat().st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # the previous owner removed the file between our open and our lock
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        _recover(target)
        return fd
    raise JetTaggerError(f"-o {target}: in use by another jettagger (lock file {lock})")


def _recover(target: Path) -> None:
    """Leftovers of a run that was killed (the lock is ours now, so nobody else writes them): its partial
    outputs are removed; where it died between the two renames of the fallback swap, its previous output
    is put back."""
    partial = re.compile(rf"\.{re.escape(target.stem)}\.partial-\d+{re.escape(target.suffix)}")
    for p in target.parent.iterdir():
        if partial.fullmatch(p.name):
            _remove(p)
    previous = sorted(target.parent.glob(f".{glob.escape(target.name)}.previous-*"))
    if previous and not target.exists():
        previous[0].rename(target)
    for p in previous:
        _remove(p)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def claim_output(target: str | Path, *, folder: bool) -> Iterator[Path]:
    """Hold an output location for a job: checked and locked on entry (one line naming what is wrong,
    before any work), released on exit. Nested claims of one location by one process are one claim."""
    path = Path(target).resolve()  # a link to a folder: that folder, replaced in its own parent
    if path in _HELD:
        yield path
        return
    _check_location(path, folder=folder)
    _HELD[path] = _take_lock(path)
    try:
        yield path
    finally:
        _lock_path(path).unlink(missing_ok=True)
        os.close(_HELD.pop(path))


@contextlib.contextmanager
def staged(target: str | Path, *, folder: bool) -> Iterator[Path]:
    """A temporary folder (or file path) beside ``target`` to write into; moved into place in one rename
    when the block ends without an error, removed otherwise (an error, Ctrl-C)."""
    with claim_output(target, folder=folder) as path:
        tmp = _partial(path)
        _remove(tmp)
        if folder:
            tmp.mkdir()
        try:
            yield tmp
            _commit(tmp, path, folder=folder)
        finally:
            _remove(tmp)


def _commit(tmp: Path, target: Path, *, folder: bool) -> None:
    """``tmp`` in place of ``target``: a file by rename; a folder by an atomic exchange (Linux renameat2)
    where the system has one, else two renames (a kill between them is repaired by :func:`_recover`). The
    previous folder, now at ``tmp``, is removed by the caller."""
    if not folder or not target.exists():
        tmp.replace(target)
        return
    if _exchange(tmp, target):
        return
    previous = target.parent / f".{target.name}.previous-{os.getpid()}"
    target.rename(previous)
    tmp.rename(target)
    _remove(previous)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (``renameat2(RENAME_EXCHANGE)``); False where not supported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _plots(out: dict[str, Any], metrics: dict[str, Any], folder: Path) -> dict[str, Path]:
    """ROC, confusion, working-point efficiencies vs pT and soft-drop mass (not for a discriminant without
    signal jets: metrics.json's warnings say so), soft-drop mass, stored scores."""
    from . import plotting

    h, meta = out["hists"], out["meta"]
    paths: dict[str, Path] = {}
    no_signal = signal_missing(out)
    curves = roc_curves(out)
    if curves:
        signals = {n: truth_groups(meta["classes"], meta["discriminants"][n])["signal"] for n in curves}
        paths["roc"] = plotting.roc_from_counts_plot(
            curves, folder / "roc.png", title=meta["model"], colours=plotting.signal_colours(signals)
        )
    if metrics["accuracy"] is not None:
        paths["confusion"] = plotting.confusion_plot(
            np.asarray(metrics["confusion"]),
            meta["classes"],
            folder / "confusion.png",
            title=f"{meta['model']}: accuracy {metrics['accuracy']:.3f}",
        )
    for name, wps in meta["working_points"].items():
        if name in no_signal:
            continue
        groups = truth_groups(meta["classes"], meta["discriminants"][name])
        truths = [*groups["signal"], *groups["background"]]
        for axis, xlabel in (("pt", r"Jet $p_T$ [GeV]"), ("msd", h["wp_msd"].axes["msd"].label)):
            eff = efficiency_curves(h[f"wp_{axis}"], name, list(wps), truths, axis)
            if eff:
                paths[f"eff_{axis}_{name}"] = plotting.efficiency_plot(
                    eff, folder / f"eff_{axis}_{name}.png", xlabel, title=name
                )
    paths |= plotting.response_plots(metrics.get("response", {}), folder, title=meta["model"])
    hm = h["msoftdrop"].project("truth", "msd")
    view = hm.view()
    per_truth = {
        t: (hm.axes["msd"].edges, view["value"][i], view["variance"][i])
        for i, t in enumerate(hm.axes["truth"])
        if view["value"][i].sum() > 0
    }
    paths["msoftdrop"] = plotting.mass_plot(per_truth, folder / "msoftdrop.png", xlabel=hm.axes["msd"].label)
    hs = h["stored"]
    for name in hs.axes["disc"]:
        sub = hs[{"disc": name}].project("recomputed", "stored")
        if sub.values().sum() > 0:
            paths[f"stored_{name}"] = plotting.stored_plot(
                sub.values(), sub.axes[0].edges, sub.axes[1].edges, folder / f"stored_{name}.png", name
            )
    return paths


def write_jet_table(cols: dict[str, np.ndarray], path: str | Path) -> Path:
    """One row per jet as a ROOT TTree (``Events``) or a parquet file, chosen by the suffix; written
    beside ``path`` and renamed over it whole."""
    path = Path(path)
    if path.suffix not in (".root", ".parquet"):
        raise JetTaggerError(f"--output must end in .root or .parquet, got {path}")
    with staged(path, folder=False) as tmp:
        _write_table(cols, tmp)
    return path


def _write_table(cols: dict[str, np.ndarray], path: Path) -> Path:
    """One row per jet as a ROOT TTree (``Events``; truth as ``truth_index`` into ``truth.ALL_TRUTH``, since
    trees take numbers) or a parquet file, chosen by the suffix."""
    if path.suffix == ".root":
        import uproot

        from .truth import ALL_TRUTH

        cols = dict(cols)
        if "truth" in cols:
            cols["truth_index"] = np.array([ALL_TRUTH.index(t) for t in cols.pop("truth")], dtype=np.int32)
        with uproot.recreate(path) as f:
            f.mktree("Events", {k: v.dtype for k, v in cols.items()}).extend(cols)
    elif path.suffix == ".parquet":
        import awkward as ak

        ak.to_parquet(
            ak.Array({k: v.astype(str) if v.dtype.kind in "OU" else v for k, v in cols.items()}), path
        )
    else:
        raise JetTaggerError(f"--output must end in .root or .parquet, got {path}")
    return path


def _root_name(text: str) -> str:
    """A ROOT-friendly key: no '%', '.', spaces or slashes."""
    return "".join(ch if ch.isalnum() or ch in "_-" else {"%": "pct", ".": "p"}.get(ch, "_") for ch in text)


def _write_root(out: dict[str, Any], path: Path) -> None:
    """Filled 1-D projections (uproot writes TH1s) per dataset, truth class, class / discriminant / working
    point, with ROOT-style titles. A working point's ``_pass_pt`` and ``_total_pt`` are written together
    (where the total has jets; an empty pass is an efficiency of 0) or not at all."""
    import uproot

    h = out["hists"]

    def put(f: Any, key: str, hh: Any, title: str, always: bool = False) -> None:
        if hh.values().sum() <= 0 and not always:  # only filled histograms
            return
        hh = hh.copy()
        hh.label = title
        for ax in hh.axes:
            ax.label = ax.label.replace("$p_T$", "p_{T}").replace("$", "")
        f[_root_name(key)] = hh

    def put_working_points(f: Any, sub: dict[str, str], d: str) -> None:
        ds, t = sub["dataset"], sub["truth"]
        for wp in h["wp_pt"].axes["wp"] if ds in h["wp_pt"].axes["dataset"] else ():
            w = h["wp_pt"][{**sub, "disc": d, "wp": wp}].project("passed", "pt")
            total = w.project("pt")
            if total.values().sum() > 0:
                put(f, f"{ds}_{d}_{wp}_{t}_pass_pt", w[{"passed": 1}], f"{ds} {t}: {d} {wp} passing", True)
                put(f, f"{ds}_{d}_{wp}_{t}_total_pt", total, f"{ds} {t}: {d} {wp} all", True)

    with uproot.recreate(path) as f:
        for ds in h["msoftdrop"].axes["dataset"]:
            for t in h["msoftdrop"].axes["truth"]:
                sub = {"dataset": ds, "truth": t}
                put(f, f"{ds}_msoftdrop_{t}", h["msoftdrop"][sub], f"{ds} {t}: soft-drop mass")
                for name, hh in h.items():  # regressed quantities; masses over the true mass
                    kind, _, what = name.partition("_")
                    if kind in ("regression", "response") and ds in hh.axes["dataset"]:
                        axis = "value" if kind == "regression" else "response"
                        title = f"{ds} {t}: {what}" + (" / true mass" if kind == "response" else "")
                        put(f, f"{ds}_{name}_{t}", hh[sub].project(axis), title)
                if ds not in h["scores"].axes["dataset"]:
                    continue
                for c in h["scores"].axes["cls"]:
                    put(
                        f,
                        f"{ds}_score_{c}_{t}",
                        h["scores"][{**sub, "cls": c}].project("score"),
                        f"{ds} {t}: score {c}",
                    )
                for d in h["discriminant"].axes["disc"] if ds in h["discriminant"].axes["dataset"] else ():
                    put(
                        f,
                        f"{ds}_disc_{d}_{t}",
                        h["discriminant"][{**sub, "disc": d}].project("score"),
                        f"{ds} {t}: {d}",
                    )
                    put_working_points(f, sub, d)
