"""Reading training runs: checkpoints in timm's format, `args.yaml` and `summary.csv`.

timm's `CheckpointSaver` (and this package's trainer, which writes the same format) saves a dict with
`state_dict`, optionally `state_dict_ema`, `arch`, `args` (an `argparse.Namespace`), `epoch`, `optimizer` and
`metric`. The run folder beside it contains `args.yaml` and `summary.csv`, one row per epoch as written by
`timm.utils.update_summary`.
"""
import argparse
import csv
import dataclasses
import logging
import math
import pickle
from pathlib import Path
from typing import Any

import torch
import yaml

_logger = logging.getLogger(__name__)

__all__ = [
    'RunMetrics',
    'TrainingCheckpoint',
    'load_training_checkpoint',
    'metrics_from_summary',
    'read_summary',
    'select_weights',
]


@dataclasses.dataclass
class TrainingCheckpoint:
    """The parts of a training checkpoint and its run folder that an export uses."""
    path: Path
    state_dict: dict[str, torch.Tensor]
    state_dict_ema: dict[str, torch.Tensor] | None
    arch: str | None
    args: dict[str, Any]
    epoch: int | None
    metric: float | None
    args_yaml: str | None  # text of the run's args.yaml, when the folder has one

    @property
    def run_dir(self) -> Path:
        return self.path.parent


def _torch_load_weights_only(path: Path) -> Any:
    # The only non-tensor class that timm checkpoints need is argparse.Namespace (their `args`).
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as error:
        unsafe = []
        try:
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        except Exception:  # the list only improves the message
            pass
        names = f' ({", ".join(unsafe)})' if unsafe else ''
        raise RuntimeError(
            f'{path} contains pickled objects other than tensors and argparse.Namespace{names}, which are not '
            f'loaded because unpickling can run arbitrary code. Save its weights with '
            f'torch.save(model.state_dict(), ...) or safetensors and export that file with --model.'
        ) from error
    except (EOFError, RuntimeError) as error:
        raise RuntimeError(f'{path} is not a readable PyTorch checkpoint: {error}') from error


def _tensor_dict(value: Any, where: str) -> dict[str, torch.Tensor]:
    if not isinstance(value, dict) or not value:
        raise RuntimeError(f'{where} is not a non-empty state dict.')
    bad = [k for k, v in value.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise RuntimeError(f'{where} has entries that are not tensors: {bad[:5]}.')
    return value


def load_training_checkpoint(path: str | Path) -> TrainingCheckpoint:
    """Load a checkpoint without unpickling arbitrary objects, with its run folder's `args.yaml`.

    Accepts timm-format training checkpoints, bare state dicts saved with `torch.save` and `.safetensors`
    files. `args` merges `args.yaml` (what the run was started with) under the checkpoint's own `args` (which
    timm's train.py completes, e.g. with `num_classes`).

    Raises:
        FileNotFoundError: `path` is not a file.
        RuntimeError: the file is not a checkpoint, or contains objects that a weights-only load rejects.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'Checkpoint {path} does not exist or is not a file.')
    if path.suffix == '.safetensors':
        import safetensors.torch

        raw: Any = safetensors.torch.load_file(str(path), device='cpu')
    else:
        raw = _torch_load_weights_only(path)
    if not isinstance(raw, dict):
        raise RuntimeError(f'{path} contains a {type(raw).__name__}, expected a checkpoint dict or a state dict.')

    if 'state_dict' in raw:
        state_dict = _tensor_dict(raw['state_dict'], f'{path}: state_dict')
        ema = raw.get('state_dict_ema')
        state_dict_ema = _tensor_dict(ema, f'{path}: state_dict_ema') if ema is not None else None
        ckpt_args = raw.get('args')
        if isinstance(ckpt_args, argparse.Namespace):
            ckpt_args = vars(ckpt_args)
        ckpt_args = dict(ckpt_args or {})
        arch, epoch, metric = raw.get('arch'), raw.get('epoch'), raw.get('metric')
    else:
        state_dict = _tensor_dict(raw, f'{path}')
        state_dict_ema, ckpt_args, arch, epoch, metric = None, {}, None, None, None

    args_yaml = None
    yaml_args: dict[str, Any] = {}
    args_path = path.parent / 'args.yaml'
    if args_path.is_file():
        args_yaml = args_path.read_text(encoding='utf-8')
        try:
            loaded = yaml.safe_load(args_yaml)
        except yaml.YAMLError as error:
            raise RuntimeError(f'{args_path} is not valid YAML: {error}') from error
        if isinstance(loaded, dict):
            yaml_args = loaded
    return TrainingCheckpoint(
        path=path,
        state_dict=state_dict,
        state_dict_ema=state_dict_ema,
        arch=arch if isinstance(arch, str) and arch else None,
        args={**yaml_args, **ckpt_args},
        epoch=int(epoch) if isinstance(epoch, (int, float)) else None,
        metric=float(metric) if isinstance(metric, (int, float)) else None,
        args_yaml=args_yaml,
    )


def _strip_wrapper_prefixes(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    from timm.models import clean_state_dict

    return clean_state_dict(state_dict)


def select_weights(checkpoint: TrainingCheckpoint, use_ema: bool = True) -> tuple[dict[str, torch.Tensor], str]:
    """Return the weights to export and their source, 'ema' or 'raw', with `module.`/`_orig_mod.` stripped.

    The EMA weights are preferred when the checkpoint has them and `use_ema` is True.
    """
    if use_ema and checkpoint.state_dict_ema is not None:
        return _strip_wrapper_prefixes(checkpoint.state_dict_ema), 'ema'
    return _strip_wrapper_prefixes(checkpoint.state_dict), 'raw'


# Metrics

@dataclasses.dataclass
class RunMetrics:
    """Validation metrics of one set of weights: top-1 and top-5 accuracy in percent, and the loss."""
    top1: float
    top5: float | None
    loss: float | None
    source: str  # where the numbers come from, as a sentence for the model card


def read_summary(path: Path) -> list[dict[str, float]]:
    """Read timm's summary.csv into one dict of floats per row; empty or non-numeric cells become NaN."""
    rows = []
    with open(path, newline='', encoding='utf-8') as f:
        for row in csv.DictReader(f):
            parsed = {}
            for key, value in row.items():
                try:
                    parsed[key] = float(value)
                except (TypeError, ValueError):
                    parsed[key] = math.nan
            rows.append(parsed)
    return rows


def _present(row: dict[str, float], key: str) -> bool:
    return key in row and not math.isnan(row[key])


def metrics_from_summary(checkpoint: TrainingCheckpoint, weights: str) -> tuple[RunMetrics | None, str]:
    """Find the summary.csv metrics of the exported weights, or return None and the reason there are none.

    The row is the one of the checkpoint's epoch (the last such row, as a resumed run may repeat epochs). Which
    columns belong to which weights depends on the trainer:

    * `eval_ema_*` columns exist (this package's trainer): they are the EMA weights' metrics and `eval_*` the
      raw weights';
    * no `eval_ema_*` columns but the run evaluated an EMA (`model_ema` set, `model_ema_force_cpu` not set):
      timm's train.py then writes the EMA weights' metrics into `eval_*`, so the raw weights have none;
    * otherwise `eval_*` are the raw weights' metrics.

    The row is used only if its metric agrees with the checkpoint's `metric` (when both exist), so that a
    summary of another run or of a later resume is not credited to these weights.
    """
    summary_path = checkpoint.run_dir / 'summary.csv'
    if not summary_path.is_file():
        return None, f'the run folder {checkpoint.run_dir} has no summary.csv'
    if checkpoint.epoch is None:
        return None, 'the checkpoint does not record its epoch, so no summary.csv row can be matched to it'
    rows = [r for r in read_summary(summary_path) if _present(r, 'epoch') and int(r['epoch']) == checkpoint.epoch]
    if not rows:
        return None, f'summary.csv has no row for epoch {checkpoint.epoch}'
    row = rows[-1]
    args = checkpoint.args
    ema_columns = _present(row, 'eval_ema_top1')
    ema_in_eval = bool(args.get('model_ema')) and not args.get('model_ema_force_cpu')
    if weights == 'ema' and ema_columns:
        prefix = 'eval_ema_'
    elif weights == 'ema':
        prefix = 'eval_' if ema_in_eval else None
    else:
        prefix = 'eval_' if ema_columns or not ema_in_eval else None
    if prefix is None or not _present(row, f'{prefix}top1'):
        return None, f'summary.csv has no validation metrics of the {weights} weights for epoch {checkpoint.epoch}'

    if checkpoint.metric is not None:
        metric_name = str(args.get('eval_metric') or 'top1')
        candidates = [row[k] for k in (f'eval_{metric_name}', f'eval_ema_{metric_name}') if _present(row, k)]
        if candidates and not any(math.isclose(c, checkpoint.metric, rel_tol=1e-9) for c in candidates):
            _logger.warning(
                f'summary.csv row of epoch {checkpoint.epoch} has {metric_name} {candidates}, but the checkpoint '
                f'records metric {checkpoint.metric}; not using that row.')
            return None, (f'the summary.csv row of epoch {checkpoint.epoch} does not match the checkpoint\'s '
                           f'recorded metric')
    return RunMetrics(
        top1=row[f'{prefix}top1'],
        top5=row[f'{prefix}top5'] if _present(row, f'{prefix}top5') else None,
        loss=row[f'{prefix}loss'] if _present(row, f'{prefix}loss') else None,
        source=f'From the run\'s summary.csv, epoch {checkpoint.epoch} (columns `{prefix}*`), on the validation '
               f'split used in training.',
    ), ''
