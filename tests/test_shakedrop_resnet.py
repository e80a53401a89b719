"""ShakeDrop ResNet families: architecture against the papers, parameter counts, timm weights, timm conformance."""
import copy
import logging

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.layers import DropBlock2d, DropPath
from timm.models import create_feature_extractor, group_parameters
from torch import nn

from timm_shakedrop.layers import ShakeDrop
from timm_shakedrop.models import CifarResNet, ShakeDropResNet
from timm_shakedrop.models.shakedrop_resnet import CifarBasicBlock, CifarPreActBottleneck

CIFAR_3STAGE = [
    'shakedrop_resnet20_cifar',
    'shakedrop_resnet56_cifar',
    'shakedrop_resnet110_cifar',
    'shakedrop_resnet164_cifar',
]
CIFAR_4STAGE = ['shakedrop_resnet18_cifar', 'shakedrop_resnet34_cifar']
CIFAR_MODELS = CIFAR_3STAGE + CIFAR_4STAGE
# Each ImageNet model and the timm model whose parameters it must reproduce.
IMAGENET_MODELS = {
    'shakedrop_resnet50': 'resnet50',
    'shakedrop_resnet101': 'resnet101',
    'shakedrop_resnet152': 'resnet152',
    'shakedrop_resnext50_32x4d': 'resnext50_32x4d',
}
ALL_MODELS = CIFAR_MODELS + list(IMAGENET_MODELS)
SMALL = 'shakedrop_resnet20_cifar'
SMALL_TIMM_BASED = 'shakedrop_resnet18_cifar'
# Models that run on the CPU under FX, one per block type; the others are traced on the meta device. TorchScript runs
# the same ones except resnet50, which is scripted on the meta device. A ResNet-164 with one unit per stage
# (`_tiny_preact`) runs for the pre-activation bottleneck.
RUN_MODELS = [SMALL, SMALL_TIMM_BASED, 'shakedrop_resnet50']
META_ONLY_MODELS = [name for name in ALL_MODELS if name not in RUN_MODELS]
# Residual units per model: (6n + 2 - 2) / 2 for basic CIFAR nets, (9n + 2 - 2) / 3 for ResNet-164, sum(layers).
NUM_UNITS = {
    'shakedrop_resnet20_cifar': 9, 'shakedrop_resnet56_cifar': 27, 'shakedrop_resnet110_cifar': 54,
    'shakedrop_resnet164_cifar': 54, 'shakedrop_resnet18_cifar': 8, 'shakedrop_resnet34_cifar': 16,
    'shakedrop_resnet50': 16, 'shakedrop_resnet101': 33, 'shakedrop_resnet152': 50,
    'shakedrop_resnext50_32x4d': 16,
}


def _num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _input_for(model_name: str, batch_size: int = 2) -> torch.Tensor:
    size = 32 if model_name.endswith('_cifar') else 64
    return torch.randn(batch_size, 3, size, size)


@torch.no_grad()
def _randomize_norms(model: nn.Module) -> nn.Module:
    """Give every BN non-trivial statistics and affine terms (timm zero-initializes the last BN of a block)."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.weight.uniform_(0.5, 1.5)
            module.bias.uniform_(-0.2, 0.2)
            module.running_mean.normal_(0.0, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return model


class _Scale(nn.Module):
    """Multiply by a constant: the analytic evaluation of a ShakeDrop slot."""

    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale

    def forward(self, x):
        return x * self.scale


def _shake_drop_layers(model: nn.Module) -> list:
    return [m for m in model.modules() if isinstance(m, ShakeDrop)]


def _tiny_preact() -> CifarResNet:
    """ResNet-164's layout with one unit per stage, through timm's builder, for checks that run on the CPU."""
    torch.manual_seed(0)
    model = timm.create_model('shakedrop_resnet164_cifar', layers=(1, 1, 1))
    return _randomize_norms(model)


@pytest.fixture(scope='module')
def timm_resnet50():
    """timm's own ResNet-50, built locally with randomized BN terms, in eval mode."""
    torch.manual_seed(0)
    return _randomize_norms(timm.create_model('resnet50')).eval()


# Parameter counts, derived layer by layer (conv weights without bias, BN weight and bias, FC weight and bias).

def _basic_cifar_count(n: int, num_classes: int = 10) -> int:
    """He et al.'s CIFAR ResNet-(6n + 2) with zero-padded shortcuts, which have no parameters.

    Stem: 3x3 conv 3 -> 16 and a BN. Each unit of width c with input width c_in: 3x3 convs 9 * c_in * c and
    9 * c * c, two BNs of 2 * c each. Head: FC 64 -> classes with bias.
    """
    total = 9 * 3 * 16 + 2 * 16
    in_chs = 16
    for chs in (16, 32, 64):
        for _ in range(n):
            total += 9 * in_chs * chs + 9 * chs * chs + 4 * chs
            in_chs = chs
    return total + 64 * num_classes + num_classes


def _preact_bottleneck_count(n: int, num_classes: int = 10) -> int:
    """ResNet-(9n + 2) of pre-activation bottlenecks with the added final BN and zero-padded shortcuts.

    Stem: 3x3 conv 3 -> 16 and a BN (the first unit's pre-activation). Each unit of width w with input c_in:
    pre-activation BN 2 * c_in (not in unit 1), 1x1 conv c_in * w, BN 2w, 3x3 conv 9 w^2, BN 2w, 1x1 conv
    w * 4w, added BN 2 * 4w. Head: BN 2 * 256 and FC 256 -> classes with bias.
    """
    total = 9 * 3 * 16 + 2 * 16
    in_chs = 16
    first = True
    for width in (16, 32, 64):
        for _ in range(n):
            total += (0 if first else 2 * in_chs) + in_chs * width + 2 * width + 9 * width * width + 2 * width
            total += 4 * width * width + 8 * width
            in_chs = 4 * width
            first = False
    return total + 2 * 256 + 256 * num_classes + num_classes


def _cifar_4stage_count(blocks_per_stage, num_classes: int = 10) -> int:
    """The 4-stage ResNet-18/34 for 32x32 input: timm's basic blocks behind a 3x3 stem of 64 channels.

    Stem: 3x3 conv 3 -> 64 and a BN. Each block of width c with input c_in: 3x3 convs 9 * c_in * c and 9 * c * c,
    and two BNs of 2c. Where the shape changes, a 1x1 projection c_in * c with a BN of 2c. Head: FC 512 -> classes.
    """
    total = 9 * 3 * 64 + 2 * 64
    in_chs = 64
    for chs, depth in zip((64, 128, 256, 512), blocks_per_stage, strict=True):
        for _ in range(depth):
            total += 9 * in_chs * chs + 9 * chs * chs + 4 * chs
            if in_chs != chs:
                total += in_chs * chs + 2 * chs
            in_chs = chs
    return total + 512 * num_classes + num_classes


def test_param_count_formulas():
    # The two counts He et al.'s CIFAR ResNets are known by, and the others the same sums give.
    assert _basic_cifar_count(3) == 269_722
    assert _basic_cifar_count(18) == 1_727_962
    assert _basic_cifar_count(9) == 853_018
    assert _preact_bottleneck_count(18) == 1_677_402
    assert _cifar_4stage_count((2, 2, 2, 2)) == 11_173_962
    assert _cifar_4stage_count((3, 4, 6, 3)) == 21_282_122


@pytest.mark.parametrize('model_name, expected', [
    ('shakedrop_resnet20_cifar', 269_722),
    ('shakedrop_resnet56_cifar', 853_018),
    ('shakedrop_resnet110_cifar', 1_727_962),
    ('shakedrop_resnet164_cifar', 1_677_402),
    ('shakedrop_resnet18_cifar', 11_173_962),
    ('shakedrop_resnet34_cifar', 21_282_122),
])
def test_param_count_cifar(model_name, expected):
    assert _num_params(timm.create_model(model_name, device='meta')) == expected


@pytest.mark.parametrize('model_name, expected', [
    ('shakedrop_resnet20_cifar', _basic_cifar_count(3, 100)),
    ('shakedrop_resnet164_cifar', _preact_bottleneck_count(18, 100)),
    ('shakedrop_resnet18_cifar', _cifar_4stage_count((2, 2, 2, 2), 100)),
])
def test_param_count_cifar100(model_name, expected):
    model = timm.create_model(f'{model_name}.cifar100', device='meta')
    assert model.num_classes == 100
    assert _num_params(model) == expected


@pytest.mark.parametrize('model_name, expected', [
    ('shakedrop_resnet50', 25_557_032),
    ('shakedrop_resnet101', 44_549_160),
    ('shakedrop_resnet152', 60_192_808),
    ('shakedrop_resnext50_32x4d', 25_028_904),
])
def test_imagenet_params_equal_timm(model_name, expected):
    model = timm.create_model(model_name, device='meta')
    reference = timm.create_model(IMAGENET_MODELS[model_name], device='meta')
    assert _num_params(model) == expected
    assert _num_params(reference) == expected
    shapes = {k: v.shape for k, v in model.state_dict().items() if not k.endswith('.drop_path.keep_prob')}
    assert shapes == {k: v.shape for k, v in reference.state_dict().items()}
    keep_prob_keys = [k for k in model.state_dict() if k.endswith('.drop_path.keep_prob')]
    assert len(keep_prob_keys) == NUM_UNITS[model_name]


# Architecture

def test_basic_nets_have_no_projection():
    for model_name in ('shakedrop_resnet20_cifar', 'shakedrop_resnet110_cifar'):
        model = timm.create_model(model_name, device='meta')
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        assert all(conv.kernel_size == (3, 3) for conv in convs)
        assert [len(stage) for stage in model.stages] == [NUM_UNITS[model_name] // 3] * 3
        assert isinstance(model.norm, nn.Identity)


def test_basic_unit_matches_formula():
    """relu(p * bn2(conv2(relu(bn1(conv1(x))))) + [x[::2, ::2], 0]): option A shortcut, ShakeDrop before the add."""
    torch.manual_seed(0)
    block = _randomize_norms(CifarBasicBlock(4, 8, stride=2, drop_path=ShakeDrop(0.3))).eval()
    x = torch.randn(2, 4, 7, 7)
    with torch.no_grad():
        branch = F.relu(block.bn1(F.conv2d(x, block.conv1.weight, stride=2, padding=1)))
        branch = block.bn2(F.conv2d(branch, block.conv2.weight, padding=1))
        shortcut = torch.cat([x[:, :, ::2, ::2], torch.zeros(2, 4, 4, 4)], dim=1)
        expected = F.relu(0.7 * branch + shortcut)
        torch.testing.assert_close(block(x), expected)


@pytest.mark.parametrize('preact', [True, False])
def test_preact_bottleneck_matches_formula(preact):
    """p * bn4(conv3(relu(bn3(conv2(relu(bn2(conv1(pre(x))))))))) + padded shortcut, no ReLU after the add."""
    torch.manual_seed(0)
    block = CifarPreActBottleneck(8, 4, stride=2, drop_path=ShakeDrop(0.25), preact=preact)
    block = _randomize_norms(block).eval()
    x = torch.randn(2, 8, 7, 7)
    with torch.no_grad():
        branch = F.relu(block.bn1(x)) if preact else x
        branch = F.relu(block.bn2(F.conv2d(branch, block.conv1.weight)))
        branch = F.relu(block.bn3(F.conv2d(branch, block.conv2.weight, stride=2, padding=1)))
        branch = block.bn4(F.conv2d(branch, block.conv3.weight))
        shortcut = torch.cat([x[:, :, ::2, ::2], torch.zeros(2, 8, 4, 4)], dim=1)
        torch.testing.assert_close(block(x), 0.75 * branch + shortcut)
    assert block.bn4.num_features == 16


def test_resnet164_layout():
    model = timm.create_model('shakedrop_resnet164_cifar', device='meta')
    blocks = [m for m in model.modules() if isinstance(m, CifarPreActBottleneck)]
    assert len(blocks) == 54
    conv, bn, act = model.stem
    assert isinstance(bn, nn.BatchNorm2d)
    assert isinstance(act, nn.ReLU)
    # The stem's BN and ReLU are unit 1's pre-activation; every later unit has its own.
    assert isinstance(blocks[0].bn1, nn.Identity)
    assert all(isinstance(b.bn1, nn.BatchNorm2d) for b in blocks[1:])
    assert all(b.bn4.num_features == 4 * b.conv1.out_channels for b in blocks)
    assert [b.conv1.out_channels for b in (blocks[0], blocks[18], blocks[36])] == [16, 32, 64]
    assert isinstance(model.norm[0], nn.BatchNorm2d)
    assert model.num_features == 256


def test_cifar_4stage_layout():
    model = timm.create_model(SMALL_TIMM_BASED, device='meta')
    assert isinstance(model, ShakeDropResNet)
    assert model.conv1.kernel_size == (3, 3)
    assert model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, nn.Identity)
    assert model.layer1[0].downsample is None
    projection = model.layer2[0].downsample[0]
    assert projection.kernel_size == (1, 1)
    assert projection.stride == (2, 2)
    assert [len(getattr(model, f'layer{i}')) for i in range(1, 5)] == [2, 2, 2, 2]
    assert [len(getattr(timm.create_model('shakedrop_resnet34_cifar', device='meta'), f'layer{i}'))
            for i in range(1, 5)] == [3, 4, 6, 3]


def test_shakedrop_sits_after_last_bn():
    """In timm's blocks the slot's input is the last BN's output, and the ReLU comes after the addition."""
    torch.manual_seed(0)
    model = _randomize_norms(timm.create_model(SMALL_TIMM_BASED)).eval()
    captured = {}
    block = model.layer2[1]
    # Clones, because the block adds the shortcut into the slot's output in place.
    hooks = [
        block.bn2.register_forward_hook(lambda m, i, o: captured.update(bn=o.clone())),
        block.drop_path.register_forward_hook(
            lambda m, i, o: captured.update(slot_in=i[0].clone(), slot_out=o.clone())),
    ]
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32))
    for hook in hooks:
        hook.remove()
    torch.testing.assert_close(captured['slot_in'], captured['bn'])
    torch.testing.assert_close(captured['slot_out'], captured['bn'] * block.drop_path.keep_prob)


@pytest.mark.parametrize('model_name', ['shakedrop_resnet20_cifar', 'shakedrop_resnet164_cifar',
                                        'shakedrop_resnet18_cifar', 'shakedrop_resnet50'])
def test_keep_probs_decay_linearly(model_name):
    model = timm.create_model(model_name)
    layers = _shake_drop_layers(model)
    num_units = NUM_UNITS[model_name]
    assert len(layers) == num_units
    for unit, layer in enumerate(layers, start=1):
        assert layer.keep_prob.item() == pytest.approx(1 - unit / num_units * 0.5)


def test_timm_block0_gets_shakedrop():
    model = timm.create_model('shakedrop_resnet50', drop_path_rate=0.2, device='meta')
    assert isinstance(model.layer1[0].drop_path, ShakeDrop)
    assert isinstance(model.layer4[2].drop_path, ShakeDrop)
    model = timm.create_model('shakedrop_resnet50', drop_path_rate=0.2)
    assert model.layer1[0].drop_path.keep_prob.item() == pytest.approx(1 - 0.2 / 16)
    assert model.layer4[2].drop_path.keep_prob.item() == pytest.approx(0.8)


def test_drop_path_rate_zero_is_plain():
    torch.manual_seed(0)
    model = timm.create_model(SMALL, drop_path_rate=0.0).train()
    x = torch.randn(2, 3, 32, 32)
    torch.manual_seed(1)
    first = model(x)
    torch.manual_seed(2)
    torch.testing.assert_close(model(x), first)
    assert all(layer.keep_prob.item() == 1.0 for layer in _shake_drop_layers(model))


def test_training_draws_differ():
    torch.manual_seed(0)
    model = timm.create_model(SMALL).train()
    x = torch.randn(2, 3, 32, 32)
    assert not torch.allclose(model(x), model(x))
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)


def test_drop_path_layer_factory():
    model = timm.create_model(SMALL, drop_path_layer=DropPath)
    assert not _shake_drop_layers(model)
    assert sum(isinstance(m, DropPath) for m in model.modules()) == 9
    model = timm.create_model('shakedrop_resnet50', drop_path_layer=DropPath, device='meta')
    assert sum(isinstance(m, DropPath) for m in model.modules()) == 16


# timm's ResNet weights

def test_timm_weights_at_rate_zero_match_timm(timm_resnet50, tmp_path):
    """timm's resnet50 weights, loaded through timm's pretrained path, give timm's outputs at drop_path_rate=0."""
    path = tmp_path / 'resnet50.pth'
    torch.save(timm_resnet50.state_dict(), path)
    model = timm.create_model(
        'shakedrop_resnet50', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), drop_path_rate=0.0)
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), timm_resnet50(x), rtol=0, atol=0)


def test_timm_weights_at_default_rate_scale_branches(timm_resnet50, caplog):
    """Without a rate the blocks keep 0.5's keep probabilities: each branch is scaled by p_l in evaluation."""
    model = timm.create_model('shakedrop_resnet50')
    with caplog.at_level(logging.WARNING, logger='timm_shakedrop'):
        result = model.load_state_dict(timm_resnet50.state_dict(), strict=True)
    assert not result.missing_keys
    assert not result.unexpected_keys
    assert '16 of 16 ShakeDrop units found no `keep_prob`' in caplog.text
    assert 'drop_path_rate=0.5' in caplog.text

    reference = copy.deepcopy(timm_resnet50)
    blocks = [b for stage in (reference.layer1, reference.layer2, reference.layer3, reference.layer4) for b in stage]
    for unit, block in enumerate(blocks, start=1):
        block.drop_path = _Scale(1 - unit / 16 * 0.5)
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = model(x)
        torch.testing.assert_close(out, reference(x))
        assert not torch.allclose(out, timm_resnet50(x))


# Keep probabilities across saving and loading

def _eval_output(model, x):
    model.eval()
    with torch.no_grad():
        return model(x)


def test_loaded_keep_probs_win_without_rate():
    torch.manual_seed(0)
    trained = timm.create_model(SMALL, drop_path_rate=0.3)
    x = torch.randn(2, 3, 32, 32)
    expected = _eval_output(trained, x)
    rebuilt = timm.create_model(SMALL)
    rebuilt.load_state_dict(trained.state_dict())
    assert _shake_drop_layers(rebuilt)[-1].keep_prob.item() == pytest.approx(0.7)
    torch.testing.assert_close(_eval_output(rebuilt, x), expected, rtol=0, atol=0)


def test_explicit_rate_wins_when_loading(caplog):
    state_dict = timm.create_model(SMALL_TIMM_BASED, drop_path_rate=0.3).state_dict()
    model = timm.create_model(SMALL_TIMM_BASED, drop_path_rate=0.1)
    with caplog.at_level(logging.INFO, logger='timm_shakedrop'):
        model.load_state_dict(state_dict)
    assert _shake_drop_layers(model)[-1].keep_prob.item() == pytest.approx(0.9)
    assert 'Kept the ShakeDrop rates of drop_path_rate=0.1' in caplog.text


def test_weights_without_keep_probs_warn(caplog):
    state_dict = {k: v for k, v in timm.create_model(SMALL).state_dict().items() if not k.endswith('keep_prob')}
    model = timm.create_model(SMALL)
    with caplog.at_level(logging.WARNING, logger='timm_shakedrop'):
        model.load_state_dict(state_dict, strict=True)
    assert '9 of 9 ShakeDrop units found no `keep_prob`' in caplog.text


def test_hub_format_round_trip(tmp_path):
    """save_for_hf drops drop_path_rate from model_args; the keep_prob buffers and the ShakeDrop kwargs return."""
    torch.manual_seed(0)
    trained = timm.create_model(SMALL, drop_path_rate=0.3, shakedrop_alpha_range=(-0.5, 0.5))
    x = torch.randn(2, 3, 32, 32)
    expected = _eval_output(trained, x)
    timm.models.save_for_hf(trained, str(tmp_path), safe_serialization=True)
    rebuilt = timm.create_model(f'local-dir:{tmp_path}', pretrained=True)
    assert isinstance(rebuilt, CifarResNet)
    assert _shake_drop_layers(rebuilt)[0].alpha_range == (-0.5, 0.5)
    assert _shake_drop_layers(rebuilt)[-1].keep_prob.item() == pytest.approx(0.7)
    torch.testing.assert_close(_eval_output(rebuilt, x), expected, rtol=0, atol=0)


# timm integration

def test_registered_names():
    assert set(timm.list_models('shakedrop_resne*')) == set(ALL_MODELS)


@pytest.mark.parametrize('model_name', CIFAR_MODELS)
def test_cifar_tags(model_name):
    tags = timm.list_models(model_name, include_tags=True)
    assert tags == [f'{model_name}.cifar10', f'{model_name}.cifar100']
    assert timm.models.get_pretrained_cfg(model_name).num_classes == 10
    cifar100 = timm.models.get_pretrained_cfg(f'{model_name}.cifar100')
    assert cifar100.num_classes == 100
    assert cifar100.mean == pytest.approx((0.5071, 0.4865, 0.4409))


@pytest.mark.parametrize('model_name', list(IMAGENET_MODELS))
def test_imagenet_tags(model_name):
    assert timm.list_models(model_name, include_tags=True) == [f'{model_name}.in1k']


@pytest.mark.parametrize('model_name', ALL_MODELS)
def test_default_cfg_contract(model_name):
    """The config contract that timm's own test suite checks, on the meta device."""
    model = timm.create_model(model_name, device='meta')
    cfg = model.pretrained_cfg
    for key in ('input_size', 'pool_size', 'crop_pct', 'interpolation', 'mean', 'std', 'num_classes',
                'first_conv', 'classifier', 'license', 'paper_ids'):
        assert key in cfg, key
    assert not cfg.get('hf_hub_id')
    assert 'arXiv:1802.02375' in cfg['paper_ids']
    assert cfg['num_classes'] == model.num_classes
    state_dict = model.state_dict()
    assert cfg['first_conv'] + '.weight' in state_dict
    assert cfg['classifier'] + '.weight' in state_dict
    features = model.forward_features(torch.empty(1, *cfg['input_size'], device='meta'))
    assert tuple(features.shape[-2:]) == tuple(cfg['pool_size'])
    assert features.shape[1] == model.num_features
    pre_logits = model.forward_head(features, pre_logits=True)
    assert pre_logits.shape == (1, model.head_hidden_size)


@pytest.mark.parametrize('model_name', CIFAR_MODELS + ['shakedrop_resnet50'])
def test_forward_backward_all_params_get_grad(model_name):
    torch.manual_seed(0)
    model = timm.create_model(model_name, num_classes=7).train()
    out = model(_input_for(model_name))
    assert out.shape == (2, 7)
    out.mean().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, f'{name} got no gradient'
    assert torch.isfinite(out).all()


@pytest.mark.parametrize('model_name', ALL_MODELS)
def test_reset_classifier(model_name):
    model = timm.create_model(model_name, device='meta')
    size = model.pretrained_cfg['input_size']
    x = torch.empty(2, *size, device='meta')
    model.reset_classifier(0)
    assert model.num_classes == 0
    assert model(x).shape == (2, model.num_features)
    model.reset_classifier(0, '')
    assert model(x).shape == (2, model.num_features, *model.pretrained_cfg['pool_size'])
    model.reset_classifier(7, 'avg')
    assert model(x).shape == (2, 7)


@pytest.mark.parametrize('model_name', ALL_MODELS)
def test_features_only_defaults(model_name):
    model = timm.create_model(model_name, features_only=True, device='meta')
    size = 32 if model_name.endswith('_cifar') else 64
    features = model(torch.empty(1, 3, size, size, device='meta'))
    assert [f.shape[1] for f in features] == model.feature_info.channels()
    reductions = model.feature_info.reduction()
    assert [size // f.shape[-1] for f in features] == reductions
    if model_name in CIFAR_3STAGE:
        assert reductions == [1, 2, 4]
    elif model_name in CIFAR_4STAGE:
        assert reductions == [1, 1, 2, 4, 8]
    else:
        assert reductions == [2, 4, 8, 16, 32]


@pytest.mark.parametrize('model_name', [SMALL, SMALL_TIMM_BASED])
def test_features_only_runs(model_name):
    torch.manual_seed(0)
    model = timm.create_model(model_name, features_only=True, out_indices=(1, 2)).eval()
    with torch.no_grad():
        features = model(torch.randn(2, 3, 32, 32))
    assert [f.shape[1] for f in features] == model.feature_info.channels()
    assert len(features) == 2


@pytest.mark.parametrize('model_name', ALL_MODELS)
def test_forward_intermediates_shapes(model_name):
    model = timm.create_model(model_name, device='meta')
    size = 32 if model_name.endswith('_cifar') else 64
    final, intermediates = model.forward_intermediates(torch.empty(1, 3, size, size, device='meta'))
    assert [f.shape[1] for f in intermediates] == [info['num_chs'] for info in model.feature_info]
    assert [size // f.shape[-1] for f in intermediates] == [info['reduction'] for info in model.feature_info]
    assert final.shape[1] == model.num_features


@pytest.mark.parametrize('preact', [False, True])
def test_forward_intermediates_matches_features(preact):
    torch.manual_seed(0)
    model = _tiny_preact() if preact else _randomize_norms(timm.create_model(SMALL))
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        final, intermediates = model.forward_intermediates(x)
        assert len(intermediates) == 3
        torch.testing.assert_close(final, model.forward_features(x))
        only = model.forward_intermediates(x, indices=[0, 2], intermediates_only=True)
        torch.testing.assert_close(only[1], intermediates[2])
        normed = model.forward_intermediates(x, indices=1, norm=True, intermediates_only=True)
        torch.testing.assert_close(normed[0], final)
        early = model.forward_intermediates(x, indices=[1], stop_early=True, intermediates_only=True)
        torch.testing.assert_close(early[0], intermediates[1])


def test_forward_intermediates_invalid_format():
    model = timm.create_model(SMALL, device='meta')
    with pytest.raises(ValueError, match="`output_fmt` must be 'NCHW', got 'NHWC'"):
        model.forward_intermediates(torch.empty(1, 3, 32, 32, device='meta'), output_fmt='NHWC')


def test_prune_intermediate_layers():
    model = _tiny_preact().eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        _, reference = model.forward_intermediates(x)
        assert model.prune_intermediate_layers(indices=[1]) == [1]
        assert len(model.stages) == 2
        assert model.num_classes == 0
        assert model.num_features == 128
        features = model.forward_intermediates(x, indices=[1], intermediates_only=True)
        torch.testing.assert_close(features[0], reference[1])
        # The final BN is sized for the last stage, so it went with it.
        assert model(x).shape == (2, 128, 16, 16)


def test_group_matcher():
    model = timm.create_model(SMALL, device='meta')
    fine = group_parameters(model, model.group_matcher(coarse=False))
    assert len(fine) >= 10
    coarse = group_parameters(model, model.group_matcher(coarse=True))
    assert len(coarse) < len(fine)


@pytest.mark.parametrize('model_name', [SMALL, SMALL_TIMM_BASED, 'tiny_preact'])
def test_torchscript_matches_eager(model_name):
    torch.manual_seed(0)
    if model_name == 'tiny_preact':
        model = _tiny_preact().eval()
        model_name = 'shakedrop_resnet164_cifar'
    else:
        model = timm.create_model(model_name, scriptable=True).eval()
    scripted = torch.jit.script(model)
    x = _input_for(model_name)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x))
    if model_name == SMALL:
        scripted.train()
        scripted(x).mean().backward()
        assert all(p.grad is not None for p in scripted.parameters())


@pytest.mark.parametrize('model_name', META_ONLY_MODELS + ['shakedrop_resnet50'])
def test_torchscript_on_meta(model_name):
    model = timm.create_model(model_name, scriptable=True, device='meta').eval()
    scripted = torch.jit.script(model)
    x = _input_for(model_name, batch_size=1).to('meta')
    assert scripted(x).shape == (1, model.num_classes)


def _timm_fx_model(model: nn.Module) -> nn.Module:
    """Trace with timm's leaf modules and functions, returning the classifier output as 'out'."""
    return create_feature_extractor(model, {model.pretrained_cfg['classifier']: 'out'})


@pytest.mark.parametrize('model_name', RUN_MODELS + ['tiny_preact'])
def test_fx_matches_eager(model_name):
    torch.manual_seed(0)
    if model_name == 'tiny_preact':
        model = _tiny_preact().eval()
        model_name = 'shakedrop_resnet164_cifar'
    else:
        model = timm.create_model(model_name).eval()
    x = _input_for(model_name)
    fx_model = _timm_fx_model(model)
    with torch.no_grad():
        torch.testing.assert_close(fx_model(x)['out'], model(x), rtol=0, atol=0)
    if model_name in (SMALL, SMALL_TIMM_BASED):
        # The training graph keeps ShakeDrop's random step as one leaf call, so a seed reproduces the draws.
        model.train()
        fx_train = _timm_fx_model(model)
        torch.manual_seed(3)
        out = fx_train(x)['out']
        torch.manual_seed(3)
        torch.testing.assert_close(out, model(x))
        out.mean().backward()
        assert all(p.grad is not None for p in fx_train.parameters())


@pytest.mark.parametrize('model_name', META_ONLY_MODELS)
def test_fx_on_meta(model_name):
    model = timm.create_model(model_name, device='meta').eval()
    fx_model = _timm_fx_model(model)
    x = _input_for(model_name, batch_size=1).to('meta')
    assert fx_model(x)['out'].shape == (1, model.num_classes)


def test_gradient_checkpointing_matches():
    torch.manual_seed(0)
    model = timm.create_model(SMALL).train()
    x = torch.randn(2, 3, 32, 32)
    target = torch.tensor([0, 1])

    def loss_and_grads():
        model.zero_grad()
        torch.manual_seed(123)
        loss = F.cross_entropy(model(x), target)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    loss_plain, grads_plain = loss_and_grads()
    model.set_grad_checkpointing(True)
    loss_ckpt, grads_ckpt = loss_and_grads()
    # BN running statistics differ after the recomputation; loss and gradients must not.
    torch.testing.assert_close(loss_ckpt, loss_plain, rtol=0, atol=0)
    for plain, ckpt in zip(grads_plain, grads_ckpt, strict=True):
        torch.testing.assert_close(ckpt, plain, rtol=1e-5, atol=1e-6)


# Constructor arguments

@pytest.mark.parametrize('model_name', [SMALL, SMALL_TIMM_BASED])
def test_train_script_kwargs(model_name):
    model = timm.create_model(
        model_name, pretrained=False, in_chans=1, num_classes=5, drop_rate=0.1, drop_path_rate=0.3,
        drop_block_rate=None, global_pool='max', bn_momentum=0.05, bn_eps=1e-3, scriptable=True,
    )
    assert model.num_classes == 5
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(m.momentum == 0.05 for m in norms)
    assert all(m.eps == 1e-3 for m in norms)
    assert _shake_drop_layers(model)[-1].keep_prob.item() == pytest.approx(0.7)
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 5)


def test_imagenet_bn_kwargs_reach_every_bn():
    model = timm.create_model('shakedrop_resnext50_32x4d', bn_momentum=0.01, bn_eps=1e-4, device='meta')
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    # 1 stem BN, 3 per bottleneck, 1 per stage projection.
    assert len(norms) == 1 + 3 * 16 + 4
    assert all(m.momentum == 0.01 and m.eps == 1e-4 for m in norms)


def test_timm_drop_block_kept_on_timm_resnets():
    model = timm.create_model('shakedrop_resnet50', drop_block_rate=0.1, device='meta')
    assert isinstance(model.layer3[0].drop_block, DropBlock2d)
    assert isinstance(model.layer1[0].drop_block, nn.Identity)
    assert timm.create_model('shakedrop_resnet50', drop_block_rate=0.0, device='meta').num_classes == 1000


def test_device_and_dtype():
    model = timm.create_model(SMALL, dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in model.parameters())
    assert model(torch.randn(2, 3, 32, 32, dtype=torch.float64)).dtype == torch.float64
    for model_name in (SMALL, SMALL_TIMM_BASED):
        meta = timm.create_model(model_name, device='meta')
        assert all(p.is_meta for p in meta.parameters())
        assert all(b.is_meta for b in meta.buffers())


@pytest.mark.parametrize('model_name, kwargs, match', [
    (SMALL, dict(drop_block_rate=0.1), r'`drop_block_rate` must be None or 0 .* got 0.1'),
    (SMALL, dict(drop_path_rate=1.5), r'`drop_path_rate` must be in \[0, 1\] \(it is 1 - p_L\), got 1.5'),
    (SMALL_TIMM_BASED, dict(drop_path_rate=-0.1), r'`drop_path_rate` must be in \[0, 1\] .* got -0.1'),
    (SMALL, dict(shakedrop_level='image'), r"`level` must be one of .* got 'image'"),
    (SMALL_TIMM_BASED, dict(shakedrop_alpha_range=(1, 0)), r'`alpha_range` must have alpha_min <= alpha_max'),
    (SMALL_TIMM_BASED, dict(output_stride=16), r"`output_stride` must be 32 with stem_type='cifar', got 16"),
])
def test_invalid_model_arguments(model_name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        timm.create_model(model_name, device='meta', **kwargs)


@pytest.mark.parametrize('kwargs, match', [
    (dict(block='wide'), r"`block` must be one of \('basic', 'preact_bottleneck'\), got 'wide'"),
    (dict(layers=(3, 0, 3)), r'`layers` must list at least one unit per stage, got \(3, 0, 3\)'),
    (dict(channels=(16, 32)), r'`channels` must give one width per stage of `layers` \(3, 3, 3\), got \(16, 32\)'),
])
def test_invalid_architecture(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CifarResNet(device='meta', **kwargs)


def test_pretrained_without_weights_raises():
    with pytest.raises(RuntimeError, match='No pretrained weights exist'):
        timm.create_model(SMALL, pretrained=True)
