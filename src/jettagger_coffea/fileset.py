"""Filesets: coffea's JSON layout checked, and every file opened once before any work (preflight), so
that an unreadable file or a missing branch is named up front."""

from __future__ import annotations

import filecmp
import json
import os
from collections.abc import Generator
from contextlib import closing
from pathlib import Path
from typing import Any

from ._errors import JetTaggerError
from .preparation import FileCache, Outcome, check_key, heap_for_metadata, ordered_map, stamp
from .remote import gave_up, open_file


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


def file_identity(path: str) -> str:
    """What makes two spellings one file: a remote file's URL, a local file's resolved path (``x.root``,
    ``./x.root``, ``../d/x.root`` and a symbolic link to it are one file)."""
    return path if "://" in path else os.path.realpath(path)


def preflight(
    fileset: dict[str, Any],
    skip_bad_files: bool,
    check: Any = None,
    *,
    client: Any = None,
    cache: FileCache | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Open every file once: unreadable ones are skipped (and recorded with their error and, where the
    header still says, their event count) or, without skipping, named in the error. ``check(tree, path)``
    refuses a readable file that lacks what the model reads (a user error: never skipped) and returns the
    source preset the file is read with (recorded per file, ``sources``).

    Where the files are opened: one task per file on ``client``'s dask workers, else here one after the
    other. With ``cache`` (:class:`.preparation.FileCache`) and a check that has a ``key``, a file whose
    stamp is unchanged since a run with the same check is not opened (:mod:`.preparation`).

    One file is read once: spellings of one path (:func:`file_identity`), and copies (the same ROOT file
    UUID, entries and bytes), are kept once per dataset (a warning each, ``duplicates``); one file in two
    datasets is refused, naming both. Files with 0 events are kept (``events`` 0): they stay in the
    accounting. Per file, ``uuid`` is the ROOT file UUID (None where there is none)."""
    located, duplicates = _one_spelling_per_file(fileset)
    order = [(ds, path, tree) for ds, files in located.items() for path, tree in files.items()]
    entries = {ds: _entry(fileset[ds], duplicates[ds]) for ds in located}
    skipped: list[dict[str, Any]] = []
    seen: dict[tuple[str, str, int], list[tuple[str, str]]] = {}  # (uuid, tree, entries) -> files
    # closed on an error: the files not yet prepared are not opened (their dask tasks cancelled)
    with closing(_prepare(order, check, skip_bad_files, client, cache)) as prepared:
        for (ds, path, tree), info, failed in prepared:
            if info is None:
                if not skip_bad_files:
                    raise JetTaggerError(f"cannot read {path} (dataset {ds!r}): {failed.error}") from None
                skipped.append(
                    {"dataset": ds, "file": path, "error": failed.error, "events": failed.header_events}
                )
                continue
            n, preset, sumw, rntuple, uuid = info
            entry = entries[ds]
            if _copy_of(seen, (uuid, tree, n), ds, path, entry):
                continue
            entry["sources"][path] = preset
            if rntuple:
                entry["rntuple"].append(path)
            entry["files"][path] = tree
            entry["events"][path] = n
            entry["sumw"][path] = sumw
            entry["uuid"][path] = uuid
    return {ds: entry for ds, entry in entries.items() if entry["files"]}, skipped


def _prepare(
    order: list[tuple[str, str, str]], check: Any, skip_bad_files: bool, client: Any, cache: FileCache | None
) -> Generator[tuple[tuple[str, str, str], Any, Outcome], None, None]:
    """Per file in ``order``: (where, what one open told or None where the file cannot be read, its
    :class:`.preparation.Outcome`), from the cache where the file is unchanged, else from an open (then
    kept in the cache). A file the model cannot read raises at once (never skipped)."""
    key = check_key(check) if cache is not None else None
    cached = [cache.get(p, t, key) if cache is not None and key else None for _, p, t in order]
    items = [(p, t, c["stamp"] if c else None) for (_, p, t), c in zip(order, cached)]
    with closing(ordered_map(_inspect, items, client, check=check, skip_bad_files=skip_bad_files)) as outs:
        for where, entry, out in zip(order, cached, outs):
            if out.user_error is not None:
                raise JetTaggerError(out.user_error)
            if out.cached and cache is not None and entry is not None:
                yield where, cache.info(entry), out
                continue
            if out.info is not None and cache is not None and key:
                cache.put(where[1], where[2], key, out)
            yield where, out.info, out


def _inspect(path: str, tree: str, cached_stamp: Any, *, check: Any, skip_bad_files: bool) -> Outcome:
    """One file's preparation, where the file is: not opened while its stamp equals the cached one."""
    now = stamp(path)
    if now is not None and now == cached_stamp:
        return Outcome(stamp=now, cached=True)
    try:
        with heap_for_metadata():
            return Outcome(stamp=now, info=_open_one(path, tree, check))
    except JetTaggerError as err:
        return Outcome(stamp=now, user_error=str(err))
    except Exception as err:  # noqa: BLE001 - any failure to read makes the file bad
        header = _events_from_header(path, tree) if skip_bad_files else None
        return Outcome(stamp=now, error=f"{type(err).__name__}: {err}", header_events=header)


def _entry(spec: dict[str, Any], duplicates: list[str]) -> dict[str, Any]:
    return {
        "files": {},
        "metadata": spec.get("metadata", {}),
        "events": {},
        "sumw": {},
        "uuid": {},
        "sources": {},
        "rntuple": [],
        "duplicates": duplicates,
    }


def _one_spelling_per_file(
    fileset: dict[str, Any],
) -> tuple[dict[str, dict[str, str]], dict[str, list[str]]]:
    """Per dataset ``{path: tree}`` with each file once (its first spelling) and a warning per file
    listed more than once; a file in two datasets is an error naming both (before any file is opened)."""
    owner: dict[tuple[str, str], tuple[str, str]] = {}  # (identity, tree) -> (dataset, first spelling)
    located: dict[str, dict[str, str]] = {}
    duplicates: dict[str, list[str]] = {}
    for ds, spec in fileset.items():
        spellings: dict[tuple[str, str], list[str]] = {}
        for path, tree in spec["files"].items():
            tree = tree if isinstance(tree, str) else tree.get("object_path", "Events")
            key = (file_identity(str(path)), tree)
            first = owner.setdefault(key, (ds, str(path)))
            if first[0] != ds:
                raise JetTaggerError(
                    f"{path} is in datasets {first[0]!r} (as {first[1]}) and {ds!r}: a file belongs to "
                    "one dataset"
                )
            spellings.setdefault(key, []).append(str(path))
        located[ds] = {names[0]: key[1] for key, names in spellings.items()}
        duplicates[ds] = [
            f"dataset {ds!r}: {names[0]} is listed {len(names)} times ({', '.join(names)}): read once"
            for names in spellings.values()
            if len(names) > 1
        ]
    return located, duplicates


def _copy_of(
    seen: dict[tuple[str, str, int], list[tuple[str, str]]],
    key: tuple[str | None, str, int],
    ds: str,
    path: str,
    entry: dict[str, Any],
) -> bool:
    """Whether ``path`` is a copy of a file already read: the same ROOT file UUID, tree and entries and,
    for two local files, the same bytes (a file patched in place keeps its UUID). In the same dataset
    it is left out with a warning; in another dataset it is refused."""
    uuid = key[0]
    if uuid is None:
        return False
    earlier = seen.setdefault((uuid, key[1], key[2]), [])
    first = next((f for f in earlier if _same_bytes(f[1], path)), None)
    if first is None:
        earlier.append((ds, path))
        return False
    if first[0] != ds:
        raise JetTaggerError(
            f"{path} (dataset {ds!r}) and {first[1]} (dataset {first[0]!r}) are one file (ROOT file UUID "
            f"{uuid}, {key[2]} events): a file belongs to one dataset"
        )
    entry["duplicates"].append(
        f"dataset {ds!r}: {path} is a copy of {first[1]} (the same ROOT file UUID, {key[2]} events): "
        "read once"
    )
    return True


def _same_bytes(a: str, b: str) -> bool:
    """Two files with one UUID: byte by byte where both are local (rare: only on a UUID match); remote
    ones are taken to be copies (one file at two sites)."""
    if "://" in a or "://" in b:
        return True
    return filecmp.cmp(a, b, shallow=False)


def _open_one(path: str, tree: str, check: Any) -> tuple[int, Any, float | None, bool, str | None]:
    """(events, source preset, Runs' sum of genEventSumw or None, is an RNTuple, ROOT file UUID) of one
    file. A URL (``root://``, ``https://``) is read through fsspec with :mod:`.remote`'s timeout and
    retries of transient failures."""
    with open_file(path) as f:
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
        uuid = getattr(f.file, "uuid", None)
    return n, preset, sumw, rntuple, None if uuid is None else str(uuid)


def _events_from_header(path: str, tree: str) -> int | None:
    """The entries a bad file's header states, or None where it cannot be read (a URL whose tries were
    just used up is not tried again)."""
    if gave_up(path):
        return None
    try:
        with open_file(path) as f:
            return int(f[tree].num_entries)
    except Exception:  # noqa: BLE001 - unknown: the file is unreadable
        return None
