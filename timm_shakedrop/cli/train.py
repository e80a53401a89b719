"""`timm-shakedrop train`: train an image classifier with timm's training parts.

Flags that timm's train.py also has keep its names and defaults, except `--model` (a small ShakeDrop
PyramidNet), `--device` and `--amp-dtype` (chosen from the hardware when not given) and `--num-classes`
(the dataset's class count when not given). Argument defaults are layered, each layer overriding the one
before: the parser's defaults, the `--recipe`, a `-c/--config` YAML file, the arguments stored in the
`--resume` checkpoint, and finally the flags on the command line.
"""
import argparse
import logging
import os
import sys
from typing import Any, Dict, List, Optional

import yaml

_logger = logging.getLogger('timm_shakedrop.train')

PROG = 'timm-shakedrop train'


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of `timm-shakedrop train`."""
    from timm.utils import ParseKwargs

    from ..training.recipes import recipe_help
    from ..training.transforms import CROP_MODES

    parser = argparse.ArgumentParser(
        prog=PROG,
        description='Train a classifier on the embedded digits (default), CIFAR or an image folder with timm.',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument('-c', '--config', default='', metavar='FILE',
                        help='YAML file of argument defaults, for example a run\'s args.yaml')
    parser.add_argument('--recipe', default=None, metavar='NAME',
                        help=f'named set of defaults that flags override; without it: quick for digits, '
                             f'shakedrop-cifar for CIFAR, timm otherwise. {recipe_help()}')

    group = parser.add_argument_group('Dataset parameters')
    group.add_argument('--data-dir', metavar='DIR', help='dataset root; without it and --dataset: the digits')
    group.add_argument('--dataset', metavar='NAME', default='',
                       help="'digits', 'torch/cifar10', 'torch/cifar100', or any timm dataset name; empty means "
                            "the digits without --data-dir and an image folder with it")
    group.add_argument('--train-split', metavar='NAME', default='train', help='train split name')
    group.add_argument('--val-split', metavar='NAME', default='validation',
                       help="validation split name (CIFAR: the test set); '' trains without evaluation")
    group.add_argument('--train-num-samples', type=int, default=None, metavar='N',
                       help='train on the first N images of the split only (class-balanced for the digits)')
    group.add_argument('--val-num-samples', type=int, default=None, metavar='N',
                       help='evaluate on the first N images of the split only (class-balanced for the digits)')
    group.add_argument('--dataset-download', action='store_true', default=False,
                       help='allow torchvision to download CIFAR into --data-dir')
    group.add_argument('--class-map', default='', metavar='FILENAME', help='class to index mapping file (folders)')

    group = parser.add_argument_group('Model parameters')
    group.add_argument('--model', default='shakedrop_pyramidnet20_a48', metavar='MODEL', help='timm model name')
    group.add_argument('--pretrained', action='store_true', default=False, help='start from pretrained weights')
    group.add_argument('--pretrained-path', default=None, metavar='PATH',
                       help='load this file as the pretrained weights, adapting the classifier')
    group.add_argument('--initial-checkpoint', default='', metavar='PATH', help='load these weights after creation')
    group.add_argument('--resume', default='', metavar='PATH',
                       help='continue a run from its checkpoint (last.pth.tar or a recovery-*.pth.tar), with '
                            'the arguments stored in it unless flags override them')
    group.add_argument('--no-resume-opt', action='store_true', default=False,
                       help='do not restore the optimizer, scheduler and AMP scaler when resuming')
    group.add_argument('--num-classes', type=int, default=None, metavar='N',
                       help='number of classes; must match the dataset (default: the dataset\'s count)')
    group.add_argument('--gp', default=None, metavar='POOL', help='global pool type (model default if None)')
    group.add_argument('--img-size', type=int, default=None, metavar='N',
                       help='image size (default: 32 for digits and CIFAR, else the model\'s)')
    group.add_argument('--in-chans', type=int, default=None, metavar='N', help='image input channels (3)')
    group.add_argument('--input-size', default=None, nargs=3, type=int, metavar='N',
                       help='input dimensions C H W, overriding --img-size')
    group.add_argument('--crop-pct', default=None, type=float, metavar='N', help='evaluation center crop fraction')
    group.add_argument('--mean', type=float, nargs='+', default=None, metavar='MEAN',
                       help='normalization mean per channel (default: the dataset\'s or the model\'s)')
    group.add_argument('--std', type=float, nargs='+', default=None, metavar='STD',
                       help='normalization std per channel (default: the dataset\'s or the model\'s)')
    group.add_argument('--interpolation', default='', metavar='NAME', help='resize interpolation (model default)')
    group.add_argument('-b', '--batch-size', type=int, default=128, metavar='N', help='batch size per process')
    group.add_argument('-vb', '--validation-batch-size', type=int, default=None, metavar='N',
                       help='validation batch size (default: --batch-size)')
    group.add_argument('--channels-last', action='store_true', default=False, help='use channels_last memory layout')
    group.add_argument('--grad-accum-steps', type=int, default=1, metavar='N',
                       help='batches whose gradients are accumulated per optimizer update')
    group.add_argument('--grad-checkpointing', action='store_true', default=False,
                       help='recompute activations in the backward pass to save memory')
    group.add_argument('--model-kwargs', nargs='*', default={}, action=ParseKwargs, metavar='KEY=VALUE',
                       help='extra keyword arguments for timm.create_model')
    group.add_argument('--torchcompile', nargs='?', type=str, default=None, const='inductor', metavar='BACKEND',
                       help='compile the model with torch.compile (backend inductor if no value)')
    group.add_argument('--torchcompile-mode', type=str, default=None, help='torch.compile mode')

    group = parser.add_argument_group('Device parameters')
    group.add_argument('--device', default=None, help="device: 'cuda' when available, else 'cpu'")
    group.add_argument('--amp', action='store_true', default=False, help='mixed precision training')
    group.add_argument('--amp-dtype', default=None, choices=('float16', 'bfloat16'),
                       help='AMP dtype (default: float16 on CUDA, bfloat16 on the CPU)')
    group.add_argument('--no-ddp-bb', action='store_true', default=False, help='do not broadcast buffers in DDP')
    group.add_argument('--local_rank', '--local-rank', default=0, type=int, help=argparse.SUPPRESS)
    group.add_argument('--num-threads', type=int, default=0, metavar='N',
                       help="CPU threads for torch's operators (torch.set_num_threads); 0 keeps torch's default of "
                            "one per core")
    group.add_argument('--device-modules', default=None, type=str, nargs='+',
                       help='modules to import before training, for device backends')

    group = parser.add_argument_group('Optimizer parameters')
    group.add_argument('--opt', default='sgd', metavar='OPTIMIZER', help="timm optimizer name ('sgd' is Nesterov)")
    group.add_argument('--opt-eps', default=None, type=float, metavar='EPSILON', help='optimizer epsilon')
    group.add_argument('--opt-betas', default=None, type=float, nargs='+', metavar='BETA', help='optimizer betas')
    group.add_argument('--momentum', type=float, default=0.9, metavar='M', help='optimizer momentum')
    group.add_argument('--weight-decay', type=float, default=2e-5, help='weight decay')
    group.add_argument('--filter-bias-and-bn', action=argparse.BooleanOptionalAction, default=True,
                       help='exempt BN and bias parameters from weight decay, as timm does; the ShakeDrop '
                            'recipes pass --no-filter-bias-and-bn to decay all parameters')
    group.add_argument('--clip-grad', type=float, default=None, metavar='NORM', help='gradient clipping threshold')
    group.add_argument('--clip-mode', type=str, default='norm', help="clipping mode: 'norm', 'value' or 'agc'")
    group.add_argument('--layer-decay', type=float, default=None, help='layer-wise learning-rate decay')
    group.add_argument('--opt-kwargs', nargs='*', default={}, action=ParseKwargs, metavar='KEY=VALUE',
                       help='extra keyword arguments for the optimizer')

    group = parser.add_argument_group('Learning rate schedule parameters')
    group.add_argument('--sched', type=str, default='cosine', metavar='SCHEDULER', help='timm scheduler name')
    group.add_argument('--sched-on-updates', action='store_true', default=False,
                       help='step the schedule after every update instead of every epoch')
    group.add_argument('--lr', type=float, default=None, metavar='LR', help='learning rate (overrides --lr-base)')
    group.add_argument('--lr-base', type=float, default=0.1, metavar='LR',
                       help='learning rate at --lr-base-size global batch size')
    group.add_argument('--lr-base-size', type=int, default=256, metavar='DIV', help='batch size of --lr-base')
    group.add_argument('--lr-base-scale', type=str, default='', metavar='SCALE',
                       help="batch-size scaling of --lr-base: 'linear' or 'sqrt' (by optimizer if empty)")
    group.add_argument('--lr-noise', type=float, nargs='+', default=None, metavar='pct, pct',
                       help='learning rate noise on/off epoch fractions')
    group.add_argument('--lr-noise-pct', type=float, default=0.67, metavar='PERCENT', help='noise limit')
    group.add_argument('--lr-noise-std', type=float, default=1.0, metavar='STDDEV', help='noise std-dev')
    group.add_argument('--lr-cycle-mul', type=float, default=1.0, metavar='MULT', help='cycle length multiplier')
    group.add_argument('--lr-cycle-decay', type=float, default=0.5, metavar='MULT', help='decay per cycle')
    group.add_argument('--lr-cycle-limit', type=int, default=1, metavar='N', help='number of cycles')
    group.add_argument('--lr-k-decay', type=float, default=1.0, help='k-decay for cosine and poly schedules')
    group.add_argument('--warmup-lr', type=float, default=1e-5, metavar='LR', help='warmup learning rate')
    group.add_argument('--min-lr', type=float, default=0, metavar='LR', help='lower bound of the learning rate')
    group.add_argument('--epochs', type=int, default=300, metavar='N', help='number of epochs')
    group.add_argument('--start-epoch', default=None, type=int, metavar='N', help='epoch to start at')
    group.add_argument('--decay-milestones', default=[90, 180, 270], type=int, nargs='+', metavar='MILESTONES',
                       help="epochs at which 'multistep' multiplies the learning rate by --decay-rate")
    group.add_argument('--decay-epochs', type=float, default=90, metavar='N', help="'step' decay interval")
    group.add_argument('--warmup-epochs', type=int, default=5, metavar='N', help='warmup epochs')
    group.add_argument('--warmup-prefix', action='store_true', default=False,
                       help='add the warmup epochs before the decay schedule')
    group.add_argument('--cooldown-epochs', type=int, default=0, metavar='N', help='epochs at --min-lr at the end')
    group.add_argument('--patience-epochs', type=int, default=10, metavar='N', help="'plateau' patience")
    group.add_argument('--decay-rate', '--dr', type=float, default=0.1, metavar='RATE', help='decay factor')

    group = parser.add_argument_group('Augmentation and regularization parameters')
    group.add_argument('--no-aug', action='store_true', default=False, help='no training augmentation')
    group.add_argument('--train-crop-mode', type=str, default=None, choices=CROP_MODES,
                       help="'pad': pad by --crop-padding and crop at random (CIFAR style); else timm's "
                            "random-resized crop modes (default: 'rrc')")
    group.add_argument('--crop-padding', type=int, default=4, metavar='PIXELS', help="padding of 'pad' crops")
    group.add_argument('--scale', type=float, nargs='+', default=[0.08, 1.0], metavar='PCT',
                       help='random-resized crop area range')
    group.add_argument('--ratio', type=float, nargs='+', default=[3. / 4., 4. / 3.], metavar='RATIO',
                       help='random-resized crop aspect ratio range')
    group.add_argument('--hflip', type=float, default=0.5, help='horizontal flip probability')
    group.add_argument('--vflip', type=float, default=0., help='vertical flip probability')
    group.add_argument('--color-jitter', type=float, default=0.4, metavar='PCT', help='color jitter factor')
    group.add_argument('--aa', type=str, default=None, metavar='NAME',
                       help="AutoAugment: 'cifar10' or 'svhn' (torchvision policies, with 'pad' crops) or a "
                            "timm policy string")
    group.add_argument('--cutout', type=int, default=0, metavar='PIXELS',
                       help='side of the Cutout square (DeVries & Taylor, 2017); 0 switches it off')
    group.add_argument('--reprob', type=float, default=0., metavar='PCT', help='random erasing probability')
    group.add_argument('--remode', type=str, default='pixel', help='random erasing mode')
    group.add_argument('--recount', type=int, default=1, help='random erasing count')
    group.add_argument('--mixup', type=float, default=0.0, help='mixup alpha; mixup is on if > 0')
    group.add_argument('--cutmix', type=float, default=0.0, help='cutmix alpha; cutmix is on if > 0')
    group.add_argument('--cutmix-minmax', type=float, nargs='+', default=None, help='cutmix min/max ratio')
    group.add_argument('--mixup-prob', type=float, default=1.0, help='probability of mixup or cutmix per batch')
    group.add_argument('--mixup-switch-prob', type=float, default=0.5, help='probability of cutmix over mixup')
    group.add_argument('--mixup-mode', type=str, default='batch', help="'batch', 'pair' or 'elem'")
    group.add_argument('--mixup-off-epoch', default=0, type=int, metavar='N', help='stop mixup at this epoch')
    group.add_argument('--smoothing', type=float, default=0.1, help='label smoothing')
    group.add_argument('--bce-loss', action='store_true', default=False, help='binary cross-entropy loss')
    group.add_argument('--train-interpolation', type=str, default='random', help='training interpolation')
    group.add_argument('--drop', type=float, default=0.0, metavar='PCT', help='dropout rate before the classifier')
    group.add_argument('--drop-path', type=float, default=None, metavar='PCT',
                       help='drop path rate; for ShakeDrop models 1 - p_L of the last unit (model default 0.5)')
    group.add_argument('--drop-block', type=float, default=None, metavar='PCT', help='drop block rate')

    group = parser.add_argument_group('Batch norm parameters')
    group.add_argument('--bn-momentum', type=float, default=None, help='BatchNorm momentum override')
    group.add_argument('--bn-eps', type=float, default=None, help='BatchNorm epsilon override')
    group.add_argument('--sync-bn', action='store_true', help='synchronized BatchNorm (CUDA only)')
    group.add_argument('--dist-bn', type=str, default='reduce',
                       help="share BN statistics across ranks after each epoch: 'broadcast', 'reduce' or ''")

    group = parser.add_argument_group('Model exponential moving average parameters')
    group.add_argument('--model-ema', action='store_true', default=False, help='track an EMA of the weights')
    group.add_argument('--model-ema-force-cpu', action='store_true', default=False,
                       help='keep the EMA on the CPU and skip its evaluation')
    group.add_argument('--model-ema-decay', type=float, default=0.9998, help='EMA decay factor')
    group.add_argument('--model-ema-warmup', action='store_true', help='warm the EMA decay up')

    group = parser.add_argument_group('Miscellaneous parameters')
    group.add_argument('--seed', type=int, default=42, metavar='S', help='random seed (rank is added per process)')
    group.add_argument('--worker-seeding', type=str, default='all', help='worker seed mode')
    group.add_argument('--log-interval', type=int, default=50, metavar='N', help='updates between log lines')
    group.add_argument('--val-interval', type=int, default=1, metavar='N',
                       help='epochs between evaluation and checkpointing')
    group.add_argument('--recovery-interval', type=int, default=0, metavar='N',
                       help='updates between recovery checkpoints (0: only on SIGINT or SIGTERM)')
    group.add_argument('--checkpoint-hist', type=int, default=10, metavar='N', help='numbered checkpoints kept')
    group.add_argument('-j', '--workers', type=int, default=4, metavar='N', help='data loading processes')
    group.add_argument('--pin-mem', action='store_true', default=False, help='pin loader memory')
    group.add_argument('--no-prefetcher', action='store_true', default=False, help="disable timm's prefetcher")
    group.add_argument('--output', default='', metavar='PATH', help='output folder (default: ./output/train)')
    group.add_argument('--experiment', default='', metavar='NAME',
                       help='run folder name (default: date-model-size); a taken name gets a -N suffix')
    group.add_argument('--eval-metric', default='top1', metavar='EVAL_METRIC',
                       help="metric that picks model_best: 'top1', 'top5', 'loss', or 'ema_' + one of them")
    group.add_argument('--plot', action=argparse.BooleanOptionalAction, default=True,
                       help='draw learning_curve.png after each epoch')
    return parser


class ArgumentError(ValueError):
    """Invalid command-line arguments, reported as one line with exit code 2."""


def _load_config_file(path: str) -> Dict[str, Any]:
    try:
        with open(path) as f:
            config = yaml.safe_load(f) or {}
    except OSError as e:
        raise ArgumentError(f'Cannot read --config {path}: {e.strerror}.') from e
    except yaml.YAMLError as e:
        raise ArgumentError(f'--config {path} is not valid YAML: {e}') from e
    if not isinstance(config, dict):
        raise ArgumentError(f'--config {path} must hold a mapping of argument names to values.')
    return {key.replace('-', '_'): value for key, value in config.items()}


def _checkpoint_args(path: str) -> Dict[str, Any]:
    from ..training.checkpoint import load_training_checkpoint
    from ..training.trainer import RUNTIME_ARGS

    if not os.path.isfile(path):
        raise ArgumentError(f'--resume checkpoint {path} does not exist.')
    try:
        checkpoint = load_training_checkpoint(path)
    except Exception as e:  # noqa: BLE001 (torch raises several types for unreadable files)
        raise ArgumentError(f'Cannot read --resume checkpoint {path}: {e}') from e
    saved = checkpoint.get('args') if isinstance(checkpoint, dict) else None
    if saved is None:
        return {}
    return {key: value for key, value in vars(saved).items() if key not in RUNTIME_ARGS}


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse `argv` with the recipe, config file and checkpoint defaults layered in.

    Raises:
        ArgumentError: for an unknown recipe or an unreadable config file or checkpoint.
        SystemExit: from argparse, for malformed flags (exit code 2).
    """
    from ..data import dataset_kind
    from ..training.recipes import default_recipe_for, get_recipe

    argv = list(argv or [])
    parser = build_parser()
    first_pass, _ = parser.parse_known_args(argv)
    layers: Dict[str, Any] = {}
    config = _load_config_file(first_pass.config) if first_pass.config else {}
    saved = _checkpoint_args(first_pass.resume) if first_pass.resume else {}

    recipe = first_pass.recipe or config.get('recipe') or saved.get('recipe')
    if recipe is None:
        dataset = first_pass.dataset or config.get('dataset') or saved.get('dataset')
        data_dir = first_pass.data_dir or config.get('data_dir') or saved.get('data_dir')
        recipe = default_recipe_for(dataset_kind(dataset, data_dir))
    try:
        layers.update(get_recipe(recipe))
    except ValueError as e:
        raise ArgumentError(str(e)) from e
    layers.update(config)
    layers.update(saved)
    layers['recipe'] = recipe
    known = {action.dest for action in parser._actions}
    parser.set_defaults(**{key: value for key, value in layers.items() if key in known})
    args = parser.parse_args(argv)
    # Values stored by an earlier run that are not flags (for example `class_names`) stay attached.
    for key, value in layers.items():
        if key not in known and key not in vars(args):
            setattr(args, key, value)
    args.recipe = recipe
    return args


def _setup_logging(is_primary: bool) -> None:
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter('%(message)s'))
        root.addHandler(handler)
    logging.getLogger('timm_shakedrop').setLevel(logging.INFO if is_primary else logging.WARNING)
    # timm's checkpoint saver logs its whole history at every save.
    logging.getLogger('timm.utils.checkpoint_saver').setLevel(logging.WARNING)


def _error(message: str) -> None:
    print(f'{PROG}: error: {" ".join(str(message).split())}', file=sys.stderr)


def main(argv: Optional[List[str]] = None) -> int:
    """Run `timm-shakedrop train` with `argv` (without the command name); returns the exit code."""
    import importlib

    from ..data import DatasetUnavailableError
    from ..training.trainer import NonFiniteLossError, Trainer, TrainingInterrupted

    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parse_args(argv)
    except ArgumentError as e:
        _error(e)
        return 2
    except SystemExit as e:
        return int(e.code or 0)
    is_primary = int(os.environ.get('RANK', '0')) == 0
    _setup_logging(is_primary)
    for module in args.device_modules or []:
        importlib.import_module(module)

    import torch

    trainer = None
    num_threads = torch.get_num_threads()
    try:
        trainer = Trainer(args)
        if is_primary:
            _logger.info(f'Recipe {args.recipe}; arguments in {os.path.join(trainer.run_dir, "args.yaml")}')
        result = trainer.fit()
    except (ValueError, DatasetUnavailableError) as e:
        _error(e)
        return 2
    except NonFiniteLossError as e:
        last = os.path.join(trainer.run_dir, 'last.pth.tar') if trainer and trainer.run_dir else None
        kept = f' The last complete checkpoint is {last}.' if last and os.path.exists(last) else ''
        _error(f'{e}{kept}')
        return 1
    except TrainingInterrupted as e:
        if is_primary:
            print(f'Training interrupted at epoch {e.epoch} after {e.batch_idx} batches. Recovery checkpoint: '
                  f'{e.recovery_path}\nResume with:\n  timm-shakedrop train --resume {e.recovery_path}',
                  file=sys.stderr)
        return 128 + int(e.signum)
    finally:
        torch.set_num_threads(num_threads)
        if getattr(args, 'distributed', False) and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()

    if is_primary:
        _print_result(result)
    return 0


def _print_result(result: Dict[str, Any]) -> None:
    metric = result['best_metric']
    metric_text = f'{result["eval_metric"]} {metric:.2f}' if metric is not None else 'no metric'
    print(f'Done: {result["epochs_done"]} epochs in {result["wall_time_s"]:.0f} s; best {metric_text} at epoch '
          f'{result["best_epoch"]}.')
    print(f'Checkpoint: {result["best_checkpoint"]}')
    print(f'Curves: {os.path.join(result["run_dir"], "summary.csv")}, '
          f'{os.path.join(result["run_dir"], "learning_curve.png")}')
    print('Export it with:')
    print(f'  timm-shakedrop export {result["best_checkpoint"]} --output {os.path.join(result["run_dir"], "export")}')
