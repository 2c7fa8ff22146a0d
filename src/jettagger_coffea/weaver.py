"""Import weaver artefacts as a tagger bundle: (checkpoint + network + data config) or
(ONNX + preprocess.json + data config)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from ._errors import JetTaggerError
from .bundle import onnx_outputs, write_bundle
from .dataconfig import DataConfig
from .inputs import default_outputs, read_outputs
from .sources import load_preset


def import_weaver(
    data_config: str | Path | None,
    output: str | Path,
    *,
    network: str | None = None,
    checkpoint: str | Path | None = None,
    onnx: str | Path | None = None,
    preprocess: str | Path | None = None,
    name: str | None = None,
    network_options: dict | None = None,
    discriminants: dict | None = None,
    source: str | None = None,
    stored_prefix: str | None = None,
    served_model: str | None = None,
    jets: str | None = None,
    outputs: dict | None = None,
    convert: bool = False,
) -> Path:
    """weaver or CMSSW artefacts -> a bundle. The CMSSW form (``model.onnx`` + ``preprocess.json``) needs no
    data config; the source preset is chosen from the variable names unless ``source`` is given, and for
    ``jets`` (e.g. ``Jet`` for AK4) the member of its family that reads them; ``stored_prefix`` names the
    NanoAOD branches of the experiment's own scores for this model (``FatJet_<prefix>_<discriminant>``).
    ``served_model`` without ``onnx``: a client-only bundle for that model on a Triton server (SONIC).
    Every output column gets a role from its name (:func:`.inputs.default_column`: classes, the model's
    discriminants, regressions, embeddings); ``outputs`` (the card's section: output name -> column ->
    role) overrides them. ``convert``: the ONNX (a ParticleNet) converted into our network and exported by
    us (:mod:`.convert`), checked against the original; the rest of the bundle as without it."""
    if convert and not onnx:
        raise JetTaggerError("import-weaver: --convert needs --onnx (the graph to convert)")
    if data_config is None and not ((onnx or served_model) and preprocess):
        raise JetTaggerError(
            "import-weaver: give --data-config, or --onnx (or --served-model) with --preprocess"
        )
    config = DataConfig.from_yaml(data_config) if data_config is not None else None
    out = Path(output)
    _check_files(data_config=data_config, checkpoint=checkpoint, onnx=onnx, preprocess=preprocess)
    if source is not None:
        load_preset(source)  # unknown names fail here, before anything is written
    card = _card(name or out.name, discriminants or {}, data_config, source)
    card["jets"] = jets
    if outputs is not None:
        card["outputs"] = outputs
    if served_model:
        card["served_model"] = served_model
    if checkpoint:
        if not network:
            raise JetTaggerError("import-weaver: --checkpoint needs --network")
        assert config is not None
        _from_checkpoint(out, config, card, network, checkpoint, network_options or {})
    elif onnx or served_model:
        _from_onnx(out, config, card, onnx, preprocess, stored_prefix, convert)
    else:
        raise JetTaggerError(
            "import-weaver: give --checkpoint (with --network) or --onnx (with --preprocess)"
        )
    return out


def _card(name: str, discriminants: dict, data_config: str | Path | None, source: str | None) -> dict:
    """The card's name, discriminants, provenance and source; the import adds what it knows of the model."""
    card: dict = {
        "name": name,
        "discriminants": discriminants,
        "provenance": {"imported_from": "weaver" if data_config else "cmssw"},
    }
    if data_config is not None:
        card["provenance"]["data_config"] = str(data_config)
    if source:
        card["source"] = source
    return card


def _check_files(**files: str | Path | None) -> None:
    for option, f in files.items():
        if f is not None and not Path(f).is_file():
            raise JetTaggerError(f"import-weaver: --{option.replace('_', '-')} {f} does not exist")


def _from_checkpoint(
    out: Path, config: DataConfig, card: dict, network: str, checkpoint: str | Path, options: dict
) -> None:
    """A weaver state_dict loaded (weights only) into our network, exported as ONNX (+ model.pt)."""
    from .inputs import default_inputs
    from .nn import build_for, load_state
    from .nn.export import write_torch_bundle

    _choose_source(card, config)
    model = build_for(network, config, default_inputs(config, card.get("source")), **options)
    load_state(model, checkpoint)
    card |= {"network": network, "network_options": options}
    card["provenance"]["checkpoint"] = str(checkpoint)
    write_torch_bundle(
        out, model, {k: v[1] for k, v in config.input_shapes.items()}, config=config, card=card
    )


def _choose_source(card: dict, config: DataConfig) -> None:
    """``--jets``: the card's source becomes the member of its preset's family that reads those jets."""
    from .inputs import default_source
    from .sources import preset_for

    jets = card.pop("jets", None)
    if jets:
        family = load_preset(card.get("source") or default_source(config))
        card["source"] = preset_for(family, lambda _: True, jets).name


def _from_onnx(
    out: Path,
    config: DataConfig | None,
    card: dict,
    onnx: str | Path | None,
    preprocess: str | Path | None,
    stored_prefix: str | None,
    convert: bool = False,
) -> None:
    """An exported ONNX as it is (or ``convert``-ed: :func:`_write_converted`), its inputs standardised as
    ``preprocess`` (over the data config) says."""
    if preprocess:
        merged = DataConfig.from_preprocess_json(preprocess, base=config)
        card["provenance"]["preprocess"] = str(preprocess)
    else:
        assert config is not None
        merged = config
    _choose_source(card, merged)
    card |= {"classes": [], "network": "onnx"}  # the writer fills classes in, in this place
    if not card["discriminants"]:
        labels = list(merged.label_value)
        spec = (
            read_outputs(card, labels, "import-weaver --outputs")
            if card.get("outputs")
            else default_outputs(labels, onnx_outputs(onnx) if onnx else None)
        )
        card["discriminants"] = nanoaod_discriminants(spec.classes)
    if onnx is not None:
        card["provenance"]["onnx"] = str(onnx)
    if stored_prefix:
        card["stored_scores"] = {d: f"{stored_prefix}_{d}" for d in card["discriminants"]}
    if convert:
        assert onnx is not None
        _write_converted(out, onnx, merged, card)
    else:
        write_bundle(out, onnx=onnx, config=merged, card=card)


def _write_converted(out: Path, onnx: str | Path, config: DataConfig, card: dict) -> None:
    """The bundle of a ParticleNet ONNX converted into our network: our export as model.onnx, the torch
    weights where the network registry rebuilds it (then the card names it), the original's path,
    sha256 and the measured |Δ| in the card's provenance."""
    from .convert import convert_onnx
    from .inputs import default_inputs

    spec = default_inputs(config, card.get("source"))
    names = list(config.input_names)
    missing = [n for n in names if n not in spec]
    if missing:
        raise JetTaggerError(f"import-weaver --convert: no input role for {missing} of {onnx}")
    dims = {k: v[1] for k, v in config.input_shapes.items()}
    with tempfile.TemporaryDirectory() as tmp:
        model, state, extra = convert_onnx(onnx, names, [spec[n].role for n in names], dims, Path(tmp))
        card["provenance"]["converted_from"] = extra["converted_from"]
        if state is not None:
            card |= {"network": "particlenet", "network_options": extra["network_options"]}
        write_bundle(out, onnx=model, config=config, card=card, state=state)


#: NanoAOD's names for the signal groups of CMS's ParticleNet-AK8 classes (``<group>_<decay>``)
_NANO_SIGNALS = {"Top": "T", "W": "W", "Z": "Z", "H_bb": "Hbb", "H_cc": "Hcc", "H_qqqq": "H4q"}


#: CMS's ParticleNet-AK4 discriminants (RecoBTag/ONNXRuntime pfParticleNetAK4DiscriminatorsJetTags):
#: sum(signal) / sum(signal + background); undef and pu enter none of them
AK4_DISCRIMINANTS = {
    "BvsAll": {"signal": ["b", "bb"], "background": ["c", "cc", "uds", "g"]},
    "CvsL": {"signal": ["c", "cc"], "background": ["uds", "g"]},
    "CvsB": {"signal": ["c", "cc"], "background": ["b", "bb"]},
    "QvsG": {"signal": ["uds"], "background": ["g"]},
}


def nanoaod_discriminants(classes: list[str]) -> dict[str, dict[str, list[str]]]:
    """CMS's discriminants for CMS-style classes: ``XvsQCD = sum X_* / (sum X_* + sum QCD_*)`` and
    ``QCD = sum QCD_*`` (e.g. TvsQCD from Top_bcq + Top_bqq, as NanoAOD's ``FatJet_particleNet_TvsQCD``);
    for ParticleNet-AK4's classes BvsAll, CvsL, CvsB, QvsG. Nothing for other class lists."""
    if set(AK4_DISCRIMINANTS["BvsAll"]["signal"] + AK4_DISCRIMINANTS["BvsAll"]["background"]) <= set(classes):
        return {k: {s: list(v) for s, v in d.items()} for k, d in AK4_DISCRIMINANTS.items()}
    qcd = [c for c in classes if c.startswith("QCD_")]
    if not qcd:
        return {}
    out: dict[str, dict[str, list[str]]] = {}
    for key, short in _NANO_SIGNALS.items():
        signal = [c for c in classes if c == key or c.startswith(f"{key}_")]
        if key in ("Top", "W", "Z"):
            signal = [
                c for c in signal if c in {"Top_bcq", "Top_bqq", "W_cq", "W_qq", "Z_bb", "Z_cc", "Z_qq"}
            ]
        if signal:
            out[f"{short}vsQCD"] = {"signal": signal, "background": qcd}
    out["QCD"] = {"signal": qcd}
    return out
