"""BN, optional ReLU and convolution in one autograd step that recomputes the BN output in the backward pass.

A BN followed by a convolution stores two activations for the backward pass: BN keeps its input and the
convolution keeps its input, the BN output (after the ReLU, when there is one). The BN output is an affine
function of the BN input with the batch statistics, so `norm_act_conv` keeps only the BN input and the
statistics and recomputes the BN output, one elementwise pass, when the backward pass reaches the
convolution. In a PyramidNet unit the BN input of the first BN is the unit input, which the shortcut and the
previous unit need anyway, so each fused pair removes one activation from the memory of a training step.
"""
from typing import List, Optional

import torch
import torch.fx
from torch import nn

__all__ = ['can_fuse_norm_act_conv', 'norm_act_conv']


def _conv_dtype(x: torch.Tensor) -> torch.dtype:
    # Under autocast a convolution runs in the autocast dtype and BN in the dtype of its input.
    # NOTE: only CPU runs are tested, bf16 autocast included. On CUDA this step uses native_batch_norm instead of
    # cuDNN's BN, and that path, fp16 autocast included, has not run on a GPU.
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return x.dtype


class _NormActConvFunction(torch.autograd.Function):
    """conv(relu?(batch_norm(x))) in training mode, saving x and the batch statistics instead of the BN output."""

    @staticmethod
    def forward(
            ctx,
            x: torch.Tensor,
            norm_weight: torch.Tensor,
            norm_bias: torch.Tensor,
            conv_weight: torch.Tensor,
            running_mean: Optional[torch.Tensor],
            running_var: Optional[torch.Tensor],
            momentum: float,
            eps: float,
            relu: bool,
            stride: List[int],
            padding: List[int],
            dilation: List[int],
            groups: int,
    ) -> torch.Tensor:
        y, mean, invstd = torch.native_batch_norm(x, norm_weight, norm_bias, running_mean, running_var, True,
                                                  momentum, eps)
        if relu:
            y = y.relu_()
        conv_dtype = _conv_dtype(x)
        out = torch.ops.aten.convolution(
            y.to(conv_dtype), conv_weight.to(conv_dtype), None, stride, padding, dilation, False, [0, 0], groups)
        ctx.save_for_backward(x, norm_weight, norm_bias, conv_weight, mean, invstd)
        ctx.conv_args = (stride, padding, dilation, groups)
        ctx.conv_dtype = conv_dtype
        ctx.eps = eps
        ctx.relu = relu
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        x, norm_weight, norm_bias, conv_weight, mean, invstd = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conv_args
        needs_x, needs_norm_weight, needs_norm_bias, needs_conv_weight = ctx.needs_input_grad[:4]
        with torch.autocast(x.device.type, enabled=False):
            # The BN output from the saved statistics: x * (invstd * weight) + (bias - mean * invstd * weight).
            shape = [1, -1] + [1] * (x.dim() - 2)
            scale = invstd * norm_weight
            shift = norm_bias - mean * scale
            y = torch.addcmul(shift.view(shape), x, scale.view(shape)).to(ctx.conv_dtype)
            if ctx.relu:
                y = y.relu_()
            grad_y, grad_conv_weight, _ = torch.ops.aten.convolution_backward(
                grad_out.to(ctx.conv_dtype), y, conv_weight.to(ctx.conv_dtype), None, stride, padding, dilation,
                False, [0, 0], groups, [True, needs_conv_weight, False])
            if ctx.relu:
                grad_y = torch.ops.aten.threshold_backward(grad_y, y, 0)
            del y
            # In training mode the backward pass reads the saved batch statistics, not the running ones.
            grad_x, grad_norm_weight, grad_norm_bias = torch.ops.aten.native_batch_norm_backward(
                grad_y.to(x.dtype), x, norm_weight, None, None, mean, invstd, True, ctx.eps,
                [needs_x, needs_norm_weight, needs_norm_bias])
        if grad_conv_weight is not None:
            grad_conv_weight = grad_conv_weight.to(conv_weight.dtype)
        return (grad_x, grad_norm_weight, grad_norm_bias, grad_conv_weight) + (None,) * 9


def can_fuse_norm_act_conv(x: torch.Tensor, norm: nn.Module, act: Optional[nn.Module], conv: nn.Module) -> bool:
    """Return True when `norm_act_conv` takes the fused step for these modules and this input.

    It does for an affine `nn.BatchNorm2d` in training mode, no activation or `nn.ReLU`, and an `nn.Conv2d`
    without bias and with numeric zero padding, on a device that autocast supports (not the meta device), when
    autograd records the step. TorchScript, torch.jit.trace,
    torch.fx, torch.compile and torch.export take the modules one by one (the compilers recompute cheap BN
    outputs on their own), and so do SyncBatchNorm and other subclasses.
    """
    if torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.fx._symbolic_trace.is_fx_symbolic_tracing():
        return False
    if not torch.is_grad_enabled():
        return False
    if type(norm) is not nn.BatchNorm2d or not norm.training or not norm.affine:
        return False
    if act is not None and type(act) is not nn.ReLU:
        return False
    if type(conv) is not nn.Conv2d or conv.bias is not None or conv.padding_mode != 'zeros':
        return False
    if isinstance(conv.padding, str) or x.dim() != 4 or not x.is_floating_point():
        return False
    if not torch.amp.is_autocast_available(x.device.type):  # for example the meta device
        return False
    return x.requires_grad or norm.weight.requires_grad or norm.bias.requires_grad or conv.weight.requires_grad


def _momentum(norm: nn.BatchNorm2d) -> float:
    # The running-statistics update of nn.BatchNorm2d in training mode, including its cumulative average.
    if norm.track_running_stats and norm.num_batches_tracked is not None:
        norm.num_batches_tracked.add_(1)
        if norm.momentum is None:
            return 1.0 / float(norm.num_batches_tracked)
    return 0.0 if norm.momentum is None else norm.momentum


def norm_act_conv(x: torch.Tensor, norm: nn.Module, act: Optional[nn.Module], conv: nn.Module) -> torch.Tensor:
    """Return conv(act(norm(x))), or conv(norm(x)) when `act` is None, keeping less memory for backward.

    When `can_fuse_norm_act_conv` allows it, the BN output is not kept for the backward pass but recomputed
    from `x` and the batch statistics there. Outputs, gradients and running statistics equal those of the
    modules called one by one up to float rounding: the recomputed BN output may differ from the forward one
    in the last bit. Otherwise the modules are called one by one.
    """
    if not can_fuse_norm_act_conv(x, norm, act, conv):
        x = norm(x)
        if act is not None:
            x = act(x)
        return conv(x)
    momentum = _momentum(norm)
    return _NormActConvFunction.apply(
        x, norm.weight, norm.bias, conv.weight, norm.running_mean, norm.running_var, momentum, norm.eps,
        act is not None, list(conv.stride), list(conv.padding), list(conv.dilation), conv.groups)
