"""ParticleNet / ParticleNet-Lite (arXiv:1902.08570): EdgeConv on k-NN graphs, first in (deta, dphi),
then in the learned feature space; mean over neighbours, shortcut, global average over real particles.
Module names follow weaver-core so its checkpoints load strictly."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

PARTICLENET = {
    "conv_params": [(16, (64, 64, 64)), (16, (128, 128, 128)), (16, (256, 256, 256))],
    "fc_params": [(256, 0.1)],
}


def knn(x: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (N, P, k) of the k nearest other points of (N, C, P) coordinates."""
    inner = -2 * torch.matmul(x.transpose(2, 1), x)
    xx = x.square().sum(dim=1, keepdim=True)
    dist = (xx.transpose(2, 1) + inner + xx).clamp(min=0)
    return dist.topk(k=k + 1, dim=-1, largest=False, sorted=True)[1][:, :, 1:]


def neighbours(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """(N, C, P, k): the features of each point's k neighbours."""
    n, c, p = x.shape
    k = idx.shape[-1]
    base = torch.arange(n, device=x.device).view(-1, 1, 1) * p
    flat = x.transpose(2, 1).reshape(-1, c)
    return flat[(idx + base).reshape(-1)].view(n, p, k, c).permute(0, 3, 1, 2)


def edge_features(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """(N, 2C, P, k): the centre's features and neighbour - centre."""
    centre = x.unsqueeze(-1).expand(-1, -1, -1, idx.shape[-1])
    return torch.cat((centre, neighbours(x, idx) - centre), dim=1)


class EdgeConvBlock(nn.Module):
    def __init__(self, k: int, in_feat: int, out_feats: tuple[int, ...]) -> None:
        super().__init__()
        self.k = k
        chans = [2 * in_feat, *out_feats]
        self.convs = nn.ModuleList(
            nn.Conv2d(a, b, kernel_size=1, bias=False) for a, b in zip(chans, chans[1:])
        )
        self.bns = nn.ModuleList(nn.BatchNorm2d(c) for c in out_feats)
        self.acts = nn.ModuleList(nn.ReLU() for _ in out_feats)
        if in_feat == out_feats[-1]:
            self.sc = None
        else:
            self.sc = nn.Conv1d(in_feat, out_feats[-1], kernel_size=1, bias=False)
            self.sc_bn = nn.BatchNorm1d(out_feats[-1])
        self.sc_act = nn.ReLU()

    def first_layer(self, features: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """The first 1x1 convolution of the edge features [x_i, x_j - x_i]. Exported (inference) as
        (W_a - W_b) x_i + gather(W_b x)_j: the same linear map applied per particle before the gather,
        k times fewer FLOPs and no (N, 2C, P, k) edge tensor (1.3-1.4x for the full-size ParticleNet in
        onnxruntime, benchmarks/operations.py). Training keeps the concatenated form: on CPU the
        gather's backward (a scatter-add over C_out channels) costs more than it saves."""
        conv = self.convs[0]
        assert isinstance(conv, nn.Conv2d)
        if not torch.onnx.is_in_onnx_export():
            return conv(edge_features(features, idx))
        c = features.shape[1]
        w = conv.weight[:, :, 0, 0]
        centre = nn.functional.conv1d(features, (w[:, :c] - w[:, c:]).unsqueeze(-1))
        return centre.unsqueeze(-1) + neighbours(nn.functional.conv1d(features, w[:, c:].unsqueeze(-1)), idx)

    def forward(self, points: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        x = self.first_layer(features, knn(points, self.k))
        for i, (conv, bn, act) in enumerate(zip(self.convs, self.bns, self.acts)):
            x = act(bn(x if i == 0 else conv(x)))
        sc = features if self.sc is None else self.sc_bn(self.sc(features))
        return self.sc_act(sc + x.mean(dim=-1))


def _embed(c_in: int, c_out: int) -> nn.Module:
    return nn.Sequential(
        nn.BatchNorm1d(c_in),
        nn.Conv1d(c_in, c_out, kernel_size=1, bias=False),
        nn.BatchNorm1d(c_out),
        nn.ReLU(),
    )


class ParticleNet(nn.Module):
    """ParticleNet; with ``sv_input_dims`` it also takes secondary vertices, as weaver's ParticleNetTagger:
    particles and SVs are each embedded to ``sv_embed`` channels, then form one point cloud. ``fusion``
    (weaver's ``use_fusion``, CMS's ParticleNet-AK8 has it): every block's output, concatenated, through a
    1x1 convolution of that many channels + BatchNorm + ReLU before the pooling."""

    uses: tuple[str, ...] = ("points", "features", "mask")
    pairwise: ClassVar[bool] = False

    def __init__(
        self,
        input_dims: int,
        num_classes: int,
        conv_params=PARTICLENET["conv_params"],
        fc_params=PARTICLENET["fc_params"],
        use_fts_bn: bool = True,
        use_counts: bool = True,
        sv_input_dims: int | None = None,
        sv_embed: int = 32,
        fusion: int | None = None,
    ) -> None:
        super().__init__()
        self.sv = sv_input_dims is not None
        if self.sv:
            self.uses = (*self.uses, "sv_points", "sv_features", "sv_mask")
            self.pf_conv = _embed(input_dims, sv_embed)
            self.sv_conv = _embed(int(sv_input_dims), sv_embed)  # type: ignore[arg-type]
            input_dims = sv_embed
        self.use_fts_bn = use_fts_bn
        if use_fts_bn:
            self.bn_fts = nn.BatchNorm1d(input_dims)
        self.use_counts = use_counts
        self.edge_convs = nn.ModuleList()
        for i, (k, chans) in enumerate(conv_params):
            in_feat = input_dims if i == 0 else conv_params[i - 1][1][-1]
            self.edge_convs.append(EdgeConvBlock(k, in_feat, tuple(chans)))
        self.fusion_block: nn.Sequential | None = None
        in_chn = conv_params[-1][1][-1]
        if fusion is not None:
            blocks = sum(chans[-1] for _, chans in conv_params)
            self.fusion_block = nn.Sequential(
                nn.Conv1d(blocks, fusion, kernel_size=1, bias=False), nn.BatchNorm1d(fusion), nn.ReLU()
            )
            in_chn = fusion
        fcs: list[nn.Module] = []
        for chans, drop in fc_params:
            fcs.append(nn.Sequential(nn.Linear(in_chn, chans), nn.ReLU(), nn.Dropout(drop)))
            in_chn = chans
        fcs.append(nn.Linear(in_chn, num_classes))
        self.fc = nn.Sequential(*fcs)
        self.min_length = max(k for k, _ in conv_params) + 1

    def forward(
        self,
        points: torch.Tensor,
        features: torch.Tensor,
        mask: torch.Tensor,
        sv_points: torch.Tensor | None = None,
        sv_features: torch.Tensor | None = None,
        sv_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if self.sv:
            assert sv_points is not None and sv_features is not None and sv_mask is not None
            features = torch.cat((self.pf_conv(features) * mask, self.sv_conv(sv_features) * sv_mask), dim=2)
            points, mask = torch.cat((points, sv_points), dim=2), torch.cat((mask, sv_mask), dim=2)
        mask = mask != 0
        pad = ~mask
        counts = mask.float().sum(dim=-1).clamp(min=1)
        fts = self.bn_fts(features).masked_fill(pad, 0) if self.use_fts_bn else features
        outs = []
        for i, conv in enumerate(self.edge_convs):
            pts = (points if i == 0 else fts).masked_fill(pad, 1e9)
            fts = conv(pts, fts).masked_fill(pad, 0)
            outs.append(fts)
        if self.fusion_block is not None:
            fts = self.fusion_block(torch.cat(outs, dim=1)).masked_fill(pad, 0)
        x = fts.sum(dim=-1) / counts if self.use_counts else fts.mean(dim=-1)
        return self.fc(x)
