"""PyramidNet family: architecture against the papers, parameter counts, and timm conformance."""
import logging
import subprocess
import sys

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import nn

from timm_shakedrop.layers import ShakeDrop
from timm_shakedrop.models import PyramidBasicBlock, PyramidBottleneck, PyramidNet, pyramid_widths

CIFAR_MODELS = [
    'shakedrop_pyramidnet20_a48',
    'shakedrop_pyramidnet56_a48',
    'shakedrop_pyramidnet110_a48',
    'shakedrop_pyramidnet110_a84',
    'shakedrop_pyramidnet110_a270',
    'shakedrop_pyramidnet164_a270',
    'shakedrop_pyramidnet200_a240',
    'shakedrop_pyramidnet236_a220',
    'shakedrop_pyramidnet272_a200',
    'shakedrop_pyramidnet272',
]
IMAGENET_MODELS = ['shakedrop_pyramidnet101_a360_imagenet', 'shakedrop_pyramidnet200_a300_imagenet']
ALL_MODELS = CIFAR_MODELS + IMAGENET_MODELS
SMALL = 'shakedrop_pyramidnet20_a48'

# Counts asserted by the widely used reference implementations: conv weights without bias, BN affine, FC.
PARAM_COUNTS = {
    'shakedrop_pyramidnet110_a48': (1_772_706, 1_778_556),
    'shakedrop_pyramidnet110_a84': (3_904_446, 3_913_536),
    'shakedrop_pyramidnet110_a270': (28_485_477, 28_511_307),
    'shakedrop_pyramidnet164_a270': (27_216_021, 27_319_071),
    'shakedrop_pyramidnet200_a240': (26_752_702, 26_844_952),
    'shakedrop_pyramidnet236_a220': (26_969_046, 27_054_096),
    'shakedrop_pyramidnet272_a200': (26_210_842, 26_288_692),
    'shakedrop_pyramidnet272': (26_210_842, 26_288_692),
}
IMAGENET_PARAM_COUNTS = {
    'shakedrop_pyramidnet101_a360_imagenet': 42_455_070,
    'shakedrop_pyramidnet200_a300_imagenet': 62_368_168,
}
FEATURE_WIDTHS = {
    'shakedrop_pyramidnet110_a48': 64,
    'shakedrop_pyramidnet110_a84': 100,
    'shakedrop_pyramidnet110_a270': 286,
    'shakedrop_pyramidnet164_a270': 1144,
    'shakedrop_pyramidnet200_a240': 1024,
    'shakedrop_pyramidnet236_a220': 944,
    'shakedrop_pyramidnet272_a200': 864,
    'shakedrop_pyramidnet101_a360_imagenet': 1696,
    'shakedrop_pyramidnet200_a300_imagenet': 1456,
}
DEPTHS = {
    'shakedrop_pyramidnet20_a48': 20, 'shakedrop_pyramidnet56_a48': 56, 'shakedrop_pyramidnet110_a48': 110,
    'shakedrop_pyramidnet110_a84': 110, 'shakedrop_pyramidnet110_a270': 110, 'shakedrop_pyramidnet164_a270': 164,
    'shakedrop_pyramidnet200_a240': 200, 'shakedrop_pyramidnet236_a220': 236, 'shakedrop_pyramidnet272_a200': 272,
    'shakedrop_pyramidnet272': 272,
}


def _num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _input_for(model_name: str, batch_size: int = 2) -> torch.Tensor:
    size = 64 if model_name.endswith('_imagenet') else 32
    return torch.randn(batch_size, 3, size, size)


@pytest.fixture(scope='module')
def small_model():
    torch.manual_seed(0)
    return timm.create_model(SMALL)


# Architecture

@pytest.mark.parametrize('model_name', list(PARAM_COUNTS))
@pytest.mark.parametrize('class_index', [0, 1])
def test_param_count_cifar(model_name, class_index):
    num_classes = (10, 100)[class_index]
    model = timm.create_model(model_name, num_classes=num_classes, device='meta')
    assert _num_params(model) == PARAM_COUNTS[model_name][class_index]


@pytest.mark.parametrize('model_name', list(IMAGENET_PARAM_COUNTS))
def test_param_count_imagenet(model_name):
    model = timm.create_model(model_name, device='meta')
    assert model.num_classes == 1000
    assert _num_params(model) == IMAGENET_PARAM_COUNTS[model_name]


@pytest.mark.parametrize('model_name', list(FEATURE_WIDTHS))
def test_feature_width(model_name):
    model = timm.create_model(model_name, device='meta')
    assert model.num_features == FEATURE_WIDTHS[model_name]
    assert model.head_hidden_size == FEATURE_WIDTHS[model_name]
    assert model.get_classifier().in_features == FEATURE_WIDTHS[model_name]


@pytest.mark.parametrize('model_name', CIFAR_MODELS)
def test_depth_rule(model_name):
    model = timm.create_model(model_name, device='meta')
    blocks = [m for m in model.modules() if isinstance(m, (PyramidBasicBlock, PyramidBottleneck))]
    layers_per_unit = 3 if isinstance(blocks[0], PyramidBottleneck) else 2
    # Depth counts the stem conv, the weighted layers of every unit, and the classifier.
    assert layers_per_unit * len(blocks) + 2 == DEPTHS[model_name]
    assert [len(stage) for stage in model.stages] == [len(blocks) // 3] * 3


def test_widths_follow_additive_rule():
    for num_units, alpha in ((54, 48), (90, 200), (78, 220)):
        widths = pyramid_widths(num_units, alpha, 16)
        assert widths == [round(16 + k * alpha / num_units) for k in range(1, num_units + 1)]


def test_unit_widths_in_model():
    model = timm.create_model('shakedrop_pyramidnet272', device='meta')
    blocks = [m for m in model.modules() if isinstance(m, PyramidBottleneck)]
    assert len(blocks) == 90
    for k, block in enumerate(blocks, start=1):
        assert block.conv1.out_channels == round(16 + k * 200 / 90)
        assert block.conv3.out_channels == 4 * round(16 + k * 200 / 90)
    # The first unit takes the 16-channel stem output, not 4 x 16.
    assert blocks[0].bn1.num_features == 16


def test_basic_unit_layout():
    model = timm.create_model(SMALL, device='meta')
    block = model.stages[1][0]
    children = list(block.named_children())
    names = [name for name, _ in children]
    assert names == ['bn1', 'conv1', 'bn2', 'act2', 'conv2', 'bn3', 'drop_path', 'downsample']
    assert block.conv1.stride == (2, 2)
    assert block.conv1.kernel_size == (3, 3)
    assert isinstance(block.downsample, nn.AvgPool2d)
    assert block.downsample.ceil_mode
    assert isinstance(block.drop_path, ShakeDrop)
    assert not any(isinstance(m, nn.ReLU) for m in model.stem.modules())


def test_bottleneck_unit_layout():
    model = timm.create_model('shakedrop_pyramidnet272', device='meta')
    block = model.stages[2][0]
    names = [name for name, _ in block.named_children()]
    assert names == ['bn1', 'conv1', 'bn2', 'act2', 'conv2', 'bn3', 'act3', 'conv3', 'bn4', 'drop_path', 'downsample']
    assert block.conv1.kernel_size == (1, 1)
    assert block.conv2.stride == (2, 2)
    assert block.conv3.kernel_size == (1, 1)


def test_imagenet_stem_layout():
    model = timm.create_model('shakedrop_pyramidnet101_a360_imagenet', device='meta')
    conv, bn, act = model.stem
    assert conv.kernel_size == (7, 7)
    assert conv.stride == (2, 2)
    assert conv.out_channels == 64
    assert isinstance(act, nn.ReLU)
    assert isinstance(model.stem_pool, nn.MaxPool2d)
    assert [len(stage) for stage in model.stages] == [3, 4, 23, 3]
    model = timm.create_model('shakedrop_pyramidnet200_a300_imagenet', device='meta')
    assert [len(stage) for stage in model.stages] == [3, 24, 36, 3]


@pytest.mark.parametrize('block_cls', [PyramidBasicBlock, PyramidBottleneck])
def test_shortcut_is_pooled_and_zero_padded(block_cls):
    """With the branch scaled to zero (keep 0, alpha mean 0), a unit outputs exactly its padded shortcut."""
    torch.manual_seed(0)
    block = block_cls(4, 6, stride=2, drop_path=ShakeDrop(1.0)).eval()
    x = torch.randn(2, 4, 7, 7)
    out = block(x)
    pooled = F.avg_pool2d(x, 2, stride=2, ceil_mode=True)
    out_chs = 6 * block_cls.expansion
    assert out.shape == (2, out_chs, 4, 4)
    torch.testing.assert_close(out[:, :4], pooled)
    assert torch.all(out[:, 4:] == 0)


def test_shortcut_not_scaled():
    """ShakeDrop scales the branch only: unit output minus the identity equals the scaled branch."""
    torch.manual_seed(0)
    block = PyramidBasicBlock(4, 4, drop_path=ShakeDrop(0.3)).eval()
    x = torch.randn(2, 4, 5, 5)
    branch_block = PyramidBasicBlock(4, 4, drop_path=nn.Identity()).eval()
    branch_block.load_state_dict(block.state_dict(), strict=False)
    full = branch_block(x)
    torch.testing.assert_close(block(x) - x, 0.7 * (full - x), rtol=1e-5, atol=1e-6)


def test_no_relu_after_addition(small_model):
    small_model.eval()
    outputs = []
    handle = small_model.stages[0][1].register_forward_hook(lambda m, i, o: outputs.append(o))
    with torch.no_grad():
        small_model(torch.randn(2, 3, 32, 32))
    handle.remove()
    assert (outputs[0] < 0).any()


def test_keep_probs_decay_linearly():
    model = timm.create_model('shakedrop_pyramidnet110_a48', device='meta')
    layers = [m for m in model.modules() if isinstance(m, ShakeDrop)]
    assert len(layers) == 54
    model = timm.create_model('shakedrop_pyramidnet110_a48')
    layers = [m for m in model.modules() if isinstance(m, ShakeDrop)]
    for unit, layer in enumerate(layers, start=1):
        assert layer.keep_prob.item() == pytest.approx(1 - unit / 54 * 0.5)
    assert layers[0].keep_prob.item() == pytest.approx(1 - 0.5 / 54)
    assert layers[-1].keep_prob.item() == pytest.approx(0.5)


def test_drop_path_rate_sets_final_keep_prob():
    model = timm.create_model(SMALL, drop_path_rate=0.2)
    layers = [m for m in model.modules() if isinstance(m, ShakeDrop)]
    assert layers[-1].keep_prob.item() == pytest.approx(0.8)


def test_drop_path_rate_zero_is_plain_network():
    torch.manual_seed(0)
    model = timm.create_model(SMALL, drop_path_rate=0.0).train()
    x = torch.randn(2, 3, 32, 32)
    torch.manual_seed(1)
    first = model(x)
    torch.manual_seed(2)
    second = model(x)
    # BN uses batch statistics in training, so with every gate kept the two passes agree.
    torch.testing.assert_close(first, second)


def test_drop_path_layer_factory():
    model = timm.create_model(SMALL, drop_path_layer=DropPath)
    assert not any(isinstance(m, ShakeDrop) for m in model.modules())
    assert sum(isinstance(m, DropPath) for m in model.modules()) == 9


# timm integration

def test_registered_names():
    names = timm.list_models('shakedrop_pyramidnet*')
    assert set(ALL_MODELS) <= set(names)


@pytest.mark.parametrize('model_name', CIFAR_MODELS)
def test_cifar_tags(model_name):
    tags = timm.list_models(model_name, include_tags=True)
    assert tags[0] == f'{model_name}.cifar10'
    assert f'{model_name}.cifar100' in tags
    assert timm.models.get_pretrained_cfg(model_name).num_classes == 10
    assert timm.models.get_pretrained_cfg(f'{model_name}.cifar100').num_classes == 100


@pytest.mark.parametrize('model_name', IMAGENET_MODELS)
def test_imagenet_tags(model_name):
    assert timm.list_models(model_name, include_tags=True) == [f'{model_name}.in1k']


def test_cifar100_tag_builds_100_classes():
    model = timm.create_model('shakedrop_pyramidnet20_a48.cifar100', device='meta')
    assert model.num_classes == 100
    assert model.pretrained_cfg['mean'] == pytest.approx((0.5071, 0.4865, 0.4409))


@pytest.mark.parametrize('model_name', ALL_MODELS)
def test_default_cfg_contract(model_name):
    """The config contract that timm's own test suite checks, on the meta device."""
    model = timm.create_model(model_name, device='meta')
    cfg = model.pretrained_cfg
    for key in ('input_size', 'pool_size', 'crop_pct', 'interpolation', 'mean', 'std', 'num_classes',
                'first_conv', 'classifier', 'license', 'paper_ids'):
        assert key in cfg, key
    assert 'hf_hub_id' not in cfg or not cfg['hf_hub_id']
    assert len(cfg['mean']) == 3
    assert len(cfg['std']) == 3
    assert cfg['num_classes'] == model.num_classes
    state_dict = model.state_dict()
    assert cfg['first_conv'] + '.weight' in state_dict
    assert cfg['classifier'] + '.weight' in state_dict
    assert state_dict[cfg['first_conv'] + '.weight'].shape[1] == 3
    features = model.forward_features(torch.empty(1, *cfg['input_size'], device='meta'))
    assert tuple(features.shape[-2:]) == tuple(cfg['pool_size'])
    assert features.shape[1] == model.num_features


@pytest.mark.parametrize('model_name', ALL_MODELS)
def test_forward_backward_all_params_get_grad(model_name):
    torch.manual_seed(0)
    model = timm.create_model(model_name).train()
    x = _input_for(model_name)
    out = model(x)
    assert out.shape == (2, model.num_classes)
    out.mean().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, f'{name} got no gradient'
    assert torch.isfinite(out).all()


def test_reset_classifier(small_model):
    small_model.eval()
    x = torch.randn(2, 3, 32, 32)
    small_model.reset_classifier(0)
    assert small_model(x).shape == (2, small_model.num_features)
    assert small_model.num_classes == 0
    small_model.reset_classifier(7)
    assert small_model(x).shape == (2, 7)
    small_model.reset_classifier(10)
    assert small_model.forward_head(small_model.forward_features(x), pre_logits=True).shape == (2, 64)


@pytest.mark.parametrize('model_name', [SMALL, 'shakedrop_pyramidnet101_a360_imagenet'])
def test_features_only_defaults(model_name):
    model = timm.create_model(model_name, features_only=True, device='meta')
    x = torch.empty(1, 3, *((64, 64) if model_name.endswith('_imagenet') else (32, 32)), device='meta')
    features = model(x)
    expected = 5 if model_name.endswith('_imagenet') else 3
    assert len(features) == expected
    assert [f.shape[1] for f in features] == model.feature_info.channels()
    reductions = model.feature_info.reduction()
    assert [x.shape[-1] // f.shape[-1] for f in features] == reductions
    if expected == 3:
        assert reductions == [1, 2, 4]
    else:
        assert reductions == [2, 4, 8, 16, 32]


def test_features_only_out_indices():
    model = timm.create_model(SMALL, features_only=True, out_indices=(1, 2))
    features = model(torch.randn(1, 3, 32, 32))
    assert [f.shape[1] for f in features] == [48, 64]


def test_forward_intermediates_matches_features(small_model):
    small_model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        final, intermediates = small_model.forward_intermediates(x)
        assert len(intermediates) == 3
        torch.testing.assert_close(final, small_model.forward_features(x))
        only = small_model.forward_intermediates(x, indices=[0, 2], intermediates_only=True)
        torch.testing.assert_close(only[0], intermediates[0])
        torch.testing.assert_close(only[1], intermediates[2])
        normed = small_model.forward_intermediates(x, indices=1, norm=True, intermediates_only=True)
        torch.testing.assert_close(normed[0], final)
        early = small_model.forward_intermediates(x, indices=[0], stop_early=True, intermediates_only=True)
        torch.testing.assert_close(early[0], intermediates[0])


def test_forward_intermediates_invalid_format(small_model):
    with pytest.raises(ValueError, match="`output_fmt` must be 'NCHW', got 'NHWC'"):
        small_model.forward_intermediates(torch.randn(1, 3, 32, 32), output_fmt='NHWC')


def test_prune_intermediate_layers():
    model = timm.create_model(SMALL).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        _, reference = model.forward_intermediates(x)
        taken = model.prune_intermediate_layers(indices=[1], prune_head=True)
        assert taken == [1]
        assert len(model.stages) == 2
        assert model.num_classes == 0
        features = model.forward_intermediates(x, indices=[1], intermediates_only=True)
        torch.testing.assert_close(features[0], reference[1])


def test_imagenet_forward_intermediates_include_stem():
    torch.manual_seed(0)
    model = timm.create_model('shakedrop_pyramidnet101_a360_imagenet', device='meta')
    final, intermediates = model.forward_intermediates(torch.empty(1, 3, 64, 64, device='meta'))
    assert [f.shape[1] for f in intermediates] == [info['num_chs'] for info in model.feature_info]
    assert intermediates[0].shape[1] == 64
    assert [f.shape[-1] for f in intermediates] == [32, 16, 8, 4, 2]
    assert intermediates[-1].shape[1] == 1696
    assert final.shape[1] == 1696


def test_group_matcher(small_model):
    from timm.models import group_parameters

    groups = group_parameters(small_model, small_model.group_matcher(coarse=False))
    # The stem, 9 units and the final norm, plus the head that falls in the last group.
    assert len(groups) >= 11
    coarse = group_parameters(small_model, small_model.group_matcher(coarse=True))
    assert len(coarse) < len(groups)


def test_torchscript_eval_matches_eager():
    torch.manual_seed(0)
    model = timm.create_model(SMALL, scriptable=True).eval()
    scripted = torch.jit.script(model)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x))
    scripted.train()
    out = scripted(x)
    out.mean().backward()
    assert all(p.grad is not None for p in scripted.parameters())


def test_fx_trace_matches_eager():
    torch.manual_seed(0)
    model = timm.create_model(SMALL).eval()
    traced = torch.fx.symbolic_trace(model)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), model(x))
    train_traced = torch.fx.symbolic_trace(model.train())
    torch.manual_seed(4)
    from_traced = train_traced(x)
    torch.manual_seed(4)
    torch.testing.assert_close(from_traced, model(x))
    from_traced.mean().backward()


def test_timm_fx_feature_extractor():
    from timm.models import create_feature_extractor

    model = timm.create_model(SMALL).eval()
    extractor = create_feature_extractor(model, {'stages.1': 'mid', 'norm': 'final'})
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = extractor(x)
        torch.testing.assert_close(out['final'], model.forward_features(x))
    assert out['mid'].shape == (2, 48, 16, 16)


def test_torch_export_eval():
    torch.manual_seed(0)
    model = timm.create_model(SMALL).eval()
    x = torch.randn(2, 3, 32, 32)
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), model(x))


def test_gradient_checkpointing_matches():
    torch.manual_seed(0)
    model = timm.create_model(SMALL).train()
    x = torch.randn(4, 3, 32, 32)
    target = torch.tensor([0, 1, 2, 3])

    def loss_and_grads():
        model.zero_grad()
        torch.manual_seed(123)
        loss = F.cross_entropy(model(x), target)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    loss_plain, grads_plain = loss_and_grads()
    model.set_grad_checkpointing(True)
    loss_ckpt, grads_ckpt = loss_and_grads()
    # BN running statistics differ after recomputation; loss and gradients must not.
    torch.testing.assert_close(loss_ckpt, loss_plain, rtol=0, atol=0)
    for plain, ckpt in zip(grads_plain, grads_ckpt, strict=True):
        torch.testing.assert_close(ckpt, plain, rtol=1e-6, atol=1e-7)


def test_gradient_checkpointing_intermediates():
    torch.manual_seed(0)
    model = timm.create_model(SMALL).train()
    model.set_grad_checkpointing(True)
    final, intermediates = model.forward_intermediates(torch.randn(2, 3, 32, 32))
    (final.mean() + intermediates[0].mean()).backward()
    assert model.stem[0].weight.grad is not None


def test_channels_last_and_autocast(small_model):
    model = small_model.train().to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 32, 32).to(memory_format=torch.channels_last)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = model(x)
    assert out.dtype == torch.bfloat16
    out.float().mean().backward()
    assert torch.isfinite(model.stem[0].weight.grad).all()
    model.to(memory_format=torch.contiguous_format)


def test_compile_fullgraph_training_step():
    """One compiled training step of the 20-layer network, with fresh ShakeDrop draws on every call."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = timm.create_model(SMALL).train()
    compiled = torch.compile(model, fullgraph=True)
    x = torch.randn(8, 3, 32, 32)
    first = compiled(x)
    first.mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    with torch.no_grad():
        second = compiled(x)
    assert not torch.allclose(first.detach(), second)


# Constructor arguments

def test_train_script_kwargs():
    model = timm.create_model(
        SMALL, pretrained=False, in_chans=1, num_classes=5, drop_rate=0.1, drop_path_rate=0.3,
        drop_block_rate=None, global_pool='max', bn_momentum=0.05, bn_eps=1e-3, scriptable=True,
    )
    assert model.stem[0].in_channels == 1
    assert model.num_classes == 5
    assert model.head.global_pool.pool_type == 'max'
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(m.momentum == 0.05 for m in norms)
    assert all(m.eps == 1e-3 for m in norms)
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 5)
    assert timm.create_model(SMALL, drop_block_rate=0.0).num_classes == 10


def test_device_and_dtype():
    model = timm.create_model(SMALL, dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in model.parameters())
    assert model(torch.randn(2, 3, 32, 32, dtype=torch.float64)).dtype == torch.float64
    meta = timm.create_model(SMALL, device='meta')
    assert all(p.is_meta for p in meta.parameters())
    assert all(b.is_meta for b in meta.buffers())


@pytest.mark.parametrize('kwargs, match', [
    (dict(drop_block_rate=0.1), r'`drop_block_rate` must be None or 0 .* got 0.1'),
    (dict(drop_path_rate=1.5), r'`drop_path_rate` must be in \[0, 1\] \(it is 1 - p_L\), got 1.5'),
    (dict(shakedrop_level='image'), r"`level` must be one of .* got 'image'"),
    (dict(shakedrop_alpha_range=(1, 0)), r'`alpha_range` must have alpha_min <= alpha_max, got \(1, 0\)'),
    (dict(recompute_norm='no'), r"`recompute_norm` must be True or False, got 'no'"),
])
def test_invalid_model_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        timm.create_model(SMALL, **kwargs)


@pytest.mark.parametrize('kwargs, match', [
    (dict(block='wide'), r"`block` must be one of \('basic', 'bottleneck'\), got 'wide'"),
    (dict(stem_type='tiny'), r"`stem_type` must be 'cifar' or 'imagenet', got 'tiny'"),
    (dict(layers=(3, 0, 3)), r'`layers` must list at least one unit per stage, got \(3, 0, 3\)'),
])
def test_invalid_architecture(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PyramidNet(**kwargs)


def test_pretrained_without_weights_raises():
    with pytest.raises(RuntimeError, match='No pretrained weights exist'):
        timm.create_model(SMALL, pretrained=True)


# Keep probabilities across saving and loading

def _eval_output(model, x):
    model.eval()
    with torch.no_grad():
        return model(x)


def test_rebuilt_model_without_rate_evaluates_as_saved(tmp_path):
    torch.manual_seed(0)
    trained = timm.create_model(SMALL, drop_path_rate=0.3)
    x = torch.randn(2, 3, 32, 32)
    expected = _eval_output(trained, x)
    path = tmp_path / 'weights.pth'
    torch.save(trained.state_dict(), path)
    rebuilt = timm.create_model(SMALL, checkpoint_path=str(path))
    torch.testing.assert_close(_eval_output(rebuilt, x), expected, rtol=0, atol=0)
    layers = [m for m in rebuilt.modules() if isinstance(m, ShakeDrop)]
    assert layers[-1].keep_prob.item() == pytest.approx(0.7)


def test_rebuilt_through_hub_format(tmp_path):
    """timm's Hub export drops drop_path_rate from model_args; the keep_prob buffers carry it."""
    torch.manual_seed(0)
    trained = timm.create_model(SMALL, drop_path_rate=0.3)
    x = torch.randn(2, 3, 32, 32)
    expected = _eval_output(trained, x)
    timm.models.save_for_hf(trained, str(tmp_path))
    rebuilt = timm.create_model(f'local-dir:{tmp_path}', pretrained=True)
    torch.testing.assert_close(_eval_output(rebuilt, x), expected, rtol=0, atol=0)


def test_explicit_rate_wins_when_loading(caplog):
    torch.manual_seed(0)
    state_dict = timm.create_model(SMALL, drop_path_rate=0.3).state_dict()
    model = timm.create_model(SMALL, drop_path_rate=0.1)
    with caplog.at_level(logging.INFO, logger='timm_shakedrop'):
        model.load_state_dict(state_dict)
    layers = [m for m in model.modules() if isinstance(m, ShakeDrop)]
    assert layers[-1].keep_prob.item() == pytest.approx(0.9)
    assert 'Kept the ShakeDrop rates of drop_path_rate=0.1' in caplog.text


def test_weights_without_keep_probs_load_with_warning(caplog):
    torch.manual_seed(0)
    state_dict = {k: v for k, v in timm.create_model(SMALL).state_dict().items() if not k.endswith('keep_prob')}
    model = timm.create_model(SMALL)
    with caplog.at_level(logging.WARNING, logger='timm_shakedrop'):
        result = model.load_state_dict(state_dict, strict=True)
    assert not result.missing_keys
    assert '9 of 9 ShakeDrop units found no `keep_prob`' in caplog.text
    assert 'drop_path_rate=0.5' in caplog.text
    layers = [m for m in model.modules() if isinstance(m, ShakeDrop)]
    assert layers[-1].keep_prob.item() == pytest.approx(0.5)


def test_import_with_warnings_as_errors():
    result = subprocess.run(
        [sys.executable, '-W', 'error', '-c', 'import timm_shakedrop, timm; timm.create_model("' + SMALL + '")'],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr


def test_whole_model_pickles_and_deepcopies(tmp_path, caplog):
    import copy

    torch.manual_seed(0)
    model = timm.create_model(SMALL, drop_path_rate=0.2)
    path = tmp_path / 'model.pt'
    torch.save(model, path)
    loaded = torch.load(path, weights_only=False)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(_eval_output(loaded, x), _eval_output(model, x), rtol=0, atol=0)
    # The copy's load hook reports on the copy's own units.
    clone = copy.deepcopy(model)
    state_dict = {k: v for k, v in model.state_dict().items() if not k.endswith('keep_prob')}
    with caplog.at_level(logging.INFO, logger='timm_shakedrop'):
        clone.load_state_dict(state_dict)
    assert '9 of 9 ShakeDrop units found no `keep_prob`' in caplog.text
    assert 'drop_path_rate=0.2 passed at creation' in caplog.text


@pytest.mark.parametrize('model_name', [SMALL, 'shakedrop_resnet20_cifar'])
def test_jit_trace_eval_matches_eager(model_name):
    """torch.jit.trace is what timm's onnx_export.py uses through torch.onnx.export(dynamo=False)."""
    torch.manual_seed(0)
    model = timm.create_model(model_name).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        traced = torch.jit.trace(model, x)
        other = torch.randn(3, 3, 32, 32)
        # The traced graph adds out of place where eager adds in place, so the two agree up to rounding.
        torch.testing.assert_close(traced(other), model(other), rtol=1e-5, atol=1e-5)
    kinds = {node.kind() for node in traced.inlined_graph.nodes()}
    assert 'prim::PythonOp' not in kinds


def test_missing_keep_probs_with_explicit_rate_only_informs(caplog):
    torch.manual_seed(0)
    state_dict = {k: v for k, v in timm.create_model(SMALL).state_dict().items() if not k.endswith('keep_prob')}
    model = timm.create_model(SMALL, drop_path_rate=0.0)
    with caplog.at_level(logging.INFO, logger='timm_shakedrop'):
        model.load_state_dict(state_dict)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not warnings
    assert 'use drop_path_rate=0.0 passed at creation' in caplog.text
