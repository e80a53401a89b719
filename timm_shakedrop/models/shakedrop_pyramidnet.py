"""PyramidNet with ShakeDrop.

PyramidNet: Han, Kim, Kim, "Deep Pyramidal Residual Networks", CVPR 2017 (arXiv:1610.02915).
ShakeDrop: Yamada, Iwamura, Akiba, Kise, "ShakeDrop Regularization for Deep Residual Learning",
IEEE Access 7, 2019 (arXiv:1802.02375).

Unit k of N is widened additively to round(16 + k * alpha / N) channels (4x at the output of a bottleneck).
As in the authors' reference code, the fractional width accumulates in floating point and Python's `round`
rounds it. A unit has no ReLU at its start, ends in a BN, and adds a parameter-free shortcut:
2x2 average pooling (ceil mode) in stride-2 units and zero-padded extra channels. ShakeDrop sits after the
last BN of the residual branch, and its drop probability grows linearly to `drop_path_rate` over all units.
"""
from functools import partial
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch
import torch.fx
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import ClassifierHead, get_device_dtype
from timm.models import build_model_with_cfg, checkpoint_seq, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from torch import nn

from ..layers import ShakeDrop, add_padded_shortcut, norm_act_conv, shake_drop_keep_probs
from ._shakedrop_utils import check_drop_block_rate, configure_keep_prob_loading, resolve_drop_path_rate

__all__ = ['PyramidNet', 'PyramidBasicBlock', 'PyramidBottleneck', 'pyramid_widths']

# Calls to the shortcut addition from this module stay leaves under torch.fx.symbolic_trace.
torch.fx.wrap('add_padded_shortcut')

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)


def pyramid_widths(num_units: int, alpha: float, base_chs: int) -> List[int]:
    """Return the branch width of each of `num_units` units, widening by alpha / num_units per unit."""
    add_rate = alpha / num_units
    width = float(base_chs)
    widths = []
    for _ in range(num_units):
        width += add_rate
        widths.append(int(round(width)))
    return widths


class PyramidBasicBlock(nn.Module):
    """BN, 3x3 conv (stride s), BN, ReLU, 3x3 conv, BN, ShakeDrop, plus the padded shortcut."""
    expansion = 1

    def __init__(
            self,
            in_chs: int,
            chs: int,
            stride: int = 1,
            drop_path: Optional[nn.Module] = None,
            norm_layer: Callable = nn.BatchNorm2d,
            act_layer: Callable = nn.ReLU,
            recompute_norm: bool = True,
            device=None,
            dtype=None,
    ):
        dd = dict(device=device, dtype=dtype)
        super().__init__()
        self.bn1 = norm_layer(in_chs, **dd)
        self.conv1 = nn.Conv2d(in_chs, chs, 3, stride=stride, padding=1, bias=False, **dd)
        self.bn2 = norm_layer(chs, **dd)
        self.act2 = act_layer(inplace=True)
        self.conv2 = nn.Conv2d(chs, chs, 3, padding=1, bias=False, **dd)
        self.bn3 = norm_layer(chs, **dd)
        self.drop_path = drop_path if drop_path is not None else nn.Identity()
        self.downsample = nn.AvgPool2d(2, stride=2, ceil_mode=True) if stride != 1 else nn.Identity()
        self.recompute_norm = recompute_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.downsample(x)
        if torch.jit.is_scripting() or not self.recompute_norm:
            x = self.conv1(self.bn1(x))
            x = self.conv2(self.act2(self.bn2(x)))
        else:
            # Each BN output is recomputed in the backward pass instead of kept; see norm_act_conv.
            x = norm_act_conv(x, self.bn1, None, self.conv1)
            x = norm_act_conv(x, self.bn2, self.act2, self.conv2)
        x = self.bn3(x)
        if not torch.jit.is_scripting() and isinstance(self.drop_path, ShakeDrop):
            # ShakeDrop and the shortcut addition in one pass, in place in the BN output.
            return self.drop_path.add_to_shortcut(x, shortcut)
        x = self.drop_path(x)
        return add_padded_shortcut(x, shortcut)


class PyramidBottleneck(nn.Module):
    """BN, 1x1 conv, BN, ReLU, 3x3 conv (stride s), BN, ReLU, 1x1 conv to 4x, BN, ShakeDrop, plus the shortcut."""
    expansion = 4

    def __init__(
            self,
            in_chs: int,
            chs: int,
            stride: int = 1,
            drop_path: Optional[nn.Module] = None,
            norm_layer: Callable = nn.BatchNorm2d,
            act_layer: Callable = nn.ReLU,
            recompute_norm: bool = True,
            device=None,
            dtype=None,
    ):
        dd = dict(device=device, dtype=dtype)
        super().__init__()
        out_chs = chs * self.expansion
        self.bn1 = norm_layer(in_chs, **dd)
        self.conv1 = nn.Conv2d(in_chs, chs, 1, bias=False, **dd)
        self.bn2 = norm_layer(chs, **dd)
        self.act2 = act_layer(inplace=True)
        self.conv2 = nn.Conv2d(chs, chs, 3, stride=stride, padding=1, bias=False, **dd)
        self.bn3 = norm_layer(chs, **dd)
        self.act3 = act_layer(inplace=True)
        self.conv3 = nn.Conv2d(chs, out_chs, 1, bias=False, **dd)
        self.bn4 = norm_layer(out_chs, **dd)
        self.drop_path = drop_path if drop_path is not None else nn.Identity()
        self.downsample = nn.AvgPool2d(2, stride=2, ceil_mode=True) if stride != 1 else nn.Identity()
        self.recompute_norm = recompute_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.downsample(x)
        if torch.jit.is_scripting() or not self.recompute_norm:
            x = self.conv1(self.bn1(x))
            x = self.conv2(self.act2(self.bn2(x)))
            x = self.conv3(self.act3(self.bn3(x)))
        else:
            # Each BN output is recomputed in the backward pass instead of kept; see norm_act_conv.
            x = norm_act_conv(x, self.bn1, None, self.conv1)
            x = norm_act_conv(x, self.bn2, self.act2, self.conv2)
            x = norm_act_conv(x, self.bn3, self.act3, self.conv3)
        x = self.bn4(x)
        if not torch.jit.is_scripting() and isinstance(self.drop_path, ShakeDrop):
            # ShakeDrop and the shortcut addition in one pass, in place in the BN output.
            return self.drop_path.add_to_shortcut(x, shortcut)
        x = self.drop_path(x)
        return add_padded_shortcut(x, shortcut)


_BLOCKS = {'basic': PyramidBasicBlock, 'bottleneck': PyramidBottleneck}


class PyramidNet(nn.Module):
    """PyramidNet with ShakeDrop in every residual unit.

    Args:
        layers: Number of units in each stage; the first stage has stride 1, every later one stride 2.
        alpha: Total widening over all units.
        block: 'basic' or 'bottleneck'.
        stem_type: 'cifar' (3x3 conv and BN, for 32x32 input) or 'imagenet' (7x7/2 conv, BN, ReLU, 3x3/2 max pool).
        base_chs: Stem width, from which the widening starts (16 for CIFAR, 64 for ImageNet).
        num_classes: Number of classifier outputs; 0 removes the classifier.
        in_chans: Number of input image channels.
        global_pool: Global pooling type of the head.
        drop_rate: Dropout rate before the classifier.
        drop_path_rate: ShakeDrop's 1 - p_L, the drop probability of the last unit; None takes 0.5 and lets
            loaded weights set the rates. 0 builds the plain PyramidNet.
        drop_block_rate: Accepted as None or 0 only, for timm's train.py.
        bn_momentum: Momentum of every BN; None keeps PyTorch's 0.1.
        bn_eps: Epsilon of every BN; None keeps PyTorch's 1e-5.
        shakedrop_alpha_range: Bounds of ShakeDrop's forward coefficient alpha.
        shakedrop_beta_range: Bounds of ShakeDrop's backward coefficient beta.
        shakedrop_level: Granularity of alpha and beta: 'batch', 'sample', 'channel' or 'pixel'.
        shakedrop_gate_level: Granularity of the gate: 'batch' or 'sample'; None matches `shakedrop_level`.
        drop_path_layer: Factory `f(drop_prob) -> nn.Module` replacing ShakeDrop, for example timm's DropPath.
        recompute_norm: Recompute, in the backward pass, each BN output that feeds a convolution instead of
            keeping it (see `norm_act_conv`): about a third less training memory for one extra elementwise
            pass per BN. False keeps the BN outputs.
        device: Device of the parameters and buffers.
        dtype: Dtype of the parameters.
    """

    def __init__(
            self,
            layers: Tuple[int, ...] = (18, 18, 18),
            alpha: float = 48,
            block: str = 'basic',
            stem_type: str = 'cifar',
            base_chs: Optional[int] = None,
            num_classes: int = 10,
            in_chans: int = 3,
            global_pool: str = 'avg',
            drop_rate: float = 0.0,
            drop_path_rate: Optional[float] = None,
            drop_block_rate: Optional[float] = None,
            bn_momentum: Optional[float] = None,
            bn_eps: Optional[float] = None,
            shakedrop_alpha_range: Tuple[float, float] = (-1.0, 1.0),
            shakedrop_beta_range: Tuple[float, float] = (0.0, 1.0),
            shakedrop_level: str = 'sample',
            shakedrop_gate_level: Optional[str] = None,
            drop_path_layer: Optional[Callable[[float], nn.Module]] = None,
            recompute_norm: bool = True,
            device=None,
            dtype=None,
    ):
        dd = dict(device=device, dtype=dtype)
        super().__init__()
        if block not in _BLOCKS:
            raise ValueError(f"`block` must be one of {tuple(_BLOCKS)}, got {block!r}.")
        if stem_type not in ('cifar', 'imagenet'):
            raise ValueError(f"`stem_type` must be 'cifar' or 'imagenet', got {stem_type!r}.")
        if not layers or any(int(n) < 1 for n in layers):
            raise ValueError(f'`layers` must list at least one unit per stage, got {layers}.')
        check_drop_block_rate(drop_block_rate)
        if not isinstance(recompute_norm, bool):
            raise ValueError(f'`recompute_norm` must be True or False, got {recompute_norm!r}.')
        rate_is_explicit = drop_path_rate is not None
        drop_path_rate = resolve_drop_path_rate(drop_path_rate)
        block_cls = _BLOCKS[block]
        base_chs = base_chs or (16 if stem_type == 'cifar' else 64)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.grad_checkpointing = False

        bn_kwargs = {}
        if bn_momentum is not None:
            bn_kwargs['momentum'] = bn_momentum
        if bn_eps is not None:
            bn_kwargs['eps'] = bn_eps
        norm_layer = partial(nn.BatchNorm2d, **bn_kwargs)
        if drop_path_layer is None:
            drop_path_layer = partial(
                ShakeDrop,
                alpha_range=shakedrop_alpha_range,
                beta_range=shakedrop_beta_range,
                level=shakedrop_level,
                gate_level=shakedrop_gate_level,
                device=device,
            )

        # Stem
        stem = [
            nn.Conv2d(in_chans, base_chs, 7 if stem_type == 'imagenet' else 3,
                      stride=2 if stem_type == 'imagenet' else 1,
                      padding=3 if stem_type == 'imagenet' else 1, bias=False, **dd),
            norm_layer(base_chs, **dd),
        ]
        if stem_type == 'imagenet':
            stem.append(nn.ReLU(inplace=True))
        self.stem = nn.Sequential(*stem)
        self.stem_pool = nn.MaxPool2d(3, stride=2, padding=1) if stem_type == 'imagenet' else nn.Identity()
        reduction = 4 if stem_type == 'imagenet' else 1
        self.feature_info = []
        if stem_type == 'imagenet':
            self.feature_info.append(dict(num_chs=base_chs, reduction=2, module='stem.2'))
        self._stem_feature = stem_type == 'imagenet'

        # Stages
        num_units = sum(int(n) for n in layers)
        widths = pyramid_widths(num_units, alpha, base_chs)
        drop_probs = [1.0 - p for p in shake_drop_keep_probs(num_units, drop_path_rate)]
        in_chs = base_chs
        unit_idx = 0
        stages = []
        for stage_idx, depth in enumerate(layers):
            stride = 1 if stage_idx == 0 else 2
            blocks = []
            for block_idx in range(int(depth)):
                blocks.append(block_cls(
                    in_chs,
                    widths[unit_idx],
                    stride=stride if block_idx == 0 else 1,
                    drop_path=drop_path_layer(drop_probs[unit_idx]),
                    norm_layer=norm_layer,
                    recompute_norm=recompute_norm,
                    **dd,
                ))
                in_chs = widths[unit_idx] * block_cls.expansion
                unit_idx += 1
            reduction *= stride
            stages.append(nn.Sequential(*blocks))
            self.feature_info.append(dict(num_chs=in_chs, reduction=reduction, module=f'stages.{stage_idx}'))
        self.stages = nn.Sequential(*stages)
        self.num_features = in_chs

        # Head
        self.norm = nn.Sequential(norm_layer(in_chs, **dd), nn.ReLU(inplace=True))
        self.head = ClassifierHead(in_chs, num_classes, pool_type=global_pool, drop_rate=drop_rate, **dd)
        self.head_hidden_size = self.head.num_features

        self.init_weights()
        configure_keep_prob_loading(self, rate_is_explicit, drop_path_rate)

    @torch.no_grad()
    def init_weights(self) -> None:
        """He-normal conv weights (fan out), BN weight 1 and bias 0, as in the reference PyramidNet code."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode='fan_out', nonlinearity='relu')
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(
            stem=r'^stem',
            blocks=r'^stages\.(\d+)' if coarse else [(r'^stages\.(\d+)\.(\d+)', None), (r'^norm', (99999,))],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        # The new classifier takes the device and dtype of the network, even when the old one was removed.
        dd = get_device_dtype(self)
        self.num_classes = num_classes
        self.head.reset(num_classes, pool_type=global_pool, **dd)
        self.head_hidden_size = self.head.num_features

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Run the network and return the outputs of the feature stages.

        Args:
            x: Input images.
            indices: Feature indices to return (into `feature_info`); an int takes the last n, None all.
            norm: Apply the final BN-ReLU to the last feature when it is the output of the last stage.
            stop_early: Stop after the last requested feature.
            output_fmt: Only 'NCHW'.
            intermediates_only: Return only the features.
        """
        if output_fmt != 'NCHW':
            raise ValueError(f"`output_fmt` must be 'NCHW', got {output_fmt!r}.")
        intermediates = []
        take_indices, max_index = feature_take_indices(len(self.feature_info), indices)
        offset = 1 if self._stem_feature else 0
        last_stage = len(self.stages) - 1

        x = self.stem(x)
        if self._stem_feature and 0 in take_indices:
            intermediates.append(x)
        x = self.stem_pool(x)
        if torch.jit.is_scripting() or not stop_early:
            stages = self.stages
        else:
            stages = self.stages[:max(max_index + 1 - offset, 0)]
        for stage_idx, stage in enumerate(stages):
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint_seq(stage, x)
            else:
                x = stage(x)
            if stage_idx + offset in take_indices:
                intermediates.append(self.norm(x) if norm and stage_idx == last_stage else x)

        if intermediates_only:
            return intermediates
        if len(stages) == len(self.stages):
            x = self.norm(x)
        return x, intermediates

    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        """Remove the stages after the last feature in `indices`, and optionally the final norm and the head."""
        take_indices, max_index = feature_take_indices(len(self.feature_info), indices)
        offset = 1 if self._stem_feature else 0
        self.stages = self.stages[:max(max_index + 1 - offset, 0)]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, '')
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.stem_pool(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(self.stages, x, flatten=True)
        else:
            x = self.stages(x)
        x = self.norm(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits) if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)
        x = self.forward_head(x)
        return x


def _create_pyramidnet(variant: str, pretrained: bool = False, **kwargs) -> PyramidNet:
    stem_type = kwargs.get('stem_type', 'cifar')
    out_indices = (0, 1, 2, 3, 4) if stem_type == 'imagenet' else (0, 1, 2)
    return build_model_with_cfg(
        PyramidNet,
        variant,
        pretrained,
        feature_cfg=dict(flatten_sequential=True, out_indices=out_indices),
        **kwargs,
    )


_PAPER_IDS = ['arXiv:1802.02375', 'arXiv:1610.02915']


def _cifar_cfg(num_classes: int = 10, mean=CIFAR10_MEAN, std=CIFAR10_STD, **kwargs) -> Dict[str, Any]:
    return {
        'num_classes': num_classes,
        'input_size': (3, 32, 32),
        'pool_size': (8, 8),
        'crop_pct': 1.0,
        'crop_mode': 'center',
        'interpolation': 'bilinear',
        'mean': mean,
        'std': std,
        'first_conv': 'stem.0',
        'classifier': 'head.fc',
        'license': 'apache-2.0',
        'paper_ids': _PAPER_IDS,
        'paper_name': 'ShakeDrop Regularization for Deep Residual Learning',
        **kwargs,
    }


def _imagenet_cfg(**kwargs) -> Dict[str, Any]:
    return {
        'num_classes': 1000,
        'input_size': (3, 224, 224),
        'pool_size': (7, 7),
        'crop_pct': 0.875,
        'crop_mode': 'center',
        'interpolation': 'bilinear',
        'mean': IMAGENET_DEFAULT_MEAN,
        'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'stem.0',
        'classifier': 'head.fc',
        'license': 'apache-2.0',
        'paper_ids': _PAPER_IDS,
        'paper_name': 'ShakeDrop Regularization for Deep Residual Learning',
        **kwargs,
    }


# (layers, alpha, block) of each CIFAR-style network, by registered name.
_CIFAR_ARCHS = {
    'shakedrop_pyramidnet20_a48': ((3, 3, 3), 48, 'basic'),
    'shakedrop_pyramidnet56_a48': ((9, 9, 9), 48, 'basic'),
    'shakedrop_pyramidnet110_a48': ((18, 18, 18), 48, 'basic'),
    'shakedrop_pyramidnet110_a84': ((18, 18, 18), 84, 'basic'),
    'shakedrop_pyramidnet110_a270': ((18, 18, 18), 270, 'basic'),
    'shakedrop_pyramidnet164_a270': ((18, 18, 18), 270, 'bottleneck'),
    'shakedrop_pyramidnet200_a240': ((22, 22, 22), 240, 'bottleneck'),
    'shakedrop_pyramidnet236_a220': ((26, 26, 26), 220, 'bottleneck'),
    'shakedrop_pyramidnet272_a200': ((30, 30, 30), 200, 'bottleneck'),
    'shakedrop_pyramidnet272': ((30, 30, 30), 200, 'bottleneck'),
}

_IMAGENET_ARCHS = {
    'shakedrop_pyramidnet101_a360_imagenet': ((3, 4, 23, 3), 360, 'bottleneck'),
    'shakedrop_pyramidnet200_a300_imagenet': ((3, 24, 36, 3), 300, 'bottleneck'),
}


def _default_cfgs() -> Dict[str, Dict[str, Any]]:
    cfgs = {}
    for name in _CIFAR_ARCHS:
        cfgs[f'{name}.cifar10'] = _cifar_cfg()
        cfgs[f'{name}.cifar100'] = _cifar_cfg(num_classes=100, mean=CIFAR100_MEAN, std=CIFAR100_STD)
    for name in _IMAGENET_ARCHS:
        cfgs[f'{name}.in1k'] = _imagenet_cfg()
    return cfgs


default_cfgs = generate_default_cfgs(_default_cfgs())


def _cifar_model(name: str, pretrained: bool, kwargs: Dict[str, Any]) -> PyramidNet:
    layers, alpha, block = _CIFAR_ARCHS[name]
    model_args = dict(layers=layers, alpha=alpha, block=block, stem_type='cifar')
    return _create_pyramidnet(name, pretrained=pretrained, **dict(model_args, **kwargs))


def _imagenet_model(name: str, pretrained: bool, kwargs: Dict[str, Any]) -> PyramidNet:
    layers, alpha, block = _IMAGENET_ARCHS[name]
    model_args = dict(layers=layers, alpha=alpha, block=block, stem_type='imagenet')
    return _create_pyramidnet(name, pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def shakedrop_pyramidnet20_a48(pretrained: bool = False, **kwargs) -> PyramidNet:
    """PyramidNet-20 (alpha 48, basic units) with ShakeDrop, a small member for quick runs."""
    return _cifar_model('shakedrop_pyramidnet20_a48', pretrained, kwargs)


@register_model
def shakedrop_pyramidnet56_a48(pretrained: bool = False, **kwargs) -> PyramidNet:
    """PyramidNet-56 (alpha 48, basic units) with ShakeDrop."""
    return _cifar_model('shakedrop_pyramidnet56_a48', pretrained, kwargs)


@register_model
def shakedrop_pyramidnet110_a48(pretrained: bool = False, **kwargs) -> PyramidNet:
    """PyramidNet-110 (alpha 48, basic units) with ShakeDrop."""
    return _cifar_model('shakedrop_pyramidnet110_a48', pretrained, kwargs)


@register_model
def shakedrop_pyramidnet110_a84(pretrained: bool = False, **kwargs) -> PyramidNet:
    """PyramidNet-110 (alpha 84, basic units) with ShakeDrop."""
    return _cifar_model('shakedrop_pyramidnet110_a84', pretrained, kwargs)


@register_model
def shakedrop_pyramidnet110_a270(pretrained: bool = False, **kwargs) -> PyramidNet:
    """PyramidNet-110 (alpha 270, basic units) with ShakeDrop."""
    return _cifar_model('shakedrop_pyramidnet110_a270', pretrained, kwargs)


@register_model
def shakedrop_pyramidnet164_a270(pretrained: bool = False, **kwargs) -> PyramidNet:
    """PyramidNet-164 (alpha 270, bottleneck units) with ShakeDrop."""
    return _cifar_model('shakedrop_pyramidnet164_a270', pretrained, kwargs)


@register_model
def shakedrop_pyramidnet200_a240(pretrained: bool = False, **kwargs) -> PyramidNet:
    """PyramidNet-200 (alpha 240, bottleneck units) with ShakeDrop."""
    return _cifar_model('shakedrop_pyramidnet200_a240', pretrained, kwargs)


@register_model
def shakedrop_pyramidnet236_a220(pretrained: bool = False, **kwargs) -> PyramidNet:
    """PyramidNet-236 (alpha 220, bottleneck units) with ShakeDrop."""
    return _cifar_model('shakedrop_pyramidnet236_a220', pretrained, kwargs)


@register_model
def shakedrop_pyramidnet272_a200(pretrained: bool = False, **kwargs) -> PyramidNet:
    """PyramidNet-272 (alpha 200, bottleneck units) with ShakeDrop."""
    return _cifar_model('shakedrop_pyramidnet272_a200', pretrained, kwargs)


@register_model
def shakedrop_pyramidnet272(pretrained: bool = False, **kwargs) -> PyramidNet:
    """PyramidNet-272 (alpha 200, bottleneck units) with ShakeDrop, the same network as `_a200`."""
    return _cifar_model('shakedrop_pyramidnet272', pretrained, kwargs)


@register_model
def shakedrop_pyramidnet101_a360_imagenet(pretrained: bool = False, **kwargs) -> PyramidNet:
    """PyramidNet-101 (alpha 360, bottleneck units, 3-4-23-3) with ShakeDrop for 224x224 ImageNet input."""
    return _imagenet_model('shakedrop_pyramidnet101_a360_imagenet', pretrained, kwargs)


@register_model
def shakedrop_pyramidnet200_a300_imagenet(pretrained: bool = False, **kwargs) -> PyramidNet:
    """PyramidNet-200 (alpha 300, bottleneck units, 3-24-36-3) with ShakeDrop for 224x224 ImageNet input."""
    return _imagenet_model('shakedrop_pyramidnet200_a300_imagenet', pretrained, kwargs)
