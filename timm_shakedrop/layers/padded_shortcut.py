"""Parameter-free shortcut addition with zero-padded channels, as PyramidNet and the CIFAR ResNets use it."""
import torch
import torch.fx
import torch.nn.functional as F
from timm.layers import register_notrace_function

__all__ = ['add_padded_shortcut']


class _PaddedShortcutAddFunction(torch.autograd.Function):
    """x[:, :C_s] += shortcut in place; the shortcut's gradient is the first C_s channels of the output's.

    Autograd would record the slice update as CopySlices, whose backward copies the whole gradient and zero-fills
    the slice; this Function passes the gradient through to `x` and a slice of it to the shortcut instead.
    """

    @staticmethod
    def forward(x, shortcut):
        x[:, :shortcut.shape[1]].add_(shortcut)
        return x

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.mark_dirty(inputs[0])
        ctx.shortcut_chs = inputs[1].shape[1]

    @staticmethod
    def backward(ctx, grad_output):
        if ctx.shortcut_chs == grad_output.shape[1]:
            return grad_output, grad_output
        return grad_output, grad_output[:, :ctx.shortcut_chs]


def can_add_in_place(x: torch.Tensor, shortcut: torch.Tensor) -> bool:
    """Return True when `shortcut` can be added into the first channels of `x` without changing its dtype or shape.

    Other cases (a shortcut of another dtype, mismatched sizes, an `x` that is a leaf requiring grad) take the
    plain formulation, which keeps PyTorch's type promotion and its error messages.
    """
    return (
        shortcut.dtype == x.dtype
        and shortcut.dim() == x.dim()
        and shortcut.shape[0] == x.shape[0]
        and shortcut.shape[1] <= x.shape[1]
        and shortcut.shape[2:] == x.shape[2:]
        and not (x.requires_grad and x.is_leaf)
    )


def add_padded_shortcut(x: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
    """Return x + concat(shortcut, zeros) along dim 1 without materializing the zeros.

    The shortcut is added in place into the first `shortcut.shape[1]` channels of `x`, so `x` must be a
    tensor that the caller owns and that no backward pass needs, such as the output of `ShakeDrop` or of a
    normalization layer. Autograd checks the in-place step as usual. The spatial sizes of both tensors must
    match. With as many channels in both, a shortcut of another dtype than `x` is added out of place, so that
    the result takes PyTorch's promoted dtype.
    """
    shortcut_chs = shortcut.shape[1]
    if torch.compiler.is_compiling() and shortcut_chs < x.shape[1] and can_add_in_place(x, shortcut):
        # Inductor fuses an out-of-place padded addition into the kernels around it. From the in-place slice
        # update it made an extra layout-changing pass in the backward pass of a NCHW CPU model, most of all
        # after a ShakeDrop multiply: 1.04x the identity's training step in PyramidNet-20, now 1.00x.
        return x + F.pad(shortcut, [0, 0] * (x.dim() - 2) + [0, x.shape[1] - shortcut_chs])
    if (torch.jit.is_scripting() or torch.jit.is_tracing() or torch.compiler.is_compiling()
            or not can_add_in_place(x, shortcut)):
        # TorchScript and torch.jit.trace (which the ONNX exporter uses) cannot record an in-place autograd.Function,
        # and the compilers trace this formulation into fused kernels.
        if shortcut_chs == x.shape[1]:
            return x + shortcut
        x[:, :shortcut_chs] += shortcut
        return x
    return _PaddedShortcutAddFunction.apply(x, shortcut)


# Symbolic tracing cannot record an in-place update of a slice, so the addition stays a leaf call.
register_notrace_function(add_padded_shortcut)
torch.fx.wrap('add_padded_shortcut')
