"""Start-up cost of the model-registration hook: fresh interpreters with and without it.

The hook in `_timm_shakedrop_autoload` runs at every interpreter start (from `timm_shakedrop.pth`) and imports
`timm_shakedrop` right after timm. Two cases run in fresh interpreters, alternating
`TIMM_SHAKEDROP_AUTOLOAD=1` and `=0` so that drift of the machine hits both alike:

* `interpreter`: `python -c pass`, the cost of the hook itself at start-up;
* `import_timm`: `python -c "import timm"`, which with the hook also registers the models.

Each run reports wall time and the CPU time of the child process (user + system); the CPU time is less
sensitive to other processes on a shared machine. A third measurement, `python -X importtime` with the hook
on, gives the cumulative import time of `_timm_shakedrop_autoload` and `timm_shakedrop` inside one process.
The children get a temporary bytecode cache, filled by one untimed run, because an installed package has one;
`--no-bytecode-cache` keeps this environment's settings instead.

Example: `python -m benchmarks.startup --repeats 10 --json startup.json`; `--quick` runs the bare
interpreter case only, in about a second.
"""
import argparse
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, List, Optional, Tuple

__all__ = ['CASES', 'main', 'run_startup_benchmark']

# Each case prints whether timm_shakedrop was imported, which proves that the hook ran or stayed off.
CASES = {
    'interpreter': "import sys; print('timm_shakedrop' in sys.modules)",
    'import_timm': "import sys, timm; print('timm_shakedrop' in sys.modules)",
}
ENV_VAR = 'TIMM_SHAKEDROP_AUTOLOAD'
HOOK_MODULES = ('_timm_shakedrop_autoload', 'timm_shakedrop')
_IMPORTTIME_LINE = re.compile(r'^import time:\s+(\d+)\s+\|\s+(\d+)\s+\|(\s*)(\S+)\s*$')


def _child_env(hook_on: bool, pycache_prefix: Optional[str]) -> Dict[str, str]:
    env = dict(os.environ)
    env[ENV_VAR] = '1' if hook_on else '0'
    if pycache_prefix is not None:
        # An installed package has bytecode caches; a private prefix gives the children one without writing
        # `__pycache__` folders into the source tree.
        env.pop('PYTHONDONTWRITEBYTECODE', None)
        env['PYTHONPYCACHEPREFIX'] = pycache_prefix
    return env


def run_case(
        code: str,
        hook_on: bool,
        pycache_prefix: Optional[str] = None,
        extra_args: Tuple[str, ...] = (),
) -> Tuple[float, float, str, str]:
    """Run `python [extra_args] -c code` once; return wall seconds, child CPU seconds, stdout and stderr."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, *extra_args, '-c', code], env=_child_env(hook_on, pycache_prefix), capture_output=True,
        text=True, timeout=600)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise RuntimeError(
            f'The start-up case {code!r} failed with exit status {result.returncode}: {result.stderr.strip()[-500:]}')
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, result.stdout, result.stderr


def measure_case(name: str, repeats: int, pycache_prefix: Optional[str] = None) -> Dict:
    """Time `repeats` alternating runs with the hook on and off, and check that the hook ran only when on.

    One untimed run each way comes first, so that a bytecode cache under `pycache_prefix` is filled.
    """
    code = CASES[name]
    for hook_on in (True, False):
        run_case(code, hook_on, pycache_prefix)
    samples = {True: {'wall': [], 'cpu': []}, False: {'wall': [], 'cpu': []}}
    for round_idx in range(repeats):
        order = (True, False) if round_idx % 2 == 0 else (False, True)
        for hook_on in order:
            wall, cpu, stdout, _ = run_case(code, hook_on, pycache_prefix)
            imported = stdout.strip() == 'True'
            if imported != (hook_on and name == 'import_timm'):
                raise RuntimeError(
                    f'The start-up hook misbehaved in case {name!r} with {ENV_VAR}={int(hook_on)}: '
                    f'timm_shakedrop imported = {imported}.')
            samples[hook_on]['wall'].append(wall)
            samples[hook_on]['cpu'].append(cpu)
    row = {'case': name, 'code': code, 'repeats': repeats}
    for hook_on, label in ((True, 'on'), (False, 'off')):
        row[f'wall_s_{label}'] = statistics.median(samples[hook_on]['wall'])
        row[f'cpu_s_{label}'] = statistics.median(samples[hook_on]['cpu'])
        row[f'wall_s_{label}_all'] = samples[hook_on]['wall']
        row[f'cpu_s_{label}_all'] = samples[hook_on]['cpu']
    row['wall_s_added'] = row['wall_s_on'] - row['wall_s_off']
    row['cpu_s_added'] = row['cpu_s_on'] - row['cpu_s_off']
    return row


def parse_importtime(stderr: str) -> Dict[str, int]:
    """Return the cumulative microseconds of the hook's modules from `python -X importtime` output."""
    cumulative = {}
    for line in stderr.splitlines():
        match = _IMPORTTIME_LINE.match(line)
        if match and match.group(4) in HOOK_MODULES:
            cumulative[match.group(4)] = int(match.group(2))
    return cumulative


def measure_importtime(name: str, repeats: int, pycache_prefix: Optional[str] = None) -> Dict:
    """Return the median cumulative import time in seconds of each hook module over `repeats` runs."""
    per_module = {module: [] for module in HOOK_MODULES}
    for _ in range(repeats):
        _, _, _, stderr = run_case(CASES[name], True, pycache_prefix, ('-X', 'importtime'))
        for module, micros in parse_importtime(stderr).items():
            per_module[module].append(micros / 1e6)
    return {
        'case': name,
        'repeats': repeats,
        'cumulative_s': {module: statistics.median(values) for module, values in per_module.items() if values},
        'cumulative_s_all': {module: values for module, values in per_module.items() if values},
    }


def _load_average() -> Optional[List[float]]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def run_startup_benchmark(cases: List[str], repeats: int, bytecode_cache: bool = True) -> Dict:
    """Measure the given cases and the import times; return environment and results.

    With `bytecode_cache`, the children read and write bytecode under a temporary `PYTHONPYCACHEPREFIX`, as an
    installed package would have it; otherwise they inherit this process's bytecode settings.
    """
    with tempfile.TemporaryDirectory(prefix='startup-pycache-') as prefix:
        return _run_startup_benchmark(cases, repeats, prefix if bytecode_cache else None)


def _run_startup_benchmark(cases: List[str], repeats: int, pycache_prefix: Optional[str]) -> Dict:
    env = {
        'python': platform.python_version(),
        'executable': sys.executable,
        'platform': platform.platform(),
        'cpu_count': os.cpu_count(),
        'load_average_before': _load_average(),
        'started_at': datetime.now(timezone.utc).isoformat(timespec='seconds'),
        'bytecode_cache': pycache_prefix is not None,
        'PYTHONDONTWRITEBYTECODE': os.environ.get('PYTHONDONTWRITEBYTECODE'),
    }
    rows = [measure_case(name, repeats, pycache_prefix) for name in cases]
    importtime = measure_importtime(cases[-1], repeats, pycache_prefix)
    env['load_average_after'] = _load_average()
    return {'environment': env, 'command': ' '.join(sys.argv), 'results': rows, 'importtime': importtime}


def format_report(result: Dict) -> str:
    """Format the start-up results as a Markdown table and one line per hook module."""
    lines = [
        '| case | wall ms, hook on | wall ms, hook off | added wall ms | CPU ms, hook on | CPU ms, hook off '
        '| added CPU ms |',
        '| --- | --- | --- | --- | --- | --- | --- |',
    ]
    for row in result['results']:
        lines.append(
            f"| {row['case']} | {row['wall_s_on'] * 1e3:.1f} | {row['wall_s_off'] * 1e3:.1f} | "
            f"{row['wall_s_added'] * 1e3:+.1f} | {row['cpu_s_on'] * 1e3:.1f} | {row['cpu_s_off'] * 1e3:.1f} | "
            f"{row['cpu_s_added'] * 1e3:+.1f} |")
    importtime = result['importtime']
    for module, seconds in importtime['cumulative_s'].items():
        lines.append(f"importtime, case {importtime['case']}: {module} {seconds * 1e3:.1f} ms cumulative (median)")
    return '\n'.join(lines)


class _ArgumentParser(argparse.ArgumentParser):
    """Argument parser that reports a usage error in one line on stderr and exits with status 2."""

    def error(self, message):
        self.exit(2, f'{self.prog}: error: {message}\n')


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a positive integer, got {value!r}') from None
    if number < 1:
        raise argparse.ArgumentTypeError(f'expected a positive integer, got {value!r}')
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(
        prog='python -m benchmarks.startup',
        description=f'Measure interpreter start-up and `import timm` with the timm-shakedrop registration hook '
                    f'on and off ({ENV_VAR}=1 / 0), in fresh interpreters.')
    parser.add_argument('--quick', action='store_true',
                        help='bare interpreter case only, 2 runs each way: proves the script works in about a second')
    parser.add_argument('--repeats', type=_positive_int, default=10,
                        help='runs per case with the hook on, and as many with it off (default: 10)')
    parser.add_argument('--no-bytecode-cache', action='store_true',
                        help='let the children inherit the bytecode settings of this environment (for example '
                             'PYTHONDONTWRITEBYTECODE=1, which compiles every module from source at each start) '
                             'instead of a temporary bytecode cache')
    parser.add_argument('--json', type=Path, default=None, metavar='PATH', help='also write the results to PATH')
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    cases, repeats = (['interpreter'], 2) if args.quick else (list(CASES), args.repeats)
    try:
        result = run_startup_benchmark(cases, repeats, bytecode_cache=not args.no_bytecode_cache)
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        print(f'python -m benchmarks.startup: error: {e}', file=sys.stderr)
        return 1
    env = result['environment']
    bytecode = 'temporary bytecode cache' if env['bytecode_cache'] else 'inherited bytecode settings'
    print(f"Python {env['python']} ({env['executable']}), {env['cpu_count']} CPUs, {bytecode}, "
          f"load average {env['load_average_before']} -> {env['load_average_after']}")
    print(format_report(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
