"""Two-process DDP training on the CPU (gloo on 127.0.0.1), started with torchrun.

This file is also the worker script: torchrun runs it with an output folder, and each rank writes what
the tests compare. One torchrun start covers all checks, because each process that imports timm costs
seconds here.
"""
import os
import socket
import subprocess
import sys

import pytest
import torch

# Tiny digits runs: 16x16 input, 64 train and 32 validation images, single-threaded processes.
TINY_ARGV = [
    '--train-num-samples', '64', '--val-num-samples', '32', '--img-size', '16', '-b', '8', '-j', '0',
    '--epochs', '1', '--num-threads', '1', '--log-interval', '1000', '--seed', '7',
]
BATCH = 8
# Parameters after one step of 2 x (B/2) DDP and of 1 process accumulating the same two B/2 micro-batches
# agree to this absolute tolerance (float32 sums in a different order).
PARAM_ATOL = 1e-6


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Run each test on one torch thread: two OpenMP threads slow down badly when other processes share the
    two cores of the test machine."""
    num_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(num_threads)


def _fixed_batch(size: int):
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(size, 3, 16, 16, generator=generator)
    labels = torch.randint(0, 10, (size,), generator=generator)
    return images, labels


def _worker(out_dir: str) -> None:
    import torch.distributed as dist

    from timm_shakedrop.cli.train import main, parse_args
    from timm_shakedrop.training import Trainer

    rank = int(os.environ['RANK'])
    dist.init_process_group('gloo')

    # ShakeDrop on: outputs for the same batch in training and in eval mode, then one step. The recorded
    # gradients are those the optimizer receives after DDP's all-reduce.
    trainer = Trainer(parse_args(TINY_ARGV), create_output=False)
    images, labels = _fixed_batch(BATCH)
    with torch.no_grad():
        trainer.model.eval()
        eval_output = trainer.model(images)
        trainer.model.train()
        train_output = trainer.model(images)
    grads = []
    trainer.optimizer.register_step_pre_hook(
        lambda optimizer, *_: grads.extend(p.grad.detach().clone() for g in optimizer.param_groups
                                           for p in g['params']))
    trainer.train_step(images, labels, need_update=True)
    torch.save({'grads': grads, 'train_output': train_output, 'eval_output': eval_output},
               os.path.join(out_dir, f'step-rank{rank}.pt'))

    # ShakeDrop off: each rank trains on its half of the batch.
    trainer = Trainer(parse_args(TINY_ARGV + ['--drop-path', '0']), create_output=False)
    half = BATCH // 2
    trainer.train_step(images[rank * half:(rank + 1) * half], labels[rank * half:(rank + 1) * half])
    params = [p.detach().clone() for p in trainer.model.parameters()]
    torch.save(params, os.path.join(out_dir, f'halves-rank{rank}.pt'))

    # The command itself; it ends the process group.
    exit_code = main(TINY_ARGV + ['--output', os.path.join(out_dir, 'runs'), '--experiment', 'ddp'])
    with open(os.path.join(out_dir, f'exit-rank{rank}.txt'), 'w') as f:
        f.write(str(exit_code))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _loopback_only_prefix():
    """Return a command prefix that runs a program in a network namespace holding only loopback, or [].

    torch's TCPStore, which torchrun starts for the rendezvous, listens on all interfaces whatever the value
    of MASTER_ADDR. Inside a fresh network namespace the only interface is 127.0.0.1. GLOO_SOCKET_IFNAME
    binds gloo to loopback in either case.
    """
    prefix = ['unshare', '--net', 'sh', '-c', 'ip link set lo up && exec "$0" "$@"']
    try:
        probe = subprocess.run(prefix + ['true'], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return prefix if probe.returncode == 0 else []


@pytest.fixture(scope='module')
def ddp_run(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp('ddp')
    env = dict(os.environ, MASTER_ADDR='127.0.0.1', GLOO_SOCKET_IFNAME='lo', OMP_NUM_THREADS='1')
    command = [
        sys.executable, '-m', 'torch.distributed.run', '--nnodes', '1', '--nproc_per_node', '2',
        '--master_addr', '127.0.0.1', '--master_port', str(_free_port()), __file__, str(out_dir),
    ]
    prefix = _loopback_only_prefix()
    if not prefix:
        # torchrun's TCPStore would listen on every interface, and test servers listen on loopback only.
        pytest.skip('needs `unshare --net` and `ip` to run torchrun in a loopback-only network namespace')
    command = prefix + command
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-4000:]
    return out_dir


@pytest.mark.slow
def test_ddp_gradients_agree_across_ranks(ddp_run):
    rank0 = torch.load(ddp_run / 'step-rank0.pt')
    rank1 = torch.load(ddp_run / 'step-rank1.pt')
    assert len(rank0['grads']) == len(rank1['grads']) > 0
    for grad0, grad1 in zip(rank0['grads'], rank1['grads'], strict=True):
        torch.testing.assert_close(grad0, grad1, rtol=0, atol=0)


@pytest.mark.slow
def test_ddp_shake_drop_draws_differ(ddp_run):
    rank0 = torch.load(ddp_run / 'step-rank0.pt')
    rank1 = torch.load(ddp_run / 'step-rank1.pt')
    # Same weights and batch: the eval outputs agree, so training outputs differ only by the ShakeDrop draws.
    torch.testing.assert_close(rank0['eval_output'], rank1['eval_output'], rtol=0, atol=0)
    assert rank0['train_output'].shape == (BATCH, 10)
    assert not torch.allclose(rank0['train_output'], rank1['train_output'])


@pytest.mark.slow
def test_ddp_halves_equal_accumulation(ddp_run):
    from timm_shakedrop.cli.train import parse_args
    from timm_shakedrop.training import Trainer

    ddp_params = torch.load(ddp_run / 'halves-rank0.pt')
    rank1_params = torch.load(ddp_run / 'halves-rank1.pt')
    trainer = Trainer(parse_args(TINY_ARGV + ['--drop-path', '0']), create_output=False)
    initial = [p.detach().clone() for p in trainer.model.parameters()]
    images, labels = _fixed_batch(BATCH)
    half = BATCH // 2
    trainer.train_step(images[:half], labels[:half], need_update=False, accum_steps=2)
    trainer.train_step(images[half:], labels[half:], need_update=True, accum_steps=2)
    params = list(trainer.model.parameters())
    assert len(params) == len(ddp_params)
    moved = sum(not torch.equal(p0, p1) for p0, p1 in zip(initial, params, strict=True))
    assert moved == len(params)
    for param, ddp_param, rank1_param in zip(params, ddp_params, rank1_params, strict=True):
        torch.testing.assert_close(ddp_param, rank1_param, rtol=0, atol=0)
        torch.testing.assert_close(param.detach(), ddp_param, rtol=0, atol=PARAM_ATOL)


@pytest.mark.slow
def test_ddp_command_writes_one_run(ddp_run):
    for rank in (0, 1):
        assert (ddp_run / f'exit-rank{rank}.txt').read_text() == '0'
    runs = sorted(p.name for p in (ddp_run / 'runs').iterdir())
    assert runs == ['ddp']
    files = sorted(p.name for p in (ddp_run / 'runs' / 'ddp').iterdir())
    checkpoints = [name for name in files if name.endswith('.pth.tar')]
    assert checkpoints == ['checkpoint-0.pth.tar', 'last.pth.tar', 'model_best.pth.tar']
    assert 'summary.csv' in files
    assert 'args.yaml' in files
    assert not [name for name in files if name.endswith('.partial')]
    from timm_shakedrop.training import load_training_checkpoint

    checkpoint = load_training_checkpoint(str(ddp_run / 'runs' / 'ddp' / 'last.pth.tar'))
    assert checkpoint['args'].world_size == 2
    assert len(checkpoint['rng_states']) == 2


def test_sync_bn_on_cpu_is_one_line_error(tmp_path, capsys):
    from timm_shakedrop.cli.train import main

    exit_code = main(TINY_ARGV + ['--sync-bn', '--device', 'cpu', '--output', str(tmp_path)])
    err = capsys.readouterr().err
    assert exit_code == 2
    assert err.count('\n') == 1
    assert 'error: --sync-bn needs CUDA' in err
    assert 'Traceback' not in err


if __name__ == '__main__':
    _worker(sys.argv[1])
