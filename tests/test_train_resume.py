"""Resumption, interruption by signals, atomic checkpoint writes and weight-decay groups."""
import os
import signal

import pytest
import torch

from timm_shakedrop.cli.train import main, parse_args
from timm_shakedrop.training import Trainer, load_training_checkpoint

# Two epochs of four steps on 64 digits at 16x16, with ShakeDrop, EMA and a per-step cosine schedule.
BASE_ARGV = [
    '--img-size', '16', '-j', '0', '--num-threads', '1', '--log-interval', '1000', '--seed', '5',
    '--train-num-samples', '64', '--val-num-samples', '20', '-b', '16', '--epochs', '2',
    '--model-ema', '--model-ema-decay', '0.9',
]
STEPS_PER_EPOCH = 4
# A resumed run repeats the same float32 operations on the CPU; this absolute tolerance only absorbs
# a possible change of reduction order.
RESUME_ATOL = 1e-6


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Run each test on one torch thread: two OpenMP threads slow down badly when other processes share the
    two cores of the test machine."""
    num_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(num_threads)


def _tensors(checkpoint):
    """Weights, EMA weights and optimizer momentum buffers, by name."""
    tensors = {f'model.{k}': v for k, v in checkpoint['state_dict'].items()}
    tensors.update({f'ema.{k}': v for k, v in checkpoint['state_dict_ema'].items()})
    for index, state in checkpoint['optimizer']['state'].items():
        tensors[f'momentum.{index}'] = state['momentum_buffer']
    return tensors


def _assert_same_state(path, reference_path):
    state = _tensors(load_training_checkpoint(path))
    reference = _tensors(load_training_checkpoint(reference_path))
    assert state.keys() == reference.keys()
    for key, value in reference.items():
        torch.testing.assert_close(state[key].float(), value.float(), rtol=0, atol=RESUME_ATOL, msg=key)


def _summary_rows(run_dir):
    with open(os.path.join(run_dir, 'summary.csv')) as f:
        return f.read().splitlines()


def _signal_at_step(monkeypatch, step: int, signum: int):
    """Send `signum` to this process during the `step`-th call of `Trainer.train_step` (counting from 0)."""
    original = Trainer.train_step
    calls = []

    def train_step(self, *args, **kwargs):
        loss = original(self, *args, **kwargs)
        if len(calls) == step:
            os.kill(os.getpid(), signum)
        calls.append(1)
        return loss

    monkeypatch.setattr(Trainer, 'train_step', train_step)


@pytest.fixture(scope='module', params=['0', '1'], ids=['workers0', 'workers1'])
def reference_run(request, tmp_path_factory):
    """An uninterrupted run, without data loading workers (transforms draw from the main generator) and with one."""
    output = tmp_path_factory.mktemp('resume')
    workers = request.param
    assert main(BASE_ARGV + ['-j', workers, '--output', str(output), '--experiment', 'reference']) == 0
    return output, workers


@pytest.mark.slow
def test_sigterm_writes_recovery_and_resume_is_exact(reference_run, monkeypatch, capsys):
    output, workers = reference_run
    _signal_at_step(monkeypatch, STEPS_PER_EPOCH + 1, signal.SIGTERM)
    exit_code = main(BASE_ARGV + ['-j', workers, '--output', str(output), '--experiment', 'interrupted'])
    err = capsys.readouterr().err
    assert exit_code == 128 + signal.SIGTERM
    run_dir = os.path.join(str(output), 'interrupted')
    recovery = os.path.join(run_dir, 'recovery-1-2.pth.tar')
    assert f'Recovery checkpoint: {recovery}' in err
    assert f'timm-shakedrop train --resume {recovery}' in err

    # The last complete checkpoint is still the end of epoch 0.
    last = load_training_checkpoint(os.path.join(run_dir, 'last.pth.tar'))
    assert last['epoch'] == 0
    assert last['batch_idx'] is None
    checkpoint = load_training_checkpoint(recovery)
    assert (checkpoint['epoch'], checkpoint['batch_idx'], checkpoint['num_updates']) == (1, 2, 6)
    assert not [name for name in os.listdir(run_dir) if name.endswith('.partial')]

    # Resuming finishes epoch 1 in the same folder and ends where the uninterrupted run ended.
    monkeypatch.undo()
    assert main(['--resume', recovery, '--num-threads', '1']) == 0
    reference_dir = os.path.join(str(output), 'reference')
    _assert_same_state(os.path.join(run_dir, 'last.pth.tar'), os.path.join(reference_dir, 'last.pth.tar'))
    assert _summary_rows(run_dir) == _summary_rows(reference_dir)


@pytest.mark.slow
def test_resume_from_epoch_checkpoint_is_exact(reference_run):
    output, _ = reference_run
    reference_dir = os.path.join(str(output), 'reference')
    checkpoint = os.path.join(reference_dir, 'checkpoint-0.pth.tar')
    assert main(['--resume', checkpoint, '--num-threads', '1', '--output', str(output),
                 '--experiment', 'from-epoch-0']) == 0
    run_dir = os.path.join(str(output), 'from-epoch-0')
    _assert_same_state(os.path.join(run_dir, 'last.pth.tar'), os.path.join(reference_dir, 'last.pth.tar'))
    # The new folder's summary holds the resumed epoch only, with the reference run's figures.
    assert _summary_rows(run_dir) == [_summary_rows(reference_dir)[0], _summary_rows(reference_dir)[2]]


def test_sigint_in_first_epoch(tmp_path, monkeypatch, capsys):
    handler_before = signal.getsignal(signal.SIGINT)
    _signal_at_step(monkeypatch, 1, signal.SIGINT)
    argv = BASE_ARGV + ['--output', str(tmp_path), '--experiment', 'sigint', '--val-num-samples', '10']
    assert main(argv) == 128 + signal.SIGINT
    assert 'Training interrupted at epoch 0 after 2 batches.' in capsys.readouterr().err
    files = sorted(os.listdir(tmp_path / 'sigint'))
    assert [name for name in files if name.endswith('.pth.tar')] == ['recovery-0-2.pth.tar']
    # The handlers are restored afterwards.
    assert signal.getsignal(signal.SIGINT) is handler_before


def test_atomic_save_keeps_last_checkpoint(tmp_path, monkeypatch):
    import argparse

    from timm_shakedrop.training import ResumableCheckpointSaver
    from timm_shakedrop.training import checkpoint as checkpoint_module

    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    saver = ResumableCheckpointSaver(model, optimizer, args=argparse.Namespace(model='linear'),
                                     checkpoint_dir=str(tmp_path), recovery_dir=str(tmp_path),
                                     extra_state_fn=lambda: {'batch_idx': None})
    saver.save_checkpoint(0, metric=1.0)
    before = (tmp_path / 'last.pth.tar').read_bytes()

    def failing_save(obj, f, *args, **kwargs):
        f.write(b'half a checkpoint')
        raise OSError('disk full')

    monkeypatch.setattr(checkpoint_module.torch, 'save', failing_save)
    with pytest.raises(OSError, match='disk full'):
        saver.save_checkpoint(1, metric=2.0)
    monkeypatch.undo()
    assert (tmp_path / 'last.pth.tar').read_bytes() == before
    assert load_training_checkpoint(str(tmp_path / 'last.pth.tar'))['epoch'] == 0
    assert sorted(os.listdir(tmp_path)) == ['checkpoint-0.pth.tar', 'last.pth.tar', 'model_best.pth.tar']


@pytest.mark.parametrize('filter_flag', ['--no-filter-bias-and-bn', '--filter-bias-and-bn'])
def test_weight_decay_groups(filter_flag):
    args = parse_args(['--img-size', '16', '-j', '0', '--train-num-samples', '16', '--val-split', '', '-b', '8',
                       '--weight-decay', '3e-4', filter_flag])
    trainer = Trainer(args, create_output=False)
    params = {id(p): name for name, p in trainer.model.named_parameters()}
    decay = {params[id(p)] for g in trainer.optimizer.param_groups if g['weight_decay'] == 3e-4 for p in g['params']}
    no_decay = {params[id(p)] for g in trainer.optimizer.param_groups if g['weight_decay'] == 0 for p in g['params']}
    assert decay | no_decay == set(params.values())
    if filter_flag == '--no-filter-bias-and-bn':
        assert no_decay == set()
    else:
        assert 'stem.1.weight' in no_decay
        assert 'head.fc.bias' in no_decay
        assert 'stem.0.weight' in decay
