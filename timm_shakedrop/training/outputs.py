"""Files of a run folder: the folder itself, `args.yaml`, `summary.csv` and the learning-curve plot."""
import csv
import os
from typing import Any, Dict, List, Optional

import yaml

__all__ = ['create_run_dir', 'read_summary', 'write_args_yaml']


def create_run_dir(output: str, experiment: str) -> str:
    """Create and return a new folder `output/experiment`, never reusing an existing one.

    When `output/experiment` exists, the first free name among `experiment-1`, `experiment-2`, ... is taken.
    `os.makedirs(exist_ok=False)` makes the choice safe against a concurrent run picking the same name.
    """
    os.makedirs(output, exist_ok=True)
    suffix = 0
    while True:
        name = experiment if suffix == 0 else f'{experiment}-{suffix}'
        path = os.path.join(output, name)
        try:
            os.makedirs(path, exist_ok=False)
            return path
        except FileExistsError:
            suffix += 1


def _yaml_value(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_yaml_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _yaml_value(v) for k, v in value.items()}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def args_to_yaml(args_dict: Dict[str, Any]) -> str:
    """Dump arguments the way timm's train.py writes `args.yaml` (`yaml.safe_dump`, block style)."""
    return yaml.safe_dump({key: _yaml_value(value) for key, value in args_dict.items()}, default_flow_style=False)


def write_args_yaml(run_dir: str, args_dict: Dict[str, Any]) -> str:
    """Write `args.yaml` into `run_dir` through a temporary file and return its path."""
    path = os.path.join(run_dir, 'args.yaml')
    partial_path = f'{path}.partial'
    with open(partial_path, 'w') as f:
        f.write(args_to_yaml(args_dict))
    os.replace(partial_path, path)
    return path


def read_summary(path: str) -> List[Dict[str, float]]:
    """Read timm's `summary.csv` into one dict of floats per epoch; missing or empty cells become NaN."""
    if not os.path.exists(path):
        return []
    rows = []
    with open(path, newline='') as f:
        for row in csv.DictReader(f):
            rows.append({key: _float_or_nan(value) for key, value in row.items() if key})
    return rows


def _float_or_nan(value: Optional[str]) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float('nan')
