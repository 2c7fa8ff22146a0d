"""The user cache: small JSON entries that one process measured or read and the next one reuses (the
tuned slot budget under ``budgets/``). Where it lives: ``$JETTAGGER_CACHE``, else
``$XDG_CACHE_HOME/jettagger-coffea``, else ``~/.cache/jettagger-coffea``; ``JETTAGGER_CACHE=off`` switches
it off. A cache only saves time: an entry that cannot be read is a miss, one that cannot be written (a
read-only home on a batch worker) is a debug line, never an error."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

CACHE_ENV = "JETTAGGER_CACHE"
#: the value of :data:`CACHE_ENV` that switches the cache off
OFF = "off"

log = logging.getLogger(__name__)


def cache_dir(sub: str) -> Path | None:
    """The folder of one kind of entry (``budgets``), or None where the cache is off."""
    env = os.environ.get(CACHE_ENV, "").strip()
    if env.lower() == OFF:
        return None
    if env:
        return Path(env).expanduser() / sub
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    try:
        base = Path(xdg) if xdg else Path.home() / ".cache"
    except RuntimeError:  # no home directory at all (some batch workers): no cache
        return None
    return base / "jettagger-coffea" / sub


def entry_path(sub: str, key: dict[str, Any]) -> Path | None:
    """Where the entry of ``key`` (a JSON-able dict: what the value depends on) lives: its sha256."""
    folder = cache_dir(sub)
    if folder is None:
        return None
    return folder / f"{hashlib.sha256(_canonical(key).encode()).hexdigest()[:32]}.json"


def read_entry(sub: str, key: dict[str, Any]) -> Any | None:
    """The value stored for ``key``, or None: no entry, the cache off, or an entry that is unreadable,
    not JSON or written for another key (all a miss, logged at debug)."""
    path = entry_path(sub, key)
    if path is None:
        return None
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        log.debug("cache entry %s ignored: %s", path, err)
        return None
    if not isinstance(doc, dict) or doc.get("key") != json.loads(_canonical(key)):
        log.debug("cache entry %s ignored: not an entry for this key", path)
        return None
    return doc.get("value")


def write_entry(sub: str, key: dict[str, Any], value: Any) -> Path | None:
    """Store ``value`` for ``key``, whole or not at all (a temporary file beside it, renamed over it); the
    path written, or None where the cache is off or cannot be written (logged at debug)."""
    path = entry_path(sub, key)
    if path is None:
        return None
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps({"key": json.loads(_canonical(key)), "value": value}, indent=1))
        Path(tmp).replace(path)
        return path
    except OSError as err:
        log.debug("cache entry %s not written: %s", path, err)
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        return None


def _canonical(key: dict[str, Any]) -> str:
    return json.dumps(key, sort_keys=True, default=str)
