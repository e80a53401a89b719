"""Training-step time, peak memory and eval throughput of ShakeDrop next to the alternatives, in one network.

Every network is built four times, differing only in the layer after the last BN of each residual branch:

* `shakedrop`: this package's ShakeDrop, as the registered model builds it;
* `identity`: no regularizer (`drop_path_layer=lambda p: nn.Identity()`), the lower bound;
* `droppath`: timm's `DropPath` at ShakeDrop's per-unit drop probabilities;
* `port`: the style of common ShakeDrop ports, written here as a baseline. It is an autograd Function with one
  gate per batch, read on the host, that returns its input when the gate keeps the branch. In PyramidNets the
  port also builds the shortcut by concatenating a zero tensor up to the branch width. Its blocks add the
  shortcut out of place, because autograd rejects an in-place update of an input that a Function returned.

`--variants` may add `control`, a second identity network built the same way. Its ratio to `identity` shows the
noise floor of the comparison: on a shared CPU, two identical networks differ by several percent.

The variants run round-robin, in a rotating order, so that drift of the machine spreads over all of them. The
step time is the median over the timed repeats after warm-up, measured with CUDA events on a GPU. Peak memory is
the bytes of live tensors: the model's parameters, gradients, buffers and optimizer state and the input batch
at the start of a step, plus the largest growth during one step. On a GPU the growth comes from
`torch.cuda.max_memory_allocated`; on the CPU from the allocation and free events of `torch.profiler` with
`profile_memory=True`. Eval throughput is images per second of a forward pass under `torch.no_grad`.

Example: `python -m benchmarks.train_step --json bench.json`; `--quick` runs a small network in seconds.
"""
import argparse
import gc
import json
import logging
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import timm
import torch
import torch.nn.functional as F
from timm.layers import DropPath
from timm.models.resnet import Bottleneck
from torch import nn

import timm_shakedrop
from timm_shakedrop.models import PyramidBasicBlock, PyramidBottleneck

__all__ = ['ALL_VARIANTS', 'NETWORKS', 'VARIANTS', 'PortShakeDrop', 'build_model', 'main', 'run_benchmark']

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class NetworkSpec:
    """A registered model and the input it is benchmarked with."""
    model_name: str
    image_size: int
    batch_size: int
    num_classes: int


NETWORKS = {
    'pyramidnet20': NetworkSpec('shakedrop_pyramidnet20_a48', 32, 64, 10),
    'pyramidnet56': NetworkSpec('shakedrop_pyramidnet56_a48', 32, 64, 10),
    'pyramidnet110': NetworkSpec('shakedrop_pyramidnet110_a48', 32, 64, 10),
    'pyramidnet272': NetworkSpec('shakedrop_pyramidnet272_a200', 32, 64, 10),
    'resnet50': NetworkSpec('shakedrop_resnet50', 224, 16, 1000),
}
VARIANTS = ('shakedrop', 'identity', 'droppath', 'port')
CONTROL_VARIANT = 'control'
ALL_VARIANTS = VARIANTS + (CONTROL_VARIANT,)
DEFAULT_NETWORKS = ('pyramidnet110', 'pyramidnet272', 'resnet50')
DEFAULT_COMPILE_VARIANTS = ('shakedrop', 'identity')
QUICK_NETWORK = 'pyramidnet20'
QUICK_BATCH_SIZE = 8
# Warm-up steps, timed steps and eval passes per variant.
DEFAULT_COUNTS = (2, 7, 7)
QUICK_COUNTS = (1, 3, 3)


# Baseline in the style of common ports

class _PortShakeDropFunction(torch.autograd.Function):
    """Forward x or alpha * x, backward g or beta * g, with one gate for the whole batch read on the host."""

    @staticmethod
    def forward(ctx, x, keep_prob):
        # `.item()` makes the host wait for the device, as the ports' `if gate == 0` check does.
        ctx.keep = bool(torch.empty((), device=x.device).bernoulli_(keep_prob).item())
        if ctx.keep:
            return x
        coef_shape = (x.shape[0],) + (1,) * (x.dim() - 1)
        alpha = torch.empty(coef_shape, device=x.device, dtype=x.dtype).uniform_(-1.0, 1.0)
        return x * alpha

    @staticmethod
    def backward(ctx, grad_output):
        if ctx.keep:
            return grad_output, None
        coef_shape = (grad_output.shape[0],) + (1,) * (grad_output.dim() - 1)
        beta = torch.rand(coef_shape, device=grad_output.device, dtype=grad_output.dtype)
        return grad_output * beta, None


class PortShakeDrop(nn.Module):
    """ShakeDrop as common ports write it: a batch-level gate, per-sample alpha and beta, keep_prob in eval."""

    def __init__(self, drop_prob: float = 0.5):
        super().__init__()
        self.keep_prob = 1.0 - float(drop_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return _PortShakeDropFunction.apply(x, self.keep_prob)
        return x * self.keep_prob


def _port_add_shortcut(x: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
    """Add the shortcut the way the ports do: concatenate a zero tensor up to the branch width, then add.

    The addition is out of place because autograd rejects an in-place update of an input that a custom
    Function returned as is.
    """
    extra_chs = x.shape[1] - shortcut.shape[1]
    if extra_chs:
        zeros = torch.zeros(
            (shortcut.shape[0], extra_chs) + tuple(shortcut.shape[2:]), device=shortcut.device, dtype=shortcut.dtype)
        shortcut = torch.cat((shortcut, zeros), 1)
    return x + shortcut


class _PortPyramidBasicBlock(PyramidBasicBlock):

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.downsample(x)
        x = self.bn1(x)
        x = self.conv1(x)
        x = self.bn2(x)
        x = self.act2(x)
        x = self.conv2(x)
        x = self.bn3(x)
        x = self.drop_path(x)
        return _port_add_shortcut(x, shortcut)


class _PortPyramidBottleneck(PyramidBottleneck):

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.downsample(x)
        x = self.bn1(x)
        x = self.conv1(x)
        x = self.bn2(x)
        x = self.act2(x)
        x = self.conv2(x)
        x = self.bn3(x)
        x = self.act3(x)
        x = self.conv3(x)
        x = self.bn4(x)
        x = self.drop_path(x)
        return _port_add_shortcut(x, shortcut)


class _PortResNetBottleneck(Bottleneck):
    """timm's bottleneck with an out-of-place shortcut addition, which a Function returning its input needs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.aa(self.act2(self.drop_block(self.bn2(self.conv2(x)))))
        x = self.bn3(self.conv3(x))
        if self.se is not None:
            x = self.se(x)
        x = self.drop_path(x)
        return self.act3(x + shortcut)


_PORT_BLOCKS = {
    PyramidBasicBlock: _PortPyramidBasicBlock,
    PyramidBottleneck: _PortPyramidBottleneck,
    Bottleneck: _PortResNetBottleneck,
}


def _use_port_shortcuts(model: nn.Module) -> None:
    # The port blocks add no parameters, so swapping the class keeps the weights and the module tree.
    for module in model.modules():
        port_cls = _PORT_BLOCKS.get(type(module))
        if port_cls is not None:
            module.__class__ = port_cls


# Models and steps

def _drop_path_factory(variant: str) -> Optional[Callable[[float], nn.Module]]:
    if variant == 'shakedrop':
        return None
    if variant in ('identity', CONTROL_VARIANT):
        return lambda drop_prob: nn.Identity()
    if variant == 'droppath':
        return DropPath
    if variant == 'port':
        return PortShakeDrop
    raise ValueError(f'`variant` must be one of {ALL_VARIANTS}, got {variant!r}.')


def build_model(network: str, variant: str, device: torch.device, channels_last: bool = False) -> nn.Module:
    """Build `network` with the layer of `variant` in every residual unit; equal seeds give equal weights."""
    if network not in NETWORKS:
        raise ValueError(f'`network` must be one of {tuple(NETWORKS)}, got {network!r}.')
    spec = NETWORKS[network]
    kwargs = {}
    drop_path_layer = _drop_path_factory(variant)
    if drop_path_layer is not None:
        kwargs['drop_path_layer'] = drop_path_layer
    torch.manual_seed(0)
    model = timm.create_model(spec.model_name, num_classes=spec.num_classes, **kwargs)
    if variant == 'port':
        _use_port_shortcuts(model)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model


class _Case:
    """One variant of one network: model, optimizer and a fixed batch."""

    def __init__(self, model: nn.Module, x: torch.Tensor, target: torch.Tensor, compiled: bool):
        self.model = model
        self.runner = torch.compile(model) if compiled else model
        # A usual CIFAR setting; the cost of a step does not depend on the values.
        self.optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4, nesterov=True)
        self.x = x
        self.target = target

    def train_step(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(self.runner(self.x), self.target)
        loss.backward()
        self.optimizer.step()

    def eval_step(self) -> None:
        with torch.no_grad():
            self.runner(self.x)

    def state_bytes(self) -> int:
        """Bytes of the tensors alive between steps: parameters, gradients, buffers, optimizer state, batch."""
        tensors = list(self.model.parameters()) + list(self.model.buffers()) + [self.x, self.target]
        tensors += [p.grad for p in self.model.parameters() if p.grad is not None]
        for state in self.optimizer.state.values():
            tensors += [v for v in state.values() if torch.is_tensor(v)]
        storages = {}
        for tensor in tensors:
            storage = tensor.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
        return sum(storages.values())


# Measurement

def _synchronize(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _time_call(fn: Callable[[], None], device: torch.device) -> Tuple[float, Optional[float]]:
    """Return the seconds `fn` takes and, on the CPU, the process CPU seconds it uses.

    On a GPU the time comes from CUDA events. On a shared CPU the CPU time (all threads together) is less
    sensitive than the wall time to other processes taking turns on the cores.
    """
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3, None
    start_cpu = time.process_time()
    start_time = time.perf_counter()
    fn()
    return time.perf_counter() - start_time, time.process_time() - start_cpu


def _rotated(names: Sequence[str], shift: int) -> List[str]:
    shift %= len(names)
    return list(names[shift:]) + list(names[:shift])


def interleaved_times(
        calls: Dict[str, Callable[[], None]],
        warmup: int,
        repeats: int,
        device: torch.device,
) -> Dict[str, Dict[str, List[float]]]:
    """Run every call `warmup` times, then time `repeats` rounds, one call of each per round in rotating order.

    Returns, per call, the wall (or CUDA event) seconds under 'time' and the CPU seconds under 'cpu' (empty
    on a GPU).
    """
    names = list(calls)
    for round_idx in range(warmup):
        for name in _rotated(names, round_idx):
            calls[name]()
    _synchronize(device)
    times = {name: {'time': [], 'cpu': []} for name in names}
    for round_idx in range(repeats):
        for name in _rotated(names, round_idx):
            seconds, cpu_seconds = _time_call(calls[name], device)
            times[name]['time'].append(seconds)
            if cpu_seconds is not None:
                times[name]['cpu'].append(cpu_seconds)
    return times


def _profiled_peak_growth(fn: Callable[[], None]) -> int:
    """Return the largest growth in live CPU tensor bytes while `fn` runs, from torch.profiler memory events."""
    from torch._C._autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == '[memory]']
    events.sort(key=lambda e: e.start_ns())
    live = peak = 0
    for event in events:
        if event.device_type() != DeviceType.CPU:
            continue
        live += event.nbytes()
        peak = max(peak, live)
    return peak


def peak_step_memory(case: _Case, device: torch.device) -> Dict[str, int]:
    """Measure the live tensor bytes of one training step: state at its start and the peak above that."""
    gc.collect()
    _synchronize(device)
    state_bytes = case.state_bytes()
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
        start_bytes = torch.cuda.memory_allocated(device)
        case.train_step()
        torch.cuda.synchronize(device)
        growth = torch.cuda.max_memory_allocated(device) - start_bytes
    else:
        growth = _profiled_peak_growth(case.train_step)
    return {'peak_bytes': state_bytes + growth, 'peak_growth_bytes': growth, 'state_bytes': state_bytes}


def _batch(spec: NetworkSpec, batch_size: int, device: torch.device, channels_last: bool):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, 3, spec.image_size, spec.image_size, generator=generator)
    target = torch.randint(0, spec.num_classes, (batch_size,), generator=generator)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    return x.to(device), target.to(device)


def benchmark_network(
        network: str,
        mode: str,
        variants: Sequence[str],
        device: torch.device,
        batch_size: Optional[int],
        warmup: int,
        repeats: int,
        eval_repeats: int,
        measure_memory: bool,
        channels_last: bool,
) -> List[Dict]:
    """Measure every variant of one network in one mode ('eager' or 'compile') and return one row each."""
    spec = NETWORKS[network]
    batch_size = batch_size or spec.batch_size
    x, target = _batch(spec, batch_size, device, channels_last)
    _logger.info('%s (%s), %s, batch %d at %dx%d: building %s',
                 network, spec.model_name, mode, batch_size, spec.image_size, spec.image_size, ', '.join(variants))
    cases = {
        variant: _Case(build_model(network, variant, device, channels_last), x, target, compiled=mode == 'compile')
        for variant in variants
    }
    rows = {variant: {'network': network, 'model_name': spec.model_name, 'mode': mode, 'variant': variant,
                      'batch_size': batch_size, 'image_size': spec.image_size} for variant in variants}

    for case in cases.values():
        case.model.train()
    _logger.info('%s, %s: %d warm-up and %d timed training steps per variant', network, mode, warmup, repeats)
    train_times = interleaved_times({v: c.train_step for v, c in cases.items()}, warmup, repeats, device)
    for variant, times in train_times.items():
        rows[variant]['step_s'] = statistics.median(times['time'])
        rows[variant]['step_s_all'] = times['time']
        if times['cpu']:
            rows[variant]['step_cpu_s'] = statistics.median(times['cpu'])
            rows[variant]['step_cpu_s_all'] = times['cpu']

    if measure_memory:
        _logger.info('%s, %s: peak memory of one training step per variant', network, mode)
        for variant in _rotated(list(variants), 0):
            rows[variant].update(peak_step_memory(cases[variant], device))

    if eval_repeats:
        for case in cases.values():
            case.model.eval()
        _logger.info('%s, %s: %d timed eval passes per variant', network, mode, eval_repeats)
        eval_times = interleaved_times({v: c.eval_step for v, c in cases.items()}, max(warmup, 1), eval_repeats,
                                       device)
        for variant, times in eval_times.items():
            rows[variant]['eval_s'] = statistics.median(times['time'])
            rows[variant]['eval_s_all'] = times['time']
            rows[variant]['eval_images_per_s'] = batch_size / rows[variant]['eval_s']
            if times['cpu']:
                rows[variant]['eval_cpu_s_all'] = times['cpu']
                rows[variant]['eval_images_per_cpu_s'] = batch_size / statistics.median(times['cpu'])

    del cases
    gc.collect()
    return list(rows.values())


def _paired_ratio(values: List[float], reference: List[float]) -> Optional[float]:
    # Variants of one round run back to back, so the ratio within a round cancels drift between rounds.
    if not values or len(values) != len(reference):
        return None
    return statistics.median(v / r for v, r in zip(values, reference, strict=True))


def add_ratios(rows: List[Dict]) -> None:
    """Add each row's ratios to the identity variant of the same network and mode, where one was measured.

    Time ratios are the median over rounds of the ratio within each round; throughput ratios are their
    inverses. Memory ratios divide the single measurements.
    """
    identity = {(r['network'], r['mode']): r for r in rows if r['variant'] == 'identity'}
    for row in rows:
        reference = identity.get((row['network'], row['mode']))
        if reference is None:
            continue
        for key, samples in (('step_s', 'step_s_all'), ('step_cpu_s', 'step_cpu_s_all')):
            ratio = _paired_ratio(row.get(samples, []), reference.get(samples, []))
            if ratio is not None:
                row[key + '_vs_identity'] = ratio
        for key, samples in (('eval_images_per_s', 'eval_s_all'), ('eval_images_per_cpu_s', 'eval_cpu_s_all')):
            ratio = _paired_ratio(reference.get(samples, []), row.get(samples, []))
            if ratio is not None:
                row[key + '_vs_identity'] = ratio
        for key in ('peak_bytes', 'peak_growth_bytes'):
            if key in row and reference.get(key):
                row[key + '_vs_identity'] = row[key] / reference[key]


# Environment and output

def _cpu_model() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _load_average() -> Optional[List[float]]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def environment(device: torch.device) -> Dict:
    """Return the hardware and software versions that every figure depends on."""
    env = {
        'python': platform.python_version(),
        'torch': torch.__version__,
        'timm': timm.__version__,
        'timm_shakedrop': timm_shakedrop.__version__,
        'platform': platform.platform(),
        'cpu': _cpu_model(),
        'cpu_count': os.cpu_count(),
        'torch_threads': torch.get_num_threads(),
        'device': str(device),
    }
    if device.type == 'cuda':
        env['cuda_device'] = torch.cuda.get_device_name(device)
        env['cuda'] = torch.version.cuda
        env['cudnn'] = torch.backends.cudnn.version()
    return env


def _format_ratio(row: Dict, key: str) -> str:
    ratio = row.get(key + '_vs_identity')
    return f'{ratio:.3f}' if ratio is not None else '-'


def _cell(row: Dict, key: str, scale: float = 1.0, digits: int = 1) -> str:
    return f'{row[key] * scale:.{digits}f}' if key in row else '-'


def format_table(rows: List[Dict]) -> str:
    """Format the rows as a Markdown table of absolute figures and ratios to identity.

    CPU columns are process CPU time (all threads), absent on a GPU. Growth is the peak above the live bytes at
    the start of the step.
    """
    columns = [
        ('step ms', 'step_s', 1e3), ('CPU ms', 'step_cpu_s', 1e3), ('peak MiB', 'peak_bytes', 2**-20),
        ('growth MiB', 'peak_growth_bytes', 2**-20), ('eval img/s', 'eval_images_per_s', 1.0),
        ('eval img/CPU s', 'eval_images_per_cpu_s', 1.0),
    ]
    header = ['network', 'mode', 'batch', 'variant']
    for title, _, _ in columns:
        header += [title, 'x identity']
    lines = ['| ' + ' | '.join(header) + ' |', '|' + ' --- |' * len(header)]
    for row in rows:
        cells = [row['network'], row['mode'], str(row['batch_size']), row['variant']]
        for _, key, scale in columns:
            cells += [_cell(row, key, scale), _format_ratio(row, key)]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


# Command line

class _ArgumentParser(argparse.ArgumentParser):
    """Argument parser that reports a usage error in one line on stderr and exits with status 2."""

    def error(self, message):
        self.exit(2, f'{self.prog}: error: {message}\n')


def _name_list(choices: Sequence[str]) -> Callable[[str], List[str]]:
    def parse(value: str) -> List[str]:
        names = [name.strip() for name in value.split(',') if name.strip()]
        if not names:
            raise argparse.ArgumentTypeError(
                f'expected at least one name, got {value!r}; choose from {", ".join(choices)}')
        invalid = [name for name in names if name not in choices]
        if invalid:
            raise argparse.ArgumentTypeError(f'invalid name {invalid[0]!r}; choose from {", ".join(choices)}')
        return names
    return parse


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a positive integer, got {value!r}') from None
    if number < 1:
        raise argparse.ArgumentTypeError(f'expected a positive integer, got {value!r}')
    return number


def _non_negative_int(value: str) -> int:
    if value == '0':
        return 0
    return _positive_int(value)


def build_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(
        prog='python -m benchmarks.train_step',
        description='Measure training-step time, peak memory and eval throughput of ShakeDrop against identity, '
                    "timm's DropPath and a port-style baseline, in the same networks.")
    parser.add_argument('--quick', action='store_true',
                        help=f'eager mode on {QUICK_NETWORK} at batch {QUICK_BATCH_SIZE}, {QUICK_COUNTS[0]} warm-up, '
                             f'{QUICK_COUNTS[1]} timed steps and {QUICK_COUNTS[2]} eval passes, 1 thread, unless the '
                             'options say otherwise; cannot be combined with --compile. Proves the script works in '
                             'seconds; the figures mean little')

    parser.add_argument('--networks', type=_name_list(tuple(NETWORKS)), default=None,
                        help=f'comma-separated networks to run in eager mode (default: {",".join(DEFAULT_NETWORKS)}; '
                             f'choices: {",".join(NETWORKS)})')
    parser.add_argument('--compile', dest='compile_networks', type=_name_list(tuple(NETWORKS)), default=[],
                        metavar='NETWORKS',
                        help='comma-separated networks to also run under torch.compile (default: none; a first '
                             'compile of a 110-layer network takes minutes on a 2-core CPU)')
    parser.add_argument('--variants', type=_name_list(ALL_VARIANTS), default=list(VARIANTS),
                        help=f'comma-separated variants in eager mode (default: {",".join(VARIANTS)}; '
                             f'{CONTROL_VARIANT} adds a second identity network to show the noise floor)')
    parser.add_argument('--compile-variants', type=_name_list(ALL_VARIANTS), default=list(DEFAULT_COMPILE_VARIANTS),
                        help=f'comma-separated variants under torch.compile (default: '
                             f'{",".join(DEFAULT_COMPILE_VARIANTS)})')

    parser.add_argument('--batch-size', type=_positive_int, default=None,
                        help='images per step for every network (default: 64 for the PyramidNets, 16 for ResNet-50)')
    parser.add_argument('--warmup', type=_non_negative_int, default=None,
                        help=f'untimed steps per variant (default: {DEFAULT_COUNTS[0]}, {QUICK_COUNTS[0]} with '
                             '--quick)')
    parser.add_argument('--repeats', type=_positive_int, default=None,
                        help=f'timed training steps per variant (default: {DEFAULT_COUNTS[1]}, {QUICK_COUNTS[1]} '
                             'with --quick)')
    parser.add_argument('--eval-repeats', type=_non_negative_int, default=None,
                        help=f'timed eval passes per variant; 0 skips eval (default: {DEFAULT_COUNTS[2]}, '
                             f'{QUICK_COUNTS[2]} with --quick)')
    parser.add_argument('--no-memory', action='store_true', help='skip the peak-memory step')

    parser.add_argument('--device', choices=('auto', 'cpu', 'cuda'), default='auto',
                        help='device to run on; auto takes CUDA when available (default: auto)')
    parser.add_argument('--threads', type=_positive_int, default=None,
                        help="CPU threads for torch, restored afterwards (default: torch's own default, 1 with "
                             "--quick)")
    parser.add_argument('--channels-last', action='store_true', help='run models and inputs in channels_last')

    parser.add_argument('--json', type=Path, default=None, metavar='PATH', help='also write the results to PATH')
    return parser


def check_json_path(parser: argparse.ArgumentParser, path: Optional[Path]) -> None:
    """Exit with a usage error before any measurement when the results could not be written to `path`."""
    if path is None:
        return
    folder = path.parent
    if path.is_dir():
        parser.error(f'--json {path}: is a folder; give a file path such as {path / "results.json"}')
    if not folder.is_dir():
        parser.error(f'--json {path}: folder {folder} does not exist; create it first')
    if not os.access(folder, os.W_OK):
        parser.error(f'--json {path}: folder {folder} is not writable')


def _resolve_device(name: str) -> torch.device:
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    return torch.device(name)


def run_benchmark(args: argparse.Namespace) -> Dict:
    """Run the benchmark that `args` describes and return environment, settings and result rows."""
    threads_before = torch.get_num_threads()
    threads = args.threads or (1 if args.quick else None)
    if threads:
        torch.set_num_threads(threads)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads_before)


def _run(args: argparse.Namespace) -> Dict:
    device = _resolve_device(args.device)
    networks = args.networks or ([QUICK_NETWORK] if args.quick else list(DEFAULT_NETWORKS))
    batch_size = args.batch_size or (QUICK_BATCH_SIZE if args.quick else None)
    defaults = QUICK_COUNTS if args.quick else DEFAULT_COUNTS
    warmup, repeats, eval_repeats = (
        explicit if explicit is not None else default
        for explicit, default in zip((args.warmup, args.repeats, args.eval_repeats), defaults, strict=True))
    compile_networks = args.compile_networks
    env = environment(device)
    env['load_average_before'] = _load_average()
    env['started_at'] = datetime.now(timezone.utc).isoformat(timespec='seconds')
    settings = dict(networks=networks, compile_networks=compile_networks, variants=args.variants,
                    compile_variants=args.compile_variants, batch_size=batch_size, warmup=warmup, repeats=repeats,
                    eval_repeats=eval_repeats, memory=not args.no_memory, channels_last=args.channels_last,
                    quick=args.quick)
    rows = []
    runs = [(n, 'eager', args.variants) for n in networks] + [(n, 'compile', args.compile_variants)
                                                               for n in compile_networks]
    for network, mode, variants in runs:
        rows += benchmark_network(network, mode, variants, device, batch_size, warmup, repeats, eval_repeats,
                                  not args.no_memory, args.channels_last)
    add_ratios(rows)
    env['load_average_after'] = _load_average()
    env['finished_at'] = datetime.now(timezone.utc).isoformat(timespec='seconds')
    return {'environment': env, 'settings': settings, 'command': ' '.join(sys.argv), 'results': rows}


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: CUDA is not available on this machine; use --device cpu or auto')
    if args.quick and args.compile_networks:
        parser.error('--quick runs eager mode only; drop --compile or --quick')
    check_json_path(parser, args.json)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format='%(asctime)s %(message)s', stream=sys.stderr)
    result = run_benchmark(args)
    env = result['environment']
    print(f"{env['device']} ({env.get('cuda_device', env['cpu'])}), {env['torch_threads']} threads, "
          f"torch {env['torch']}, timm {env['timm']}, Python {env['python']}, "
          f"load average {env['load_average_before']} -> {env['load_average_after']}")
    print(format_table(result['results']))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + '\n')
        _logger.info('wrote %s', args.json)
    return 0


if __name__ == '__main__':
    sys.exit(main())
