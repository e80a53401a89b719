"""Fast paths of ShakeDrop and the padded shortcut: same values and gradients as the plain steps, fewer passes."""
import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from timm_shakedrop.layers import ShakeDrop, add_padded_shortcut
from timm_shakedrop.layers.shake_drop import _draw_coefficients
from timm_shakedrop.models import PyramidBasicBlock


class _RecordOps(TorchDispatchMode):
    """Record the name and output sizes of every aten op that runs."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        outputs = out if isinstance(out, (tuple, list)) else (out,)
        self.ops.append((func.overloadpacket.__name__, [o.numel() for o in outputs if isinstance(o, torch.Tensor)]))
        return out


def _reference_add(branch: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
    padding = torch.zeros(
        (shortcut.shape[0], branch.shape[1] - shortcut.shape[1]) + tuple(shortcut.shape[2:]), dtype=shortcut.dtype)
    return branch + torch.cat((shortcut, padding), 1)


def _leaves(*shapes):
    torch.manual_seed(0)
    return [torch.randn(*shape, requires_grad=True) for shape in shapes]


@pytest.mark.parametrize('shortcut_chs', [3, 5])
def test_padded_shortcut_values_and_gradients(shortcut_chs):
    inputs, shortcut = _leaves((4, 5, 3, 3), (4, shortcut_chs, 3, 3))
    bn = nn.BatchNorm2d(5)
    out = add_padded_shortcut(bn(inputs), shortcut)
    reference_inputs = inputs.detach().clone().requires_grad_(True)
    reference_shortcut = shortcut.detach().clone().requires_grad_(True)
    reference = _reference_add(nn.BatchNorm2d(5)(reference_inputs), reference_shortcut)
    grad = torch.randn_like(out)
    out.backward(grad)
    reference.backward(grad)
    torch.testing.assert_close(out, reference)
    torch.testing.assert_close(shortcut.grad, reference_shortcut.grad)
    torch.testing.assert_close(inputs.grad, reference_inputs.grad)


def test_padded_shortcut_writes_into_x():
    x = torch.randn(2, 4, 3, 3)
    shortcut = torch.randn(2, 2, 3, 3)
    out = add_padded_shortcut(x, shortcut)
    assert out.data_ptr() == x.data_ptr()


def test_padded_shortcut_keeps_type_promotion():
    """With as many channels in both, a float32 shortcut onto a bfloat16 branch promotes as `x + shortcut` does."""
    x = torch.randn(2, 3, 2, 2, dtype=torch.bfloat16)
    shortcut = torch.randn(2, 3, 2, 2)
    out = add_padded_shortcut(x, shortcut)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, x.float() + shortcut)


@pytest.mark.parametrize('level', ['batch', 'sample', 'channel', 'pixel'])
@pytest.mark.parametrize('training', [True, False])
@pytest.mark.parametrize('shortcut_chs', [4, 6])
def test_add_to_shortcut_matches_unfused(level, training, shortcut_chs):
    layer = ShakeDrop(0.6, level=level).train(training)
    bn = nn.BatchNorm2d(6).train(training)
    inputs, shortcut = _leaves((8, 6, 3, 3), (8, shortcut_chs, 3, 3))
    reference_inputs = inputs.detach().clone().requires_grad_(True)
    reference_shortcut = shortcut.detach().clone().requires_grad_(True)
    torch.manual_seed(7)
    out = layer.add_to_shortcut(bn(inputs), shortcut)
    torch.manual_seed(7)
    reference = add_padded_shortcut(layer(bn(reference_inputs)), reference_shortcut)
    grad = torch.randn_like(out)
    out.backward(grad)
    reference.backward(grad)
    torch.testing.assert_close(out, reference, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(inputs.grad, reference_inputs.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(shortcut.grad, reference_shortcut.grad)


def test_add_to_shortcut_eval_is_expectation():
    layer = ShakeDrop(0.25, alpha_range=(-0.5, 1.0)).eval()
    x = torch.randn(2, 5, 3, 3)
    shortcut = torch.randn(2, 3, 3, 3)
    expected = _reference_add(x * (0.75 + 0.25 * 0.25), shortcut)
    rng_state = torch.random.get_rng_state()
    out = layer.add_to_shortcut(x.clone(), shortcut)
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
    assert torch.equal(torch.random.get_rng_state(), rng_state)


def test_add_to_shortcut_one_pass_in_place():
    """The fused step writes into x and allocates nothing of x's size, in training and in evaluation."""
    bn = nn.BatchNorm2d(6)
    x, shortcut = _leaves((4, 6, 5, 5), (4, 5, 5, 5))
    for training in (True, False):
        layer = ShakeDrop(0.5).train(training)
        branch = bn(x)
        recorder = _RecordOps()
        with recorder:
            out = layer.add_to_shortcut(branch, shortcut)
        assert out.data_ptr() == branch.data_ptr()
        names = [name for name, _ in recorder.ops]
        assert names.count('addcmul') == 1
        # Only views of x (`slice`) and writes into x (`addcmul` with `out=`, `mul_`) return tensors of its size.
        large = {name for name, sizes in recorder.ops if any(size > 4 for size in sizes)}
        assert large <= {'slice', 'addcmul', 'mul_'}


def test_add_to_shortcut_saves_no_activation():
    saved = []
    layer = ShakeDrop(0.5).train()
    x, shortcut = _leaves((8, 6, 4, 4), (8, 4, 4, 4))
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        out = layer.add_to_shortcut(x * 1.0, shortcut)
    assert saved == [8]
    out.sum().backward()


def test_add_to_shortcut_channels_last_and_bfloat16():
    layer = ShakeDrop(0.5).train()
    x = torch.randn(4, 6, 3, 3).to(memory_format=torch.channels_last)
    shortcut = torch.randn(4, 4, 3, 3).to(memory_format=torch.channels_last)
    out = layer.add_to_shortcut(x.clone(), shortcut)
    assert out.is_contiguous(memory_format=torch.channels_last)
    half = layer.add_to_shortcut(x.to(torch.bfloat16), shortcut.to(torch.bfloat16))
    assert half.dtype == torch.bfloat16


def test_draws_take_six_kernels():
    x = torch.randn(8, 4, 2, 2)
    keep_prob = torch.tensor(0.5)
    recorder = _RecordOps()
    with recorder:
        _draw_coefficients(x, keep_prob, (-1.0, 1.0), (0.0, 1.0), 'sample', 'sample')
    kernels = [name for name, _ in recorder.ops if name not in ('empty', '_to_copy', 'to')]
    assert kernels == ['rand', 'lt', 'uniform_', 'masked_fill_', 'uniform_', 'masked_fill_']


def test_block_uses_fused_step_only_for_shake_drop():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 6, 6, requires_grad=True)
    fused = PyramidBasicBlock(4, 6, drop_path=ShakeDrop(0.5)).train()(x)
    assert type(fused.grad_fn).__name__ == '_ShakeDropAddFunctionBackward'
    plain = PyramidBasicBlock(4, 6, drop_path=nn.Identity()).train()(x)
    assert type(plain.grad_fn).__name__ == '_PaddedShortcutAddFunctionBackward'
