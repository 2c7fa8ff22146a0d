"""Filesets: coffea's JSON layout checked, and every file opened once before any work (preflight), so
that an unreadable file or a missing branch is named up front."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ._errors import JetTaggerError


def load_fileset(path: str | Path) -> dict[str, Any]:
    """A coffea JSON fileset: ``{dataset: {"files": {path: treename} | [paths], "metadata": {...}}}`` or
    ``{dataset: [paths]}``. Metadata (coffea's convention): ``xsec`` in pb, ``is_mc``."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise JetTaggerError(f"cannot read fileset {path}: {err}") from None
    return check_fileset(raw, str(path))


def check_fileset(raw: Any, where: str = "fileset") -> dict[str, Any]:
    if not isinstance(raw, dict) or not raw:
        raise JetTaggerError(f"{where}: a fileset maps dataset names to files; this one has no dataset")
    out = {}
    for ds, spec in raw.items():
        if isinstance(spec, dict):
            unknown = sorted(set(spec) - {"files", "metadata", "treename"})
            if unknown or "files" not in spec:
                raise JetTaggerError(
                    f'{where}: dataset {ds!r} needs "files" (and optional "metadata"); unknown keys {unknown}'
                )
            files, meta = spec["files"], dict(spec.get("metadata") or {})
        else:
            files, meta = spec, {}
        if not files:
            raise JetTaggerError(f"{where}: dataset {ds!r} has no files")
        if not isinstance(files, (dict, list)):
            raise JetTaggerError(f'{where}: dataset {ds!r}: "files" must be a list or a {{path: tree}} map')
        xsec = meta.get("xsec")
        if xsec is not None and (not isinstance(xsec, (int, float)) or xsec <= 0):
            raise JetTaggerError(f"{where}: dataset {ds!r}: metadata.xsec must be a positive number (pb)")
        out[ds] = {
            "files": files if isinstance(files, dict) else dict.fromkeys(files, "Events"),
            "metadata": meta,
        }
    return out


def preflight(
    fileset: dict[str, Any], skip_bad_files: bool, check: Any = None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Open every file once: unreadable ones are skipped (and recorded with their error and, where the
    header still says, their event count) or, without skipping, named in the error. ``check(tree, path)``
    refuses a readable file that lacks what the model reads (a user error: never skipped) and returns the
    source preset the file is read with (recorded per file, ``sources``)."""
    good: dict[str, Any] = {}
    skipped: list[dict[str, Any]] = []
    for ds, spec in fileset.items():
        for path, tree in spec["files"].items():
            tree = tree if isinstance(tree, str) else tree.get("object_path", "Events")
            try:
                n, preset, sumw, rntuple = _open_one(path, tree, check)
            except JetTaggerError:
                raise
            except Exception as err:  # noqa: BLE001 - any failure to read makes the file bad
                if not skip_bad_files:
                    raise JetTaggerError(
                        f"cannot read {path} (dataset {ds!r}): {type(err).__name__}: {err}"
                    ) from None
                skipped.append(
                    {
                        "dataset": ds,
                        "file": path,
                        "error": f"{type(err).__name__}: {err}",
                        "events": _events_from_header(path, tree),
                    }
                )
                continue
            entry = good.setdefault(
                ds,
                {
                    "files": {},
                    "metadata": spec.get("metadata", {}),
                    "events": {},
                    "sumw": {},
                    "sources": {},
                    "rntuple": [],
                },
            )
            entry["sources"][path] = preset
            if rntuple:
                entry["rntuple"].append(path)
            entry["files"][path] = tree
            entry["events"][path] = n
            entry["sumw"][path] = sumw
    return good, skipped


def _open_one(path: str, tree: str, check: Any) -> tuple[int, Any, float | None, bool]:
    """(events, source preset, Runs' sum of genEventSumw or None, is an RNTuple) of one file."""
    import uproot

    with uproot.open(path) as f:
        n = f[tree].num_entries
        rntuple = type(f[tree]).__name__.endswith("RNTuple")
        preset = check(f[tree], path) if check is not None else None
        jets = getattr(preset, "jets", "FatJet")
        f[tree][f"n{jets}"].array(entry_stop=1)  # the header alone can look fine
        runs = f.get("Runs")
        sumw = (
            float(runs["genEventSumw"].array(library="np").sum())
            if runs is not None and "genEventSumw" in runs
            else None
        )
    return n, preset, sumw, rntuple


def _events_from_header(path: str, tree: str) -> int | None:
    import uproot

    try:
        with uproot.open(path) as f:
            return int(f[tree].num_entries)
    except Exception:  # noqa: BLE001 - unknown: the file is unreadable
        return None
