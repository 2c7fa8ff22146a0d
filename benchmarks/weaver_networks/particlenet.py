"""weaver network config: weaver-core's own ParticleNet, fed like our bundles (for `weaver --predict`)."""

import torch
from weaver.nn.model.ParticleNet import ParticleNet


class Wrapper(torch.nn.Module):
    def __init__(self, **kwargs) -> None:
        super().__init__()
        self.mod = ParticleNet(**kwargs)

    def forward(self, points, features, lorentz_vectors, mask):
        return self.mod(points, features, mask)


def get_model(data_config, **kwargs):
    lite = kwargs.pop("lite", True)
    conv = (
        [(7, (32, 32, 32)), (7, (64, 64, 64))]
        if lite
        else [(16, (64,) * 3), (16, (128,) * 3), (16, (256,) * 3)]
    )
    fc = [(128, 0.1)] if lite else [(256, 0.1)]
    model = Wrapper(
        input_dims=len(data_config.input_dicts["pf_features"]),
        num_classes=len(data_config.label_value),
        conv_params=conv,
        fc_params=fc,
        use_fusion=False,
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
