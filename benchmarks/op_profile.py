"""Self CPU time per operator of a training step, identity next to ShakeDrop, from torch.profiler.

End-to-end step times on a shared CPU vary by several percent, more than ShakeDrop's own operators cost (about
0.6% of a PyramidNet-110 step in docs/benchmarks.md). This script attributes the time to operators instead.
The convolutions and BNs are the same in both variants, so the difference in the remaining operators is what
ShakeDrop and the shortcut addition cost.

Example: `python -m benchmarks.op_profile --json ops.json` (PyramidNet-110 alpha 48, batch 64, 4 profiled steps
per variant, 1 thread).
"""
import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
from torch.profiler import ProfilerActivity, profile

from .train_step import (
    NETWORKS,
    _ArgumentParser,
    _batch,
    _Case,
    _positive_int,
    build_model,
    check_json_path,
    environment,
)

__all__ = ['CONV_AND_BN_OPS', 'main', 'profile_ops']

# Operators that both variants run identically; the rest is where ShakeDrop and the shortcut addition show.
CONV_AND_BN_OPS = (
    'aten::convolution_backward',
    'aten::mkldnn_convolution',
    'aten::native_batch_norm',
    'aten::native_batch_norm_backward',
)
VARIANTS = ('identity', 'shakedrop')


def profile_ops(
        network: str, batch_size: Optional[int], rounds: int,
) -> Tuple[Dict[str, Dict[str, float]], Dict[str, Dict[str, float]]]:
    """Return the mean self CPU milliseconds and the mean number of calls per training step of every operator.

    Both are keyed by operator, then by variant. The variants alternate for `rounds` profiled steps each,
    after two unprofiled steps.
    """
    device = torch.device('cpu')
    spec = NETWORKS[network]
    x, target = _batch(spec, batch_size or spec.batch_size, device, channels_last=False)
    cases = {variant: _Case(build_model(network, variant, device).train(), x, target, compiled=False)
             for variant in VARIANTS}
    for case in cases.values():
        case.train_step()
        case.train_step()
    per_op = {}
    calls = {}
    for round_idx in range(rounds):
        order = VARIANTS if round_idx % 2 == 0 else VARIANTS[::-1]
        for variant in order:
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                cases[variant].train_step()
            for event in prof.key_averages():
                times = per_op.setdefault(event.key, {v: 0.0 for v in VARIANTS})
                times[variant] += event.self_cpu_time_total / 1e3 / rounds
                counts = calls.setdefault(event.key, {v: 0.0 for v in VARIANTS})
                counts[variant] += event.count / rounds
    return per_op, calls


def summarize(per_op: Dict[str, Dict[str, float]]) -> Dict[str, Dict[str, float]]:
    """Return per variant the total, the convolution and BN part, and the rest, in milliseconds per step."""
    summary = {}
    for variant in VARIANTS:
        total = sum(times[variant] for times in per_op.values())
        conv_and_bn = sum(per_op[op][variant] for op in CONV_AND_BN_OPS if op in per_op)
        summary[variant] = {'total_ms': total, 'conv_and_bn_ms': conv_and_bn, 'rest_ms': total - conv_and_bn}
    return summary


def format_report(per_op: Dict[str, Dict[str, float]], top: int = 12) -> str:
    """Format the largest operators outside convolution and BN, and the summary, as Markdown tables."""
    lines = ['| operator | identity ms | shakedrop ms |', '| --- | --- | --- |']
    rest = [(op, times) for op, times in per_op.items() if op not in CONV_AND_BN_OPS]
    rest.sort(key=lambda item: -max(item[1].values()))
    for op, times in rest[:top]:
        lines.append(f"| `{op}` | {times['identity']:.1f} | {times['shakedrop']:.1f} |")
    summary = summarize(per_op)
    for key, title in (('conv_and_bn_ms', 'convolution and BN'), ('rest_ms', 'all operators but convolution and BN'),
                       ('total_ms', 'total')):
        lines.append(f"| {title} | {summary['identity'][key]:.1f} | {summary['shakedrop'][key]:.1f} |")
    return '\n'.join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(
        prog='python -m benchmarks.op_profile',
        description='Profile the self CPU time per operator of a training step, identity next to ShakeDrop.')
    parser.add_argument('--network', choices=tuple(NETWORKS), default='pyramidnet110',
                        help='network to profile (default: pyramidnet110)')
    parser.add_argument('--batch-size', type=_positive_int, default=None,
                        help="images per step (default: the network's benchmark batch, 64 for the PyramidNets)")
    parser.add_argument('--rounds', type=_positive_int, default=4, help='profiled steps per variant (default: 4)')
    parser.add_argument('--threads', type=_positive_int, default=1, help='CPU threads for torch (default: 1)')
    parser.add_argument('--json', type=Path, default=None, metavar='PATH', help='also write the results to PATH')
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_json_path(parser, args.json)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        per_op, calls = profile_ops(args.network, args.batch_size, args.rounds)
        env = environment(torch.device('cpu'))
    finally:
        torch.set_num_threads(threads_before)
    print(f"{args.network}, {env['cpu']}, {args.threads} thread(s), torch {env['torch']}, "
          f"mean of {args.rounds} profiled steps per variant, self CPU ms per step")
    print(format_report(per_op))
    if args.json is not None:
        result = {'environment': env, 'settings': vars(args) | {'json': str(args.json)}, 'per_op_ms': per_op,
                  'calls_per_step': calls, 'summary': summarize(per_op)}
        args.json.write_text(json.dumps(result, indent=2) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
