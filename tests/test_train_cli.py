"""`timm-shakedrop train` run in-process through `main(argv)`: real short runs, outputs, bad input."""
import csv
import os

import pytest
import torch
import yaml

from timm_shakedrop.cli.train import main, parse_args
from timm_shakedrop.training import load_training_checkpoint

# Small, single-threaded digits runs at 16x16 input.
FAST_ARGV = ['--img-size', '16', '-j', '0', '--num-threads', '1', '--log-interval', '1000', '--seed', '3']


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Run each test on one torch thread: two OpenMP threads slow down badly when other processes share the
    two cores of the test machine."""
    num_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(num_threads)


def _run_dir(output) -> str:
    runs = [os.path.join(output, name) for name in os.listdir(output)]
    assert len(runs) == 1, runs
    return runs[0]


def _read_summary(run_dir):
    with open(os.path.join(run_dir, 'summary.csv'), newline='') as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope='module')
def digits_run(tmp_path_factory):
    """Four epochs on 320 digits with EMA: the one real learning run of this module."""
    output = tmp_path_factory.mktemp('digits_run')
    argv = FAST_ARGV + [
        '--train-num-samples', '320', '--val-num-samples', '100', '-b', '16', '--epochs', '4',
        '--lr', '0.1', '--drop-path', '0.1', '--model-ema', '--model-ema-decay', '0.9',
        '--output', str(output),
    ]
    exit_code = main(argv)
    assert exit_code == 0
    return _run_dir(str(output))


@pytest.mark.slow
def test_short_run_learns(digits_run):
    rows = _read_summary(digits_run)
    assert [int(row['epoch']) for row in rows] == [0, 1, 2, 3]
    train_losses = [float(row['train_loss']) for row in rows]
    assert train_losses[-1] < 0.75 * train_losses[0]
    # 10 balanced classes: chance is 10%.
    assert max(float(row['eval_top1']) for row in rows) >= 50.0


@pytest.mark.slow
def test_summary_columns_follow_timm(digits_run):
    with open(os.path.join(digits_run, 'summary.csv'), newline='') as f:
        header = next(csv.reader(f))
    assert header == ['epoch', 'train_loss', 'eval_loss', 'eval_top1', 'eval_top5',
                      'eval_ema_loss', 'eval_ema_top1', 'eval_ema_top5', 'lr']


@pytest.mark.slow
def test_checkpoint_keys_contract(digits_run):
    import argparse

    for name in ('last.pth.tar', 'model_best.pth.tar'):
        checkpoint = load_training_checkpoint(os.path.join(digits_run, name))
        for key in ('state_dict', 'state_dict_ema', 'arch', 'args', 'epoch', 'optimizer', 'metric',
                    'scheduler', 'rng_states', 'num_updates', 'batch_idx', 'saver', 'version'):
            assert key in checkpoint, (name, key)
        assert checkpoint['arch'] == 'shakedrop_pyramidnet20_a48'
        assert isinstance(checkpoint['args'], argparse.Namespace)
        assert checkpoint['batch_idx'] is None
        assert 'stages.0.0.drop_path.keep_prob' in checkpoint['state_dict']
    assert load_training_checkpoint(os.path.join(digits_run, 'last.pth.tar'))['epoch'] == 3


@pytest.mark.slow
def test_args_yaml_holds_resolved_data_config(digits_run):
    with open(os.path.join(digits_run, 'args.yaml')) as f:
        args = yaml.safe_load(f)
    assert args['model'] == 'shakedrop_pyramidnet20_a48'
    assert args['recipe'] == 'quick'
    assert args['input_size'] == [3, 16, 16]
    assert args['num_classes'] == 10
    assert args['class_names'] == [str(i) for i in range(10)]
    assert len(args['mean']) == 3
    assert args['filter_bias_and_bn'] is False


@pytest.mark.slow
def test_eval_dataset_matches_run(digits_run):
    from timm_shakedrop.data import create_eval_dataset

    with open(os.path.join(digits_run, 'args.yaml')) as f:
        args = yaml.safe_load(f)
    dataset, class_names = create_eval_dataset(args)
    assert len(dataset) == 100
    assert class_names == [str(i) for i in range(10)]
    image, label = dataset[0]
    assert image.shape == (3, 16, 16)
    assert image.dtype == torch.float32
    assert isinstance(label, int)

    # The EMA weights of the best checkpoint reach the recorded EMA top-1 on this dataset.
    import timm

    checkpoint = load_training_checkpoint(os.path.join(digits_run, 'last.pth.tar'))
    model = timm.create_model(args['model'], num_classes=10)
    model.load_state_dict(checkpoint['state_dict'])
    model.eval()
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    labels = torch.tensor([dataset[i][1] for i in range(len(dataset))])
    with torch.no_grad():
        top1 = (model(images).argmax(1) == labels).float().mean().item() * 100
    last_row = _read_summary(digits_run)[-1]
    assert top1 == pytest.approx(float(last_row['eval_top1']), abs=1e-3)


@pytest.mark.slow
def test_learning_curve_png(digits_run):
    with open(os.path.join(digits_run, 'learning_curve.png'), 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'


@pytest.mark.slow
def test_final_lines_name_checkpoint_and_export(tmp_path, capsys, caplog, monkeypatch):
    import logging
    import sys

    argv = FAST_ARGV + ['--train-num-samples', '32', '--val-num-samples', '20', '-b', '16', '--epochs', '1',
                        '--output', str(tmp_path), '--experiment', 'final']
    with caplog.at_level(logging.INFO, logger='timm_shakedrop'):
        assert main(argv) == 0
    epoch_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith('Epoch 0/0, ')]
    assert len(epoch_lines) == 1
    for part in ('train loss ', 'lr ', ' img/s', 'eval loss ', 'top-1 ', 'top-5 '):
        assert part in epoch_lines[0]
    captured = capsys.readouterr()
    assert '\r' not in captured.err  # no progress bar without a terminal
    out = captured.out.splitlines()
    best = os.path.join(str(tmp_path), 'final', 'model_best.pth.tar')
    assert f'Checkpoint: {best}' in out
    assert out[-2] == 'Export it with:'
    assert out[-1] == f'  timm-shakedrop export {best} --output {os.path.join(str(tmp_path), "final", "export")}'

    # A second run with the same experiment name gets a new folder; on a terminal it draws a progress bar.
    monkeypatch.setattr(sys.stderr, 'isatty', lambda: True, raising=False)
    assert main(argv) == 0
    assert sorted(os.listdir(tmp_path)) == ['final', 'final-1']
    err = capsys.readouterr().err
    assert '\r' in err
    assert 'Epoch 0' in err


def _one_line_error(capsys, argv, expected_code=2):
    exit_code = main(argv)
    err = capsys.readouterr().err
    assert exit_code == expected_code
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert 'Traceback' not in err
    return lines[0]


def test_unknown_model_suggests_names(tmp_path, capsys):
    line = _one_line_error(capsys, FAST_ARGV + ['--model', 'shakedrop_pyramidnet20', '--output', str(tmp_path)])
    assert line.startswith('timm-shakedrop train: error: Unknown model ')
    assert "'shakedrop_pyramidnet20_a48'" in line


def test_unknown_recipe_lists_recipes(tmp_path, capsys):
    line = _one_line_error(capsys, FAST_ARGV + ['--recipe', 'shakedrop_cifar', '--output', str(tmp_path)])
    assert "Unknown recipe 'shakedrop_cifar'. Did you mean 'shakedrop-cifar'?" in line
    assert 'quick' in line


def test_missing_image_folder_says_where(tmp_path, capsys):
    missing = tmp_path / 'no_such_data'
    line = _one_line_error(capsys, FAST_ARGV + ['--data-dir', str(missing), '--output', str(tmp_path)])
    assert f'Data directory {missing} does not exist' in line
    assert 'train/ and validation/' in line


def test_missing_cifar_says_where(tmp_path, capsys):
    line = _one_line_error(capsys, FAST_ARGV + ['--dataset', 'torch/cifar10', '--data-dir', str(tmp_path),
                                                '--output', str(tmp_path / 'out')])
    assert 'CIFAR-10 is not available' in line
    assert os.path.join(str(tmp_path), 'cifar-10-batches-py') in line


def test_class_count_contradiction(tmp_path, capsys):
    line = _one_line_error(capsys, FAST_ARGV + ['--num-classes', '100', '--output', str(tmp_path)])
    assert '`--num-classes 100` contradicts the dataset digits, which has 10 classes' in line


def test_fp16_amp_on_cpu_is_rejected(tmp_path, capsys):
    line = _one_line_error(capsys, FAST_ARGV + ['--amp', '--amp-dtype', 'float16', '--device', 'cpu',
                                                '--output', str(tmp_path)])
    assert '`--amp-dtype float16` needs CUDA' in line


def test_malformed_flag_exits_2(capsys):
    assert main(['--epochs', 'three']) == 2
    assert "invalid int value: 'three'" in capsys.readouterr().err


def test_nan_loss_names_epoch_and_step(tmp_path, capsys, monkeypatch):
    from timm.task import ClassificationTask

    forward = ClassificationTask.forward
    calls = []

    def forward_with_nan(self, input, target):
        result = forward(self, input, target)
        calls.append(1)
        if len(calls) == 3:
            result['loss'] = result['loss'] * float('nan')
        return result

    monkeypatch.setattr(ClassificationTask, 'forward', forward_with_nan)
    # 32 images at batch 16: two steps per epoch, so the third forward pass is epoch 1, step 0.
    line = _one_line_error(capsys, FAST_ARGV + ['--train-num-samples', '32', '--val-num-samples', '10', '-b', '16',
                                                '--epochs', '2', '--output', str(tmp_path)], expected_code=1)
    assert 'Training loss is nan at epoch 1, step 0' in line
    assert 'The last complete checkpoint is' in line


def test_recipe_values_and_overrides():
    args = parse_args(['--recipe', 'shakedrop-cifar', '--lr', '0.1'])
    assert args.lr == 0.1
    assert args.epochs == 300
    assert args.batch_size == 128
    assert args.weight_decay == 1e-4
    assert args.filter_bias_and_bn is False
    assert args.train_crop_mode == 'pad'
    assert args.crop_padding == 4
    assert args.hflip == 0.5

    args = parse_args(['--recipe', 'pyramidnet272-autoaugment'])
    assert (args.epochs, args.batch_size, args.lr, args.weight_decay) == (1800, 64, 0.05, 5e-5)
    assert (args.sched, args.sched_on_updates, args.min_lr) == ('cosine', True, 0.0)
    assert (args.clip_grad, args.clip_mode, args.cutout, args.aa) == (5.0, 'norm', 16, 'cifar10')
    assert args.model == 'shakedrop_pyramidnet272'


def test_default_recipe_follows_dataset():
    assert parse_args([]).recipe == 'quick'
    assert parse_args(['--dataset', 'torch/cifar100', '--data-dir', 'x']).recipe == 'shakedrop-cifar'
    assert parse_args(['--data-dir', 'x']).recipe == 'timm'
    assert parse_args(['--data-dir', 'x']).hflip == 0.5


def test_config_file_between_recipe_and_flags(tmp_path):
    config = tmp_path / 'config.yaml'
    config.write_text('epochs: 7\nbatch-size: 12\nrecipe: quick\n')
    args = parse_args(['-c', str(config), '--batch-size', '10'])
    assert args.epochs == 7
    assert args.batch_size == 10
    assert args.hflip == 0.0


def test_multistep_recipe_schedule():
    from timm.optim import create_optimizer_v2, optimizer_kwargs
    from timm.scheduler import create_scheduler_v2, scheduler_kwargs

    args = parse_args(['--recipe', 'shakedrop-cifar'])
    optimizer = create_optimizer_v2(torch.nn.Linear(2, 2), **optimizer_kwargs(args))
    assert optimizer.defaults['nesterov'] is True
    scheduler, num_epochs = create_scheduler_v2(optimizer, **scheduler_kwargs(args), updates_per_epoch=10)
    assert num_epochs == 300
    lrs = {}
    for epoch in (0, 149, 150, 224, 225, 299):
        scheduler.step(epoch)
        lrs[epoch] = optimizer.param_groups[0]['lr']
    assert lrs == pytest.approx({0: 0.5, 149: 0.5, 150: 0.05, 224: 0.05, 225: 0.005, 299: 0.005})


def test_cosine_recipe_steps_every_update():
    from timm.optim import create_optimizer_v2, optimizer_kwargs
    from timm.scheduler import create_scheduler_v2, scheduler_kwargs

    args = parse_args(['--recipe', 'pyramidnet272-autoaugment'])
    optimizer = create_optimizer_v2(torch.nn.Linear(2, 2), **optimizer_kwargs(args))
    scheduler, _ = create_scheduler_v2(optimizer, **scheduler_kwargs(args), updates_per_epoch=782)
    assert optimizer.param_groups[0]['lr'] == pytest.approx(0.05)
    scheduler.step_update(1)
    first = optimizer.param_groups[0]['lr']
    assert 0.05 * (1 - 1e-6) < first < 0.05
    scheduler.step_update(1800 * 782 // 2)
    assert optimizer.param_groups[0]['lr'] == pytest.approx(0.025, rel=1e-4)
    scheduler.step_update(1800 * 782 - 1)
    assert optimizer.param_groups[0]['lr'] < 1e-9


@pytest.mark.slow
def test_bfloat16_amp_and_channels_last(tmp_path):
    argv = FAST_ARGV + ['--train-num-samples', '32', '--val-num-samples', '10', '-b', '16', '--epochs', '1',
                        '--amp', '--channels-last', '--device', 'cpu', '--output', str(tmp_path), '--experiment', 'amp']
    assert main(argv) == 0
    checkpoint = load_training_checkpoint(os.path.join(str(tmp_path), 'amp', 'last.pth.tar'))
    assert checkpoint['args'].amp_dtype == 'bfloat16'
    assert checkpoint['state_dict']['stem.0.weight'].dtype == torch.float32
    rows = _read_summary(os.path.join(str(tmp_path), 'amp'))
    assert 0.0 < float(rows[0]['train_loss']) < 10.0
