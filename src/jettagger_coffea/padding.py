"""Jagged per-particle values -> dense float32 [N, P], weaver-identical (truncate in stored order;
``constant`` fills ``pad_value``, ``wrap`` repeats the jet's own values cyclically)."""

from __future__ import annotations

import numpy as np


def dynamic_length(counts: np.ndarray, max_length: int | None) -> int:
    """The longest real jet of the chunk, capped at the config length (at least 1)."""
    longest = int(counts.max()) if len(counts) else 1
    longest = max(longest, 1)
    return min(longest, max_length) if max_length else longest


def pad(
    content: np.ndarray, counts: np.ndarray, length: int, mode: str = "constant", pad_value: float = 0.0
) -> np.ndarray:
    """Dense [N, length] from flat ``content`` with ``counts`` per row."""
    counts = np.asarray(counts, dtype=np.int64)
    starts = np.zeros(len(counts), dtype=np.int64)
    np.cumsum(counts[:-1], out=starts[1:])
    j = np.arange(length, dtype=np.int64)
    if mode == "wrap":
        safe = np.maximum(counts, 1)
        idx = starts[:, None] + j[None, :] % safe[:, None]
        valid = np.broadcast_to((counts > 0)[:, None], idx.shape)
        fill = 0.0
    else:
        idx = starts[:, None] + j[None, :]
        valid = j[None, :] < counts[:, None]
        fill = pad_value
    out = np.full((len(counts), length), fill, dtype=np.float32)
    if content.size:
        idx = np.where(valid, idx, 0)
        np.copyto(out, content[idx].astype(np.float32, copy=False), where=valid)
    return out
