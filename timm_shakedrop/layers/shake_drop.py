"""ShakeDrop regularization.

ShakeDrop: Yamada, Iwamura, Akiba, Kise, "ShakeDrop Regularization for Deep Residual Learning",
IEEE Access 7, 2019 (arXiv:1802.02375).

In training, the residual branch F(x) of a unit is multiplied by b + alpha - b * alpha in the forward pass and
its gradient by b + beta - b * beta in the backward pass, with b ~ Bernoulli(p), alpha ~ U[alpha_min, alpha_max]
and beta ~ U[beta_min, beta_max] drawn independently. A kept branch (b = 1) passes unchanged in both passes. In
evaluation the branch is scaled by the expectation E[b + alpha - b * alpha] = p + (1 - p) * mean(alpha), which is
p for the default alpha range [-1, 1].

Here, as in timm's `DropPath`, the layer is parametrized by its drop probability `drop_prob = 1 - p`.
"""
from typing import List, Optional, Tuple

import torch
import torch.fx
from timm.layers import register_notrace_function
from torch import nn

from .padded_shortcut import add_padded_shortcut, can_add_in_place

__all__ = [
    'LEVELS',
    'GATE_LEVELS',
    'ShakeDrop',
    'shake_drop',
    'shake_drop_eval_scale',
    'shake_drop_keep_probs',
    'validate_shake_drop_args',
]

# Granularity of the alpha and beta draws: one value per batch, per sample, per (sample, channel), or per element.
LEVELS = ('batch', 'sample', 'channel', 'pixel')
# Granularity of the Bernoulli gate b.
GATE_LEVELS = ('batch', 'sample')


def validate_shake_drop_args(
        drop_prob: float,
        alpha_range: Tuple[float, float],
        beta_range: Tuple[float, float],
        level: str,
        gate_level: Optional[str],
) -> str:
    """Check the ShakeDrop arguments and return the resolved gate level.

    Raises:
        ValueError: naming the argument and its value when one is out of range.
    """
    if not 0.0 <= float(drop_prob) <= 1.0:
        raise ValueError(f'`drop_prob` must be a probability in [0, 1], got {drop_prob}.')
    if len(alpha_range) != 2:
        raise ValueError(f'`alpha_range` must be a pair (alpha_min, alpha_max), got {alpha_range}.')
    if alpha_range[0] > alpha_range[1]:
        raise ValueError(f'`alpha_range` must have alpha_min <= alpha_max, got {tuple(alpha_range)}.')
    if len(beta_range) != 2:
        raise ValueError(f'`beta_range` must be a pair (beta_min, beta_max), got {beta_range}.')
    if not 0.0 <= beta_range[0] <= beta_range[1] <= 1.0:
        raise ValueError(
            f'`beta_range` must satisfy 0 <= beta_min <= beta_max <= 1, got {tuple(beta_range)}.')
    if level not in LEVELS:
        raise ValueError(f'`level` must be one of {LEVELS}, got {level!r}.')
    if gate_level is None:
        gate_level = 'batch' if level == 'batch' else 'sample'
    if gate_level not in GATE_LEVELS:
        raise ValueError(f'`gate_level` must be one of {GATE_LEVELS} or None, got {gate_level!r}.')
    if level == 'batch' and gate_level != 'batch':
        raise ValueError(
            f"`gate_level` must be 'batch' when `level` is 'batch' (alpha and beta cannot be coarser than the "
            f'gate), got {gate_level!r}.')
    return gate_level


def shake_drop_keep_probs(num_units: int, drop_path_rate: float = 0.5) -> list:
    """Return the keep probability p_l = 1 - (l / L) * drop_path_rate of each unit l = 1..L.

    This is ShakeDrop's linear decay rule with p_L = 1 - drop_path_rate. The first unit keeps with
    1 - drop_path_rate / L, not with 1.
    """
    if not 0.0 <= drop_path_rate <= 1.0:
        raise ValueError(f'`drop_path_rate` must be a probability in [0, 1], got {drop_path_rate}.')
    if num_units < 1:
        raise ValueError(f'`num_units` must be at least 1, got {num_units}.')
    return [1.0 - (unit / num_units) * drop_path_rate for unit in range(1, num_units + 1)]


def shake_drop_eval_scale(keep_prob: float, alpha_range: Tuple[float, float] = (-1.0, 1.0)) -> float:
    """Return E[b + alpha - b * alpha] = p + (1 - p) * (alpha_min + alpha_max) / 2, the evaluation scale."""
    return keep_prob + (1.0 - keep_prob) * 0.5 * (alpha_range[0] + alpha_range[1])


def _coefficient_shape(x: torch.Tensor, level: str) -> List[int]:
    ndim = x.dim()
    if level == 'batch':
        return [1] * ndim
    if level == 'sample':
        return [x.shape[0]] + [1] * (ndim - 1)
    if level == 'channel':
        return [x.shape[0], x.shape[1]] + [1] * (ndim - 2)
    return list(x.shape)


def _draw(
        keep_prob: torch.Tensor,
        gate_shape: List[int],
        noise_shape: List[int],
        alpha_range: Tuple[float, float],
        beta_range: Tuple[float, float],
        dtype: torch.dtype,
) -> Tuple[torch.Tensor, torch.Tensor]:
    device = keep_prob.device
    # Draws in float32 whatever the activation dtype, so that bf16 and fp16 get the same distribution.
    keep = torch.rand(gate_shape, device=device, dtype=torch.float32) < keep_prob.to(torch.float32)
    # With b in {0, 1}, b + a - b * a is exactly 1 for a kept branch and exactly a for a dropped one.
    forward_coef = torch.empty(noise_shape, device=device, dtype=torch.float32)
    forward_coef.uniform_(alpha_range[0], alpha_range[1]).masked_fill_(keep, 1.0)
    backward_coef = torch.empty(noise_shape, device=device, dtype=torch.float32)
    backward_coef.uniform_(beta_range[0], beta_range[1]).masked_fill_(keep, 1.0)
    return forward_coef.to(dtype), backward_coef.to(dtype)


def _draw_op(
        keep_prob: torch.Tensor,
        gate_shape: List[int],
        noise_shape: List[int],
        alpha_min: float,
        alpha_max: float,
        beta_min: float,
        beta_max: float,
        dtype: torch.dtype,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Draw the coefficients under torch.compile, as the opaque operator `timm_shakedrop::draw_coefficients`.

    Without it, Inductor fuses the draws into the BN kernels around them and recomputes them in the backward
    pass. There the boolean selection keeps its CPU code generator from vectorizing BN's backward reduction, and
    a compiled PyramidNet-20 training step took 1.12x as long as without ShakeDrop. Inductor never recomputes an
    operator tagged as random, so the backward pass reads the saved coefficients. The compiled draws are also
    the eager ones, from the same generator.
    """
    return _draw(keep_prob, gate_shape, noise_shape, (alpha_min, alpha_max), (beta_min, beta_max), dtype)


# `torch.library.custom_op` and `register_fake` each added 35 to 40 ms to `import timm` here, so the operator is
# defined on a Library. Its composite kernel also serves meta and fake tensors.
_LIBRARY = torch.library.Library('timm_shakedrop', 'DEF')
_LIBRARY.define(
    'draw_coefficients(Tensor keep_prob, SymInt[] gate_shape, SymInt[] noise_shape, float alpha_min, '
    'float alpha_max, float beta_min, float beta_max, ScalarType dtype) -> (Tensor, Tensor)',
    tags=(torch.Tag.nondeterministic_seeded,))
_LIBRARY.impl('draw_coefficients', _draw_op, 'CompositeExplicitAutograd')


def _draw_coefficients(
        x: torch.Tensor,
        keep_prob: torch.Tensor,
        alpha_range: Tuple[float, float],
        beta_range: Tuple[float, float],
        level: str,
        gate_level: str,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Draw b, alpha, beta and return the forward coefficient b + a - ba and the backward one b + be - b*be.

    Six small kernels in float32 (two more casts for other activation dtypes): the gate draw and comparison,
    then one uniform draw and one masked fill per coefficient.
    """
    gate_shape = _coefficient_shape(x, gate_level)
    noise_shape = _coefficient_shape(x, level)
    keep_prob = keep_prob.to(x.device)
    if torch.compiler.is_compiling():
        return torch.ops.timm_shakedrop.draw_coefficients(
            keep_prob, gate_shape, noise_shape, alpha_range[0], alpha_range[1], beta_range[0], beta_range[1],
            x.dtype)
    return _draw(keep_prob, gate_shape, noise_shape, alpha_range, beta_range, x.dtype)


def _eval_scale_tensor(keep_prob: torch.Tensor, alpha_range: Tuple[float, float]) -> torch.Tensor:
    # p + (1 - p) * mean(alpha); the default alpha range has mean 0, which leaves p and costs no kernel.
    alpha_mean = 0.5 * (alpha_range[0] + alpha_range[1])
    if alpha_mean == 0.0:
        return keep_prob
    return keep_prob + (1.0 - keep_prob) * alpha_mean


class _ShakeDropFunction(torch.autograd.Function):
    """y = x * forward_coef, with dL/dx = dL/dy * backward_coef.

    Only the backward coefficient is saved for the backward pass, never the activation. At the batch and
    sample levels that is one number per sample.
    """

    @staticmethod
    def forward(x, forward_coef, backward_coef):
        return x * forward_coef

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[2])

    @staticmethod
    def backward(ctx, grad_output):
        (backward_coef,) = ctx.saved_tensors
        return grad_output * backward_coef, None, None


def _apply_coefficients(x: torch.Tensor, forward_coef: torch.Tensor, backward_coef: torch.Tensor) -> torch.Tensor:
    if torch.jit.is_scripting():
        # TorchScript cannot run an autograd.Function: the gradient takes backward_coef through the first term
        # and the detached correction turns the forward value into x * forward_coef.
        return x * backward_coef + (x * (forward_coef - backward_coef)).detach()
    else:
        return _ShakeDropFunction.apply(x, forward_coef, backward_coef)


def _channels(coef: torch.Tensor, start: int, end: int) -> torch.Tensor:
    # Coefficients drawn per channel or per element cover every channel of x; per-sample ones broadcast.
    if coef.dim() >= 2 and coef.shape[1] != 1:
        return coef[:, start:end]
    return coef


class _ShakeDropAddFunction(torch.autograd.Function):
    """y = x * forward_coef + concat(shortcut, zeros) along dim 1, written into x; dL/dx = dL/dy * backward_coef.

    The forward pass reads and writes x once: `addcmul` puts shortcut + x * forward_coef into the first
    channels and the extra channels are scaled in place, so no tensor of the size of x is allocated. The
    gradient of the shortcut is the first channels of the output's gradient, and only the backward
    coefficient is saved.
    """

    @staticmethod
    def forward(x, shortcut, forward_coef, backward_coef):
        shortcut_chs = shortcut.shape[1]
        branch = x[:, :shortcut_chs]
        torch.addcmul(shortcut, branch, _channels(forward_coef, 0, shortcut_chs), out=branch)
        if shortcut_chs < x.shape[1]:
            x[:, shortcut_chs:].mul_(_channels(forward_coef, shortcut_chs, x.shape[1]))
        return x

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.mark_dirty(inputs[0])
        ctx.save_for_backward(inputs[3])
        ctx.shortcut_chs = inputs[1].shape[1]

    @staticmethod
    def backward(ctx, grad_output):
        (backward_coef,) = ctx.saved_tensors
        grad_shortcut = grad_output
        if ctx.shortcut_chs != grad_output.shape[1]:
            grad_shortcut = grad_output[:, :ctx.shortcut_chs]
        return grad_output * backward_coef, grad_shortcut, None, None


def _shake_drop_add(
        x: torch.Tensor,
        shortcut: torch.Tensor,
        keep_prob: torch.Tensor,
        training: bool,
        alpha_range: Tuple[float, float],
        beta_range: Tuple[float, float],
        level: str,
        gate_level: str,
) -> torch.Tensor:
    if training:
        forward_coef, backward_coef = _draw_coefficients(x, keep_prob, alpha_range, beta_range, level, gate_level)
    else:
        forward_coef = backward_coef = _eval_scale_tensor(keep_prob, alpha_range).to(x.dtype)
    if (torch.jit.is_scripting() or torch.jit.is_tracing() or torch.compiler.is_compiling()
            or not can_add_in_place(x, shortcut)):
        # TorchScript and torch.jit.trace (and so the ONNX exporter) cannot record an in-place autograd.Function, and
        # the compilers cannot trace `out=` into an input but fuse the unfused formulation themselves.
        branch = _apply_coefficients(x, forward_coef, backward_coef) if training else x * forward_coef
        return add_padded_shortcut(branch, shortcut)
    return _ShakeDropAddFunction.apply(x, shortcut, forward_coef, backward_coef)


@register_notrace_function
def shake_drop(
        x: torch.Tensor,
        drop_prob: float = 0.5,
        training: bool = False,
        alpha_range: Tuple[float, float] = (-1.0, 1.0),
        beta_range: Tuple[float, float] = (0.0, 1.0),
        level: str = 'sample',
        gate_level: Optional[str] = None,
) -> torch.Tensor:
    """Apply ShakeDrop to the residual branch output `x`.

    Args:
        x: Residual branch output, batch first; `channel` level takes dim 1 as the channel dim.
        drop_prob: Probability 1 - p that the gate b drops the branch.
        training: Draw random coefficients when True; scale by the expectation when False.
        alpha_range: Bounds of the uniform forward coefficient alpha of a dropped branch.
        beta_range: Bounds of the uniform backward coefficient beta of a dropped branch, inside [0, 1].
        level: Granularity of alpha and beta: 'batch', 'sample', 'channel' or 'pixel' (every element).
        gate_level: Granularity of b: 'batch' or 'sample'; None takes 'batch' for `level='batch'` and
            'sample' otherwise. The ShakeDrop authors' code draws b per batch with alpha and beta per element.

    Returns:
        A new tensor of the shape, dtype and memory format of `x`, never `x` itself.
    """
    gate_level = validate_shake_drop_args(drop_prob, alpha_range, beta_range, level, gate_level)
    keep_prob = 1.0 - drop_prob
    if not training:
        return x * shake_drop_eval_scale(keep_prob, alpha_range)
    keep = torch.full((), keep_prob, dtype=torch.float32)
    forward_coef, backward_coef = _draw_coefficients(x, keep, alpha_range, beta_range, level, gate_level)
    return _apply_coefficients(x, forward_coef, backward_coef)


def _shake_drop_train(
        x: torch.Tensor,
        keep_prob: torch.Tensor,
        alpha_range: Tuple[float, float],
        beta_range: Tuple[float, float],
        level: str,
        gate_level: str,
) -> torch.Tensor:
    forward_coef, backward_coef = _draw_coefficients(x, keep_prob, alpha_range, beta_range, level, gate_level)
    return _apply_coefficients(x, forward_coef, backward_coef)


# Random draws depend on the batch size, which symbolic tracing cannot know, and the fused step updates a slice
# of x in place, which it cannot record: keep both leaves in torch.fx.symbolic_trace and timm's feature tracer.
register_notrace_function(_shake_drop_train)
torch.fx.wrap('_shake_drop_train')
register_notrace_function(_shake_drop_add)
torch.fx.wrap('_shake_drop_add')


class ShakeDrop(nn.Module):
    """ShakeDrop for the output of a residual branch, placed after its last normalization layer.

    The keep probability lives in the persistent buffer `keep_prob`, so that weights saved from a model carry
    the rate they were trained with and the evaluation scale p + (1 - p) * mean(alpha) comes back with them.

    Args:
        drop_prob: Probability 1 - p that the gate drops the branch in a training step.
        alpha_range: Bounds of the uniform forward coefficient of a dropped branch.
        beta_range: Bounds of the uniform backward coefficient of a dropped branch, inside [0, 1].
        level: Granularity of alpha and beta: 'batch', 'sample' (default), 'channel' or 'pixel'.
        gate_level: Granularity of the gate: 'batch' or 'sample'; None matches `level` as far as it can.
        device: Device of the `keep_prob` buffer.
    """
    # What the last `load_state_dict` did with `keep_prob`: 'loaded', 'kept', 'missing', or None.
    last_keep_prob_load: Optional[str]

    def __init__(
            self,
            drop_prob: float = 0.5,
            alpha_range: Tuple[float, float] = (-1.0, 1.0),
            beta_range: Tuple[float, float] = (0.0, 1.0),
            level: str = 'sample',
            gate_level: Optional[str] = None,
            device=None,
    ):
        super().__init__()
        self.gate_level = validate_shake_drop_args(drop_prob, alpha_range, beta_range, level, gate_level)
        self.alpha_range = (float(alpha_range[0]), float(alpha_range[1]))
        self.beta_range = (float(beta_range[0]), float(beta_range[1]))
        self.level = level
        self.register_buffer('keep_prob', torch.tensor(1.0 - float(drop_prob), device=device, dtype=torch.float32))
        # Whether `load_state_dict` takes `keep_prob` from the weights (True) or keeps the built value.
        self.keep_prob_from_weights = True
        self.last_keep_prob_load = None

    @property
    def drop_prob(self) -> float:
        """Drop probability 1 - p, read from the `keep_prob` buffer (NaN on the meta device)."""
        if self.keep_prob.is_meta:
            return float('nan')
        return 1.0 - float(self.keep_prob)

    def set_drop_prob(self, drop_prob: float) -> None:
        """Set the drop probability in place, keeping the buffer's device."""
        validate_shake_drop_args(drop_prob, self.alpha_range, self.beta_range, self.level, self.gate_level)
        self.keep_prob.fill_(1.0 - float(drop_prob))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # `Module.load_state_dict` hands every module a shallow copy of the user's dict, so it can be edited here.
        key = prefix + 'keep_prob'
        if key not in state_dict:
            self.last_keep_prob_load = 'missing'
            state_dict[key] = self.keep_prob.detach().clone()
        elif not self.keep_prob_from_weights:
            self.last_keep_prob_load = 'kept'
            state_dict[key] = self.keep_prob.detach().clone()
        else:
            self.last_keep_prob_load = 'loaded'
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)

    def eval_scale(self) -> torch.Tensor:
        """Return the evaluation scale E[b + alpha - b * alpha] as a 0-dim tensor."""
        alpha_mean = 0.5 * (self.alpha_range[0] + self.alpha_range[1])
        return self.keep_prob + (1.0 - self.keep_prob) * alpha_mean

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return _shake_drop_train(x, self.keep_prob, self.alpha_range, self.beta_range, self.level, self.gate_level)
        return x * _eval_scale_tensor(self.keep_prob, self.alpha_range).to(x.dtype)

    def add_to_shortcut(self, x: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        """Return ShakeDrop(x) + concat(shortcut, zeros) along dim 1, computed in place in `x`.

        This is `add_padded_shortcut(self(x), shortcut)` in one pass over `x` and without a new tensor of its
        size, in training (same draws, same gradients) and in evaluation (the expectation scale, no random op).
        `x` must be a tensor that the caller owns and that no backward pass needs, such as the output of the
        branch's last BN, and the spatial sizes must match. The result is `x` itself, except under TorchScript,
        torch.compile and torch.export and for a shortcut of another dtype, which take the unfused steps.
        """
        return _shake_drop_add(
            x, shortcut, self.keep_prob, self.training, self.alpha_range, self.beta_range, self.level, self.gate_level)

    def extra_repr(self) -> str:
        return (
            f'drop_prob={self.drop_prob:.4f}, alpha_range={self.alpha_range}, beta_range={self.beta_range}, '
            f'level={self.level!r}, gate_level={self.gate_level!r}'
        )
