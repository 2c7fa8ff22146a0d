"""Padding and batching, one rule for inference, training and evaluation alike.

- :func:`pad`: jagged per-particle values -> dense float32 [N, P], weaver-identical (truncate in stored
  order; ``constant`` fills ``pad_value``, ``wrap`` repeats the jet's own values cyclically).
- :func:`padded_length`: how long a batch of jets is padded for one input group.
- :func:`sorted_batches`: jets sorted by multiplicity, cut into batches within a budget of particle slots
  (and pairs), so that each batch pads to little more than its own longest jet (inference, evaluation).
- :func:`shuffled_batches`: training's shuffled batches, bucketed by multiplicity as weaver does.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Literal

import numpy as np

from ._errors import JetTaggerError
from ._names import MAX_LENGTH, MAX_LENGTH_ENV  # the length cap (defined there: the CLI shows it)

if TYPE_CHECKING:
    from .dataconfig import InputGroup

#: how a batch is padded: "dynamic" (its longest jet, within the group's min/max), "fixed" (the config's
#: length, as weaver exports), or an exact length
Padding = Literal["dynamic", "fixed"] | int


def length_cap() -> int:
    """The length cap in force: :data:`MAX_LENGTH`, or ``$JETTAGGER_MAX_LENGTH`` where set."""
    text = os.environ.get(MAX_LENGTH_ENV, "").strip()
    if not text:
        return MAX_LENGTH
    if not text.isdigit() or int(text) < 1:
        raise JetTaggerError(f"{MAX_LENGTH_ENV}={text!r}: expected a positive integer (particles per jet)")
    return int(text)


def above_cap(length: int) -> str | None:
    """Why ``length`` is refused (above the cap, with the override), or None when it is within it."""
    cap = length_cap()
    if length <= cap:
        return None
    return f"{length} is above the cap of {cap} particles per jet (set {MAX_LENGTH_ENV} to raise it)"


def check_padding(value: str | int) -> Padding:
    """The one check of a padding option (the CLI's text or the API's value); a length is capped."""
    if value in ("dynamic", "fixed"):
        return value  # type: ignore[return-value]
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        if (why := above_cap(value)) is not None:
            raise JetTaggerError(f"--padding {why}")
        return value
    raise JetTaggerError(f"--padding {value!r}: dynamic, fixed or a positive length")


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


def padded_length(
    counts: np.ndarray,
    group: InputGroup,
    length: Padding | None,
    min_length: int = 1,
    quantile: float | None = None,
) -> int:
    """The one length rule: how long a batch of jets with these ``counts`` is padded for ``group``.

    ``quantile`` (training's random trimming, as weaver's): dynamic length at that quantile of the counts.
    """
    if group.length is None:
        return 1
    if length is None or length == "fixed":
        return group.length
    if isinstance(length, int):
        return max(length, group.min_length, min_length)
    if quantile is not None and len(counts):
        longest = int(np.ceil(np.quantile(counts, quantile)))
    else:
        longest = dynamic_length(counts, None)
    return min(max(longest, 1, group.min_length, min_length), group.length)


def batch_length(
    groups: list[InputGroup], padding: Padding | None, min_length: int = 1
) -> Callable[[int], int]:
    """Padded length of a batch whose longest jet has ``n`` particles, for the longest of ``groups``:
    what a batch's size in particle slots is measured with."""
    sized = [g for g in groups if g.length is not None]
    cap = max((g.length for g in sized if g.length is not None), default=1)
    floor = max(min(max((g.min_length for g in sized), default=1), cap), 1)

    def length_of(n: int) -> int:
        if padding is None or padding == "fixed":
            return cap
        if isinstance(padding, int):
            return max(padding, min_length)
        return max(min(n, cap), min_length, floor)

    return length_of


def sorted_batches(
    counts: np.ndarray, length_of: Callable[[int], int], max_slots: int, max_pairs: int | None = None
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """(order, ranges): the jets with particles sorted by multiplicity, and ``[start, stop)`` ranges of that
    order, each as large as fits ``jets x length_of(longest) <= max_slots`` (and ``jets x length^2 <=
    max_pairs``). Jets without particles are not in ``order``: they never reach a model."""
    order = np.argsort(counts, kind="stable")
    order = order[counts[order] > 0]
    sorted_counts = counts[order]

    def padded(stop: int) -> int:  # counts ascend: the batch's longest jet is its last
        return length_of(int(sorted_counts[stop - 1]))

    def fits(size: int, length: int) -> bool:
        return size * length <= max_slots and (max_pairs is None or size * length * length <= max_pairs)

    ranges, m, start = [], len(order), 0
    while start < m:  # grow each batch while it fits the slot (and pair) budget
        p0 = padded(start + 1)
        first = max_slots // p0 if max_pairs is None else min(max_slots // p0, max_pairs // (p0 * p0))
        stop = min(m, start + max(1, first))
        while stop > start + 1 and not fits(stop - start, padded(stop)):
            stop = start + (stop - start) // 2
        ranges.append((start, stop))
        start = stop
    return order, ranges


def shuffled_batches(
    n: int, batch_size: int, rng: np.random.Generator, counts: np.ndarray | None = None, bucket: int = 32
) -> Iterator[np.ndarray]:
    """Training batches of ``batch_size`` shuffled jets; with ``counts``, jets are sorted by multiplicity
    within groups of ``bucket`` batches (weaver's bucketing), so each batch pads to little more than its
    own longest jet, and the batches are shuffled again."""
    idx = rng.permutation(n)
    if counts is None:
        for i in range(0, n, batch_size):
            yield idx[i : i + batch_size]
        return
    group = batch_size * bucket
    out: list[np.ndarray] = []
    for g in range(0, n, group):
        chunk = idx[g : g + group]
        chunk = chunk[np.argsort(counts[chunk], kind="stable")]
        out.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    for j in rng.permutation(len(out)):
        yield out[j]
