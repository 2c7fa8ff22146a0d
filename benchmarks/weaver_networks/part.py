"""weaver network config: weaver-core's own ParticleTransformer, fed like our bundles (`weaver --predict`)."""

import torch
from weaver.nn.model.ParticleTransformer import ParticleTransformer


class Wrapper(torch.nn.Module):
    def __init__(self, **kwargs) -> None:
        super().__init__()
        self.mod = ParticleTransformer(**kwargs)

    def forward(self, points, features, lorentz_vectors, mask):
        return self.mod(features, v=lorentz_vectors, mask=mask)


def get_model(data_config, **kwargs):
    model = Wrapper(
        input_dim=len(data_config.input_dicts["pf_features"]),
        num_classes=len(data_config.label_value),
        **kwargs,
    )
    info = {
        "input_names": list(data_config.input_names),
        "input_shapes": {k: ((1, *s[1:])) for k, s in data_config.input_shapes.items()},
        "output_names": ["softmax"],
        "dynamic_axes": {
            **{k: {0: "N", 2: "n_" + k.split("_")[0]} for k in data_config.input_names},
            "softmax": {0: "N"},
        },
    }
    return model, info


def get_loss(data_config, **kwargs):  # noqa: ARG001 - weaver calls it so
    return torch.nn.CrossEntropyLoss()
