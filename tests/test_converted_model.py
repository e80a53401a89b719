"""The registered `shakedrop` architecture: timm models converted with apply_shakedrop through timm's Hub format,
the export command and the trainer."""
import argparse
import json
import os

import pytest
import timm
import torch
import yaml
from timm.models import create_feature_extractor, save_for_hf
from torch import nn

from timm_shakedrop import apply_shakedrop
from timm_shakedrop.cli import main as cli_main
from timm_shakedrop.layers import ShakeDrop

# Base model, its kwargs and the number of residual branches.
BASES = {
    'resnet18': (dict(num_classes=10, zero_init_last=False), 8),
    'convnext_atto': (dict(num_classes=10, ls_init_value=1.0), 12),
}
CFG_KEYS = ('input_size', 'mean', 'std', 'crop_pct', 'interpolation', 'first_conv', 'classifier', 'num_classes')


@pytest.fixture(autouse=True)
def _one_torch_thread():
    num_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(num_threads)


def _input(batch_size: int = 2) -> torch.Tensor:
    return torch.randn(batch_size, 3, 32, 32, generator=torch.Generator().manual_seed(7))


def _eval(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


def _layers(model: nn.Module) -> list[ShakeDrop]:
    return [m for m in model.modules() if isinstance(m, ShakeDrop)]


def _randomize_norms(model: nn.Module) -> nn.Module:
    """Give BNs non-trivial statistics, so that a wrong evaluation scale changes the outputs."""
    torch.manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return model


@pytest.mark.parametrize('base_model', list(BASES))
def test_save_for_hf_round_trip(base_model, tmp_path):
    kwargs, num_branches = BASES[base_model]
    torch.manual_seed(0)
    model = timm.create_model('shakedrop', base_model=base_model, drop_path_rate=0.3, **kwargs)
    _randomize_norms(model)
    assert len(_layers(model)) == num_branches
    save_for_hf(model, str(tmp_path), safe_serialization=True)

    rebuilt = timm.create_model(f'local-dir:{tmp_path}', pretrained=True)
    assert type(rebuilt) is type(model)
    assert [float(m.keep_prob) for m in _layers(rebuilt)] == [float(m.keep_prob) for m in _layers(model)]
    assert float(_layers(rebuilt)[-1].keep_prob) == pytest.approx(0.7)
    x = _input()
    assert torch.equal(_eval(rebuilt, x), _eval(model, x))


@pytest.mark.parametrize('base_model', list(BASES))
def test_pretrained_cfg_is_base_default(base_model):
    model = timm.create_model('shakedrop', base_model=base_model, device='meta')
    base_cfg = timm.models.get_pretrained_cfg(base_model).to_dict()
    assert model.pretrained_cfg['architecture'] == 'shakedrop'
    for key in CFG_KEYS:
        assert model.pretrained_cfg[key] == base_cfg[key], key


def test_config_records_shakedrop_args(tmp_path):
    model = timm.create_model('shakedrop', base_model='resnet18', num_classes=10, drop_path_rate=0.3,
                              shakedrop_alpha_range=(-0.5, 1.0), shakedrop_level='pixel')
    save_for_hf(model, str(tmp_path))
    config = json.loads((tmp_path / 'config.json').read_text())
    assert config['architecture'] == 'shakedrop'
    args = config['model_args']
    assert args['base_model'] == 'resnet18'
    assert args['shakedrop_alpha_range'] == [-0.5, 1.0]
    assert args['shakedrop_level'] == 'pixel'
    assert 'drop_path_rate' not in args
    assert config['pretrained_cfg']['classifier'] == 'fc'


def test_plain_model_round_trip_keeps_alpha(tmp_path):
    """apply_shakedrop on timm's own resnet18 records enough for local-dir: to rebuild it, alpha range included."""
    torch.manual_seed(0)
    plain = timm.create_model('resnet18', num_classes=10, zero_init_last=False, drop_path_rate=0.1)
    model = _randomize_norms(apply_shakedrop(plain, drop_path_rate=0.4, alpha_range=(0.0, 1.0)))
    assert model.pretrained_cfg['architecture'] == 'shakedrop'
    assert model._model_args['base_model'] == 'resnet18'
    assert model._model_args['drop_path_rate'] == 0.4
    save_for_hf(model, str(tmp_path), safe_serialization=True)

    rebuilt = timm.create_model(f'local-dir:{tmp_path}', pretrained=True)
    assert all(layer.alpha_range == (0.0, 1.0) for layer in _layers(rebuilt))
    x = _input()
    expected = _eval(model, x)
    assert torch.equal(_eval(rebuilt, x), expected)
    # The alpha mean sets the evaluation scale: the default range (mean 0) would give other outputs.
    for layer in _layers(rebuilt):
        layer.alpha_range = (-1.0, 1.0)
    assert not torch.allclose(_eval(rebuilt, x), expected, rtol=1e-3, atol=1e-3)


def test_base_model_weights_load_with_pretrained(tmp_path):
    torch.manual_seed(0)
    plain = _randomize_norms(timm.create_model('resnet18', num_classes=10, zero_init_last=False))
    torch.save(plain.state_dict(), tmp_path / 'resnet18.pth')
    # The overlay's num_classes says that the file has a 10-class classifier, so timm keeps it.
    overlay = dict(file=str(tmp_path / 'resnet18.pth'), num_classes=10)
    model = timm.create_model('shakedrop', base_model='resnet18', num_classes=10, drop_path_rate=0.0,
                              pretrained=True, pretrained_cfg_overlay=overlay)
    x = _input()
    assert torch.equal(_eval(model, x), _eval(plain, x))


def test_torchscript_and_fx():
    model = _randomize_norms(timm.create_model('shakedrop', base_model='resnet18', num_classes=10)).eval()
    x = _input()
    expected = _eval(model, x)
    assert torch.equal(_eval(torch.jit.script(model), x), expected)
    traced = create_feature_extractor(model, {'fc': 'out'})
    with torch.no_grad():
        assert torch.equal(traced(x)['out'], expected)


# Errors

def test_unknown_base_model_suggests_names():
    with pytest.raises(ValueError, match=r"Unknown `base_model` 'resnet181': timm has no such model\. Did you mean "
                                         r"'resnet18'"):
        timm.create_model('shakedrop', base_model='resnet181')


def test_missing_base_model_raises():
    with pytest.raises(ValueError, match=r"`base_model` is required: the name of the timm model to convert"):
        timm.create_model('shakedrop')


def test_base_model_without_slots_raises():
    with pytest.raises(ValueError, match='apply_shakedrop found no residual branch slot in VGG'):
        timm.create_model('shakedrop', base_model='vgg11', device='meta')


def test_features_only_raises():
    with pytest.raises(ValueError, match=r"`features_only` is not supported by 'shakedrop'"):
        timm.create_model('shakedrop', base_model='resnet18', features_only=True)


# Export command

def _write_checkpoint(run_dir, model: nn.Module, arch: str, model_kwargs: dict) -> str:
    """Save `model` as timm's train.py would, with the run's args.yaml beside it."""
    run_dir.mkdir(parents=True)
    args = argparse.Namespace(model=arch, num_classes=10, drop_path=None, model_ema=False, dataset='torch/cifar10',
                              data_dir='data', input_size=[3, 32, 32], img_size=None, mean=None, std=None,
                              crop_pct=None, interpolation='', gp=None, bn_momentum=None, bn_eps=None,
                              model_kwargs=model_kwargs, epochs=1)
    (run_dir / 'args.yaml').write_text(yaml.safe_dump(vars(args), default_flow_style=False))
    path = run_dir / 'checkpoint-0.pth.tar'
    torch.save(dict(epoch=0, arch=arch, state_dict=model.state_dict(), args=args), path)
    return str(path)


@pytest.mark.parametrize('recorded_arch', ['shakedrop', 'resnet18'])
def test_export_cli_converted_checkpoint(recorded_arch, tmp_path, capsys):
    torch.manual_seed(0)
    model = _randomize_norms(apply_shakedrop(
        timm.create_model('resnet18', num_classes=10, zero_init_last=False), drop_path_rate=0.3))
    model_kwargs = dict(base_model='resnet18') if recorded_arch == 'shakedrop' else {}
    checkpoint = _write_checkpoint(tmp_path / 'run', model, recorded_arch, model_kwargs)
    code = cli_main(['export', checkpoint, '--output', str(tmp_path / 'out'), '--no-eval'])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert 'Exported the raw weights of shakedrop' in out
    # The command logs to stderr.
    converted_line = "building 'shakedrop' with base_model='resnet18'"
    assert (converted_line in err) == (recorded_arch == 'resnet18')
    assert sorted(os.listdir(tmp_path / 'out')) == ['README.md', 'config.json', 'model.safetensors']

    loaded = timm.create_model(f'local-dir:{tmp_path / "out"}', pretrained=True)
    x = _input()
    assert torch.equal(_eval(loaded, x), _eval(model, x))
    assert "timm's `resnet18` with ShakeDrop" in (tmp_path / 'out' / 'README.md').read_text()


def test_train_then_export(tmp_path, capsys):
    """`timm-shakedrop train --model shakedrop --model-kwargs base_model=resnet18`, then export and reload."""
    from timm_shakedrop.cli.train import main as train_main

    output = tmp_path / 'runs'
    code = train_main([
        '--img-size', '16', '-j', '0', '--num-threads', '1', '--log-interval', '1000', '--seed', '3',
        '--model', 'shakedrop', '--model-kwargs', 'base_model=resnet18', 'shakedrop_alpha_range=(-0.5,1.0)',
        '--train-num-samples', '32', '--val-num-samples', '16', '-b', '16', '--epochs', '1', '--drop-path', '0.3',
        '--output', str(output)])
    assert code == 0
    (run_dir,) = list(output.iterdir())
    code = cli_main(['export', str(run_dir / 'model_best.pth.tar'), '--output', str(tmp_path / 'out'), '--no-eval'])
    assert code == 0, capsys.readouterr().err
    config = json.loads((tmp_path / 'out' / 'config.json').read_text())
    assert config['model_args']['shakedrop_alpha_range'] == [-0.5, 1.0]
    loaded = timm.create_model(f'local-dir:{tmp_path / "out"}', pretrained=True)
    assert all(layer.alpha_range == (-0.5, 1.0) for layer in _layers(loaded))
    assert float(_layers(loaded)[-1].keep_prob) == pytest.approx(0.7)
