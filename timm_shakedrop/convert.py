"""ShakeDrop for any timm residual network.

`apply_shakedrop` puts a `ShakeDrop` layer into the stochastic-depth slot of every residual branch of a timm
model. timm names that slot `drop_path` (ResNet, ConvNeXt, EfficientNet blocks) or `drop_path1` and `drop_path2`
(ViT-style blocks with an attention and an MLP branch). At timm's default `drop_path_rate=0` a slot holds
`nn.Identity`, or `None` in timm's ResNet blocks, whose forward skips a `None` slot. Block 0 of a timm ResNet
holds `None` at any rate. So slots are found by attribute name, not by looking for `DropPath` instances.

ShakeDrop: Yamada, Iwamura, Akiba, Kise, "ShakeDrop Regularization for Deep Residual Learning",
IEEE Access 7, 2019 (arXiv:1802.02375). Keep probabilities follow its linear rule
p_l = 1 - (l / L) * drop_path_rate over all L branches in forward order. The paper trains alpha in [-1, 1] only
on branches that end in a BN; for branches without a final normalization layer (ConvNeXt and ViT branches end
in a layer scale or a linear layer) it uses alpha = 0, which is the default here for such branches.
"""
import logging
import warnings
from typing import NamedTuple

import torch
from torch import nn

from .layers import ShakeDrop, validate_shake_drop_args
from .layers.shake_drop import shake_drop_keep_probs
from .models._shakedrop_utils import configure_keep_prob_loading, resolve_drop_path_rate
from .models.shakedrop_converted import CONVERTED_ARCHITECTURE

__all__ = ['ResidualSlot', 'apply_shakedrop', 'find_residual_slots']

_logger = logging.getLogger(__name__)

# Attribute names of timm's stochastic-depth slots, in the order a block applies them.
SLOT_NAMES = ('drop_path', 'drop_path1', 'drop_path2')
# Children of a block that are not on the residual branch in front of a slot.
_NON_BRANCH_NAMES = ('downsample', 'shortcut') + SLOT_NAMES
# Default alpha range of branches that end in a normalization layer, and of those that do not.
NORM_END_ALPHA_RANGE = (-1.0, 1.0)
NO_NORM_END_ALPHA_RANGE = (0.0, 0.0)

_TORCH_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm, nn.RMSNorm)
_ACTIVATION_MODULES = (
    'torch.nn.modules.activation',
    'timm.layers.activations',
    'timm.layers.activations_me',
)
_DROP_MODULES = ('torch.nn.modules.dropout', 'timm.layers.drop')


class ResidualSlot(NamedTuple):
    """A stochastic-depth slot: the qualified name of its block, the slot's attribute name, and whether the
    residual branch in front of it ends in a normalization layer."""
    block_name: str
    slot_name: str
    ends_in_norm: bool

    @property
    def name(self) -> str:
        """Qualified name of the slot, as in `model.named_modules()`."""
        return f'{self.block_name}.{self.slot_name}' if self.block_name else self.slot_name


def _is_norm(module: nn.Module) -> bool:
    if isinstance(module, _TORCH_NORMS):
        return True
    # timm's RmsNorm, SimpleNorm and FrozenBatchNorm2d families own their weights or statistics. Composites such
    # as ConvNormAct own none directly, so the search goes through their layers instead.
    has_own_tensors = next(module.parameters(recurse=False), None) is not None
    has_own_tensors = has_own_tensors or next(module.buffers(recurse=False), None) is not None
    return 'Norm' in type(module).__name__ and has_own_tensors


def _passes_through(module: nn.Module) -> bool:
    """Return True for layers that do not decide whether a branch ends in a norm (identity, activation, dropout)."""
    if isinstance(module, (nn.Identity, ShakeDrop)):
        return True
    if isinstance(module, nn.MultiheadAttention):
        return False
    return type(module).__module__ in _ACTIVATION_MODULES + _DROP_MODULES


def _last_branch_layer(module: nn.Module) -> nn.Module | None:
    """Return the last layer in `module` (itself, or its descendants in registration order) that decides
    whether a branch ends in a norm, or None when all of them pass through."""
    if _is_norm(module):
        act = getattr(module, 'act', None)
        # A fused norm-activation layer (timm's BatchNormAct2d) with an activation ends the branch in it.
        return act if isinstance(act, nn.Module) and not isinstance(act, nn.Identity) else module
    children = list(module.children())
    if not children:
        return None if _passes_through(module) else module
    last = None
    for child in children:
        found = _last_branch_layer(child)
        last = found if found is not None else last
    return last


def _branch_ends_in_norm(block: nn.Module, slot_name: str) -> bool:
    """Decide whether the branch in front of `block.<slot_name>` ends in a normalization layer.

    Walks the block's children in registration order up to the slot, skipping the shortcut path and the other
    slots. timm's ResNet, ConvNeXt, EfficientNet and ViT blocks register their layers in forward order, except
    that timm's ResNet blocks register the ReLU that follows the addition before the slot, so stand-alone
    activations and dropouts are skipped wherever they sit.
    """
    # NOTE: a block that registers its layers in another order than it applies them can be misjudged.
    last = None
    for name, child in block.named_children():
        if name == slot_name:
            break
        if name in _NON_BRANCH_NAMES:
            continue
        found = _last_branch_layer(child)
        last = found if found is not None else last
    return last is not None and _is_norm(last)


def _slot_value(block: nn.Module, slot_name: str):
    """Return what a slot holds, or raise AttributeError when `block` has no such slot."""
    value = getattr(block, slot_name)
    # timm's DropPath, or a model's own class of that name.
    if value is None or isinstance(value, (nn.Identity, ShakeDrop)) or type(value).__name__ == 'DropPath':
        return value
    raise AttributeError(slot_name)


def find_residual_slots(model: nn.Module) -> list[ResidualSlot]:
    """Return the stochastic-depth slots of `model` in forward order.

    A slot is an attribute named `drop_path`, `drop_path1` or `drop_path2` holding None, `nn.Identity`, timm's
    `DropPath` or a `ShakeDrop`. Blocks come in `named_modules()` order, and a block's slots in the order above.
    """
    # NOTE: a block that calls one `drop_path` module for two branches gets one slot, so one keep probability.
    slots = []
    for block_name, block in model.named_modules():
        if isinstance(block, ShakeDrop):
            continue
        for slot_name in SLOT_NAMES:
            try:
                _slot_value(block, slot_name)
            except AttributeError:
                continue
            slots.append(ResidualSlot(block_name, slot_name, _branch_ends_in_norm(block, slot_name)))
    return slots


def _device_of(module: nn.Module, fallback: nn.Module) -> torch.device | None:
    for source in (module, fallback):
        tensor = next(source.parameters(), None)
        if tensor is None:
            tensor = next(source.buffers(), None)
        if tensor is not None:
            return tensor.device
    return None


def _record_converted_architecture(model: nn.Module, shakedrop_args: dict) -> None:
    """Make timm's Hub config of `model` name the converted architecture, so that timm rebuilds it.

    `save_config_for_hf` writes `pretrained_cfg['architecture']` and the arguments that `update_model_args`
    records. A model whose config names no registered timm model (one built without `timm.create_model`) is left
    as it is.
    """
    from timm.models import is_model
    from timm.models._input import update_model_args

    cfg = getattr(model, 'pretrained_cfg', None)
    base_model = cfg.get('architecture') if isinstance(cfg, dict) else None
    if not isinstance(base_model, str) or not is_model(base_model):
        _logger.debug(f'{type(model).__name__} names no registered timm architecture; its Hub config stays as is.')
        return
    model.pretrained_cfg = dict(cfg, architecture=CONVERTED_ARCHITECTURE)
    model.default_cfg = model.pretrained_cfg
    # A recorded `drop_path_rate` was the base model's stochastic-depth rate; the converted model's is ShakeDrop's.
    model._model_args = {k: v for k, v in getattr(model, '_model_args', {}).items() if k != 'drop_path_rate'}
    update_model_args(model, base_model=base_model, **{k: v for k, v in shakedrop_args.items() if v is not None})


def apply_shakedrop(
        model: nn.Module,
        drop_path_rate: float | None = None,
        alpha_range: tuple[float, float] | None = None,
        beta_range: tuple[float, float] = (0.0, 1.0),
        level: str = 'sample',
        gate_level: str | None = None,
) -> nn.Module:
    """Put ShakeDrop into every residual branch of a timm model, in place.

    Each stochastic-depth slot (see `find_residual_slots`) gets a `ShakeDrop` layer that replaces what it held,
    timm's `DropPath` included. The keep probability of branch l of L is 1 - (l / L) * drop_path_rate,
    counting every branch of the model in forward order (two per ViT block). In evaluation each branch is scaled
    by p_l + (1 - p_l) * mean(alpha), so outputs differ from the unconverted model unless drop_path_rate is 0.

    Args:
        model: A timm model (or any module) with `drop_path`, `drop_path1` or `drop_path2` slots.
        drop_path_rate: ShakeDrop's 1 - p_L, the drop probability of the last branch; None takes 0.5 and lets
            `keep_prob` entries of weights loaded later set the rates, an explicit value keeps its own rates.
            This is not timm's stochastic-depth rate, whose rule starts at 0 for the first block.
        alpha_range: Bounds of the forward coefficient alpha for every branch. None takes (-1, 1) for branches
            that end in a normalization layer and (0, 0) for the others. A range other than (0, 0) on a branch
            without a final normalization layer warns, because the ShakeDrop paper found that alpha in [-1, 1]
            trains only behind a BN.
        beta_range: Bounds of the backward coefficient beta, inside [0, 1].
        level: Granularity of alpha and beta: 'batch', 'sample', 'channel' or 'pixel'. 'channel' draws per
            index of dim 1, the channel dim of NCHW feature maps. Models with `drop_path1`/`drop_path2` slots
            reject it, because their token (N, T, C) or NHWC tensors have no channel at dim 1.
        gate_level: Granularity of the Bernoulli gate: 'batch' or 'sample'; None matches `level`.

    Returns:
        The same model, converted. A model built by `timm.create_model` also gets a pretrained config naming the
        architecture `shakedrop` and records `base_model` and these arguments as timm's model arguments, so
        that `timm.models.save_for_hf` writes a config from which `timm.create_model('local-dir:...',
        pretrained=True)` rebuilds the converted model.

    Raises:
        ValueError: for a model without slots, a model that already contains ShakeDrop, 'channel' level on
            ViT-style slots, or an out-of-range argument.
    """
    drop_path_rate_explicit = drop_path_rate is not None
    drop_path_rate = resolve_drop_path_rate(drop_path_rate)
    checked_alpha = NORM_END_ALPHA_RANGE if alpha_range is None else alpha_range
    validate_shake_drop_args(drop_path_rate, checked_alpha, beta_range, level, gate_level)

    slots = find_residual_slots(model)
    if not slots:
        raise ValueError(
            f'apply_shakedrop found no residual branch slot in {type(model).__name__}: it looks for attributes '
            f'named {", ".join(SLOT_NAMES)} holding None, nn.Identity or DropPath, as timm\'s ResNet, ConvNeXt, '
            f'EfficientNet and ViT blocks have. Use a model with such blocks.')
    converted = [
        slot.name for slot in slots
        if isinstance(getattr(model.get_submodule(slot.block_name), slot.slot_name), ShakeDrop)
    ]
    if converted:
        raise ValueError(
            f'The model already contains ShakeDrop in {len(converted)} slots (first: {converted[0]!r}). Convert '
            f'the original model, or change the rates with ShakeDrop.set_drop_prob.')
    # NOTE: 'channel' on `drop_path` slots assumes NCHW branch outputs, as in timm's CNN blocks.
    token_slots = [slot.name for slot in slots if slot.slot_name != 'drop_path']
    if level == 'channel' and token_slots:
        raise ValueError(
            f"level='channel' draws per index of dim 1, which is not a channel dim in ViT-style blocks "
            f"(first slot: {token_slots[0]!r}); use level='sample' or 'pixel'.")
    if alpha_range is not None and tuple(alpha_range) != NO_NORM_END_ALPHA_RANGE:
        no_norm = [slot.name for slot in slots if not slot.ends_in_norm]
        if no_norm:
            warnings.warn(
                f'alpha_range={tuple(alpha_range)} is applied to {len(no_norm)} of {len(slots)} residual branches '
                f'that do not end in a normalization layer (first: {no_norm[0]!r}); the ShakeDrop paper uses '
                f'alpha_range=(0, 0) for such branches, because alpha in [-1, 1] fails to train without a final BN.',
                UserWarning,
                stacklevel=2,
            )

    keep_probs = shake_drop_keep_probs(len(slots), drop_path_rate)
    for slot, keep_prob in zip(slots, keep_probs, strict=True):
        block = model.get_submodule(slot.block_name)
        if alpha_range is not None:
            slot_alpha = tuple(alpha_range)
        else:
            slot_alpha = NORM_END_ALPHA_RANGE if slot.ends_in_norm else NO_NORM_END_ALPHA_RANGE
        layer = ShakeDrop(
            1.0 - keep_prob,
            alpha_range=slot_alpha,
            beta_range=beta_range,
            level=level,
            gate_level=gate_level,
            device=_device_of(block, model),
        )
        setattr(block, slot.slot_name, layer)
    _logger.info(
        f'Put ShakeDrop into {len(slots)} residual branches of {type(model).__name__} '
        f'({sum(s.ends_in_norm for s in slots)} ending in a normalization layer), drop_path_rate={drop_path_rate}.')
    configure_keep_prob_loading(model, drop_path_rate_explicit, drop_path_rate)
    _record_converted_architecture(model, dict(
        drop_path_rate=drop_path_rate if drop_path_rate_explicit else None,
        shakedrop_alpha_range=None if alpha_range is None else tuple(alpha_range),
        shakedrop_beta_range=tuple(beta_range),
        shakedrop_level=level,
        shakedrop_gate_level=gate_level,
    ))
    return model
