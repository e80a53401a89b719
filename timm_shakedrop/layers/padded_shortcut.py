"""Parameter-free shortcut addition with zero-padded channels, as PyramidNet and the CIFAR ResNets use it."""
import torch
import torch.fx
from timm.layers import register_notrace_function

__all__ = ['add_padded_shortcut']


def add_padded_shortcut(x: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
    """Return x + concat(shortcut, zeros) along dim 1 without materializing the zeros.

    The shortcut is added in place into the first `shortcut.shape[1]` channels of `x`, so `x` must be a
    tensor that the caller owns, such as the output of `ShakeDrop` or of a normalization layer. Autograd
    checks the in-place step as usual. The spatial sizes of both tensors must match.
    """
    shortcut_chs = shortcut.shape[1]
    if shortcut_chs == x.shape[1]:
        return x + shortcut
    x[:, :shortcut_chs] += shortcut
    return x


# Symbolic tracing cannot record an in-place update of a slice, so the addition stays a leaf call.
register_notrace_function(add_padded_shortcut)
torch.fx.wrap('add_padded_shortcut')
