"""BN, ReLU and convolution with the BN output recomputed in the backward pass: equal results, less memory."""
import copy

import pytest
import timm
import torch
from torch import nn

from timm_shakedrop.layers import can_fuse_norm_act_conv, norm_act_conv
from timm_shakedrop.models.shakedrop_pyramidnet import PyramidBasicBlock, PyramidBottleneck


def _modules(in_chs=6, out_chs=8, stride=1, relu=True, momentum=0.1):
    torch.manual_seed(0)
    norm = nn.BatchNorm2d(in_chs, momentum=momentum)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    act = nn.ReLU(inplace=True) if relu else None
    conv = nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=1, bias=False)
    return norm, act, conv


def _one_by_one(x, norm, act, conv):
    x = norm(x)
    if act is not None:
        x = act(x)
    return conv(x)


# The recomputed BN output may differ from the forward one in the last bit, which sums of a few hundred
# products in the weight gradients carry to about 1e-5 relative.
TOLERANCE = dict(rtol=1e-4, atol=1e-5)


def _run(fn, x, norm, act, conv, steps=2):
    """Run `steps` training steps and return the outputs and the gradients of the last one."""
    for _ in range(steps):
        for p in (norm.weight, norm.bias, conv.weight):
            p.grad = None
        inp = x.detach().clone().requires_grad_(True)
        out = fn(inp, norm, act, conv)
        out.square().sum().backward()
    return out.detach(), inp.grad, norm.weight.grad, norm.bias.grad, conv.weight.grad


@pytest.mark.parametrize('relu', [True, False])
@pytest.mark.parametrize('stride', [1, 2])
@pytest.mark.parametrize('momentum', [0.1, None])
def test_fused_equals_modules(relu, stride, momentum):
    x = torch.randn(4, 6, 9, 9) * 2 + 1
    fused_mods = _modules(stride=stride, relu=relu, momentum=momentum)
    plain_mods = copy.deepcopy(fused_mods)
    assert can_fuse_norm_act_conv(x, *fused_mods)
    fused = _run(norm_act_conv, x, *fused_mods)
    plain = _run(_one_by_one, x, *plain_mods)
    for got, expected in zip(fused, plain, strict=True):
        torch.testing.assert_close(got, expected, **TOLERANCE)
    # Running statistics, including the cumulative average of momentum=None, advance as nn.BatchNorm2d's.
    torch.testing.assert_close(fused_mods[0].running_mean, plain_mods[0].running_mean)
    torch.testing.assert_close(fused_mods[0].running_var, plain_mods[0].running_var)
    assert fused_mods[0].num_batches_tracked.item() == 2
    assert plain_mods[0].num_batches_tracked.item() == 2


def test_fused_channels_last():
    x = torch.randn(4, 6, 8, 8).to(memory_format=torch.channels_last)
    fused_mods = _modules()
    plain_mods = copy.deepcopy(fused_mods)
    for mods in (fused_mods, plain_mods):
        mods[2].to(memory_format=torch.channels_last)
    fused = _run(norm_act_conv, x, *fused_mods)
    plain = _run(_one_by_one, x, *plain_mods)
    for got, expected in zip(fused, plain, strict=True):
        torch.testing.assert_close(got, expected, **TOLERANCE)


def test_fused_under_bf16_autocast():
    x = torch.randn(4, 6, 8, 8)
    fused_mods = _modules()
    plain_mods = copy.deepcopy(fused_mods)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        fused = _run(norm_act_conv, x, *fused_mods, steps=1)
        plain = _run(_one_by_one, x, *plain_mods, steps=1)
    assert fused[0].dtype == plain[0].dtype == torch.bfloat16
    for got, expected in zip(fused, plain, strict=True):
        assert got.dtype == expected.dtype
        # bfloat16 keeps 8 significant bits.
        torch.testing.assert_close(got.float(), expected.float(), rtol=0.05, atol=0.05)


def _saved_bytes(fn, *args):
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(*args)
    return sum(storages.values())


def test_fused_keeps_no_bn_output():
    x = torch.randn(8, 6, 16, 16, requires_grad=True)
    mods = _modules()
    fused = _saved_bytes(norm_act_conv, x, *mods)
    plain = _saved_bytes(_one_by_one, x, *mods)
    activation_bytes = x.numel() * x.element_size()
    # The modules one by one keep x and the BN output; the fused step keeps x and a few per-channel tensors.
    assert plain - fused >= activation_bytes
    assert fused < activation_bytes * 1.1


@pytest.mark.parametrize('case', ['eval', 'no_grad', 'gelu', 'sync_bn', 'conv_bias', 'padding_same'])
def test_fallback_cases(case):
    x = torch.randn(2, 6, 8, 8)
    norm, act, conv = _modules()
    if case == 'eval':
        norm.eval()
    elif case == 'gelu':
        act = nn.GELU()
    elif case == 'sync_bn':
        norm = nn.SyncBatchNorm(6)
    elif case == 'conv_bias':
        conv = nn.Conv2d(6, 8, 3, padding=1)
    elif case == 'padding_same':
        conv = nn.Conv2d(6, 8, 3, padding='same', bias=False)
    if case == 'no_grad':
        with torch.no_grad():
            assert not can_fuse_norm_act_conv(x, norm, act, conv)
        return
    assert not can_fuse_norm_act_conv(x, norm, act, conv)
    if case != 'sync_bn':  # SyncBatchNorm needs a process group in training mode
        torch.testing.assert_close(norm_act_conv(x, norm, act, conv), _one_by_one(x, norm, act, conv))


def _plain_forward(block, x):
    """The block's forward with every module called one by one."""
    shortcut = block.downsample(x)
    x = block.conv1(block.bn1(x))
    x = block.conv2(block.act2(block.bn2(x)))
    if isinstance(block, PyramidBottleneck):
        x = block.conv3(block.act3(block.bn3(x)))
        x = block.bn4(x)
    else:
        x = block.bn3(x)
    x = block.drop_path(x)
    extra = x.shape[1] - shortcut.shape[1]
    return x + torch.cat([shortcut, shortcut.new_zeros((shortcut.shape[0], extra) + shortcut.shape[2:])], 1)


@pytest.mark.parametrize('block_cls', [PyramidBasicBlock, PyramidBottleneck])
@pytest.mark.parametrize('stride', [1, 2])
def test_pyramid_blocks_equal_plain_forward(block_cls, stride):
    torch.manual_seed(0)
    block = block_cls(8, 12, stride=stride).train()
    reference = copy.deepcopy(block)
    x = torch.randn(4, 8, 8, 8)
    inputs = [x.clone().requires_grad_(True) for _ in range(2)]
    out = block(inputs[0])
    expected = _plain_forward(reference, inputs[1])
    torch.testing.assert_close(out, expected, **TOLERANCE)
    out.square().sum().backward()
    expected.square().sum().backward()
    torch.testing.assert_close(inputs[0].grad, inputs[1].grad, **TOLERANCE)
    for (name, param), ref_param in zip(block.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(param.grad, ref_param.grad, **TOLERANCE, msg=name)


def test_recompute_norm_off_keeps_bn_outputs():
    """PyramidNet-20 keeps about a third less for its backward pass than with `recompute_norm=False`."""
    torch.manual_seed(0)
    model = timm.create_model('shakedrop_pyramidnet20_a48', drop_path_rate=0.0).train()
    torch.manual_seed(0)
    keeping = timm.create_model('shakedrop_pyramidnet20_a48', drop_path_rate=0.0, recompute_norm=False).train()
    assert not any(b.recompute_norm for b in keeping.modules() if isinstance(b, PyramidBasicBlock))
    x = torch.randn(4, 3, 32, 32)
    assert _saved_bytes(model, x) < 0.75 * _saved_bytes(keeping, x)
    out, out_keeping = model(x), keeping(x)
    torch.testing.assert_close(out, out_keeping, **TOLERANCE)
    out.sum().backward()
    out_keeping.sum().backward()
    for param, param_keeping in zip(model.parameters(), keeping.parameters(), strict=True):
        torch.testing.assert_close(param.grad, param_keeping.grad, **TOLERANCE)
