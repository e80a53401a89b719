"""Benchmark scripts: they run, measure what they claim, and reject bad arguments. No timing is checked."""
import json

import pytest
import torch
from timm.layers import DropPath
from torch import nn

from benchmarks import op_profile, startup, train_step
from timm_shakedrop.layers import ShakeDrop, add_padded_shortcut

CPU = torch.device('cpu')


@pytest.fixture(scope='module')
def quick_result(tmp_path_factory):
    path = tmp_path_factory.mktemp('bench') / 'quick.json'
    assert train_step.main(['--quick', '--json', str(path)]) == 0
    return json.loads(path.read_text())


def test_quick_covers_every_variant(quick_result):
    rows = quick_result['results']
    assert [row['variant'] for row in rows] == list(train_step.VARIANTS)
    assert {row['network'] for row in rows} == {train_step.QUICK_NETWORK}
    assert {row['mode'] for row in rows} == {'eager'}
    assert {row['batch_size'] for row in rows} == {train_step.QUICK_BATCH_SIZE}


def test_quick_rows_hold_measurements(quick_result):
    for row in quick_result['results']:
        assert len(row['step_s_all']) == 3
        assert row['step_s'] > 0
        assert row['step_cpu_s'] > 0
        assert row['state_bytes'] > 0
        assert row['peak_growth_bytes'] > 0
        assert row['peak_bytes'] == row['state_bytes'] + row['peak_growth_bytes']
        assert row['eval_images_per_s'] > 0


def test_quick_ratios_relative_to_identity(quick_result):
    rows = {row['variant']: row for row in quick_result['results']}
    for key in ('step_s', 'step_cpu_s', 'peak_bytes', 'peak_growth_bytes', 'eval_images_per_s'):
        assert rows['identity'][key + '_vs_identity'] == pytest.approx(1.0)
    shakedrop, identity = rows['shakedrop'], rows['identity']
    # Time ratios pair the variants round by round; memory ratios divide the single measurements.
    per_round = sorted(s / i for s, i in zip(shakedrop['step_s_all'], identity['step_s_all'], strict=True))
    assert shakedrop['step_s_vs_identity'] == pytest.approx(per_round[1])
    eval_per_round = sorted(i / s for s, i in zip(shakedrop['eval_s_all'], identity['eval_s_all'], strict=True))
    assert shakedrop['eval_images_per_s_vs_identity'] == pytest.approx(eval_per_round[1])
    assert shakedrop['peak_bytes_vs_identity'] == pytest.approx(shakedrop['peak_bytes'] / identity['peak_bytes'])


def test_quick_records_environment(quick_result):
    env = quick_result['environment']
    assert env['torch'] == torch.__version__
    assert env['device'] == 'cpu'
    assert env['torch_threads'] >= 1
    for key in ('timm', 'timm_shakedrop', 'python', 'cpu', 'load_average_before', 'load_average_after'):
        assert key in env
    assert quick_result['settings']['quick'] is True


def test_table_has_row_per_variant(quick_result):
    table = train_step.format_table(quick_result['results'])
    lines = table.splitlines()
    assert lines[0].startswith('| network | mode | batch | variant | step ms | x identity |')
    assert len(lines) == 2 + len(train_step.VARIANTS)
    identity_line = next(line for line in lines if '| identity |' in line)
    assert '| 1.000 |' in identity_line


def test_variants_share_weights_and_differ_in_layer():
    models = {v: train_step.build_model('pyramidnet20', v, CPU) for v in train_step.VARIANTS}
    shake_drops = [m for m in models['shakedrop'].modules() if isinstance(m, ShakeDrop)]
    drop_paths = [m for m in models['droppath'].modules() if isinstance(m, DropPath)]
    ports = [m for m in models['port'].modules() if isinstance(m, train_step.PortShakeDrop)]
    assert len(shake_drops) == len(drop_paths) == len(ports) == 9
    assert not any(isinstance(m, (ShakeDrop, DropPath)) for m in models['identity'].modules())
    for shake_drop, drop_path, port in zip(shake_drops, drop_paths, ports, strict=True):
        assert drop_path.drop_prob == pytest.approx(shake_drop.drop_prob)
        assert port.keep_prob == pytest.approx(1.0 - shake_drop.drop_prob)
    reference = models['shakedrop'].stem[0].weight
    for model in models.values():
        assert torch.equal(model.stem[0].weight, reference)


def test_port_network_evaluates_like_package():
    """In eval both scale the branch by p, so the port network computes the package's function."""
    x = torch.randn(2, 3, 32, 32)
    package = train_step.build_model('pyramidnet20', 'shakedrop', CPU).eval()
    port = train_step.build_model('pyramidnet20', 'port', CPU).eval()
    with torch.no_grad():
        torch.testing.assert_close(port(x), package(x), rtol=1e-5, atol=1e-5)


def test_port_shortcut_concatenates_zeros():
    x = torch.randn(2, 5, 3, 3)
    shortcut = torch.randn(2, 3, 3, 3)
    expected = add_padded_shortcut(x.clone(), shortcut)
    torch.testing.assert_close(train_step._port_add_shortcut(x.clone(), shortcut), expected)


def test_port_gate_per_batch():
    torch.manual_seed(0)
    x = torch.full((64, 2, 1, 1), 2.0, requires_grad=True)
    kept = train_step.PortShakeDrop(0.0).train()(x)
    assert torch.equal(kept, x)
    dropped = train_step.PortShakeDrop(1.0).train()(x)
    dropped.backward(torch.ones_like(dropped))
    forward_coef = (dropped / x).detach().flatten(1)
    backward_coef = x.grad.flatten(1)
    # One alpha and one beta per sample, alpha in [-1, 1), beta in [0, 1).
    assert torch.all(forward_coef == forward_coef[:, :1])
    assert forward_coef.min() >= -1.0
    assert forward_coef.max() < 1.0
    assert backward_coef.min() >= 0.0
    assert backward_coef.max() < 1.0
    assert forward_coef[:, 0].unique().numel() == 64


def test_port_resnet_bottleneck_trains():
    """timm's bottleneck adds the shortcut in place, which a port Function returning its input cannot take."""
    from timm_shakedrop.models.shakedrop_resnet import ShakeDropResNet

    torch.manual_seed(0)
    model = ShakeDropResNet(layers=(1, 1, 1, 1), num_classes=3, drop_path_layer=train_step.PortShakeDrop)
    train_step._use_port_shortcuts(model)
    assert all(type(block) is train_step._PortResNetBottleneck for block in (model.layer1[0], model.layer4[0]))
    model.train()(torch.randn(2, 3, 32, 32)).sum().backward()
    assert model.conv1.weight.grad is not None


def test_profiled_peak_counts_live_tensors():
    size = 1 << 20  # float32 elements: 4 MiB per tensor

    def allocate():
        kept = torch.ones(size)
        transient = torch.ones(size)
        del transient
        kept.add_(1.0)

    peak = train_step._profiled_peak_growth(allocate)
    # Two tensors alive at once; a few small allocations of the profiler or the ops may add a little.
    assert 8 * 2**20 <= peak < 8 * 2**20 + 64 * 2**10


def test_op_profile_attributes_fused_step(tmp_path, capsys):
    path = tmp_path / 'ops.json'
    argv = ['--network', 'pyramidnet20', '--batch-size', '4', '--rounds', '1', '--json', str(path)]
    assert op_profile.main(argv) == 0
    result = json.loads(path.read_text())
    calls = result['calls_per_step']
    # The fused ShakeDrop step runs one addcmul in each of the 9 units. Both variants run one more in the backward
    # pass of each BN-convolution pair, which recomputes the BN output.
    assert calls['aten::addcmul']['shakedrop'] - calls['aten::addcmul']['identity'] == 9
    assert calls['aten::addcmul']['identity'] == 18
    assert result['per_op_ms']['aten::addcmul']['shakedrop'] > 0
    for summary in result['summary'].values():
        assert summary['rest_ms'] == pytest.approx(summary['total_ms'] - summary['conv_and_bn_ms'])
        assert summary['conv_and_bn_ms'] > 0
    assert '| all operators but convolution and BN |' in capsys.readouterr().out


def test_interleaving_rotates_order():
    order = []
    calls = {name: (lambda name=name: order.append(name)) for name in ('a', 'b', 'c')}
    times = train_step.interleaved_times(calls, warmup=1, repeats=3, device=CPU)
    assert order == ['a', 'b', 'c'] + ['a', 'b', 'c', 'b', 'c', 'a', 'c', 'a', 'b']
    assert all(len(t['time']) == 3 and len(t['cpu']) == 3 for t in times.values())


@pytest.mark.parametrize('argv, match', [
    (['--networks', 'vgg16'], "invalid name 'vgg16'"),
    (['--variants', 'shakedrop,dropout'], "invalid name 'dropout'"),
    (['--repeats', '0'], "expected a positive integer, got '0'"),
    (['--batch-size', 'many'], "expected a positive integer, got 'many'"),
    (['--networks', ','], "expected at least one name, got ','"),
    (['--quick', '--compile', 'pyramidnet20'], '--quick runs eager mode only'),
    (['--quick', '--json', '/nonexistent_folder/results.json'], 'folder /nonexistent_folder does not exist'),
])
def test_train_step_rejects_bad_arguments(argv, match, capsys):
    with pytest.raises(SystemExit) as excinfo:
        train_step.main(argv)
    assert excinfo.value.code == 2
    err = capsys.readouterr().err
    assert match in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the message for a machine without CUDA')
def test_train_step_cuda_unavailable(capsys):
    with pytest.raises(SystemExit) as excinfo:
        train_step.main(['--device', 'cuda', '--quick'])
    assert excinfo.value.code == 2
    assert 'CUDA is not available' in capsys.readouterr().err


def test_build_model_rejects_unknown_names():
    with pytest.raises(ValueError, match=r"`network` must be one of .* got 'vgg16'"):
        train_step.build_model('vgg16', 'identity', CPU)
    with pytest.raises(ValueError, match=r"`variant` must be one of .* got 'dropout'"):
        train_step.build_model('pyramidnet20', 'dropout', CPU)


def test_startup_quick(tmp_path, capsys):
    path = tmp_path / 'startup.json'
    assert startup.main(['--quick', '--json', str(path)]) == 0
    result = json.loads(path.read_text())
    (row,) = result['results']
    assert row['case'] == 'interpreter'
    assert len(row['wall_s_on_all']) == len(row['wall_s_off_all']) == 2
    assert row['wall_s_on'] > 0
    assert row['cpu_s_off'] > 0
    assert row['wall_s_added'] == pytest.approx(row['wall_s_on'] - row['wall_s_off'])
    assert result['environment']['bytecode_cache'] is True
    # The installed start-up hook imports its module in every interpreter.
    assert '_timm_shakedrop_autoload' in result['importtime']['cumulative_s']
    assert '| interpreter |' in capsys.readouterr().out


def test_startup_child_bytecode_settings(monkeypatch):
    monkeypatch.setenv('PYTHONDONTWRITEBYTECODE', '1')
    cached = startup._child_env(True, '/tmp/prefix')
    assert cached['TIMM_SHAKEDROP_AUTOLOAD'] == '1'
    assert cached['PYTHONPYCACHEPREFIX'] == '/tmp/prefix'
    assert 'PYTHONDONTWRITEBYTECODE' not in cached
    inherited = startup._child_env(False, None)
    assert inherited['TIMM_SHAKEDROP_AUTOLOAD'] == '0'
    assert inherited['PYTHONDONTWRITEBYTECODE'] == '1'


def test_parse_importtime():
    stderr = '\n'.join([
        'import time: self [us] | cumulative | imported package',
        'import time:       210 |        210 | _timm_shakedrop_autoload',
        'import time:      1500 |      36500 |   timm_shakedrop',
        'import time:       280 |   10838902 | timm',
    ])
    assert startup.parse_importtime(stderr) == {'_timm_shakedrop_autoload': 210, 'timm_shakedrop': 36500}


def test_startup_rejects_bad_repeats(capsys):
    with pytest.raises(SystemExit) as excinfo:
        startup.main(['--repeats', '-1'])
    assert excinfo.value.code == 2
    assert "expected a positive integer, got '-1'" in capsys.readouterr().err


@pytest.mark.parametrize('variant', ['identity', 'control'])
def test_identity_variants_have_no_regularizer(variant):
    model = train_step.build_model('pyramidnet20', variant, CPU)
    assert all(isinstance(block.drop_path, nn.Identity) for stage in model.stages for block in stage)
    parsed = train_step.build_parser().parse_args(['--variants', f'shakedrop,{variant}'])
    assert parsed.variants == ['shakedrop', variant]


def test_op_profile_rejects_unwritable_json(tmp_path, capsys):
    with pytest.raises(SystemExit) as excinfo:
        op_profile.main(['--json', str(tmp_path)])
    assert excinfo.value.code == 2
    err = capsys.readouterr().err
    assert 'is a folder' in err
    assert len(err.strip().splitlines()) == 1


def test_quick_takes_explicit_counts(tmp_path):
    path = tmp_path / 'counts.json'
    argv = ['--quick', '--variants', 'identity', '--warmup', '0', '--repeats', '2', '--eval-repeats', '0',
            '--no-memory', '--json', str(path)]
    assert train_step.main(argv) == 0
    result = json.loads(path.read_text())
    assert result['settings']['warmup'] == 0
    assert result['settings']['repeats'] == 2
    assert result['settings']['eval_repeats'] == 0
    assert len(result['results'][0]['step_s_all']) == 2
