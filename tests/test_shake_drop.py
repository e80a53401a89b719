"""ShakeDrop layer: statistics against the paper's formulas, levels, evaluation, export paths and errors.

Statistical checks use seeded draws; each tolerance is stated next to its assert in standard errors.
"""
import math

import pytest
import torch
from torch import nn

from timm_shakedrop.layers import (
    ShakeDrop,
    shake_drop,
    shake_drop_eval_scale,
    shake_drop_keep_probs,
)


def _coefficients(layer: nn.Module, x: torch.Tensor):
    """Run one training step of `layer` on `x` and return (forward coefficient, backward coefficient)."""
    x = x.detach().clone().requires_grad_(True)
    y = layer(x)
    y.backward(torch.ones_like(y))
    return (y / x).detach(), x.grad.detach()


def _sample_coefficients(drop_prob=0.5, num_samples=20000, seed=0, **kwargs):
    torch.manual_seed(seed)
    layer = ShakeDrop(drop_prob, **kwargs).train()
    x = torch.full((num_samples, 1, 1, 1), 2.0)
    forward_coef, backward_coef = _coefficients(layer, x)
    return forward_coef.flatten(), backward_coef.flatten()


@pytest.mark.parametrize('drop_prob', [0.1, 0.5, 0.75])
def test_keep_rate_equals_keep_prob(drop_prob):
    forward_coef, backward_coef = _sample_coefficients(drop_prob)
    kept = forward_coef == 1.0
    num_samples = kept.numel()
    keep_prob = 1.0 - drop_prob
    stderr = math.sqrt(keep_prob * (1 - keep_prob) / num_samples)
    # 5 standard errors of a Bernoulli mean over 20,000 draws.
    assert abs(kept.float().mean().item() - keep_prob) < 5 * stderr
    # The gate is shared by both passes: a kept sample has both coefficients exactly 1.
    assert torch.equal(kept, backward_coef == 1.0)


def test_forward_coefficient_range():
    forward_coef, _ = _sample_coefficients(0.5, alpha_range=(-1.0, 1.0))
    dropped = forward_coef[forward_coef != 1.0]
    assert dropped.min() >= -1.0
    assert dropped.max() <= 1.0
    # U[-1, 1] has mean 0 and standard deviation 1 / sqrt(3); 5 standard errors on the mean.
    assert abs(dropped.mean().item()) < 5 / math.sqrt(3 * dropped.numel())
    assert abs(dropped.std().item() - 1 / math.sqrt(3)) < 0.02


def test_forward_coefficient_custom_alpha_range():
    forward_coef, _ = _sample_coefficients(0.5, alpha_range=(-0.5, 0.25))
    dropped = forward_coef[forward_coef != 1.0]
    assert dropped.min() >= -0.5
    assert dropped.max() <= 0.25
    assert abs(dropped.mean().item() + 0.125) < 0.01


def test_backward_coefficient_range_and_independence():
    forward_coef, backward_coef = _sample_coefficients(0.5)
    dropped = forward_coef != 1.0
    beta = backward_coef[dropped]
    alpha = forward_coef[dropped]
    assert beta.min() >= 0.0
    assert beta.max() <= 1.0
    # U[0, 1] has mean 1/2 and standard deviation 1 / sqrt(12); 5 standard errors on the mean.
    assert abs(beta.mean().item() - 0.5) < 5 / math.sqrt(12 * beta.numel())
    # alpha and beta are drawn independently: their correlation over ~10,000 dropped samples is within
    # 5 standard errors (1 / sqrt(n)) of zero.
    correlation = torch.corrcoef(torch.stack([alpha, beta]))[0, 1].item()
    assert abs(correlation) < 5 / math.sqrt(beta.numel())


def test_draws_independent_across_samples():
    forward_coef, _ = _sample_coefficients(0.5)
    kept = (forward_coef == 1.0).float()
    # Neighbouring samples of one batch: the lag-1 correlation of the gate is within 5 standard errors of 0.
    correlation = torch.corrcoef(torch.stack([kept[:-1], kept[1:]]))[0, 1].item()
    assert abs(correlation) < 5 / math.sqrt(kept.numel())
    dropped = forward_coef[forward_coef != 1.0]
    # float32 draws repeat by chance (about 2**-23 per pair), so allow 1% repeats among 10,000 values.
    assert dropped.unique().numel() > 0.99 * dropped.numel()


def test_compiled_draws_equal_eager_draws():
    """torch.compile draws through one opaque operator: the same generator, so the same values as eager mode."""
    torch._dynamo.reset()
    layer = ShakeDrop(0.25, alpha_range=(-0.5, 0.25), beta_range=(0.25, 0.75)).train()
    x = torch.full((2000, 1, 1, 1), 2.0)
    torch.manual_seed(0)
    eager_forward, eager_backward = _coefficients(layer, x)
    torch.manual_seed(0)
    compiled_forward, compiled_backward = _coefficients(torch.compile(layer, fullgraph=True), x)
    assert torch.equal(compiled_forward, eager_forward)
    assert torch.equal(compiled_backward, eager_backward)
    # Both gate outcomes occur, so both branches of the selection are compared.
    num_kept = (eager_forward == 1.0).sum()
    assert num_kept > 0
    assert num_kept < eager_forward.numel()


def test_keep_prob_one_is_identity_in_training():
    torch.manual_seed(0)
    x = torch.randn(16, 3, 4, 4)
    forward_coef, backward_coef = _coefficients(ShakeDrop(0.0).train(), x)
    assert torch.all(forward_coef == 1.0)
    assert torch.all(backward_coef == 1.0)


def test_drop_prob_one_always_shakes():
    forward_coef, backward_coef = _sample_coefficients(1.0, num_samples=2000)
    assert torch.all(forward_coef != 1.0)
    assert torch.all(backward_coef < 1.0)


@pytest.mark.parametrize('drop_prob', [0.0, 0.2, 0.5, 1.0])
@pytest.mark.parametrize('alpha_range', [(-1.0, 1.0), (0.0, 0.0), (-0.5, 1.0)])
def test_eval_is_expectation(drop_prob, alpha_range):
    torch.manual_seed(0)
    layer = ShakeDrop(drop_prob, alpha_range=alpha_range).eval()
    x = torch.randn(4, 3, 5, 5)
    rng_state = torch.random.get_rng_state()
    y = layer(x)
    keep_prob = 1.0 - drop_prob
    expected_scale = keep_prob + (1.0 - keep_prob) * (alpha_range[0] + alpha_range[1]) / 2
    assert shake_drop_eval_scale(keep_prob, alpha_range) == pytest.approx(expected_scale)
    torch.testing.assert_close(y, x * expected_scale, rtol=0, atol=1e-7)
    # No random op in evaluation: the RNG state is untouched and the output is deterministic.
    assert torch.equal(torch.random.get_rng_state(), rng_state)
    assert torch.equal(layer(x), y)


def test_eval_scale_is_keep_not_drop_prob():
    layer = ShakeDrop(0.2).eval()
    x = torch.ones(2, 1, 1, 1)
    assert torch.allclose(layer(x), torch.full_like(x, 0.8))


def test_train_and_eval_not_swapped():
    torch.manual_seed(0)
    layer = ShakeDrop(0.5)
    x = torch.ones(256, 1, 1, 1)
    layer.train()
    first, second = layer(x), layer(x)
    assert not torch.equal(first, second)
    assert (first != 0.5).all()
    layer.eval()
    assert torch.equal(layer(x), torch.full_like(x, 0.5))


def test_expectation_matches_training_mean():
    forward_coef, _ = _sample_coefficients(0.3, num_samples=40000)
    # E[b + a - ba] = p for alpha in [-1, 1]; the coefficient's standard deviation is below 1.
    assert abs(forward_coef.mean().item() - 0.7) < 5 / math.sqrt(forward_coef.numel())


def test_level_batch_draws_once():
    torch.manual_seed(0)
    layer = ShakeDrop(1.0, level='batch').train()
    forward_coef, backward_coef = _coefficients(layer, torch.ones(8, 3, 4, 4))
    assert forward_coef.unique().numel() == 1
    assert backward_coef.unique().numel() == 1


def test_level_sample_constant_within_sample():
    torch.manual_seed(0)
    layer = ShakeDrop(1.0, level='sample').train()
    forward_coef, backward_coef = _coefficients(layer, torch.ones(8, 3, 4, 4))
    for coef in (forward_coef, backward_coef):
        per_sample = coef.flatten(1)
        assert torch.all(per_sample == per_sample[:, :1])
        assert per_sample[:, 0].unique().numel() == 8


def test_level_channel_constant_within_channel():
    torch.manual_seed(0)
    layer = ShakeDrop(1.0, level='channel').train()
    forward_coef, backward_coef = _coefficients(layer, torch.ones(4, 6, 3, 3))
    for coef in (forward_coef, backward_coef):
        per_channel = coef.flatten(2)
        assert torch.all(per_channel == per_channel[:, :, :1])
        assert per_channel[:, :, 0].unique().numel() == 24


def test_level_pixel_draws_per_element():
    torch.manual_seed(0)
    layer = ShakeDrop(1.0, level='pixel').train()
    forward_coef, backward_coef = _coefficients(layer, torch.ones(2, 3, 4, 4))
    assert forward_coef.unique().numel() == forward_coef.numel()
    assert backward_coef.unique().numel() == backward_coef.numel()


def test_channel_and_pixel_levels_gate_per_sample():
    torch.manual_seed(0)
    for level in ('channel', 'pixel'):
        layer = ShakeDrop(0.5, level=level).train()
        forward_coef, _ = _coefficients(layer, torch.ones(64, 2, 3, 3))
        kept = (forward_coef == 1.0).flatten(1)
        # A gate per sample keeps all or none of the sample's elements, and differs across samples.
        assert torch.all(kept.all(1) | ~kept.any(1))
        assert 0 < kept.all(1).sum() < 64


def test_batch_gate_with_pixel_noise():
    """The ShakeDrop authors' combination: one gate per batch, alpha and beta per element."""
    torch.manual_seed(0)
    layer = ShakeDrop(0.5, level='pixel', gate_level='batch').train()
    outcomes = set()
    for _ in range(20):
        forward_coef, _ = _coefficients(layer, torch.ones(4, 2, 3, 3))
        kept = forward_coef == 1.0
        assert kept.all() or not kept.any()
        if not kept.any():
            assert forward_coef.unique().numel() == forward_coef.numel()
        outcomes.add(bool(kept.all()))
    assert outcomes == {True, False}


def test_backward_saves_no_activation():
    saved_numels = []

    def pack(tensor):
        saved_numels.append(tensor.numel())
        return tensor

    x = torch.randn(8, 16, 10, 10, requires_grad=True)
    for level in ('batch', 'sample'):
        saved_numels.clear()
        layer = ShakeDrop(0.5, level=level).train()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            y = layer(x)
        assert saved_numels, 'expected the backward coefficient to be saved'
        assert max(saved_numels) <= x.shape[0]
        y.sum().backward()


@pytest.mark.parametrize('training', [True, False])
@pytest.mark.parametrize('drop_prob', [0.0, 0.5])
def test_inplace_shortcut_add(training, drop_prob):
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(3)
    layer = ShakeDrop(drop_prob).train(training)
    inputs = torch.randn(4, 3, 4, 4, requires_grad=True)
    shortcut = torch.randn(4, 3, 4, 4, requires_grad=True)
    branch = bn(inputs)
    out = layer(branch)
    assert out.data_ptr() != branch.data_ptr()
    out += shortcut
    out.sum().backward()
    assert inputs.grad is not None
    assert torch.equal(shortcut.grad, torch.ones_like(shortcut))


def test_function_matches_module():
    x = torch.randn(6, 3, 2, 2)
    torch.manual_seed(3)
    from_module = ShakeDrop(0.4, level='channel').train()(x)
    torch.manual_seed(3)
    from_function = shake_drop(x, 0.4, training=True, level='channel')
    assert torch.equal(from_module, from_function)
    assert torch.equal(shake_drop(x, 0.4, training=False), ShakeDrop(0.4).eval()(x))


def test_keep_prob_linear_decay():
    keep_probs = shake_drop_keep_probs(54, 0.5)
    assert len(keep_probs) == 54
    assert keep_probs[0] == pytest.approx(1 - 0.5 / 54)
    assert keep_probs[-1] == pytest.approx(0.5)
    for unit, keep_prob in enumerate(keep_probs, start=1):
        assert keep_prob == pytest.approx(1 - (unit / 54) * (1 - 0.5))


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_autocast_dtypes(dtype):
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    layer = ShakeDrop(0.5).train()
    x = torch.randn(4, 3, 8, 8)
    with torch.autocast('cpu', dtype=dtype):
        branch = conv(x)
        y = layer(branch)
    assert y.dtype == branch.dtype == dtype
    y.float().sum().backward()
    assert conv.weight.grad is not None
    assert torch.isfinite(conv.weight.grad).all()
    layer.eval()
    half = torch.randn(2, 4, 3, 3).to(dtype)
    assert layer(half).dtype == dtype
    torch.testing.assert_close(layer(half), half * torch.tensor(0.5, dtype=dtype))


def test_channels_last_preserved():
    torch.manual_seed(0)
    layer = ShakeDrop(0.5).train()
    x = torch.randn(4, 8, 5, 5).to(memory_format=torch.channels_last).requires_grad_(True)
    y = layer(x)
    assert y.is_contiguous(memory_format=torch.channels_last)
    y.backward(torch.ones_like(y))
    assert x.grad.is_contiguous(memory_format=torch.channels_last)
    assert layer.eval()(x).is_contiguous(memory_format=torch.channels_last)


def test_torchscript_training_and_eval():
    torch.manual_seed(0)
    scripted = torch.jit.script(ShakeDrop(0.5))
    x = torch.full((4000, 1, 1, 1), 2.0)
    forward_coef, backward_coef = _coefficients(scripted.train(), x)
    kept = forward_coef == 1.0
    assert abs(kept.float().mean().item() - 0.5) < 5 * math.sqrt(0.25 / 4000)
    assert torch.equal(kept, backward_coef == 1.0)
    # The scripted path computes the forward value as x * beta + (x * (alpha - beta)), exact up to rounding.
    assert forward_coef[~kept].min() >= -1.0 - 1e-6
    assert backward_coef[~kept].max() < 1.0
    assert torch.equal(scripted.eval()(x), x * 0.5)


def test_fx_trace_keeps_training_step_a_leaf():
    layer = ShakeDrop(0.5).train()
    graph_module = torch.fx.symbolic_trace(layer)
    x = torch.ones(2000, 1, 1, 1)
    torch.manual_seed(0)
    traced = graph_module(x)
    torch.manual_seed(0)
    assert torch.equal(traced, layer(x))
    eval_module = torch.fx.symbolic_trace(ShakeDrop(0.5).eval())
    assert torch.equal(eval_module(x), x * 0.5)


def test_export_eval():
    layer = ShakeDrop(0.25).eval()
    x = torch.randn(2, 3, 4, 4)
    exported = torch.export.export(layer, (x,))
    assert torch.equal(exported.module()(x), layer(x))
    targets = {str(node.target) for node in exported.graph.nodes if node.op == 'call_function'}
    assert not any('rand' in target or 'bernoulli' in target for target in targets)


def test_never_reseeds(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError('ShakeDrop must not reseed the RNG')

    monkeypatch.setattr(torch, 'manual_seed', fail)
    monkeypatch.setattr(torch.random, 'manual_seed', fail)
    monkeypatch.setattr(torch, 'seed', fail)
    layer = ShakeDrop(0.5).train()
    y = layer(torch.randn(4, 2, 2, 2, requires_grad=True))
    y.sum().backward()


def test_drop_prob_property_and_setter():
    layer = ShakeDrop(0.25)
    assert layer.drop_prob == pytest.approx(0.25)
    layer.set_drop_prob(0.75)
    assert layer.keep_prob.item() == pytest.approx(0.25)
    assert 'drop_prob=0.7500' in repr(layer)
    assert math.isnan(ShakeDrop(0.5, device='meta').drop_prob)


def test_keep_prob_saved_in_state_dict():
    layer = ShakeDrop(0.3)
    assert 'keep_prob' in layer.state_dict()
    other = ShakeDrop(0.9)
    other.load_state_dict(layer.state_dict())
    assert other.keep_prob.item() == pytest.approx(0.7)


def test_non_image_inputs():
    torch.manual_seed(0)
    layer = ShakeDrop(0.5).train()
    tokens = torch.ones(16, 5, 8)
    forward_coef, _ = _coefficients(layer, tokens)
    per_sample = forward_coef.flatten(1)
    assert torch.all(per_sample == per_sample[:, :1])


@pytest.mark.parametrize('kwargs, match', [
    (dict(drop_prob=-0.1), r'`drop_prob` must be a probability in \[0, 1\], got -0.1'),
    (dict(drop_prob=1.5), r'`drop_prob` must be a probability in \[0, 1\], got 1.5'),
    (dict(alpha_range=(1.0, -1.0)), r'`alpha_range` must have alpha_min <= alpha_max, got \(1.0, -1.0\)'),
    (dict(alpha_range=(0.0,)), r'`alpha_range` must be a pair'),
    (dict(beta_range=(-0.1, 1.0)), r'`beta_range` must satisfy 0 <= beta_min <= beta_max <= 1, got \(-0.1, 1.0\)'),
    (dict(beta_range=(0.0, 1.5)), r'`beta_range` must satisfy .* got \(0.0, 1.5\)'),
    (dict(beta_range=(0.8, 0.2)), r'`beta_range` must satisfy .* got \(0.8, 0.2\)'),
    (dict(level='image'), r"`level` must be one of \('batch', 'sample', 'channel', 'pixel'\), got 'image'"),
    (dict(gate_level='pixel'), r"`gate_level` must be one of \('batch', 'sample'\) or None, got 'pixel'"),
    (dict(level='batch', gate_level='sample'), r"`gate_level` must be 'batch' when `level` is 'batch'"),
])
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ShakeDrop(**kwargs)
    function_kwargs = dict(kwargs)
    with pytest.raises(ValueError, match=match):
        shake_drop(torch.ones(2, 1, 1, 1), training=True, **function_kwargs)


def test_set_drop_prob_rejects_invalid():
    with pytest.raises(ValueError, match=r'`drop_prob` must be a probability in \[0, 1\], got 2.0'):
        ShakeDrop(0.5).set_drop_prob(2.0)


@pytest.mark.parametrize('num_units, rate, match', [
    (10, 1.5, r'`drop_path_rate` must be a probability in \[0, 1\], got 1.5'),
    (0, 0.5, r'`num_units` must be at least 1, got 0'),
])
def test_keep_probs_invalid(num_units, rate, match):
    with pytest.raises(ValueError, match=match):
        shake_drop_keep_probs(num_units, rate)


def test_gradient_through_conv_stack_is_scaled():
    """End to end: the gradient reaching the branch weights is the upstream one scaled by b + beta - b*beta."""
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 1, 1, bias=False)
    nn.init.ones_(conv.weight)
    layer = ShakeDrop(1.0).train()
    x = torch.ones(1, 1, 1, 1)
    torch.manual_seed(5)
    y = layer(conv(x))
    y.sum().backward()
    torch.manual_seed(5)
    _, backward_coef = _coefficients(ShakeDrop(1.0).train(), torch.ones(1, 1, 1, 1))
    assert conv.weight.grad.item() == pytest.approx(backward_coef.item())
    assert backward_coef.item() < 1.0
