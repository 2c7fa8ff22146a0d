"""Models shared by the benchmark scripts."""

from __future__ import annotations

import os
from pathlib import Path

SHARED = Path(os.environ.get("JETTAGGER_SHARED") or Path(__file__).resolve().parents[2] / "shared")


def official_particlenet(tmp: Path):
    """The official JetClass ParticleNet (kin inputs; ``../shared/reference/weights``) as a bundle."""
    from jettagger_coffea.bundle import Bundle
    from jettagger_coffea.weaver import import_weaver

    return Bundle.load(
        import_weaver(
            SHARED / "reference/jetclass/JetClass_kin.yaml",
            tmp / "official-particlenet",
            network="particlenet",
            checkpoint=SHARED / "reference/weights/ParticleNet_kin.pt",
        )
    )


def concatenated_particlenet(bundle, tmp: Path) -> Path:
    """The bundle's ParticleNet weights exported with the edge features concatenated before the first layer
    (weaver's and CMSSW's form; ours applies that layer per particle before the gather, see
    ``EdgeConvBlock.first_layer``)."""
    from jettagger_coffea.backends import TorchBackend
    from jettagger_coffea.nn import particlenet as pn
    from jettagger_coffea.nn.export import export_onnx

    model = TorchBackend(bundle).model
    original = pn.EdgeConvBlock.first_layer
    pn.EdgeConvBlock.first_layer = lambda self, f, idx: self.convs[0](pn.edge_features(f, idx))  # type: ignore[method-assign]
    try:
        dims = {k: v[1] for k, v in bundle.config.input_shapes.items()}
        return export_onnx(model, dims, tmp / f"{bundle.name}-concatenated.onnx")
    finally:
        pn.EdgeConvBlock.first_layer = original  # type: ignore[method-assign]
