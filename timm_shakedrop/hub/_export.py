"""Export a training checkpoint to a folder that the Hugging Face Hub and `timm.create_model` read.

The folder contains `model.safetensors`, `config.json` in timm's Hub format (written by timm's
`save_config_for_hf`) and `README.md`, a model card. The export is written into a temporary folder next to the
output, checked by rebuilding the model from it with `timm.create_model('local-dir:...', pretrained=True)`, and
only then renamed into place.
"""
import dataclasses
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from huggingface_hub import ModelCardData
from torch import nn

from ._checkpoint import RunMetrics, TrainingCheckpoint, load_training_checkpoint, metrics_from_summary, select_weights
from .model_cards import (
    CARD_TAGS,
    LIBRARY_NAME,
    PIPELINE_TAG,
    count_macs,
    count_parameters,
    family_for_model,
    format_count,
    render_card,
)

_logger = logging.getLogger(__name__)

__all__ = ['EXPORT_FILES', 'REPO_ID_PLACEHOLDER', 'ExportResult', 'export_checkpoint']

WEIGHTS_FILE = 'model.safetensors'
CONFIG_FILE = 'config.json'
CARD_FILE = 'README.md'
EXPORT_FILES = (WEIGHTS_FILE, CONFIG_FILE, CARD_FILE)
# Stands for the repository id in the usage snippet of a card exported without `repo_id`; `push` replaces it.
REPO_ID_PLACEHOLDER = 'YOUR_ORG/YOUR_MODEL'
# Shape of the fixed verification input is (batch, *input_size); the seed makes it the same on every run.
_VERIFY_BATCH = 2
_VERIFY_SEED = 0
_TAG_PATTERN = re.compile(r'^[a-z0-9][a-z0-9_]*$')

# Hub dataset id, short name and card description of the datasets that timm and this package's trainer name.
_DATASETS = {
    'cifar10': ('uoft-cs/cifar10', 'CIFAR-10', 'CIFAR-10 (50,000 training and 10,000 test images of 32×32 pixels)'),
    'cifar100': ('uoft-cs/cifar100', 'CIFAR-100',
                 'CIFAR-100 (50,000 training and 10,000 test images of 32×32 pixels)'),
    'imagenet': ('ILSVRC/imagenet-1k', 'ImageNet-1k', 'ImageNet-1k (ILSVRC 2012)'),
    'digits': (None, 'the scikit-learn digits',
               "scikit-learn's copy of the UCI optical handwritten digits (1,797 images of 8×8 pixels, upsampled "
               'to 32×32 with 3 identical channels; the validation split is one fifth of each class)'),
}


@dataclasses.dataclass
class ExportResult:
    """Files, sizes and measurements of one export by `export_checkpoint`."""
    output_dir: Path
    files: dict[str, int]  # file name -> size in bytes
    architecture: str
    weights: str  # 'ema' or 'raw'
    num_classes: int
    param_count: int
    macs: int
    metrics: RunMetrics | None
    metrics_note: str  # why there are no metrics, when `metrics` is None


# Model reconstruction

def _model_kwargs_from_args(args: dict[str, Any]) -> dict[str, Any]:
    """Return the `create_model` arguments of a run that shape the network, as timm's train.py passes them.

    Drop rates are left out: dropout does nothing in evaluation, and ShakeDrop's rates come from the
    `keep_prob` buffers of the weights.
    """
    kwargs: dict[str, Any] = {}
    if args.get('num_classes') is not None:
        kwargs['num_classes'] = int(args['num_classes'])
    if args.get('in_chans') is not None:
        kwargs['in_chans'] = int(args['in_chans'])
    elif args.get('input_size') is not None:
        kwargs['in_chans'] = int(args['input_size'][0])
    if args.get('gp'):
        kwargs['global_pool'] = args['gp']
    for key in ('bn_momentum', 'bn_eps'):
        if args.get(key) is not None:
            kwargs[key] = args[key]
    model_kwargs = args.get('model_kwargs') or {}
    if not isinstance(model_kwargs, dict):
        raise ValueError(f'`model_kwargs` in the run arguments must be a dict, got {model_kwargs!r}.')
    kwargs.update(model_kwargs)
    return kwargs


def _missing_keep_prob_keys(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> list[str]:
    from ..layers import ShakeDrop

    return [f'{name}.keep_prob' for name, module in model.named_modules()
            if isinstance(module, ShakeDrop) and f'{name}.keep_prob' not in state_dict]


def _converted_architecture(arch: str, state_dict: dict[str, torch.Tensor],
                            kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Return the architecture and arguments to build for weights that may come from `apply_shakedrop`.

    A training script that converts a timm model with `timm_shakedrop.apply_shakedrop` records the plain timm
    name (`resnet18`), while the weights carry one `keep_prob` buffer per residual branch. Such weights are built
    as the registered converted architecture with that name as `base_model`.
    """
    import timm

    from ..layers import ShakeDrop
    from ..models import CONVERTED_ARCHITECTURE

    if arch == CONVERTED_ARCHITECTURE or not any(k.endswith('.keep_prob') for k in state_dict):
        return arch, kwargs
    base_kwargs = {k: v for k, v in kwargs.items() if not k.startswith('shakedrop_')}
    try:
        with torch.device('meta'):
            probe = timm.create_model(arch, pretrained=False, **base_kwargs)
    except (RuntimeError, TypeError, ValueError) as error:
        raise RuntimeError(f'Cannot build model {arch!r} with {base_kwargs}: {error}') from error
    if any(isinstance(m, ShakeDrop) for m in probe.modules()):
        return arch, kwargs
    # NOTE: the weights do not store alpha ranges; apply_shakedrop's defaults (or shakedrop_* model_kwargs of the
    # run) are assumed, and the evaluation scale is right for them and for any other range of mean 0.
    _logger.info(f'The weights of {arch!r} carry ShakeDrop keep_prob buffers (a model converted with '
                 f'apply_shakedrop); building {CONVERTED_ARCHITECTURE!r} with base_model={arch!r}.')
    return CONVERTED_ARCHITECTURE, dict(kwargs, base_model=arch)


def _build_model(arch: str, state_dict: dict[str, torch.Tensor], args: dict[str, Any]) -> nn.Module:
    """Build `arch` as the run did and load `state_dict`, which must fit it key for key and shape for shape."""
    import timm

    kwargs = _model_kwargs_from_args(args)
    arch, kwargs = _converted_architecture(arch, state_dict, kwargs)
    try:
        model = timm.create_model(arch, pretrained=False, **kwargs)
    except (RuntimeError, TypeError, ValueError) as error:
        raise RuntimeError(f'Cannot build model {arch!r} with {kwargs}: {error}') from error

    # timm's train.py leaves num_classes and in_chans unset when they are the model's defaults; the weights
    # tell the values that were actually trained.
    rebuild = {}
    cfg = model.pretrained_cfg
    classifier = cfg.get('classifier')
    if 'num_classes' not in kwargs and isinstance(classifier, str) and f'{classifier}.weight' in state_dict:
        trained = int(state_dict[f'{classifier}.weight'].shape[0])
        if trained != model.num_classes:
            rebuild['num_classes'] = trained
    first_conv = cfg.get('first_conv')
    if 'in_chans' not in kwargs and isinstance(first_conv, str) and f'{first_conv}.weight' in state_dict:
        trained = int(state_dict[f'{first_conv}.weight'].shape[1])
        if trained != getattr(model, 'in_chans', trained):
            rebuild['in_chans'] = trained
    if rebuild:
        kwargs.update(rebuild)
        model = timm.create_model(arch, pretrained=False, **kwargs)

    expected = {k: v.shape for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in state_dict and not k.endswith('.keep_prob')]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [k for k in expected if k in state_dict and state_dict[k].shape != expected[k]]
    if missing or unexpected or mismatched:
        details = [f'{len(items)} {what} (e.g. {items[0]})' for items, what in (
            (missing, 'missing keys'), (unexpected, 'unexpected keys'), (mismatched, 'keys of another shape'))
            if items]
        raise RuntimeError(
            f'The weights do not fit {arch!r} built with {kwargs}: {", ".join(details)}. Pass --model with the '
            f'architecture the run trained.')

    missing_rates = _missing_keep_prob_keys(model, state_dict)
    if missing_rates and args.get('drop_path') is not None:
        # Weights saved before ShakeDrop stored its rates: rebuild them from the run's drop_path_rate.
        _logger.warning(f'The weights have no keep_prob for {len(missing_rates)} ShakeDrop layers; using the '
                        f"run's drop_path={args['drop_path']}.")
        kwargs['drop_path_rate'] = float(args['drop_path'])
        model = timm.create_model(arch, pretrained=False, **kwargs)
    elif missing_rates:
        raise RuntimeError(
            f'The weights have no keep_prob for {len(missing_rates)} ShakeDrop layers (e.g. {missing_rates[0]}) '
            f'and the run arguments have no drop_path, so their evaluation scale is unknown.')
    model.load_state_dict(state_dict, strict=False)
    return model.eval()


def _data_config_from_args(args: dict[str, Any]) -> dict[str, Any]:
    """Return the preprocessing arguments of the run; unset ones fall back to the model's config, as in timm."""
    keys = ('input_size', 'img_size', 'mean', 'std', 'interpolation', 'crop_pct', 'crop_mode')
    config = {k: args[k] for k in keys if args.get(k) not in (None, '')}
    if args.get('model_kwargs'):
        config['model_kwargs'] = args['model_kwargs']
    return config


# Metrics, labels and card

def _evaluate(model: nn.Module, args: dict[str, Any]) -> tuple[RunMetrics | None, str, list[str] | None]:
    """Evaluate `model` on the run's validation split with `timm_shakedrop.data.create_eval_dataset`."""
    if not _names_dataset(args):
        # create_eval_dataset would fill the gap with the trainer's default dataset, which is not this run's.
        return None, 'the run arguments name no dataset (`dataset` or `data_dir`) to evaluate on', None
    try:
        from timm_shakedrop.data import create_eval_dataset
    except ImportError:
        return None, 'this installation cannot rebuild validation splits (timm_shakedrop.data is missing)', None
    try:
        dataset, class_names = create_eval_dataset(args)
    except (RuntimeError, ValueError, OSError) as error:
        return None, f'the validation split of the run is not available here ({error})', None

    from timm.utils import accuracy

    loader = torch.utils.data.DataLoader(dataset, batch_size=64, shuffle=False, num_workers=0)
    top1 = top5 = loss = 0.0
    count = 0
    maxk = min(5, model.num_classes)
    with torch.no_grad():
        for images, targets in loader:
            logits = model(images)
            batch = targets.shape[0]
            acc1, acck = accuracy(logits, targets, topk=(1, maxk))
            top1 += float(acc1) * batch
            top5 += float(acck) * batch
            loss += float(nn.functional.cross_entropy(logits, targets, reduction='sum'))
            count += batch
    if count == 0:
        return None, 'the validation split of the run is empty', class_names
    metrics = RunMetrics(
        top1=top1 / count,
        top5=top5 / count if maxk == 5 else None,
        loss=loss / count,
        source=f'Evaluated by `timm-shakedrop export` on the validation split of the run ({count} images).',
    )
    return metrics, '', class_names


def _names_dataset(args: dict[str, Any]) -> bool:
    """Return whether the run arguments name the run's data (`dataset` or `data_dir`)."""
    return 'dataset' in args or 'data_dir' in args


def _dataset_entry(args: dict[str, Any]) -> tuple[str | None, str, str] | None:
    """Return the Hub dataset id (or None), a short name and a description of the run's training data.

    Returns None when the arguments name no dataset. No dataset name and no data folder mean the embedded
    digits only when the arguments contain those keys, as the arguments of timm's and this package's trainers do.
    """
    if not _names_dataset(args):
        return None
    name = str(args.get('dataset') or '').strip()
    lowered = name.lower()
    if not name and not args.get('data_dir'):
        lowered = 'digits'
    for prefix in ('hfds/', 'hfids/'):
        if lowered.startswith(prefix):
            dataset_id = name[len(prefix):]
            return dataset_id, f'`{dataset_id}`', f'the Hugging Face dataset `{dataset_id}`'
    base = lowered.split('/')[-1]
    if base in ('imagenet', 'imagenet1k', 'imagenet-1k', 'ilsvrc2012'):
        base = 'imagenet'
    if base in _DATASETS:
        return _DATASETS[base]
    if not name:
        folder = Path(str(args['data_dir'])).name
        return None, f'an image folder ({folder})', f'an image folder (`{folder}`)'
    return None, f'`{name}`', f'the dataset `{name}`'


def _format_metric(value: float | None, digits: int) -> str:
    return '–' if value is None else f'{value:.{digits}f}'


def _shake_drop_text(model: nn.Module) -> str:
    from ..layers import ShakeDrop

    layers = [m for m in model.modules() if isinstance(m, ShakeDrop)]
    if not layers:
        return ''
    keep = [float(m.keep_prob) for m in layers]
    alpha = layers[0].alpha_range
    return (f'{len(layers)} layers with keep probability from {keep[0]:.4f} (first unit) to {keep[-1]:.4f} '
            f'(last unit), read from the `keep_prob` buffers of these weights; forward coefficient α in '
            f'[{alpha[0]:g}, {alpha[1]:g}]. In evaluation each residual branch is scaled by its expected '
            f'coefficient.')


def _is_bare_state_dict(checkpoint: TrainingCheckpoint) -> bool:
    """Return whether the file held only weights: no EMA, arch, epoch or metric of a training checkpoint."""
    return (checkpoint.state_dict_ema is None and checkpoint.arch is None and checkpoint.epoch is None
            and checkpoint.metric is None)


def _weights_source(checkpoint: TrainingCheckpoint) -> str:
    """Name the kind of file the weights come from, for sentences of the card."""
    if _is_bare_state_dict(checkpoint):
        return f'a bare state dict (`{checkpoint.path.name}`)'
    return f'a training checkpoint (`{checkpoint.path.name}`)'


def _no_run_reason(checkpoint: TrainingCheckpoint) -> str:
    return (f'the weights come from {_weights_source(checkpoint)} that records no training arguments, and there '
            f'is no args.yaml beside it')


def _planned_epochs(args: dict[str, Any]) -> int | None:
    """Return the epochs that the run's arguments plan (`epochs` plus `cooldown_epochs`), or None if unknown."""
    epochs = args.get('epochs')
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        return None
    if args.get('cycle_limit') not in (None, 1):
        # Restarting schedules of timm's train.py train `epochs` per cycle, so the total depends on the schedule.
        return None
    cooldown = args.get('cooldown_epochs')
    if isinstance(cooldown, int) and not isinstance(cooldown, bool) and cooldown > 0:
        epochs += cooldown
    return epochs


def _epoch_sentence(checkpoint: TrainingCheckpoint) -> str:
    """Describe the epoch of the weights, e.g. 'epoch 3 (counted from 0), that is after 4 of the run's 6 epochs'."""
    if checkpoint.epoch is None:
        return 'The checkpoint does not record the epoch of these weights.'
    done = checkpoint.epoch + 1
    planned = _planned_epochs(checkpoint.args)
    text = f'These weights are from epoch {checkpoint.epoch} (counted from 0), that is after {done} '
    if planned == 1 and done == 1:
        return "These weights are from epoch 0 (counted from 0), that is after the run's single epoch."
    if planned is not None and done <= planned:
        return text + f"of the run's {planned} epochs."
    return text + f'epoch{"s" if done != 1 else ""} of training.'


def _training_text(checkpoint: TrainingCheckpoint, has_run: bool) -> tuple[str, str | None]:
    """Return the card's training paragraph and the command that reproduces the run, if one is known."""
    if not has_run:
        return (f'Unknown: {_no_run_reason(checkpoint)}, so the training data, the schedule and the epoch of '
                f'these weights are not known.'), None
    args = checkpoint.args
    epochs = _epoch_sentence(checkpoint)
    command = args.get('command')
    if isinstance(command, (list, tuple)):
        import shlex

        command = shlex.join(str(c) for c in command)
    if isinstance(command, str) and command.strip():
        return f'{epochs} The run was started with:', command.strip()
    if checkpoint.args_yaml is not None and 'recipe' in args:
        # Only `timm-shakedrop train` records a recipe; its --config reads every argument from args.yaml.
        return (f"{epochs} The run was trained by `timm-shakedrop train`, and the arguments of the run's "
                f'args.yaml (below) reproduce the whole run:'), 'timm-shakedrop train --config args.yaml'
    if checkpoint.args_yaml is not None:
        return (f"{epochs} timm's train.py reproduces the whole run from the arguments of the run's args.yaml "
                f'(below):'), 'python train.py --config args.yaml'
    return f'{epochs} The checkpoint records no command and its run folder has no args.yaml.', None


def _architecture_title(model: nn.Module, architecture: str, family) -> str:
    """Name the architecture for the card's summary: the family title, or the base of a converted model."""
    from ..models import CONVERTED_ARCHITECTURE

    if family is not None:
        return family.title
    base_model = getattr(model, '_model_args', {}).get('base_model')
    if architecture == CONVERTED_ARCHITECTURE and base_model:
        return f"timm's `{base_model}` with ShakeDrop in every residual branch (`{architecture}`)"
    return architecture


def _render_export_card(
        *,
        model: nn.Module,
        architecture: str,
        tag: str | None,
        checkpoint: TrainingCheckpoint,
        weights: str,
        data_config: dict[str, Any],
        metrics: RunMetrics | None,
        metrics_note: str,
        label_names: list[str] | None,
        dataset_ids: list[str],
        dataset: tuple[str, str] | None,
        has_run: bool,
        license_id: str,
        repo_id: str | None,
        param_count: int,
        macs: int,
) -> str:
    """Render README.md from `model_cards/templates/exported_model.md` and the family text of `architecture`.

    `dataset` is the short name and the description of the training data, or None when it is unknown.
    """
    family = family_for_model(architecture)
    name = f'{architecture}.{tag}' if tag else architecture
    input_text = '×'.join(str(v) for v in data_config['input_size'])
    weights_label = 'EMA' if weights == 'ema' else 'raw'
    if checkpoint.epoch is not None:
        weights_text = f'{weights_label} weights of `{checkpoint.path.name}`, epoch {checkpoint.epoch} (counted from 0)'
    elif _is_bare_state_dict(checkpoint):
        weights_text = f'{weights_label} weights of `{checkpoint.path.name}`, a bare state dict'
    else:
        weights_text = f'{weights_label} weights of `{checkpoint.path.name}`'
    architecture_title = _architecture_title(model, architecture, family)
    source = _weights_source(checkpoint)
    if dataset is not None:
        summary = (f'{architecture_title} trained on {dataset[0]}, exported from the {weights_label} weights of '
                   f'{source} by timm-shakedrop.')
        dataset_text = dataset[1]
    elif has_run:
        summary = (f'{architecture_title}, exported from the {weights_label} weights of {source} by '
                   f'timm-shakedrop. The run arguments name no dataset, so the training data is unknown.')
        dataset_text = 'unknown: the run arguments name no dataset (`dataset` or `data_dir`)'
    else:
        summary = (f'{architecture_title}, exported from the {weights_label} weights of {source} by '
                   f'timm-shakedrop. No training run is known for these weights, so their training data and '
                   f'their accuracy are unknown (not measured).')
        dataset_text = f'unknown: {_no_run_reason(checkpoint)}'

    # Results measured for these weights, or why there are none.
    if metrics is None:
        metrics_source = f'Not measured: {metrics_note}.'
        metrics_view = None
    else:
        metrics_source = metrics.source
        metrics_view = dict(top1=_format_metric(metrics.top1, 2), top5=_format_metric(metrics.top5, 2),
                            loss=_format_metric(metrics.loss, 4))

    # Details and limitations specific to this run.
    labels_text = None
    if label_names:
        first_names = ', '.join(label_names[:10])
        labels_text = first_names + (f', … ({len(label_names)} in config.json)' if len(label_names) > 10 else '')
    if dataset is not None:
        data_limitation = f'Trained and measured on {dataset[0]}; the measured results describe that data only.'
    else:
        data_limitation = ('The training data of these weights is unknown, so their accuracy on any data is '
                           'unknown too; measure it on your own validation data before use.')
    limitations = [data_limitation, *(family.limitations if family else ())]
    if family is None:
        limitations.append('Loading needs the package that registers this architecture with timm.')
    training_text, training_command = _training_text(checkpoint, has_run)

    card_data = ModelCardData(
        library_name=LIBRARY_NAME,
        pipeline_tag=PIPELINE_TAG,
        license=license_id,
        tags=list(dict.fromkeys([*CARD_TAGS, *(family.tags if family else ())])),
        datasets=dataset_ids or None,
    )
    return render_card(
        card_data,
        'exported_model.md',
        title=f'Model card for {name}',
        summary=summary,
        architecture=architecture,
        family=family,
        params_text=format_count(param_count),
        macs_text=format_count(macs),
        input_text=input_text,
        num_classes=model.num_classes,
        label_names_text=labels_text,
        interpolation=data_config['interpolation'],
        crop_pct=data_config['crop_pct'],
        mean_text=tuple(round(v, 4) for v in data_config['mean']),
        preprocessing_source=None if has_run else "the architecture's defaults, because no run records its own",
        std_text=tuple(round(v, 4) for v in data_config['std']),
        shake_drop_text=_shake_drop_text(model),
        weights_text=weights_text,
        weights_label=weights_label,
        dataset_text=dataset_text,
        license=license_id,
        repo_id=repo_id or REPO_ID_PLACEHOLDER,
        metrics=metrics_view,
        metrics_source=metrics_source,
        training_text=training_text,
        training_command=training_command,
        args_yaml=(checkpoint.args_yaml or '').strip() or None,
        limitations=limitations,
        citations=family.citations if family else (),
    )


# Writing and verifying

def _contiguous_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Return the state dict as contiguous tensors that share no storage, as safetensors requires."""
    return {k: v.detach().to(memory_format=torch.contiguous_format).clone() for k, v in model.state_dict().items()}


def _verify_export(folder: Path, model: nn.Module, input_size: tuple[int, ...]) -> None:
    """Rebuild the model from `folder` as users will and require the same eval outputs, bit for bit."""
    import timm

    rebuilt = timm.create_model(f'local-dir:{folder}', pretrained=True).eval()
    generator = torch.Generator().manual_seed(_VERIFY_SEED)
    x = torch.randn((_VERIFY_BATCH, *input_size), generator=generator)
    with torch.no_grad():
        expected = model(x)
        actual = rebuilt(x)
    if expected.shape != actual.shape or not torch.equal(expected, actual):
        difference = (expected - actual).abs().max().item() if expected.shape == actual.shape else 'shape'
        raise RuntimeError(
            f'Verification failed: the model rebuilt from {folder} with timm.create_model(local-dir:...) gives '
            f'other eval outputs than the checkpoint (max abs difference {difference}). Nothing was exported.')


def _check_output_dir(output_dir: Path, force: bool) -> None:
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f'Output {output_dir} exists and is not a folder.')
    if output_dir.is_dir() and any(output_dir.iterdir()) and not force:
        raise ValueError(f'Output folder {output_dir} is not empty; pass --force (force=True) to replace it.')


def _process_umask() -> int:
    """Return the umask of this process, read from /proc where possible so that it is never changed."""
    try:
        for line in Path('/proc/self/status').read_text().splitlines():
            if line.startswith('Umask:'):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    # NOTE: os.umask can only be read by setting it; threads that create files meanwhile get the same mask.
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def _apply_umask_modes(staging: Path) -> None:
    """Give the staging folder and its files the modes of a plain mkdir and open under the process umask.

    `tempfile.mkdtemp` creates the folder with mode 0700 and safetensors writes its file with mode 0600,
    whatever the umask; without this the exported folder would be private to its owner.
    """
    umask = _process_umask()
    for path in staging.iterdir():
        os.chmod(path, 0o666 & ~umask)
    os.chmod(staging, 0o777 & ~umask)


def _move_into_place(staging: Path, output_dir: Path) -> None:
    if not output_dir.exists():
        os.replace(staging, output_dir)
        return
    backup = Path(tempfile.mkdtemp(prefix=f'.{output_dir.name}.old-', dir=output_dir.parent))
    backup.rmdir()
    os.replace(output_dir, backup)
    try:
        os.replace(staging, output_dir)
    except OSError:
        os.replace(backup, output_dir)
        raise
    shutil.rmtree(backup, ignore_errors=True)


def export_checkpoint(
        checkpoint: str | Path,
        output_dir: str | Path,
        *,
        model_name: str | None = None,
        use_ema: bool = True,
        tag: str | None = None,
        force: bool = False,
        label_names: list[str] | None = None,
        dataset_ids: list[str] | None = None,
        license: str | None = None,  # noqa: A002 - named after the model card field
        repo_id: str | None = None,
        evaluate: bool = True,
) -> ExportResult:
    """Export a training checkpoint to `output_dir` as model.safetensors, config.json and README.md.

    Args:
        checkpoint: A training checkpoint from timm's train.py or `timm-shakedrop train`, or a bare state dict.
        output_dir: Folder to create; it must be missing or empty unless `force` is set.
        model_name: Architecture to build; required when the checkpoint records no `arch`.
        use_ema: Export the EMA weights when the checkpoint has them (else the raw weights).
        tag: Pretrained tag recorded in config.json (lowercase letters, digits and `_`); None derives none.
        force: Replace a non-empty `output_dir` (only once the new export is complete and verified).
        label_names: Class names in label order; None takes them from the run when it records them.
        dataset_ids: Hub dataset ids for the card metadata; None derives them from the run's dataset.
        license: License id for the card metadata; None takes the model's pretrained config license.
        repo_id: Repository id for the card's usage snippet; None leaves a placeholder that `push` fills in.
        evaluate: Evaluate on the run's validation split when summary.csv has no metrics for these weights.

    Raises:
        ValueError: bad arguments or a non-empty output folder without `force`.
        RuntimeError: the checkpoint cannot be read or built, or the verification failed.
    """
    output_dir = Path(output_dir).expanduser().resolve()
    _check_output_dir(output_dir, force)
    if tag is not None and not _TAG_PATTERN.match(tag):
        raise ValueError(f'`tag` must be lowercase letters, digits and underscores, got {tag!r}.')
    ckpt = load_training_checkpoint(checkpoint)
    architecture = model_name or ckpt.arch
    if not architecture:
        raise ValueError(f'{ckpt.path} records no architecture (`arch`); pass --model (model_name=...).')
    if model_name and ckpt.arch and model_name != ckpt.arch:
        _logger.warning(f'Building {model_name!r} as asked, although the checkpoint records arch {ckpt.arch!r}.')
    state_dict, weights = select_weights(ckpt, use_ema)
    _logger.info(f'Exporting the {weights} weights of {ckpt.path} ({architecture}).')
    model = _build_model(architecture, state_dict, ckpt.args)
    base_name = model.pretrained_cfg.get('architecture', architecture)

    # Metrics of the exported weights: summary.csv first, else an evaluation, else a note. Without training
    # arguments there is no run: nothing to evaluate on, and the trainer's defaults (the embedded digits) must
    # not stand in for the unknown run.
    has_run = bool(ckpt.args)
    eval_class_names = None
    if not has_run:
        metrics = None
        metrics_note = f'{_no_run_reason(ckpt)}, so there is no validation split of a run to evaluate them on'
        _logger.info(f'Not evaluating: {metrics_note}.')
    else:
        metrics, metrics_note = metrics_from_summary(ckpt, weights)
        if metrics is None and evaluate:
            _logger.info(f'No summary.csv metrics for these weights ({metrics_note}); evaluating.')
            metrics, eval_note, eval_class_names = _evaluate(model, ckpt.args)
            if metrics is None:
                metrics_note = f'{metrics_note}, and {eval_note}'
        elif metrics is None:
            metrics_note = f'{metrics_note}, and evaluation was switched off'

    label_names = list(label_names) if label_names else (ckpt.args.get('class_names') or eval_class_names)
    if label_names and len(label_names) != model.num_classes:
        raise ValueError(f'{len(label_names)} label names given for a model with {model.num_classes} classes.')
    entry = _dataset_entry(ckpt.args)
    derived_id, dataset = (entry[0], entry[1:]) if entry is not None else (None, None)
    dataset_ids = list(dataset_ids) if dataset_ids is not None else ([derived_id] if derived_id else [])
    if dataset is None and dataset_ids:
        names = ', '.join(f'`{i}`' for i in dataset_ids)
        dataset = names, f'{names} (given with --dataset-id; no run records the training data)'
    license_id = license or model.pretrained_cfg.get('license') or 'other'

    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f'.{output_dir.name}.export-', dir=output_dir.parent))
    try:
        from timm.models._hub import save_config_for_hf

        model.pretrained_cfg = {k: v for k, v in model.pretrained_cfg.items() if k not in ('tag', 'hf_hub_id')}
        if tag:
            model.pretrained_cfg['tag'] = tag
        model.pretrained_cfg['license'] = license_id
        safetensors.torch.save_file(_contiguous_tensors(model), str(staging / WEIGHTS_FILE), metadata={'format': 'pt'})
        model_config: dict[str, Any] = {}
        if label_names:
            model_config['label_names'] = [str(n) for n in label_names]
        save_config_for_hf(model, str(staging / CONFIG_FILE), model_config=model_config,
                           data_config=_data_config_from_args(ckpt.args))
        data_config = json.loads((staging / CONFIG_FILE).read_text())['pretrained_cfg']
        input_size = tuple(data_config['input_size'])
        param_count = count_parameters(model)
        macs = count_macs(model, input_size)
        card = _render_export_card(
            model=model, architecture=base_name, tag=tag, checkpoint=ckpt, weights=weights,
            data_config=data_config, metrics=metrics, metrics_note=metrics_note, label_names=label_names,
            dataset_ids=dataset_ids, dataset=dataset, has_run=has_run, license_id=license_id,
            repo_id=repo_id, param_count=param_count, macs=macs,
        )
        (staging / CARD_FILE).write_text(card, encoding='utf-8')
        _verify_export(staging, model, input_size)
        _apply_umask_modes(staging)
        _check_output_dir(output_dir, force)
        _move_into_place(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

    files = {name: (output_dir / name).stat().st_size for name in EXPORT_FILES}
    _logger.info(f'Exported {base_name} to {output_dir}: ' + ', '.join(f'{k} {v:,} bytes' for k, v in files.items()))
    return ExportResult(
        output_dir=output_dir,
        files=files,
        architecture=base_name,
        weights=weights,
        num_classes=model.num_classes,
        param_count=param_count,
        macs=macs,
        metrics=metrics,
        metrics_note=metrics_note,
    )
