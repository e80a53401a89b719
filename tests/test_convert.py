"""apply_shakedrop on timm's resnet18, convnext_atto and a small ViT, and the slot search on hand-made blocks."""
import copy
import logging
import warnings

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.layers import BatchNormAct2d, DropPath
from timm.models import create_feature_extractor, load_checkpoint
from torch import nn

from timm_shakedrop import apply_shakedrop, find_residual_slots
from timm_shakedrop.layers import ShakeDrop

# Model name, timm kwargs, input size, number of residual branches, whether the branches end in a norm.
MODELS = {
    # At drop_path_rate 0.1 timm's ResNet has DropPath in blocks 1..7 and None in block 0.
    'resnet18': (dict(num_classes=10, drop_path_rate=0.1), 32, 8, True),
    'convnext_atto': (dict(num_classes=10), 32, 12, False),
    'vit': (dict(num_classes=10, img_size=32, patch_size=8, depth=3), 32, 6, False),
}


_PRISTINE = {}


def _create(name: str) -> nn.Module:
    """A fresh copy of the unconverted model, built once per test session."""
    if name not in _PRISTINE:
        _PRISTINE[name] = _build(name)
    return copy.deepcopy(_PRISTINE[name])


def _build(name: str) -> nn.Module:
    torch.manual_seed(0)
    kwargs = MODELS[name][0]
    model = timm.create_model('vit_tiny_patch16_224' if name == 'vit' else name, **kwargs)
    with torch.no_grad():
        for module in model.modules():
            # timm zero-initializes ResNet's last BN and ConvNeXt's layer scale; non-trivial branches make the
            # evaluation check meaningful.
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
            if getattr(module, 'gamma', None) is not None and isinstance(module.gamma, nn.Parameter):
                module.gamma.uniform_(0.5, 1.5)
    return model


def _input(name: str, batch_size: int = 2) -> torch.Tensor:
    size = MODELS[name][1]
    return torch.randn(batch_size, 3, size, size)


def _shake_drop_layers(model: nn.Module) -> list:
    return [m for m in model.modules() if isinstance(m, ShakeDrop)]


class _Scale(nn.Module):
    """Multiply by a constant: the analytic evaluation of a ShakeDrop slot."""

    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale

    def forward(self, x):
        return x * self.scale


def _hand_scaled(model: nn.Module, scales) -> nn.Module:
    """A copy of the unconverted model with each slot, in forward order, scaling by the given constant."""
    reference = copy.deepcopy(model)
    slots = find_residual_slots(reference)
    assert len(slots) == len(scales)
    for slot, scale in zip(slots, scales, strict=True):
        setattr(reference.get_submodule(slot.block_name), slot.slot_name, _Scale(scale))
    return reference


# Slot search

@pytest.mark.parametrize('name', list(MODELS))
def test_slots_found(name):
    model = _create(name)
    slots = find_residual_slots(model)
    _, _, num_branches, ends_in_norm = MODELS[name]
    assert len(slots) == num_branches
    assert all(slot.ends_in_norm == ends_in_norm for slot in slots)
    names = [slot.name for slot in slots]
    if name == 'resnet18':
        assert names[:3] == ['layer1.0.drop_path', 'layer1.1.drop_path', 'layer2.0.drop_path']
        assert model.layer1[0].drop_path is None
        assert isinstance(model.layer1[1].drop_path, DropPath)
    elif name == 'vit':
        assert names[:4] == ['blocks.0.drop_path1', 'blocks.0.drop_path2', 'blocks.1.drop_path1',
                             'blocks.1.drop_path2']
    else:
        assert names[0] == 'stages.0.blocks.0.drop_path'


class _Block(nn.Module):
    """A residual block whose branch ends in `last`, with a norm on the shortcut to be ignored."""

    def __init__(self, last: nn.Module, se: nn.Module = None):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.last = last
        if se is not None:
            self.se = se
        self.act = nn.ReLU()
        self.downsample = nn.Sequential(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4))
        self.drop_path = nn.Identity()

    def forward(self, x):
        branch = self.last(self.conv(x))
        if hasattr(self, 'se'):
            branch = self.se(branch)
        return self.act(self.drop_path(branch) + self.downsample(x))


@pytest.mark.parametrize('block, ends_in_norm', [
    (_Block(nn.BatchNorm2d(4)), True),
    (_Block(nn.GroupNorm(2, 4)), True),
    (_Block(BatchNormAct2d(4, apply_act=False)), True),
    (_Block(BatchNormAct2d(4, act_layer=nn.ReLU)), False),
    (_Block(nn.Sequential(nn.BatchNorm2d(4), nn.Dropout(0.1))), True),
    (_Block(nn.BatchNorm2d(4), se=nn.Sequential(nn.Conv2d(4, 4, 1), nn.Sigmoid())), False),
    (_Block(nn.Conv2d(4, 4, 1)), False),
])
def test_branch_end_detection(block, ends_in_norm):
    slots = find_residual_slots(block)
    assert len(slots) == 1
    assert slots[0].ends_in_norm == ends_in_norm


# Conversion

@pytest.mark.parametrize('name', list(MODELS))
def test_keep_probs_follow_linear_rule(name):
    model = apply_shakedrop(_create(name), drop_path_rate=0.4)
    layers = _shake_drop_layers(model)
    num_branches = MODELS[name][2]
    assert len(layers) == num_branches
    for branch, layer in enumerate(layers, start=1):
        assert layer.keep_prob.item() == pytest.approx(1 - branch / num_branches * 0.4)
    assert not any(isinstance(m, DropPath) for m in model.modules())


@pytest.mark.parametrize('name', list(MODELS))
def test_default_alpha_range(name):
    model = apply_shakedrop(_create(name))
    expected = (-1.0, 1.0) if MODELS[name][3] else (0.0, 0.0)
    assert all(layer.alpha_range == expected for layer in _shake_drop_layers(model))
    assert _shake_drop_layers(model)[-1].keep_prob.item() == pytest.approx(0.5)


def test_alpha_override_warns_without_norm():
    with pytest.warns(UserWarning, match=r'alpha_range=\(-1.0, 1.0\) is applied to 12 of 12 residual branches'):
        model = apply_shakedrop(_create('convnext_atto'), alpha_range=(-1.0, 1.0))
    assert all(layer.alpha_range == (-1.0, 1.0) for layer in _shake_drop_layers(model))


def test_alpha_override_silent_where_allowed():
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        apply_shakedrop(_create('resnet18'), alpha_range=(-0.5, 0.5))
        apply_shakedrop(_create('convnext_atto'), alpha_range=(0.0, 0.0))


@pytest.mark.parametrize('name, alpha_range', [
    ('resnet18', None),
    ('resnet18', (0.0, 0.5)),
    ('convnext_atto', None),
    ('vit', None),
])
def test_eval_output_equals_expectation(name, alpha_range):
    """Converted eval output equals the unconverted network with branch l scaled by p_l + (1 - p_l) mean(alpha)."""
    plain = _create(name).eval()
    num_branches = MODELS[name][2]
    if alpha_range is None:
        alpha_range = (-1.0, 1.0) if MODELS[name][3] else (0.0, 0.0)
    alpha_mean = 0.5 * (alpha_range[0] + alpha_range[1])
    keep_probs = [1 - branch / num_branches * 0.5 for branch in range(1, num_branches + 1)]
    reference = _hand_scaled(plain, [p + (1 - p) * alpha_mean for p in keep_probs])
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)
        converted = apply_shakedrop(copy.deepcopy(plain), drop_path_rate=0.5, alpha_range=alpha_range).eval()
    x = _input(name)
    with torch.no_grad():
        expected = reference(x)
        torch.testing.assert_close(converted(x), expected, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(plain(x), expected, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize('name', list(MODELS))
def test_training_step(name):
    model = apply_shakedrop(_create(name)).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x = _input(name)
    target = torch.tensor([0, 1])
    before = [p.detach().clone() for p in model.parameters()]
    loss = F.cross_entropy(model(x), target)
    loss.backward()
    assert torch.isfinite(loss)
    for param_name, param in model.named_parameters():
        assert param.grad is not None, f'{param_name} got no gradient'
    optimizer.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    with torch.no_grad():
        # Fresh draws on every call: two training passes differ, two evaluation passes do not.
        assert not torch.allclose(model(x), model(x))
        model.eval()
        torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)


def test_rate_zero_keeps_outputs():
    plain = _create('resnet18').eval()
    converted = apply_shakedrop(copy.deepcopy(plain), drop_path_rate=0.0).eval()
    x = _input('resnet18')
    with torch.no_grad():
        torch.testing.assert_close(converted(x), plain(x), rtol=0, atol=0)


def test_channel_level_on_feature_maps():
    model = apply_shakedrop(_create('convnext_atto'), level='channel')
    assert all(layer.level == 'channel' for layer in _shake_drop_layers(model))
    model.train()
    assert model(_input('convnext_atto')).shape == (2, 10)


def test_meta_device_model():
    model = timm.create_model('resnet18', device='meta')
    apply_shakedrop(model)
    assert all(layer.keep_prob.is_meta for layer in _shake_drop_layers(model))


# Errors

def test_no_slots_raises():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU())
    with pytest.raises(ValueError, match='apply_shakedrop found no residual branch slot in Sequential'):
        apply_shakedrop(model)


def test_converted_model_raises():
    model = apply_shakedrop(_create('resnet18'))
    with pytest.raises(ValueError, match=r"already contains ShakeDrop in 8 slots \(first: 'layer1.0.drop_path'\)"):
        apply_shakedrop(model)


def test_channel_level_on_tokens_raises():
    model = _create('vit')
    with pytest.raises(ValueError, match=r"level='channel' .* \(first slot: 'blocks.0.drop_path1'\)"):
        apply_shakedrop(model, level='channel')
    assert not _shake_drop_layers(model)


@pytest.mark.parametrize('kwargs, match', [
    (dict(drop_path_rate=1.5), r'`drop_path_rate` must be in \[0, 1\] \(it is 1 - p_L\), got 1.5'),
    (dict(alpha_range=(1.0, -1.0)), r'`alpha_range` must have alpha_min <= alpha_max, got \(1.0, -1.0\)'),
    (dict(beta_range=(0.0, 2.0)), r'`beta_range` must satisfy 0 <= beta_min <= beta_max <= 1, got \(0.0, 2.0\)'),
    (dict(level='image'), r"`level` must be one of .* got 'image'"),
])
def test_invalid_arguments_leave_model_unchanged(kwargs, match):
    model = _create('resnet18')
    with pytest.raises(ValueError, match=match):
        apply_shakedrop(model, **kwargs)
    assert not _shake_drop_layers(model)


# Scripting, tracing, compiling, exporting

def test_torchscript():
    model = apply_shakedrop(_create('resnet18')).eval()
    scripted = torch.jit.script(model)
    x = _input('resnet18')
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x))
    scripted.train()
    scripted(x).mean().backward()
    assert all(p.grad is not None for p in scripted.parameters())


@pytest.mark.parametrize('name', list(MODELS))
def test_timm_fx_tracer(name):
    model = apply_shakedrop(_create(name)).eval()
    classifier = model.pretrained_cfg['classifier']
    x = _input(name)
    traced = create_feature_extractor(model, {classifier: 'out'})
    with torch.no_grad():
        torch.testing.assert_close(traced(x)['out'], model(x), rtol=0, atol=0)
    if name != 'resnet18':
        return
    # The training graph keeps ShakeDrop's random step as one leaf call, so a seed reproduces the draws.
    model.train()
    traced_train = create_feature_extractor(model, {classifier: 'out'})
    torch.manual_seed(5)
    out = traced_train(x)['out']
    torch.manual_seed(5)
    torch.testing.assert_close(out, model(x))


def test_compile_fullgraph_training():
    """Dynamo captures the converted ViT in one graph and each call draws afresh.

    The aot_eager backend runs Dynamo and AOTAutograd (where ShakeDrop's autograd.Function is traced) without
    generating C++ kernels, the slow part of a first compile on a CPU.
    """
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = timm.create_model(
        'vit_tiny_patch16_224', num_classes=10, img_size=32, patch_size=8, depth=1, embed_dim=64, num_heads=2)
    model = apply_shakedrop(model).train()
    compiled = torch.compile(model, fullgraph=True, backend='aot_eager')
    x = _input('vit')
    first = compiled(x)
    first.mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    with torch.no_grad():
        assert not torch.allclose(first.detach(), compiled(x))


def test_torch_export_eval():
    model = apply_shakedrop(_create('convnext_atto')).eval()
    x = _input('convnext_atto')
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), model(x))


def test_hub_format_round_trip(tmp_path):
    """save_for_hf names the registered `shakedrop` architecture, and local-dir: rebuilds the converted model with
    the keep probabilities of the `keep_prob` buffers."""
    trained = apply_shakedrop(_create('resnet18'), drop_path_rate=0.3).eval()
    x = _input('resnet18')
    with torch.no_grad():
        expected = trained(x)
    timm.models.save_for_hf(trained, str(tmp_path), safe_serialization=True)

    rebuilt = timm.create_model(f'local-dir:{tmp_path}', pretrained=True).eval()
    assert _shake_drop_layers(rebuilt)[-1].keep_prob.item() == pytest.approx(0.7)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), expected, rtol=0, atol=0)

    # Without pretrained weights the rebuilt model is converted too, and loading a checkpoint restores the rates.
    fresh = timm.create_model(f'local-dir:{tmp_path}', pretrained=False)
    assert len(_shake_drop_layers(fresh)) == 8
    load_checkpoint(fresh, str(tmp_path / 'model.safetensors'))
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(x), expected, rtol=0, atol=0)


def test_unregistered_model_keeps_its_config():
    model = apply_shakedrop(_Block(nn.BatchNorm2d(4)))
    assert not hasattr(model, 'pretrained_cfg')
    assert not hasattr(model, '_model_args')


def test_explicit_rate_wins_when_loading(caplog):
    state_dict = apply_shakedrop(_create('resnet18'), drop_path_rate=0.3).state_dict()
    model = apply_shakedrop(_create('resnet18'), drop_path_rate=0.2)
    with caplog.at_level(logging.INFO, logger='timm_shakedrop'):
        model.load_state_dict(state_dict)
    assert _shake_drop_layers(model)[-1].keep_prob.item() == pytest.approx(0.8)
    assert 'Kept the ShakeDrop rates of drop_path_rate=0.2' in caplog.text
