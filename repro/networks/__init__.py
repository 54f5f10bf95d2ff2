"""Networks, one module per paper (each ablation is a named configuration of one module)."""

from torch import nn


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())
