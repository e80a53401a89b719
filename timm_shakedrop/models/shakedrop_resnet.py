"""ResNet and ResNeXt with ShakeDrop.

ResNet: He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016 (arXiv:1512.03385).
Pre-activation ResNet: He, Zhang, Ren, Sun, "Identity Mappings in Deep Residual Networks", ECCV 2016
(arXiv:1603.05027).
ResNeXt: Xie, Girshick, Dollar, Tu, He, "Aggregated Residual Transformations for Deep Neural Networks", CVPR 2017
(arXiv:1611.05431).
ShakeDrop: Yamada, Iwamura, Akiba, Kise, "ShakeDrop Regularization for Deep Residual Learning",
IEEE Access 7, 2019 (arXiv:1802.02375).

Three families, each with ShakeDrop after the last BN of every residual branch, before the addition, and keep
probabilities p_l = 1 - (l / L) * drop_path_rate over all L residual units:

* `CifarResNet`: the 3-stage CIFAR networks of He et al. (16, 32, 64 channels, 32x32 input) with zero-padded
  identity shortcuts (their option A: a stride-2 shortcut takes every second pixel and the extra channels are
  zero). Basic units give ResNet-20/56/110. Pre-activation bottlenecks give ResNet-164, with a BN added at the end
  of each branch because the ShakeDrop paper found that ResNet-family branches need one for alpha in [-1, 1].
* `ShakeDropResNet` on timm's own `ResNet`, so that state-dict keys, parameter counts and timm's ResNet weights
  carry over. It builds ResNet-50/101/152 and ResNeXt-50 (32x4d) for ImageNet. With `stem_type='cifar'` (3x3
  stride-1 stem, no max pool) it builds the 4-stage ResNet-18/34 for 32x32 input with 1x1 projection shortcuts.
"""
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.fx
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import ClassifierHead, get_device_dtype
from timm.models import build_model_with_cfg, checkpoint_seq, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from torch import nn

from ..layers import ShakeDrop, add_padded_shortcut, shake_drop_keep_probs
from ._shakedrop_utils import check_drop_block_rate, configure_keep_prob_loading, resolve_drop_path_rate
from .shakedrop_pyramidnet import CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD

__all__ = ['CifarResNet', 'CifarBasicBlock', 'CifarPreActBottleneck', 'ShakeDropResNet', 'StrideSubsample']

# Calls to the shortcut addition from this module stay leaves under torch.fx.symbolic_trace.
torch.fx.wrap('add_padded_shortcut')


def _bn_kwargs(bn_momentum: float | None, bn_eps: float | None) -> dict[str, float]:
    kwargs = {}
    if bn_momentum is not None:
        kwargs['momentum'] = bn_momentum
    if bn_eps is not None:
        kwargs['eps'] = bn_eps
    return kwargs


def _shake_drop_factory(
        alpha_range: tuple[float, float],
        beta_range: tuple[float, float],
        level: str,
        gate_level: str | None,
        device,
) -> Callable[[float], nn.Module]:
    return partial(
        ShakeDrop,
        alpha_range=alpha_range,
        beta_range=beta_range,
        level=level,
        gate_level=gate_level,
        device=device,
    )


class StrideSubsample(nn.Module):
    """Parameter-free shortcut of He et al.'s option A: keep every `stride`-th pixel in both spatial dims.

    For odd sizes this keeps ceil(size / stride) pixels, the output size of a 3x3 conv with padding 1.
    """

    def __init__(self, stride: int = 2):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, ::self.stride, ::self.stride]

    def extra_repr(self) -> str:
        return f'stride={self.stride}'


class CifarBasicBlock(nn.Module):
    """Basic unit: 3x3 conv (stride s), BN, ReLU, 3x3 conv, BN, ShakeDrop, then the option-A shortcut and a ReLU."""
    expansion = 1

    def __init__(
            self,
            in_chs: int,
            chs: int,
            stride: int = 1,
            drop_path: nn.Module | None = None,
            norm_layer: Callable = nn.BatchNorm2d,
            act_layer: Callable = nn.ReLU,
            device=None,
            dtype=None,
    ):
        dd = dict(device=device, dtype=dtype)
        super().__init__()
        self.conv1 = nn.Conv2d(in_chs, chs, 3, stride=stride, padding=1, bias=False, **dd)
        self.bn1 = norm_layer(chs, **dd)
        self.act1 = act_layer(inplace=True)
        self.conv2 = nn.Conv2d(chs, chs, 3, padding=1, bias=False, **dd)
        self.bn2 = norm_layer(chs, **dd)
        self.drop_path = drop_path if drop_path is not None else nn.Identity()
        self.downsample = StrideSubsample(stride) if stride != 1 else nn.Identity()
        self.act2 = act_layer(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.downsample(x)
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.act1(x)
        x = self.conv2(x)
        x = self.bn2(x)
        if not torch.jit.is_scripting() and isinstance(self.drop_path, ShakeDrop):
            # ShakeDrop and the shortcut addition in one pass, in place in the BN output.
            x = self.drop_path.add_to_shortcut(x, shortcut)
        else:
            x = self.drop_path(x)
            x = add_padded_shortcut(x, shortcut)
        return self.act2(x)


class CifarPreActBottleneck(nn.Module):
    """Pre-activation bottleneck with a BN added at the end of the branch, for ShakeDrop.

    BN, ReLU, 1x1 conv, BN, ReLU, 3x3 conv (stride s), BN, ReLU, 1x1 conv to 4x, BN, ShakeDrop, plus the
    option-A shortcut of the unit's input. The last BN is not part of He et al.'s pre-activation unit: the
    ShakeDrop paper found that a ResNet branch needs a BN at its end for ShakeDrop with alpha in [-1, 1] to
    train. With `preact=False` the unit starts at the first conv, because the network's stem already applied
    BN and ReLU to the input of both paths (He et al.'s rule for the unit after the first conv).
    """
    expansion = 4

    def __init__(
            self,
            in_chs: int,
            chs: int,
            stride: int = 1,
            drop_path: nn.Module | None = None,
            preact: bool = True,
            norm_layer: Callable = nn.BatchNorm2d,
            act_layer: Callable = nn.ReLU,
            device=None,
            dtype=None,
    ):
        dd = dict(device=device, dtype=dtype)
        super().__init__()
        out_chs = chs * self.expansion
        # The in-place ReLU must not run on the unit's input, which is also the shortcut, so both go together.
        self.bn1 = norm_layer(in_chs, **dd) if preact else nn.Identity()
        self.act1 = act_layer(inplace=True) if preact else nn.Identity()
        self.conv1 = nn.Conv2d(in_chs, chs, 1, bias=False, **dd)
        self.bn2 = norm_layer(chs, **dd)
        self.act2 = act_layer(inplace=True)
        self.conv2 = nn.Conv2d(chs, chs, 3, stride=stride, padding=1, bias=False, **dd)
        self.bn3 = norm_layer(chs, **dd)
        self.act3 = act_layer(inplace=True)
        self.conv3 = nn.Conv2d(chs, out_chs, 1, bias=False, **dd)
        self.bn4 = norm_layer(out_chs, **dd)
        self.drop_path = drop_path if drop_path is not None else nn.Identity()
        self.downsample = StrideSubsample(stride) if stride != 1 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.downsample(x)
        x = self.bn1(x)
        x = self.act1(x)
        x = self.conv1(x)
        x = self.bn2(x)
        x = self.act2(x)
        x = self.conv2(x)
        x = self.bn3(x)
        x = self.act3(x)
        x = self.conv3(x)
        x = self.bn4(x)
        if not torch.jit.is_scripting() and isinstance(self.drop_path, ShakeDrop):
            # ShakeDrop and the shortcut addition in one pass, in place in the BN output.
            return self.drop_path.add_to_shortcut(x, shortcut)
        x = self.drop_path(x)
        return add_padded_shortcut(x, shortcut)


_CIFAR_BLOCKS = {'basic': CifarBasicBlock, 'preact_bottleneck': CifarPreActBottleneck}


class CifarResNet(nn.Module):
    """He et al.'s CIFAR ResNet with zero-padded identity shortcuts and ShakeDrop in every residual unit.

    Stem: 3x3 conv, BN, ReLU. Stages of `channels` widths, stride 1 then 2. Basic units are post-activation
    (ReLU after the addition, no final norm). With pre-activation bottleneck units the network ends in BN and ReLU.

    Args:
        layers: Number of units in each stage.
        block: 'basic' or 'preact_bottleneck'.
        channels: Branch width of each stage (the output of a bottleneck is 4x that).
        stem_chs: Output channels of the stem conv.
        num_classes: Number of classifier outputs; 0 removes the classifier.
        in_chans: Number of input image channels.
        global_pool: Global pooling type of the head.
        drop_rate: Dropout rate before the classifier.
        drop_path_rate: ShakeDrop's 1 - p_L, the drop probability of the last unit; None takes 0.5 and lets
            loaded weights set the rates. 0 builds the plain ResNet.
        drop_block_rate: Accepted as None or 0 only, for timm's train.py.
        bn_momentum: Momentum of every BN; None keeps PyTorch's 0.1.
        bn_eps: Epsilon of every BN; None keeps PyTorch's 1e-5.
        shakedrop_alpha_range: Bounds of ShakeDrop's forward coefficient alpha.
        shakedrop_beta_range: Bounds of ShakeDrop's backward coefficient beta.
        shakedrop_level: Granularity of alpha and beta: 'batch', 'sample', 'channel' or 'pixel'.
        shakedrop_gate_level: Granularity of the gate: 'batch' or 'sample'; None matches `shakedrop_level`.
        drop_path_layer: Factory `f(drop_prob) -> nn.Module` replacing ShakeDrop, for example timm's DropPath.
        device: Device of the parameters and buffers.
        dtype: Dtype of the parameters.
    """

    def __init__(
            self,
            layers: tuple[int, ...] = (3, 3, 3),
            block: str = 'basic',
            channels: tuple[int, ...] = (16, 32, 64),
            stem_chs: int = 16,
            num_classes: int = 10,
            in_chans: int = 3,
            global_pool: str = 'avg',
            drop_rate: float = 0.0,
            drop_path_rate: float | None = None,
            drop_block_rate: float | None = None,
            bn_momentum: float | None = None,
            bn_eps: float | None = None,
            shakedrop_alpha_range: tuple[float, float] = (-1.0, 1.0),
            shakedrop_beta_range: tuple[float, float] = (0.0, 1.0),
            shakedrop_level: str = 'sample',
            shakedrop_gate_level: str | None = None,
            drop_path_layer: Callable[[float], nn.Module] | None = None,
            device=None,
            dtype=None,
    ):
        dd = dict(device=device, dtype=dtype)
        super().__init__()
        if block not in _CIFAR_BLOCKS:
            raise ValueError(f'`block` must be one of {tuple(_CIFAR_BLOCKS)}, got {block!r}.')
        if not layers or any(int(n) < 1 for n in layers):
            raise ValueError(f'`layers` must list at least one unit per stage, got {layers}.')
        if len(channels) != len(layers):
            raise ValueError(
                f'`channels` must give one width per stage of `layers` {tuple(layers)}, got {tuple(channels)}.')
        check_drop_block_rate(drop_block_rate)
        rate_is_explicit = drop_path_rate is not None
        drop_path_rate = resolve_drop_path_rate(drop_path_rate)
        block_cls = _CIFAR_BLOCKS[block]
        preact = block_cls is CifarPreActBottleneck
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.grad_checkpointing = False

        norm_layer = partial(nn.BatchNorm2d, **_bn_kwargs(bn_momentum, bn_eps))
        if drop_path_layer is None:
            drop_path_layer = _shake_drop_factory(
                shakedrop_alpha_range, shakedrop_beta_range, shakedrop_level, shakedrop_gate_level, device)

        # Stem
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, stem_chs, 3, padding=1, bias=False, **dd),
            norm_layer(stem_chs, **dd),
            nn.ReLU(inplace=True),
        )

        # Stages
        num_units = sum(int(n) for n in layers)
        drop_probs = [1.0 - p for p in shake_drop_keep_probs(num_units, drop_path_rate)]
        in_chs = stem_chs
        unit_idx = 0
        reduction = 1
        stages = []
        self.feature_info = []
        for stage_idx, (depth, chs) in enumerate(zip(layers, channels, strict=True)):
            stride = 1 if stage_idx == 0 else 2
            blocks = []
            for block_idx in range(int(depth)):
                # The stem's BN and ReLU are the first unit's pre-activation, shared with its shortcut.
                block_kwargs = dict(preact=unit_idx > 0) if preact else {}
                blocks.append(block_cls(
                    in_chs,
                    chs,
                    stride=stride if block_idx == 0 else 1,
                    drop_path=drop_path_layer(drop_probs[unit_idx]),
                    norm_layer=norm_layer,
                    **block_kwargs,
                    **dd,
                ))
                in_chs = chs * block_cls.expansion
                unit_idx += 1
            reduction *= stride
            stages.append(nn.Sequential(*blocks))
            self.feature_info.append(dict(num_chs=in_chs, reduction=reduction, module=f'stages.{stage_idx}'))
        self.stages = nn.Sequential(*stages)
        self.num_features = in_chs

        # Head: pre-activation units leave the last addition unnormalized, so BN and ReLU close the network.
        self.norm = nn.Sequential(norm_layer(in_chs, **dd), nn.ReLU(inplace=True)) if preact else nn.Identity()
        self.head = ClassifierHead(in_chs, num_classes, pool_type=global_pool, drop_rate=drop_rate, **dd)
        self.head_hidden_size = self.head.num_features

        self.init_weights()
        configure_keep_prob_loading(self, rate_is_explicit, drop_path_rate)

    @torch.no_grad()
    def init_weights(self) -> None:
        """Initialize conv weights He-normal (fan out), BN weights to 1 and BN biases to 0, but not the classifier."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode='fan_out', nonlinearity='relu')
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
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

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        # After a reset to 0 classes the head has no parameters left to take the device and dtype from.
        self.head.reset(num_classes, pool_type=global_pool, **get_device_dtype(self))
        self.head_hidden_size = self.head.num_features

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: int | list[int] | None = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Run the network and return the outputs of the stages.

        Args:
            x: Input images.
            indices: Stage indices to return (into `feature_info`); an int takes the last n, None all.
            norm: Apply the final norm to the last feature when it is the output of the last stage.
            stop_early: Stop after the last requested stage.
            output_fmt: Only 'NCHW'.
            intermediates_only: Return only the features.
        """
        if output_fmt != 'NCHW':
            raise ValueError(f"`output_fmt` must be 'NCHW', got {output_fmt!r}.")
        intermediates = []
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        last_stage = len(self.stages) - 1

        x = self.stem(x)
        if torch.jit.is_scripting() or not stop_early:
            stages = self.stages
        else:
            stages = self.stages[:max_index + 1]
        for stage_idx, stage in enumerate(stages):
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint_seq(stage, x)
            else:
                x = stage(x)
            if stage_idx in take_indices:
                intermediates.append(self.norm(x) if norm and stage_idx == last_stage else x)

        if intermediates_only:
            return intermediates
        if len(stages) == len(self.stages):
            x = self.norm(x)
        return x, intermediates

    def prune_intermediate_layers(
            self,
            indices: int | list[int] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> list[int]:
        """Remove the stages after the last stage in `indices`, and optionally the final norm and the head.

        Pruning stages also removes the final norm and the classifier, which are sized for the last stage.
        """
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        pruned_end = max_index < len(self.stages) - 1
        self.stages = self.stages[:max_index + 1]
        if prune_norm or pruned_end:
            self.norm = nn.Identity()
        if pruned_end:
            self.num_features = self.feature_info[max_index]['num_chs']
            self.head.reset(0, pool_type='', in_features=self.num_features)
            self.num_classes = 0
            self.head_hidden_size = self.head.num_features
        elif prune_head:
            self.reset_classifier(0, '')
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
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


class ShakeDropResNet(ResNet):
    """timm's ResNet / ResNeXt with ShakeDrop in the drop-path slot of every residual block.

    timm's blocks apply `drop_path` after the last BN of the branch (and after SE attention where configured),
    before the addition and the block's final ReLU, which is where ShakeDrop belongs. This class builds timm's
    network without stochastic depth and puts a ShakeDrop layer into that slot of every block, block 0 of each
    stage included. Parameters, their names and shapes equal timm's. The state dict adds one `keep_prob`
    buffer per block (`layerN.M.drop_path.keep_prob`). timm's own ResNet weights lack these buffers and still
    load. Other keyword arguments go to timm's `ResNet`, whose DropBlock (`drop_block_rate`) and
    `zero_init_last` (zero-initialized weight of each block's last BN) keep timm's behaviour.

    Args:
        block: timm's `BasicBlock` or `Bottleneck`.
        layers: Number of blocks in each of the 4 stages.
        stem_type: timm's stem types, or 'cifar' for a 3x3 stride-1 conv stem without max pool (32x32 input).
        output_stride: timm's output stride; only 32 with the 'cifar' stem.
        drop_path_rate: ShakeDrop's 1 - p_L, the drop probability of the last block; None takes 0.5 and lets
            loaded weights set the rates. 0 builds timm's plain network.
        bn_momentum: Momentum of every BN; None keeps PyTorch's 0.1.
        bn_eps: Epsilon of every BN; None keeps PyTorch's 1e-5.
        shakedrop_alpha_range: Bounds of ShakeDrop's forward coefficient alpha.
        shakedrop_beta_range: Bounds of ShakeDrop's backward coefficient beta.
        shakedrop_level: Granularity of alpha and beta: 'batch', 'sample', 'channel' or 'pixel'.
        shakedrop_gate_level: Granularity of the gate: 'batch' or 'sample'; None matches `shakedrop_level`.
        drop_path_layer: Factory `f(drop_prob) -> nn.Module` replacing ShakeDrop, for example timm's DropPath.
        device: Device of the parameters and buffers.
        dtype: Dtype of the parameters.
        **kwargs: timm `ResNet` arguments (num_classes, in_chans, global_pool, drop_rate, cardinality, ...).
    """

    def __init__(
            self,
            block: type = Bottleneck,
            layers: tuple[int, ...] = (3, 4, 6, 3),
            stem_type: str = '',
            output_stride: int = 32,
            drop_path_rate: float | None = None,
            bn_momentum: float | None = None,
            bn_eps: float | None = None,
            shakedrop_alpha_range: tuple[float, float] = (-1.0, 1.0),
            shakedrop_beta_range: tuple[float, float] = (0.0, 1.0),
            shakedrop_level: str = 'sample',
            shakedrop_gate_level: str | None = None,
            drop_path_layer: Callable[[float], nn.Module] | None = None,
            device=None,
            dtype=None,
            **kwargs,
    ):
        dd = dict(device=device, dtype=dtype)
        cifar_stem = stem_type == 'cifar'
        if cifar_stem and output_stride != 32:
            raise ValueError(f"`output_stride` must be 32 with stem_type='cifar', got {output_stride}.")
        if kwargs.get('drop_block_rate') is None:
            kwargs.pop('drop_block_rate', None)
        rate_is_explicit = drop_path_rate is not None
        drop_path_rate = resolve_drop_path_rate(drop_path_rate)
        if drop_path_layer is None:
            drop_path_layer = _shake_drop_factory(
                shakedrop_alpha_range, shakedrop_beta_range, shakedrop_level, shakedrop_gate_level, device)
        super().__init__(
            block,
            layers,
            stem_type='' if cifar_stem else stem_type,
            output_stride=output_stride,
            drop_path_rate=0.,
            **kwargs,
            **dd,
        )

        if cifar_stem:
            # A 3x3 stride-1 stem keeps the full 32x32 resolution in the first stage, so every reduction is /4.
            stem_chs = self.bn1.num_features
            self.conv1 = nn.Conv2d(self.in_chans, stem_chs, 3, stride=1, padding=1, bias=False, **dd)
            nn.init.kaiming_normal_(self.conv1.weight, mode='fan_out', nonlinearity='relu')
            self.maxpool = nn.Identity()
            self.feature_info = [dict(num_chs=stem_chs, reduction=1, module='act1')] + [
                dict(info, reduction=info['reduction'] // 4) for info in self.feature_info[1:]]

        bn_kwargs = _bn_kwargs(bn_momentum, bn_eps)
        for module in self.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                for name, value in bn_kwargs.items():
                    setattr(module, name, value)

        # ShakeDrop in every block, with the linear rule over all blocks of the network.
        blocks = [b for stage in (self.layer1, self.layer2, self.layer3, self.layer4) for b in stage]
        keep_probs = shake_drop_keep_probs(len(blocks), drop_path_rate)
        for block_module, keep_prob in zip(blocks, keep_probs, strict=True):
            block_module.drop_path = drop_path_layer(1.0 - keep_prob)
        configure_keep_prob_loading(self, rate_is_explicit, drop_path_rate)


def _create_cifar_resnet(variant: str, pretrained: bool = False, **kwargs) -> CifarResNet:
    num_stages = len(kwargs.get('layers', (3, 3, 3)))
    return build_model_with_cfg(
        CifarResNet,
        variant,
        pretrained,
        feature_cfg=dict(flatten_sequential=True, out_indices=tuple(range(num_stages))),
        **kwargs,
    )


def _create_shakedrop_resnet(variant: str, pretrained: bool = False, **kwargs) -> ShakeDropResNet:
    return build_model_with_cfg(ShakeDropResNet, variant, pretrained, **kwargs)


_SHAKEDROP_PAPER = dict(paper_name='ShakeDrop Regularization for Deep Residual Learning', license='apache-2.0')


def _cifar_cfg(
        num_classes: int = 10,
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
        pool_size=(8, 8),
        first_conv: str = 'stem.0',
        classifier: str = 'head.fc',
        **kwargs,
) -> dict[str, Any]:
    return {
        'num_classes': num_classes,
        'input_size': (3, 32, 32),
        'pool_size': pool_size,
        'crop_pct': 1.0,
        'crop_mode': 'center',
        'interpolation': 'bilinear',
        'mean': mean,
        'std': std,
        'first_conv': first_conv,
        'classifier': classifier,
        **_SHAKEDROP_PAPER,
        **kwargs,
    }


def _imagenet_cfg(**kwargs) -> dict[str, Any]:
    return {
        'num_classes': 1000,
        'input_size': (3, 224, 224),
        'pool_size': (7, 7),
        'crop_pct': 0.875,
        'crop_mode': 'center',
        'interpolation': 'bilinear',
        'mean': IMAGENET_DEFAULT_MEAN,
        'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'conv1',
        'classifier': 'fc',
        **_SHAKEDROP_PAPER,
        **kwargs,
    }


_RESNET_IDS = ['arXiv:1802.02375', 'arXiv:1512.03385']
_PREACT_IDS = ['arXiv:1802.02375', 'arXiv:1603.05027']
_RESNEXT_IDS = ['arXiv:1802.02375', 'arXiv:1611.05431']

# Model arguments and extra cfg entries of each registered network, by name.
_CIFAR_ARCHS = {
    'shakedrop_resnet20_cifar': (dict(layers=(3, 3, 3), block='basic'), dict(paper_ids=_RESNET_IDS)),
    'shakedrop_resnet56_cifar': (dict(layers=(9, 9, 9), block='basic'), dict(paper_ids=_RESNET_IDS)),
    'shakedrop_resnet110_cifar': (dict(layers=(18, 18, 18), block='basic'), dict(paper_ids=_RESNET_IDS)),
    'shakedrop_resnet164_cifar': (
        dict(layers=(18, 18, 18), block='preact_bottleneck'), dict(paper_ids=_PREACT_IDS)),
}
_CIFAR_4STAGE_ARCHS = {
    'shakedrop_resnet18_cifar': dict(block=BasicBlock, layers=(2, 2, 2, 2)),
    'shakedrop_resnet34_cifar': dict(block=BasicBlock, layers=(3, 4, 6, 3)),
}
_IMAGENET_ARCHS = {
    'shakedrop_resnet50': (dict(block=Bottleneck, layers=(3, 4, 6, 3)), _RESNET_IDS),
    'shakedrop_resnet101': (dict(block=Bottleneck, layers=(3, 4, 23, 3)), _RESNET_IDS),
    'shakedrop_resnet152': (dict(block=Bottleneck, layers=(3, 8, 36, 3)), _RESNET_IDS),
    'shakedrop_resnext50_32x4d': (
        dict(block=Bottleneck, layers=(3, 4, 6, 3), cardinality=32, base_width=4), _RESNEXT_IDS),
}


def _default_cfgs() -> dict[str, dict[str, Any]]:
    cfgs = {}
    for name, (_, extra) in _CIFAR_ARCHS.items():
        cfgs[f'{name}.cifar10'] = _cifar_cfg(**extra)
        cfgs[f'{name}.cifar100'] = _cifar_cfg(num_classes=100, mean=CIFAR100_MEAN, std=CIFAR100_STD, **extra)
    four_stage = dict(pool_size=(4, 4), first_conv='conv1', classifier='fc', paper_ids=_RESNET_IDS)
    for name in _CIFAR_4STAGE_ARCHS:
        cfgs[f'{name}.cifar10'] = _cifar_cfg(**four_stage)
        cfgs[f'{name}.cifar100'] = _cifar_cfg(num_classes=100, mean=CIFAR100_MEAN, std=CIFAR100_STD, **four_stage)
    for name, (_, paper_ids) in _IMAGENET_ARCHS.items():
        cfgs[f'{name}.in1k'] = _imagenet_cfg(paper_ids=paper_ids)
    return cfgs


default_cfgs = generate_default_cfgs(_default_cfgs())


def _cifar_model(name: str, pretrained: bool, kwargs: dict[str, Any]) -> CifarResNet:
    model_args, _ = _CIFAR_ARCHS[name]
    return _create_cifar_resnet(name, pretrained=pretrained, **dict(model_args, **kwargs))


def _cifar_4stage_model(name: str, pretrained: bool, kwargs: dict[str, Any]) -> ShakeDropResNet:
    model_args = dict(_CIFAR_4STAGE_ARCHS[name], stem_type='cifar')
    return _create_shakedrop_resnet(name, pretrained=pretrained, **dict(model_args, **kwargs))


def _imagenet_model(name: str, pretrained: bool, kwargs: dict[str, Any]) -> ShakeDropResNet:
    model_args, _ = _IMAGENET_ARCHS[name]
    return _create_shakedrop_resnet(name, pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def shakedrop_resnet20_cifar(pretrained: bool = False, **kwargs) -> CifarResNet:
    """ResNet-20 for CIFAR (basic units, zero-padded shortcuts) with ShakeDrop."""
    return _cifar_model('shakedrop_resnet20_cifar', pretrained, kwargs)


@register_model
def shakedrop_resnet56_cifar(pretrained: bool = False, **kwargs) -> CifarResNet:
    """ResNet-56 for CIFAR (basic units, zero-padded shortcuts) with ShakeDrop."""
    return _cifar_model('shakedrop_resnet56_cifar', pretrained, kwargs)


@register_model
def shakedrop_resnet110_cifar(pretrained: bool = False, **kwargs) -> CifarResNet:
    """ResNet-110 for CIFAR (basic units, zero-padded shortcuts) with ShakeDrop."""
    return _cifar_model('shakedrop_resnet110_cifar', pretrained, kwargs)


@register_model
def shakedrop_resnet164_cifar(pretrained: bool = False, **kwargs) -> CifarResNet:
    """ResNet-164 for CIFAR (pre-activation bottlenecks with an added final BN in each branch) with ShakeDrop."""
    return _cifar_model('shakedrop_resnet164_cifar', pretrained, kwargs)


@register_model
def shakedrop_resnet18_cifar(pretrained: bool = False, **kwargs) -> ShakeDropResNet:
    """ResNet-18 for 32x32 input (3x3 stem, no max pool, projection shortcuts) with ShakeDrop."""
    return _cifar_4stage_model('shakedrop_resnet18_cifar', pretrained, kwargs)


@register_model
def shakedrop_resnet34_cifar(pretrained: bool = False, **kwargs) -> ShakeDropResNet:
    """ResNet-34 for 32x32 input (3x3 stem, no max pool, projection shortcuts) with ShakeDrop."""
    return _cifar_4stage_model('shakedrop_resnet34_cifar', pretrained, kwargs)


@register_model
def shakedrop_resnet50(pretrained: bool = False, **kwargs) -> ShakeDropResNet:
    """ResNet-50 (timm's ResNet) with ShakeDrop."""
    return _imagenet_model('shakedrop_resnet50', pretrained, kwargs)


@register_model
def shakedrop_resnet101(pretrained: bool = False, **kwargs) -> ShakeDropResNet:
    """ResNet-101 (timm's ResNet) with ShakeDrop."""
    return _imagenet_model('shakedrop_resnet101', pretrained, kwargs)


@register_model
def shakedrop_resnet152(pretrained: bool = False, **kwargs) -> ShakeDropResNet:
    """ResNet-152 (timm's ResNet) with ShakeDrop."""
    return _imagenet_model('shakedrop_resnet152', pretrained, kwargs)


@register_model
def shakedrop_resnext50_32x4d(pretrained: bool = False, **kwargs) -> ShakeDropResNet:
    """ResNeXt-50 32x4d (timm's ResNet) with ShakeDrop."""
    return _imagenet_model('shakedrop_resnext50_32x4d', pretrained, kwargs)
