"""Score files with a bundle (one row per jet, input order) and compute the seeds' metrics and plots."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ._errors import JetTaggerError
from .features import labels as label_values
from .features import make_table
from .inputs import regressed_masses
from .jetfiles import open_jets
from .metrics import discriminant, signal_background, summary
from .sources import Events, check_events
from .tagger import INVALID_SCORE, JetTagger
from .truth import MIN_TRUE_MASS, fatjet_true_mass, jet_truth, truth_of_class


def predict_files(
    tagger: JetTagger,
    files: Sequence[str | Path],
    *,
    with_labels: bool = True,
    progress: bool = False,
    sources: dict[str, int] | None = None,
    counters: dict[str, int] | None = None,
    status: bool = False,
) -> dict[str, np.ndarray]:
    """One row per jet, in file order: ``score_<class>`` (and ``score_<discriminant>`` for the scores the
    model computes itself), one column per regression and embedding output named as it (``mass``),
    ``label`` (when the files carry labels), the observers, ``file_index``, ``entry`` (event index in the
    file) and ``jet_index`` (position in the event's FatJet collection); with ``sources``, the source
    preset of each NanoAOD file is counted there; for NanoAOD also ``run``, ``luminosityBlock``, ``event``,
    ``genWeight`` and ``truth`` (from GenPart, see :mod:`truth`). With ``counters``, the totals of
    :meth:`TagResult.counters` are added there (jets, jets without constituents or with invalid scores,
    input values replaced, invalid link rows per table); with ``status``, a ``status`` column
    (``tagger.TAGGED``, ``NO_CONSTITUENTS``, ``INVALID_SCORE``)."""
    opened = [open_jets(p) for p in files]  # unreadable files and missing branches fail before any work
    names = _output_columns(tagger)
    for data in opened:
        if isinstance(data, Events):
            preset = check_events(data, tagger.config, tagger.preset)
            if sources is not None:  # the source preset each file is read with, counted
                name = f"{preset.name} ({preset.layout})"
                sources[name] = sources.get(name, 0) + 1
    cols: dict[str, list] = {}
    bar = tqdm(list(zip(files, opened)), desc="predict", disable=not progress)  # the bar, not zip, ends it
    for i, (path, data) in enumerate(bar):
        table = make_table(data, tagger.config, tagger.preset, where=str(path))  # one read per branch
        res = tagger.score_jets(data, where=str(path), table=table)
        row = _ids(tagger, table, data, len(res.scores))
        row |= {f"score_{c}": res.scores[:, k] for k, c in enumerate(tagger.classes)}
        row |= {names[c]: v for c, v in res.outputs.items()}
        if status and res.status is not None:
            row["status"] = res.status
        if with_labels:
            try:
                row["label"] = label_values(table, tagger.config)
            except Exception:  # noqa: BLE001 - unlabelled data: no label column
                with_labels = False
        row |= _true_values(tagger, table, data)
        for name in tagger.config.observers:
            try:
                row[name] = np.asarray(table[name])
            except Exception:  # noqa: BLE001, S112 - an observer the source lacks is left out
                continue
        row["file_index"] = np.full(len(res.scores), i, dtype=np.int32)
        for k, v in row.items():
            cols.setdefault(k, []).append(v)
        if counters is not None:
            for k, n in res.counters().items():
                counters[k] = counters.get(k, 0) + n
    return {k: np.concatenate(v) for k, v in cols.items() if len(v) == len(files)}  # columns every file has


def _true_values(tagger: JetTagger, table: Any, data: Any) -> dict[str, np.ndarray]:
    """What the regressions should give, where the file knows it: ``true_<target>`` from the config's
    targets (JetClass-layout files with the generator's branches), ``true_mass`` from GenPart and the
    generated jets (NanoAOD, AK8 truth, for a model that regresses a mass)."""
    out: dict[str, np.ndarray] = {}
    targets = getattr(tagger.config, "targets", None) or {}
    if targets:
        try:
            values = tagger.config.target_values(table)
        except Exception:  # noqa: BLE001 - a file without the target's branches: no true values
            values = None
        if values is not None:
            out |= {f"true_{name}": values[:, i].astype(np.float64) for i, name in enumerate(targets)}
    if (
        isinstance(data, Events)
        and regressed_masses(tagger.bundle.outputs)
        and tagger.preset.truth != "flavour"
        and "true_mass" not in out
    ):
        out["true_mass"] = fatjet_true_mass(data, collection=tagger.jets)
    return out


#: the columns :func:`predict_files` writes besides the scores: no output may be named as one of them
ID_COLUMNS: tuple[str, ...] = ("entry", "jet_index", "run", "luminosityBlock", "event", "genWeight")
ID_COLUMNS += ("truth", "label", "status", "file_index", "true_mass")


def _output_columns(tagger: JetTagger) -> dict[str, str]:
    """Output -> its column: ``score_<name>`` for the model's discriminants, the name for the others;
    refused (before any work) where it would be an id column or an observer."""
    others = tagger.bundle.outputs.others
    out = {c.name: f"score_{c.name}" if c.role == "discriminant" else c.name for c in others}
    taken = set(ID_COLUMNS) | set(tagger.config.observers)
    clash = sorted(set(out.values()) & taken)
    if clash:
        raise JetTaggerError(
            f"{tagger.bundle.path}: model outputs {clash} have the names of predict's own columns "
            "(rename them in tagger.yaml outputs)"
        )
    return out


def _ids(tagger: JetTagger, table: Any, data: Any, n: int) -> dict[str, np.ndarray]:
    """Where each jet comes from: entry and jet index, and for NanoAOD the event ids, genWeight and truth."""
    if table.ids is None:  # one jet per entry
        return {"entry": np.arange(n), "jet_index": np.zeros(n, np.int32)}
    row = {"entry": table.ids[:, 0].astype(np.int64), "jet_index": table.ids[:, 1].astype(np.int32)}
    for b in ("run", "luminosityBlock", "event", "genWeight"):
        if b in data.scalars:
            row[b] = np.asarray(data.scalar(b))[table.ids[:, 0]]
    preset = tagger.preset  # truth from GenPart (or AK4 flavours); "data" without it
    row["truth"] = jet_truth(data, scheme=preset.truth, collection=tagger.jets).astype(str)
    return row


def evaluate(
    tagger: JetTagger, files: Sequence[str | Path], output: str | Path | None = None, title: str = ""
) -> dict[str, Any]:
    """Accuracy, one-vs-rest AUC, 1/eps_b at 50 / 30 % (and 99 / 99.5 %) per discriminant, confusion
    matrix; with ``output``: metrics.json and ROC / score / confusion PNGs."""
    if not tagger.classes:
        raise JetTaggerError(
            f"model {tagger.bundle.name} ({tagger.bundle.path}) has no class outputs: nothing to evaluate "
            "(predict writes its regression columns)"
        )
    counts: dict[str, int] = {}
    cols = predict_files(tagger, files, counters=counts, status=True)
    classes = tagger.classes
    valid = cols["status"] != INVALID_SCORE  # jets with invalid scores: counted, kept out of the metrics
    scores = np.stack([cols[f"score_{c}"][valid] for c in classes], axis=1)
    labels = cols["label"][valid].astype(int)
    discs = tagger.bundle.discriminants
    metrics = summary(labels, scores, classes, discs, model=tagger.bundle.name)
    metrics["files"] = [str(f) for f in files]
    metrics["counts"] = {k: n for k, n in counts.items() if n or k in ("jets", "no_constituent_jets")}
    responses = mass_responses(tagger, {k: v[valid] for k, v in cols.items()})
    if responses:
        from .analysis import json_numbers, response_summary  # hist: not for predict

        metrics["response"] = json_numbers({n: response_summary(h) for n, h in responses.items()})
    if output is not None:
        _write(metrics, tagger, labels, scores, Path(output), title)
    return metrics


def mass_responses(tagger: JetTagger, cols: dict[str, np.ndarray]) -> dict[str, Any]:
    """``response_*`` histograms (those of the processor) of each regressed mass and of the soft-drop mass
    over the true mass, by truth class (the label's) and jet pT, for the jets whose true mass is known and
    above :data:`.truth.MIN_TRUE_MASS`. A factor of the jet's mass (``multiplies``, GloParT's massCorr) is
    left to the processor, which has the jet's fields to multiply it by."""
    from .histograms import response_histogram, truth_axis

    masses = [c.name for c in regressed_masses(tagger.bundle.outputs) if not c.multiplies]
    sd = next((cols[k] for k in ("jet_sdmass", "msoftdrop") if k in cols), None)
    pt = cols.get("jet_pt")
    out: dict[str, Any] = {}
    for name in masses:
        true = cols.get(f"true_{name}", cols.get("true_mass"))
        if true is None or pt is None or "label" not in cols:
            continue
        known = np.isfinite(true) & (true > MIN_TRUE_MASS)
        truths = [truth_of_class(c) or c for c in tagger.classes]
        truth = np.asarray(truths, dtype=object)[cols["label"].astype(int)][known]
        for what, values in ((name, cols[name]), ("msoftdrop", sd)):
            if values is None or what in out:
                continue
            h = response_histogram(truth=truth_axis(truths))
            h.fill(dataset="all", truth=truth.astype(str), pt=pt[known], response=values[known] / true[known])
            out[what] = h
    return out


def _write(
    metrics: dict[str, Any],
    tagger: JetTagger,
    labels: np.ndarray,
    scores: np.ndarray,
    output: Path,
    title: str,
) -> None:
    """metrics.json and ROC / score / confusion PNGs, written beside ``output`` and swapped into place
    whole (:func:`.outputs.staged`)."""
    from . import plotting
    from .outputs import staged

    classes, discs = tagger.classes, tagger.bundle.discriminants
    with staged(output, folder=True) as out:
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2, allow_nan=False))
        curves = {}
        for name, d in discs.items():
            sig, bkg = signal_background(labels, classes, d)  # the one rule, as the metrics
            keep = sig | bkg
            if sig.any() and bkg.any():
                curves[name] = (sig[keep], discriminant(scores, classes, d)[keep])
                plotting.score_plot(scores, labels, classes, out / f"scores_{name}.png", d, name)
        if curves:
            signals = {n: [t for t in map(truth_of_class, discs[n]["signal"]) if t] for n in curves}
            plotting.roc_plot(
                curves,
                out / "roc.png",
                title=title or tagger.bundle.name,
                colours=plotting.signal_colours({n: sorted(set(t)) for n, t in signals.items()}),
            )
        plotting.response_plots(metrics.get("response", {}), out, title=tagger.bundle.name)
        if metrics["confusion"] is not None:  # None: no jet with scores
            plotting.confusion_plot(
                np.asarray(metrics["confusion"]),
                classes,
                out / "confusion.png",
                title=f"{tagger.bundle.name}: accuracy {metrics['accuracy'] or float('nan'):.3f}",
            )
