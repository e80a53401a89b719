"""Tests of `timm-shakedrop export` and `export_checkpoint` on checkpoints written by timm's CheckpointSaver."""
import json
import os

import hub_server as hub
import pytest
import safetensors.torch
import timm
import torch
from huggingface_hub import ModelCard

from timm_shakedrop.cli import main as cli_main
from timm_shakedrop.hub import _export as export_module
from timm_shakedrop.hub import export_checkpoint, load_training_checkpoint
from timm_shakedrop.hub.model_cards import count_macs, count_parameters

make_timm_run = hub.make_timm_run
# Fixture of hub_server.py, bound here so that pytest finds it.
one_torch_thread = hub.one_torch_thread
pytestmark = pytest.mark.usefixtures('one_torch_thread')


def _fixed_input(shape=(2, 3, 32, 32)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(123))


def _outputs(model, x):
    with torch.no_grad():
        return model.eval()(x)


@pytest.fixture
def timm_run(tmp_path):
    return make_timm_run(tmp_path / 'run')


def test_export_writes_expected_files(timm_run, tmp_path):
    result = export_checkpoint(timm_run.checkpoint, tmp_path / 'out')
    assert sorted(os.listdir(tmp_path / 'out')) == ['README.md', 'config.json', 'model.safetensors']
    assert result.weights == 'ema'
    assert result.files == {name: (tmp_path / 'out' / name).stat().st_size for name in result.files}
    # Nothing else is left beside the output: the staging folder was renamed, not copied.
    assert sorted(os.listdir(tmp_path)) == ['out', 'run']


def test_export_matches_ema_weights_bit_for_bit(timm_run, tmp_path):
    export_checkpoint(timm_run.checkpoint, tmp_path / 'out')
    loaded = timm.create_model(f'local-dir:{tmp_path / "out"}', pretrained=True)
    x = _fixed_input()
    assert torch.equal(_outputs(loaded, x), _outputs(timm_run.ema_model, x))
    assert not torch.equal(_outputs(loaded, x), _outputs(timm_run.model, x))


def test_export_no_ema_takes_raw_weights(timm_run, tmp_path):
    result = export_checkpoint(timm_run.checkpoint, tmp_path / 'out', use_ema=False, evaluate=False)
    loaded = timm.create_model(f'local-dir:{tmp_path / "out"}', pretrained=True)
    x = _fixed_input()
    assert result.weights == 'raw'
    assert torch.equal(_outputs(loaded, x), _outputs(timm_run.model, x))


def test_export_keeps_keep_prob_buffers(timm_run, tmp_path):
    export_checkpoint(timm_run.checkpoint, tmp_path / 'out')
    tensors = safetensors.torch.load_file(str(tmp_path / 'out' / 'model.safetensors'))
    keep = {k: float(v) for k, v in tensors.items() if k.endswith('.keep_prob')}
    assert len(keep) == 9
    assert keep['stages.2.2.drop_path.keep_prob'] == pytest.approx(0.8, abs=1e-7)
    assert keep['stages.0.0.drop_path.keep_prob'] == pytest.approx(1 - 0.2 / 9, abs=1e-7)
    config = json.loads((tmp_path / 'out' / 'config.json').read_text())
    # The rate lives in the buffers: a drop_path_rate in model_args would override them on load.
    assert 'drop_path_rate' not in config['model_args']


def test_export_config_has_timm_hub_format(timm_run, tmp_path):
    export_checkpoint(timm_run.checkpoint, tmp_path / 'out', tag='cifar10_test',
                      label_names=[f'class{i}' for i in range(10)])
    config = json.loads((tmp_path / 'out' / 'config.json').read_text())
    assert config['architecture'] == 'shakedrop_pyramidnet20_a48'
    assert config['num_classes'] == 10
    assert config['label_names'] == [f'class{i}' for i in range(10)]
    cfg = config['pretrained_cfg']
    assert cfg['input_size'] == [3, 32, 32]
    assert cfg['mean'] == [0.4914, 0.4822, 0.4465]
    assert cfg['interpolation'] == 'bilinear'
    assert cfg['crop_pct'] == 1.0
    assert cfg['tag'] == 'cifar10_test'
    assert cfg['license'] == 'apache-2.0'


def test_export_uses_run_preprocessing(tmp_path):
    run = make_timm_run(tmp_path / 'run', mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25], crop_pct=0.875,
                        interpolation='bicubic')
    export_checkpoint(run.checkpoint, tmp_path / 'out')
    cfg = json.loads((tmp_path / 'out' / 'config.json').read_text())['pretrained_cfg']
    assert cfg['mean'] == [0.5, 0.5, 0.5]
    assert cfg['std'] == [0.25, 0.25, 0.25]
    assert cfg['crop_pct'] == 0.875
    assert cfg['interpolation'] == 'bicubic'


def test_export_strips_wrapper_prefixes(timm_run, tmp_path):
    with torch.serialization.safe_globals([__import__('argparse').Namespace]):
        raw = torch.load(timm_run.checkpoint, weights_only=True)
    raw['state_dict_ema'] = {f'module._orig_mod.{k}': v for k, v in raw['state_dict_ema'].items()}
    wrapped = tmp_path / 'wrapped' / 'checkpoint.pth.tar'
    wrapped.parent.mkdir()
    torch.save(raw, wrapped)
    export_checkpoint(wrapped, tmp_path / 'out', evaluate=False)
    tensors = safetensors.torch.load_file(str(tmp_path / 'out' / 'model.safetensors'))
    assert not [k for k in tensors if k.startswith(('module.', '_orig_mod.'))]
    loaded = timm.create_model(f'local-dir:{tmp_path / "out"}', pretrained=True)
    assert torch.equal(_outputs(loaded, _fixed_input()), _outputs(timm_run.ema_model, _fixed_input()))


def test_export_makes_channels_last_contiguous(timm_run, tmp_path):
    with torch.serialization.safe_globals([__import__('argparse').Namespace]):
        raw = torch.load(timm_run.checkpoint, weights_only=True)
    raw['state_dict_ema'] = {
        k: v.to(memory_format=torch.channels_last) if v.dim() == 4 else v for k, v in raw['state_dict_ema'].items()
    }
    assert not raw['state_dict_ema']['stem.0.weight'].is_contiguous()
    path = tmp_path / 'cl' / 'checkpoint.pth.tar'
    path.parent.mkdir()
    torch.save(raw, path)
    export_checkpoint(path, tmp_path / 'out', evaluate=False)
    tensors = safetensors.torch.load_file(str(tmp_path / 'out' / 'model.safetensors'))
    assert torch.equal(tensors['stem.0.weight'], timm_run.ema_model.state_dict()['stem.0.weight'])


def test_export_leaves_out_optimizer_and_args(timm_run, tmp_path):
    export_checkpoint(timm_run.checkpoint, tmp_path / 'out')
    with safetensors.safe_open(str(tmp_path / 'out' / 'model.safetensors'), framework='pt') as f:
        keys = set(f.keys())
        metadata = f.metadata()
    assert keys == set(timm_run.ema_model.state_dict())
    assert metadata == {'format': 'pt'}
    # config.json is plain JSON, with no pickled Namespace and no optimizer state.
    config_text = (tmp_path / 'out' / 'config.json').read_text()
    assert 'optimizer' not in config_text
    assert 'Namespace' not in config_text


def test_export_bare_state_dict_needs_model(tmp_path, timm_run):
    path = tmp_path / 'bare' / 'weights.pth'
    path.parent.mkdir()
    torch.save(timm_run.model.state_dict(), path)
    with pytest.raises(ValueError, match='records no architecture .* pass --model'):
        export_checkpoint(path, tmp_path / 'out')
    result = export_checkpoint(path, tmp_path / 'out', model_name='shakedrop_pyramidnet20_a48', evaluate=False)
    loaded = timm.create_model(f'local-dir:{tmp_path / "out"}', pretrained=True)
    assert result.weights == 'raw'
    assert torch.equal(_outputs(loaded, _fixed_input()), _outputs(timm_run.model, _fixed_input()))


def test_export_safetensors_input(tmp_path, timm_run):
    path = tmp_path / 'bare' / 'weights.safetensors'
    path.parent.mkdir()
    safetensors.torch.save_file(timm_run.model.state_dict(), str(path))
    export_checkpoint(path, tmp_path / 'out', model_name='shakedrop_pyramidnet20_a48', evaluate=False)
    loaded = timm.create_model(f'local-dir:{tmp_path / "out"}', pretrained=True)
    assert torch.equal(_outputs(loaded, _fixed_input()), _outputs(timm_run.model, _fixed_input()))


class _NotAllowed:
    pass


def test_export_rejects_arbitrary_pickles(tmp_path):
    path = tmp_path / 'evil.pth.tar'
    torch.save({'state_dict': {'w': torch.zeros(1)}, 'payload': _NotAllowed()}, path)
    with pytest.raises(RuntimeError, match='pickled objects other than tensors and argparse.Namespace'):
        load_training_checkpoint(path)


def test_export_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match='does not exist'):
        export_checkpoint(tmp_path / 'missing.pth.tar', tmp_path / 'out')


def test_export_wrong_architecture(timm_run, tmp_path):
    with pytest.raises(RuntimeError, match='do not fit .*shakedrop_pyramidnet56_a48'):
        export_checkpoint(timm_run.checkpoint, tmp_path / 'out', model_name='shakedrop_pyramidnet56_a48')
    assert not (tmp_path / 'out').exists()


def test_export_rejects_bad_tag(timm_run, tmp_path):
    with pytest.raises(ValueError, match='`tag` must be lowercase'):
        export_checkpoint(timm_run.checkpoint, tmp_path / 'out', tag='Bad Tag')


def test_export_refuses_non_empty_output(timm_run, tmp_path):
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'keep.txt').write_text('mine')
    with pytest.raises(ValueError, match='not empty; pass --force'):
        export_checkpoint(timm_run.checkpoint, out)
    assert os.listdir(out) == ['keep.txt']
    export_checkpoint(timm_run.checkpoint, out, force=True)
    assert sorted(os.listdir(out)) == ['README.md', 'config.json', 'model.safetensors']


def test_export_into_empty_existing_folder(timm_run, tmp_path):
    (tmp_path / 'out').mkdir()
    export_checkpoint(timm_run.checkpoint, tmp_path / 'out')
    assert sorted(os.listdir(tmp_path / 'out')) == ['README.md', 'config.json', 'model.safetensors']


def test_interrupted_export_leaves_nothing(timm_run, tmp_path, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(export_module, '_verify_export', interrupt)
    with pytest.raises(KeyboardInterrupt):
        export_checkpoint(timm_run.checkpoint, tmp_path / 'out')
    assert sorted(os.listdir(tmp_path)) == ['run']


def test_interrupted_forced_export_keeps_old_output(timm_run, tmp_path, monkeypatch):
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'old.txt').write_text('previous export')

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(export_module, '_verify_export', interrupt)
    assert cli_main(['export', str(timm_run.checkpoint), '--output', str(out), '--force']) == 130
    assert os.listdir(out) == ['old.txt']
    assert sorted(os.listdir(tmp_path)) == ['out', 'run']


def test_export_fails_when_verification_differs(timm_run, tmp_path, monkeypatch):
    real_create_model = timm.create_model

    def perturbed_create_model(name, *args, **kwargs):
        model = real_create_model(name, *args, **kwargs)
        if name.startswith('local-dir:'):
            with torch.no_grad():
                model.head.fc.bias.add_(1e-6)
        return model

    monkeypatch.setattr(timm, 'create_model', perturbed_create_model)
    with pytest.raises(RuntimeError, match='Verification failed'):
        export_checkpoint(timm_run.checkpoint, tmp_path / 'out')
    assert sorted(os.listdir(tmp_path)) == ['run']


def test_export_metrics_from_timm_summary(timm_run, tmp_path):
    # timm's train.py writes the EMA weights' metrics into eval_* when it evaluates an EMA.
    result = export_checkpoint(timm_run.checkpoint, tmp_path / 'out')
    assert result.metrics.top1 == 31.25
    assert result.metrics.top5 == 75.0
    card = (tmp_path / 'out' / 'README.md').read_text()
    assert '| EMA | 31.25 | 75.00 | 2.1250 |' in card


def test_export_raw_weights_lack_timm_metrics(timm_run, tmp_path):
    result = export_checkpoint(timm_run.checkpoint, tmp_path / 'out', use_ema=False, evaluate=False)
    assert result.metrics is None
    assert 'no validation metrics of the raw weights' in result.metrics_note
    card = (tmp_path / 'out' / 'README.md').read_text()
    assert 'Not measured: summary.csv has no validation metrics of the raw weights' in card
    assert 'evaluation was switched off' in card


def test_export_metrics_from_ema_columns(tmp_path):
    run = make_timm_run(tmp_path / 'run', summary='ema_columns')
    ema = export_checkpoint(run.checkpoint, tmp_path / 'ema')
    raw = export_checkpoint(run.checkpoint, tmp_path / 'raw', use_ema=False)
    assert (ema.metrics.top1, ema.metrics.loss) == (37.5, 2.0)
    assert (raw.metrics.top1, raw.metrics.loss) == (31.25, 2.125)


def test_export_ignores_summary_of_other_metric(tmp_path):
    run = make_timm_run(tmp_path / 'run')
    summary = run.run_dir / 'summary.csv'
    summary.write_text(summary.read_text().replace('31.25', '99.0'))
    result = export_checkpoint(run.checkpoint, tmp_path / 'out', evaluate=False)
    assert result.metrics is None
    assert "does not match the checkpoint's recorded metric" in result.metrics_note


def test_export_evaluates_when_summary_is_missing(tmp_path):
    # An empty dataset name and no data folder select the embedded digits of timm_shakedrop.data.
    run = make_timm_run(tmp_path / 'run', summary=None, dataset='', data_dir=None, val_num_samples=40,
                        mean=[0.3057] * 3, std=[0.3241] * 3, input_size=[3, 32, 32])
    result = export_checkpoint(run.checkpoint, tmp_path / 'out')
    assert result.metrics is not None
    assert 'Evaluated by `timm-shakedrop export` on the validation split of the run (40 images)' in (
        result.metrics.source)
    assert 0.0 <= result.metrics.top1 <= 100.0
    config = json.loads((tmp_path / 'out' / 'config.json').read_text())
    assert config['label_names'] == [str(d) for d in range(10)]


def test_export_notes_missing_validation_data(tmp_path):
    run = make_timm_run(tmp_path / 'run', summary=None, dataset='torch/cifar10', data_dir=str(tmp_path / 'none'))
    result = export_checkpoint(run.checkpoint, tmp_path / 'out')
    assert result.metrics is None
    assert 'validation split of the run is not available here' in result.metrics_note


def test_export_card_metadata(timm_run, tmp_path):
    result = export_checkpoint(timm_run.checkpoint, tmp_path / 'out')
    card = ModelCard.load(tmp_path / 'out' / 'README.md')
    assert card.data.library_name == 'timm'
    assert card.data.pipeline_tag == 'image-classification'
    assert card.data.license == 'apache-2.0'
    assert card.data.datasets == ['uoft-cs/cifar10']
    assert 'transformers' not in card.data.tags
    assert {'timm', 'shakedrop', 'pyramidnet'} <= set(card.data.tags)
    model = timm_run.ema_model
    assert result.param_count == count_parameters(model) == 310_845
    assert result.macs == count_macs(model, (3, 32, 32))
    assert f'({result.param_count:,})' in card.text
    assert f'({result.macs:,})' in card.text


def test_export_card_content(timm_run, tmp_path):
    export_checkpoint(timm_run.checkpoint, tmp_path / 'out', repo_id='shakedrop-org/pn20')
    text = (tmp_path / 'out' / 'README.md').read_text()
    assert "timm.create_model('hf-hub:shakedrop-org/pn20', pretrained=True)" in text
    assert 'python train.py --config args.yaml' in text
    assert 'drop_path: 0.2' in text  # the args.yaml of the run, shown in the card
    assert '@article{yamada2019shakedrop' in text
    assert '@inproceedings{han2017pyramidnet' in text
    assert '9 layers with keep probability from 0.9778 (first unit) to 0.8000 (last unit)' in text
    # Paper results and results measured here are separate sections.
    assert text.index('### Measured by this project') < text.index('### Reported in the literature')
    assert '| PyramidNet-272 (bottleneck, α = 200) | 26.0M | 3.31 | 16.35 |' in text
    assert '| AutoAugment | 10.7 |' in text


def test_export_card_placeholder_without_repo_id(timm_run, tmp_path):
    export_checkpoint(timm_run.checkpoint, tmp_path / 'out')
    text = (tmp_path / 'out' / 'README.md').read_text()
    assert "hf-hub:YOUR_ORG/YOUR_MODEL" in text


def test_export_cli_success(timm_run, tmp_path, capsys):
    labels = tmp_path / 'labels.txt'
    labels.write_text('\n'.join(f'c{i}' for i in range(10)) + '\n')
    code = cli_main(['export', str(timm_run.checkpoint), '--output', str(tmp_path / 'out'), '--tag', 'cifar10',
                     '--label-names', str(labels), '--dataset-id', 'uoft-cs/cifar10', '--license', 'mit'])
    out, err = capsys.readouterr()
    assert code == 0
    assert 'Exported the ema weights of shakedrop_pyramidnet20_a48' in out
    assert 'validation top-1 31.25%' in out
    assert 'Traceback' not in err
    config = json.loads((tmp_path / 'out' / 'config.json').read_text())
    assert config['label_names'][9] == 'c9'
    assert ModelCard.load(tmp_path / 'out' / 'README.md').data.license == 'mit'


def test_export_cli_error_is_one_line(timm_run, tmp_path, capsys):
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'x').write_text('x')
    code = cli_main(['export', str(timm_run.checkpoint), '--output', str(out)])
    err = capsys.readouterr().err
    assert code == 1
    assert 'Traceback' not in err
    lines = [line for line in err.splitlines() if 'error:' in line]
    assert lines == [f'timm-shakedrop export: error: Output folder {out} is not empty; pass --force (force=True) '
                     f'to replace it.']


def test_export_cli_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(['export', 'checkpoint.pth.tar'])
    assert exit_info.value.code == 2
    assert 'the following arguments are required: --output' in capsys.readouterr().err


def test_weights_only_load_of_timm_checkpoint(timm_run):
    ckpt = load_training_checkpoint(timm_run.checkpoint)
    assert ckpt.arch == 'shakedrop_pyramidnet20_a48'
    assert ckpt.epoch == 0
    assert ckpt.metric == 31.25
    assert ckpt.args['drop_path'] == 0.2
    assert ckpt.state_dict_ema is not None
    assert 'drop_path: 0.2' in ckpt.args_yaml


# Weights without a training run

@pytest.mark.parametrize('num_classes', [10, 1000])
def test_export_bare_state_dict_claims_no_run(num_classes, tmp_path, capsys):
    # A bare state dict in a folder without args.yaml: neither the digits (the trainer's default data) nor their
    # label names may be attributed to it.
    torch.manual_seed(0)
    model = timm.create_model('shakedrop_pyramidnet20_a48', num_classes=num_classes)
    path = tmp_path / 'bare' / 'weights.pth'
    path.parent.mkdir()
    torch.save(model.state_dict(), path)
    code = cli_main(['export', str(path), '--model', 'shakedrop_pyramidnet20_a48', '--output', str(tmp_path / 'out')])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert 'no validation metrics: the weights come from a bare state dict (`weights.pth`)' in out
    assert 'metrics for these weights' not in err  # the log line that starts an evaluation
    config = json.loads((tmp_path / 'out' / 'config.json').read_text())
    assert config['num_classes'] == num_classes
    assert 'label_names' not in config
    card = ModelCard.load(tmp_path / 'out' / 'README.md')
    assert card.data.datasets is None
    assert 'digits' not in card.text
    assert 'exported from the raw weights of a bare state dict (`weights.pth`)' in card.text
    assert 'their training data and their accuracy are unknown (not measured)' in card.text
    assert '- **Dataset:** unknown: the weights come from a bare state dict' in card.text
    assert 'Not measured: the weights come from a bare state dict' in card.text
    assert "(the architecture's defaults, because no run records its own)" in card.text
    assert '## Training\n\nUnknown: the weights come from a bare state dict' in card.text


def test_export_bare_state_dict_with_given_names(tmp_path):
    path = tmp_path / 'bare' / 'weights.safetensors'
    path.parent.mkdir()
    torch.manual_seed(0)
    safetensors.torch.save_file(timm.create_model('shakedrop_pyramidnet20_a48').state_dict(), str(path))
    names = [f'c{i}' for i in range(10)]
    export_checkpoint(path, tmp_path / 'out', model_name='shakedrop_pyramidnet20_a48', label_names=names,
                      dataset_ids=['uoft-cs/cifar10'])
    config = json.loads((tmp_path / 'out' / 'config.json').read_text())
    assert config['label_names'] == names
    card = ModelCard.load(tmp_path / 'out' / 'README.md')
    assert card.data.datasets == ['uoft-cs/cifar10']
    assert '- **Dataset:** `uoft-cs/cifar10` (given with --dataset-id; no run records the training data)' in (
        card.text)


def test_export_checkpoint_without_args_is_no_run(tmp_path, timm_run):
    path = tmp_path / 'noargs' / 'checkpoint-2.pth.tar'
    path.parent.mkdir()
    torch.save(dict(epoch=2, arch='shakedrop_pyramidnet20_a48', state_dict=timm_run.model.state_dict()), path)
    result = export_checkpoint(path, tmp_path / 'out')
    assert result.metrics is None
    assert result.metrics_note.startswith('the weights come from a training checkpoint (`checkpoint-2.pth.tar`) '
                                          'that records no training arguments')
    config = json.loads((tmp_path / 'out' / 'config.json').read_text())
    assert 'label_names' not in config
    text = (tmp_path / 'out' / 'README.md').read_text()
    assert 'digits' not in text
    assert 'raw weights of `checkpoint-2.pth.tar`, epoch 2 (counted from 0)' in text


def test_export_run_args_without_dataset(tmp_path, timm_run):
    # Arguments that name no dataset must not be completed with the trainer's default dataset.
    path = tmp_path / 'nodata' / 'checkpoint-0.pth.tar'
    path.parent.mkdir()
    args = __import__('argparse').Namespace(model='shakedrop_pyramidnet20_a48', epochs=1, drop_path=0.2)
    torch.save(dict(epoch=0, arch='shakedrop_pyramidnet20_a48', state_dict=timm_run.model.state_dict(), args=args),
               path)
    result = export_checkpoint(path, tmp_path / 'out')
    assert result.metrics is None
    assert 'the run arguments name no dataset (`dataset` or `data_dir`) to evaluate on' in result.metrics_note
    text = (tmp_path / 'out' / 'README.md').read_text()
    assert 'digits' not in text
    assert '- **Dataset:** unknown: the run arguments name no dataset' in text
    assert 'label_names' not in json.loads((tmp_path / 'out' / 'config.json').read_text())


# Training text of the card

@pytest.mark.parametrize('epoch, extra, expected', [
    (3, dict(epochs=6), "epoch 3 (counted from 0), that is after 4 of the run's 6 epochs."),
    (6, dict(epochs=6, cooldown_epochs=2), "epoch 6 (counted from 0), that is after 7 of the run's 8 epochs."),
    (0, dict(epochs=1), "epoch 0 (counted from 0), that is after the run's single epoch."),
    (4, dict(epochs=2, cycle_limit=3), 'epoch 4 (counted from 0), that is after 5 epochs of training.'),
    (7, dict(epochs=6), 'epoch 7 (counted from 0), that is after 8 epochs of training.'),
])
def test_export_card_states_epoch(epoch, extra, expected, tmp_path):
    run = make_timm_run(tmp_path / 'run', summary=None, recipe='quick', **extra)
    with torch.serialization.safe_globals([__import__('argparse').Namespace]):
        raw = torch.load(run.checkpoint, weights_only=True)
    raw['epoch'] = epoch
    torch.save(raw, run.checkpoint)
    export_checkpoint(run.checkpoint, tmp_path / 'out', evaluate=False)
    text = (tmp_path / 'out' / 'README.md').read_text()
    assert f'These weights are from {expected}' in text
    assert ("The run was trained by `timm-shakedrop train`, and the arguments of the run's args.yaml (below) "
            'reproduce the whole run:') in text
    assert 'timm-shakedrop train --config args.yaml' in text
    assert f'EMA weights of `model_best.pth.tar`, epoch {epoch} (counted from 0)' in text
    assert 'Trained for' not in text


# File modes

@pytest.mark.parametrize('umask, folder_mode, file_mode', [(0o022, 0o755, 0o644), (0o027, 0o750, 0o640)])
def test_export_modes_follow_umask(umask, folder_mode, file_mode, timm_run, tmp_path):
    previous = os.umask(umask)
    try:
        export_checkpoint(timm_run.checkpoint, tmp_path / 'out', evaluate=False)
    finally:
        os.umask(previous)
    out = tmp_path / 'out'
    assert oct(out.stat().st_mode & 0o777) == oct(folder_mode)
    for name in ('README.md', 'config.json', 'model.safetensors'):
        assert oct((out / name).stat().st_mode & 0o777) == oct(file_mode), name
