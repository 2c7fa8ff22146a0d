"""Import weaver artefacts as a tagger bundle: (checkpoint + network + data config) or
(ONNX + preprocess.json + data config)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ._errors import JetTaggerError
from .bundle import CONFIG, MODEL, PREPROCESS, Bundle, write_card
from .config import DataConfig
from .sources import load_preset


def import_weaver(
    data_config: str | Path | None,
    output: str | Path,
    network: str | None = None,
    checkpoint: str | Path | None = None,
    onnx: str | Path | None = None,
    preprocess: str | Path | None = None,
    name: str | None = None,
    network_options: dict | None = None,
    discriminants: dict | None = None,
    source: str | None = None,
    stored_prefix: str | None = None,
) -> Path:
    """weaver or CMSSW artefacts -> a bundle. The CMSSW form (``model.onnx`` + ``preprocess.json``) needs no
    data config; the source preset is chosen from the variable names unless ``source`` is given;
    ``stored_prefix`` names the NanoAOD branches of the experiment's own scores for this model
    (``FatJet_<prefix>_<discriminant>``)."""
    if data_config is None and not (onnx and preprocess):
        raise JetTaggerError("import-weaver: give --data-config, or --onnx with --preprocess")
    config = DataConfig.from_yaml(data_config) if data_config is not None else None
    out = Path(output)
    for f, what in (
        (data_config, "--data-config"),
        (checkpoint, "--checkpoint"),
        (onnx, "--onnx"),
        (preprocess, "--preprocess"),
    ):
        if f is not None and not Path(f).is_file():
            raise JetTaggerError(f"import-weaver: {what} {f} does not exist")
    if source is not None:
        load_preset(source)  # unknown names fail here, before anything is written
    card: dict = {
        "name": name or out.name,
        "discriminants": discriminants or {},
        "provenance": {"imported_from": "weaver" if data_config else "cmssw"},
    }
    if data_config is not None:
        card["provenance"]["data_config"] = str(data_config)
    if source:
        card["source"] = source
    if checkpoint:
        if not network:
            raise JetTaggerError("import-weaver: --checkpoint needs --network")
        from .bundle import write_bundle
        from .nn import build, load_state

        assert config is not None
        dims = {k: v[1] for k, v in config.input_shapes.items()}
        model = build(
            network, list(config.input_names), dims, len(config.class_names), **(network_options or {})
        )
        load_state(model, checkpoint)
        card |= {"network": network, "network_options": network_options or {}}
        card["provenance"]["checkpoint"] = str(checkpoint)
        write_bundle(out, model.eval(), config, card, dims)
    elif onnx:
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(onnx, out / MODEL)
        if preprocess:
            merged = DataConfig.from_preprocess_json(preprocess, base=config)
            card["provenance"]["preprocess"] = str(preprocess)
        else:
            assert config is not None
            merged = config
        merged.dump_yaml(out / CONFIG)
        (out / PREPROCESS).write_text(json.dumps(merged.preprocess_json(), indent=2))
        card |= {"classes": merged.class_names, "network": "onnx"}
        if not card["discriminants"]:
            card["discriminants"] = nanoaod_discriminants(merged.class_names)
        card["provenance"]["onnx"] = str(onnx)
        if stored_prefix:
            card["stored_scores"] = {d: f"{stored_prefix}_{d}" for d in card["discriminants"]}
        write_card(out, card, merged)
    else:
        raise JetTaggerError(
            "import-weaver: give --checkpoint (with --network) or --onnx (with --preprocess)"
        )
    Bundle.load(out)
    return out


#: NanoAOD's names for the signal groups of CMS's ParticleNet-AK8 classes (``<group>_<decay>``)
_NANO_SIGNALS = {"Top": "T", "W": "W", "Z": "Z", "H_bb": "Hbb", "H_cc": "Hcc", "H_qqqq": "H4q"}


def nanoaod_discriminants(classes: list[str]) -> dict[str, dict[str, list[str]]]:
    """NanoAOD's discriminants for CMS-style classes: ``XvsQCD = sum X_* / (sum X_* + sum QCD_*)`` and
    ``QCD = sum QCD_*`` (e.g. TvsQCD from Top_bcq + Top_bqq, as NanoAOD's ``FatJet_particleNet_TvsQCD``).
    Nothing for other class lists."""
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
