"""Import weaver artefacts as a tagger bundle: (checkpoint + network + data config) or
(ONNX + preprocess.json + data config)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from ._errors import JetTaggerError
from .bundle import CARD, CONFIG, MODEL, PREPROCESS, Bundle
from .config import DataConfig


def import_weaver(data_config: str | Path, output: str | Path, network: str | None = None,
                  checkpoint: str | Path | None = None, onnx: str | Path | None = None,
                  preprocess: str | Path | None = None, name: str | None = None,
                  network_options: dict | None = None, discriminants: dict | None = None) -> Path:
    config = DataConfig.from_yaml(data_config)
    out = Path(output)
    card = {"name": name or out.name, "discriminants": discriminants or {},
            "provenance": {"imported_from": "weaver", "data_config": str(data_config)}}
    if checkpoint:
        if not network:
            raise JetTaggerError("import-weaver: --checkpoint needs --network")
        from .bundle import write_bundle
        from .nn import build, load_state

        dims = {k: v[1] for k, v in config.input_shapes.items()}
        model = build(network, list(config.input_names), dims, len(config.class_names), **(network_options or {}))
        load_state(model, checkpoint)
        card |= {"network": network, "network_options": network_options or {}}
        card["provenance"]["checkpoint"] = str(checkpoint)
        write_bundle(out, model.eval(), config, card, dims)
    elif onnx:
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(onnx, out / MODEL)
        if preprocess:
            merged = DataConfig.from_preprocess_json(preprocess, base=config)
            shutil.copyfile(preprocess, out / PREPROCESS)
        else:
            merged = config
        merged.dump_yaml(out / CONFIG)
        if not preprocess:
            (out / PREPROCESS).write_text(json.dumps(merged.preprocess_json(), indent=2))
        card |= {"classes": merged.class_names, "network": "onnx"}
        card["provenance"]["onnx"] = str(onnx)
        (out / CARD).write_text(yaml.safe_dump(card, sort_keys=False))
    else:
        raise JetTaggerError("import-weaver: give --checkpoint (with --network) or --onnx (with --preprocess)")
    Bundle.load(out)
    return out
