"""Helpers for tests of model families: random networks made to look trained."""
from __future__ import annotations

import torch
from torch import nn


def as_if_trained(net: nn.Module) -> nn.Module:
    """Batch norms (2-D and 3-D) with statistics and affine parameters away from their
    initial 0/1 (so folding them is not trivially exact), as a trained checkpoint has."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                c = m.num_features
                m.running_mean.copy_(0.1 * torch.randn(c, generator=g))
                m.running_var.copy_(0.5 + torch.rand(c, generator=g))
                m.weight.copy_(0.5 + torch.rand(c, generator=g))
                m.bias.copy_(0.1 * torch.randn(c, generator=g))
    return net
