"""Image classification training assembled from timm's parts, with exact resumption.

The set-up follows timm's train.py: `timm.data` datasets, loaders, transforms and Mixup, `timm.task`'s
`ClassificationTask` (loss from `timm.loss`, EMA through `ModelEmaV3`, DDP wrapping), the optimizer from
`create_optimizer_v2`, the schedule from `create_scheduler_v2`, and `timm.utils` for seeding, accuracy,
distributed reductions and checkpoint bookkeeping. What it adds:

* resumption that reproduces the uninterrupted run. Checkpoints store the generator states of each rank
  and the scheduler state. A recovery checkpoint written mid-epoch also stores the batch index, and the
  resumed run continues that epoch with the same data order. Loaders are built without persistent workers,
  so each epoch's worker seeds come from the main generator;
* a recovery checkpoint on SIGINT or SIGTERM, atomic checkpoint writes, and a stop on a non-finite loss;
* per-epoch lines with throughput, EMA evaluation in `summary.csv`, a learning-curve plot.
"""
import logging
import math
import os
import sys
import time
from collections import OrderedDict
from contextlib import nullcontext
from datetime import datetime
from functools import partial
from typing import Any, Dict, List, Optional

import torch
import torch.nn as nn

from ..data import create_split_dataset, dataset_class_names, dataset_kind, resolve_data_config
from .checkpoint import ResumableCheckpointSaver, capture_rng_state, load_training_checkpoint, restore_rng_state
from .distributed import all_gather_objects, any_rank_true, check_sync_bn_supported, init_device
from .outputs import create_run_dir, read_summary, write_args_yaml
from .signals import StopRequest
from .transforms import TORCHVISION_AUTO_AUGMENT, create_train_transform

_logger = logging.getLogger(__name__)

__all__ = ['NonFiniteLossError', 'Trainer', 'TrainingInterrupted', 'TrainResult']

# Attributes that describe the process or where it writes, not the experiment: a resume takes them from the
# command line, never from the checkpoint.
RUNTIME_ARGS = ('device', 'distributed', 'world_size', 'rank', 'local_rank', 'prefetcher', 'resume', 'start_epoch',
                'output', 'experiment', 'num_threads')


class TrainingInterrupted(Exception):
    """Training stopped on a signal after writing a recovery checkpoint."""

    def __init__(self, signum: int, epoch: int, batch_idx: int, recovery_path: Optional[str]):
        self.signum = signum
        self.epoch = epoch
        self.batch_idx = batch_idx
        self.recovery_path = recovery_path
        super().__init__(f'Interrupted at epoch {epoch}, batch {batch_idx}; recovery checkpoint {recovery_path}')


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the message names the epoch and step."""


class TrainResult(dict):
    """Outcome of `Trainer.fit`: `run_dir`, `last_checkpoint`, `best_checkpoint`, `best_metric`, `best_epoch`,
    `eval_metric`, `epochs_done` and `wall_time_s`."""


def _unknown_model_message(name: str) -> str:
    import difflib

    import timm

    close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ''
    return f"Unknown model {name!r}.{hint} List the names with timm.list_models('shakedrop_*')."


def check_model_name(name: str) -> None:
    """Raise ValueError with close names when timm has no model `name` (Hub names pass unchecked)."""
    from timm.models import is_model, parse_model_name

    source, model_name = parse_model_name(name)
    if source:
        return
    if not is_model(model_name):
        raise ValueError(_unknown_model_message(name))


class _LossMeter:
    """Running sum and count of the training loss, restorable from a recovery checkpoint."""

    def __init__(self, total: float = 0.0, count: int = 0):
        self.total = total
        self.count = count
        self.last = float('nan')

    def update(self, value: float, n: int) -> None:
        self.last = value
        self.total += value * n
        self.count += n

    @property
    def avg(self) -> float:
        return self.total / self.count if self.count else float('nan')


class Trainer:
    """Build everything a run needs from `args` (the parsed `timm-shakedrop train` arguments), then `fit()`.

    Args:
        args: Namespace from `timm_shakedrop.cli.train.parse_args`; resolved values (device, rank, number
            of classes, data config, learning rate) are written back into it.
        create_output: Create the run folder and checkpoint saver on the primary rank. Tests that only
            call `train_step` pass False.

    Raises:
        ValueError: for contradictory or unsupported arguments.
        DatasetUnavailableError: when the dataset files are missing.
    """

    def __init__(self, args, create_output: bool = True):
        from timm import utils

        self.args = args
        self.start_time = time.time()
        # timm's prefetcher loads one batch ahead. Without worker processes that load draws from the main
        # generator between two steps, where a mid-epoch resume cannot replay it, so it needs workers.
        args.prefetcher = not args.no_prefetcher and args.workers > 0
        args.grad_accum_steps = max(1, args.grad_accum_steps)
        if not args.device:
            args.device = 'cuda' if torch.cuda.is_available() else 'cpu'
        self._check_args()
        if args.num_threads:
            torch.set_num_threads(args.num_threads)
        self.device = init_device(args)
        self.is_primary = utils.is_primary(args)
        check_sync_bn_supported(args.sync_bn, self.device)
        if self.device.type == 'cuda':
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.benchmark = True
        self._setup_amp()
        utils.random_seed(args.seed, args.rank)

        self._create_datasets()
        self._create_model()
        self._create_loaders()
        self._create_task_and_optimizer()
        self.resume_state = self._load_resume_checkpoint() if args.resume else None
        self._setup_ema_compile_ddp()
        self._create_scheduler()
        self.run_dir = None
        self.saver = None
        if create_output and self.is_primary:
            self._create_output()

        # Per-epoch bookkeeping used by `train_one_epoch` and the recovery checkpoints.
        self.num_updates = self.start_epoch * self.updates_per_epoch
        self.epoch_rng_states: Optional[List[Dict[str, Any]]] = None
        self.loss_meter = _LossMeter()
        self.batches_done = 0
        self.stop_request: Optional[StopRequest] = None
        self.show_progress = self.is_primary and sys.stderr.isatty()
        if self.resume_state is not None:
            self.num_updates = self.resume_state.get('num_updates', self.num_updates)

    # Set-up

    def _check_args(self) -> None:
        args = self.args
        check_model_name(args.model)
        if args.aa and args.aa.lower() in TORCHVISION_AUTO_AUGMENT and args.train_crop_mode != 'pad':
            raise ValueError(f'`--aa {args.aa}` is a torchvision CIFAR policy and needs `--train-crop-mode pad`.')
        if args.train_crop_mode == 'pad' and args.crop_padding < 0:
            raise ValueError(f'`--crop-padding` must be >= 0 pixels, got {args.crop_padding}.')
        if args.amp and args.amp_dtype not in (None, 'float16', 'bfloat16'):
            raise ValueError(f"`--amp-dtype` must be 'float16' or 'bfloat16', got {args.amp_dtype!r}.")
        device_type = args.device.split(':')[0]
        if args.amp and args.amp_dtype == 'float16' and device_type == 'cpu':
            raise ValueError('`--amp-dtype float16` needs CUDA; on the CPU use `--amp --amp-dtype bfloat16`.')
        if args.eval_metric.removeprefix('ema_') not in ('top1', 'top5', 'loss'):
            raise ValueError(
                f"`--eval-metric` must be 'top1', 'top5' or 'loss', optionally prefixed with 'ema_', "
                f'got {args.eval_metric!r}.')
        if args.eval_metric.startswith('ema_') and not args.model_ema:
            raise ValueError(f'`--eval-metric {args.eval_metric}` needs `--model-ema`.')

    def _setup_amp(self) -> None:
        from timm.utils import NativeScaler

        args = self.args
        self.amp_autocast = nullcontext
        self.loss_scaler = None
        if not args.amp:
            args.amp_dtype = None
            return
        if args.amp_dtype is None:
            args.amp_dtype = 'float16' if self.device.type == 'cuda' else 'bfloat16'
        amp_dtype = getattr(torch, args.amp_dtype)
        self.amp_autocast = partial(torch.autocast, device_type=self.device.type, dtype=amp_dtype)
        if self.device.type == 'cuda' and amp_dtype == torch.float16:
            # NOTE: the CUDA paths (float16 loss scaling, nccl, SyncBatchNorm) have not been run yet.
            self.loss_scaler = NativeScaler(device='cuda')

    def _create_datasets(self) -> None:
        args = self.args
        kind = dataset_kind(args.dataset, args.data_dir)
        if kind == 'digits' and args.in_chans not in (None, 3):
            raise ValueError(f'The digits images have 3 identical channels, got `--in-chans {args.in_chans}`.')
        self.dataset_train = create_split_dataset(
            args.dataset, args.data_dir, args.train_split, num_samples=args.train_num_samples,
            download=args.dataset_download, class_map=args.class_map)
        self.dataset_eval = None
        if args.val_split:
            self.dataset_eval = create_split_dataset(
                args.dataset, args.data_dir, args.val_split, num_samples=args.val_num_samples,
                download=args.dataset_download, class_map=args.class_map)
        class_names = dataset_class_names(self.dataset_train)
        if args.num_classes is not None and args.num_classes != len(class_names):
            source = args.dataset or args.data_dir or 'digits'
            raise ValueError(
                f'`--num-classes {args.num_classes}` contradicts the dataset {source}, which has '
                f'{len(class_names)} classes; leave `--num-classes` out to use {len(class_names)}.')
        args.num_classes = len(class_names)
        args.class_names = class_names

    def _create_model(self) -> None:
        from timm.layers import convert_sync_batchnorm
        from timm.models import create_model

        args = self.args
        in_chans = args.in_chans if args.in_chans is not None else (args.input_size[0] if args.input_size else 3)
        factory_kwargs = {}
        if args.pretrained_path:
            factory_kwargs['pretrained_cfg_overlay'] = dict(file=args.pretrained_path, num_classes=-1)
        try:
            model = create_model(
                args.model,
                pretrained=args.pretrained,
                in_chans=in_chans,
                num_classes=args.num_classes,
                drop_rate=args.drop,
                drop_path_rate=args.drop_path,
                drop_block_rate=args.drop_block,
                global_pool=args.gp,
                bn_momentum=args.bn_momentum,
                bn_eps=args.bn_eps,
                checkpoint_path=args.initial_checkpoint,
                **factory_kwargs,
                **args.model_kwargs,
            )
        except TypeError as e:
            raise ValueError(f'Cannot create model {args.model!r} with these arguments: {e}') from e
        if args.grad_checkpointing:
            model.set_grad_checkpointing(enable=True)
        if self.is_primary:
            num_params = sum(p.numel() for p in model.parameters())
            _logger.info(f'Model {args.model} created, {num_params / 1e6:.2f}M parameters, '
                         f'{args.num_classes} classes.')

        # Store the resolved data config so that args.yaml rebuilds the exact evaluation transform.
        self.data_config = resolve_data_config(vars(args), model=model)
        args.input_size = list(self.data_config['input_size'])
        args.mean = list(self.data_config['mean'])
        args.std = list(self.data_config['std'])
        args.crop_pct = self.data_config['crop_pct']
        args.crop_mode = self.data_config['crop_mode']
        args.interpolation = self.data_config['interpolation']

        model.to(device=self.device)
        if args.channels_last:
            model.to(memory_format=torch.channels_last)
        if args.distributed and args.sync_bn:
            args.dist_bn = ''
            model = convert_sync_batchnorm(model)
        self.model = model

    def _create_loaders(self) -> None:
        from timm.data import FastCollateMixup, Mixup, create_loader

        args = self.args
        cfg = self.data_config
        self.mixup_fn = None
        collate_fn = None
        self.mixup_active = args.mixup > 0 or args.cutmix > 0 or args.cutmix_minmax is not None
        if self.mixup_active:
            mixup_args = dict(
                mixup_alpha=args.mixup, cutmix_alpha=args.cutmix, cutmix_minmax=args.cutmix_minmax,
                prob=args.mixup_prob, switch_prob=args.mixup_switch_prob, mode=args.mixup_mode,
                label_smoothing=args.smoothing, num_classes=args.num_classes)
            if args.prefetcher:
                collate_fn = FastCollateMixup(**mixup_args)
            else:
                self.mixup_fn = Mixup(**mixup_args)

        train_interpolation = args.train_interpolation
        if args.no_aug or not train_interpolation:
            train_interpolation = cfg['interpolation']
        timm_aa = args.aa if args.train_crop_mode != 'pad' and not (
            args.aa and args.aa.lower() in TORCHVISION_AUTO_AUGMENT) else None
        common = dict(
            mean=cfg['mean'], std=cfg['std'], pin_memory=args.pin_mem, device=self.device,
            distributed=args.distributed, use_prefetcher=args.prefetcher,
            # Fresh workers each epoch take their seeds from the main generator, which a resume restores.
            persistent_workers=False, num_workers=args.workers)
        self.loader_train = create_loader(
            self.dataset_train,
            input_size=cfg['input_size'],
            batch_size=args.batch_size,
            is_training=True,
            no_aug=args.no_aug,
            re_prob=args.reprob,
            re_mode=args.remode,
            re_count=args.recount,
            train_crop_mode=None if args.train_crop_mode == 'pad' else args.train_crop_mode,
            scale=args.scale,
            ratio=args.ratio,
            hflip=args.hflip,
            vflip=args.vflip,
            color_jitter=args.color_jitter,
            auto_augment=timm_aa,
            interpolation=train_interpolation,
            collate_fn=collate_fn,
            worker_seeding=args.worker_seeding,
            **common,
        )
        if len(self.loader_train) == 0:
            raise ValueError(
                f'The train split has {len(self.dataset_train)} images, fewer than one batch of '
                f'{args.batch_size} per process (the last partial batch is dropped); lower `--batch-size`.')
        train_transform = create_train_transform(args, cfg, args.prefetcher)
        if train_transform is not None:
            self.loader_train.dataset.transform = train_transform
        if self.is_primary:
            _logger.info(f'Train transform: {self.loader_train.dataset.transform}')

        self.loader_eval = None
        if self.dataset_eval is not None:
            self.loader_eval = create_loader(
                self.dataset_eval,
                input_size=cfg['input_size'],
                batch_size=args.validation_batch_size or args.batch_size,
                is_training=False,
                interpolation=cfg['interpolation'],
                crop_pct=cfg['crop_pct'],
                crop_mode=cfg['crop_mode'],
                **common,
            )

    def _create_task_and_optimizer(self) -> None:
        from timm.optim import create_optimizer_v2, optimizer_kwargs
        from timm.task import ClassificationTask

        args = self.args
        criterion_kwargs = dict(loss_type='bce' if args.bce_loss else 'ce', smoothing=args.smoothing,
                                soft_targets=self.mixup_active)
        self.task = ClassificationTask(self.model, criterion_kwargs=criterion_kwargs, device=self.device,
                                       verbose=False)
        self.validate_loss_fn = nn.CrossEntropyLoss().to(self.device)

        if not args.lr:
            global_batch_size = args.batch_size * args.world_size * args.grad_accum_steps
            batch_ratio = global_batch_size / args.lr_base_size
            if not args.lr_base_scale:
                args.lr_base_scale = 'sqrt' if any(o in args.opt.lower() for o in ('ada', 'lamb')) else 'linear'
            if args.lr_base_scale == 'sqrt':
                batch_ratio = batch_ratio ** 0.5
            args.lr = args.lr_base * batch_ratio
            if self.is_primary:
                _logger.info(f'Learning rate {args.lr:g} from --lr-base {args.lr_base} and global batch size '
                             f'{global_batch_size} ({args.lr_base_scale} scaling).')
        self.optimizer = create_optimizer_v2(
            self.task.get_trainable_module(),
            **optimizer_kwargs(cfg=args),
            filter_bias_and_bn=args.filter_bias_and_bn,
            **args.opt_kwargs,
        )

    def _load_resume_checkpoint(self) -> Dict[str, Any]:
        from timm.models import clean_state_dict

        args = self.args
        if not os.path.isfile(args.resume):
            raise ValueError(f'`--resume` checkpoint {args.resume} does not exist.')
        state = load_training_checkpoint(args.resume)
        if 'state_dict' not in state:
            raise ValueError(f'{args.resume} is not a training checkpoint: it has no `state_dict`.')
        self.task.load_checkpoint_state(clean_state_dict(state['state_dict']))
        if not args.no_resume_opt:
            self.optimizer.load_state_dict(state['optimizer'])
            if self.loss_scaler is not None and self.loss_scaler.state_dict_key in state:
                self.loss_scaler.load_state_dict(state[self.loss_scaler.state_dict_key])
        if self.is_primary:
            where = (f'epoch {state["epoch"]}, batch {state["batch_idx"]}' if state.get('batch_idx') is not None
                     else f'the end of epoch {state["epoch"]}')
            _logger.info(f'Resuming from {args.resume} ({where}).')
        return state

    def _setup_ema_compile_ddp(self) -> None:
        from timm.models import clean_state_dict

        args = self.args
        if args.model_ema:
            self.task.setup_ema(decay=args.model_ema_decay, use_warmup=args.model_ema_warmup,
                                device='cpu' if args.model_ema_force_cpu else None)
            if self.resume_state is not None and self.resume_state.get('state_dict_ema') is not None:
                self.task.load_checkpoint_state(clean_state_dict(self.resume_state['state_dict_ema']), ema=True)
        if args.torchcompile:
            self.task.compile(backend=args.torchcompile, mode=args.torchcompile_mode)
            if self.task.has_ema():
                self.task.compile_ema(backend=args.torchcompile, mode=args.torchcompile_mode)
        if args.distributed:
            device_ids = [self.device] if self.device.type == 'cuda' else None
            self.task.prepare_distributed(device_ids=device_ids, broadcast_buffers=not args.no_ddp_bb)

    def _create_scheduler(self) -> None:
        from timm.scheduler import create_scheduler_v2, scheduler_kwargs

        args = self.args
        self.eval_metric = args.eval_metric if self.loader_eval is not None else 'loss'
        self.decreasing_metric = self.eval_metric.endswith('loss')
        self.updates_per_epoch = (len(self.loader_train) + args.grad_accum_steps - 1) // args.grad_accum_steps
        self.lr_scheduler, self.num_epochs = create_scheduler_v2(
            self.optimizer,
            **scheduler_kwargs(args, decreasing_metric=self.decreasing_metric),
            updates_per_epoch=self.updates_per_epoch,
        )
        self.start_epoch = 0
        self.skip_batches = 0
        state = self.resume_state
        if state is not None:
            if state.get('batch_idx') is not None:
                self.start_epoch, self.skip_batches = state['epoch'], int(state['batch_idx'])
            else:
                self.start_epoch = state['epoch'] + 1
            if state.get('scheduler') is not None and not args.no_resume_opt:
                self.lr_scheduler.load_state_dict(state['scheduler'])
        if args.start_epoch is not None:
            self.start_epoch, self.skip_batches = args.start_epoch, 0
        if self.start_epoch > 0 or self.skip_batches:
            if args.sched_on_updates:
                num_updates = self.start_epoch * self.updates_per_epoch + self.skip_batches // args.grad_accum_steps
                self.lr_scheduler.step_update(num_updates)
            else:
                self.lr_scheduler.step(self.start_epoch)

    def _create_output(self) -> None:
        from timm.models import safe_model_name
        from timm.utils.summary import trim_summary

        args = self.args
        resume_dir = os.path.dirname(os.path.abspath(args.resume)) if args.resume else None
        continue_in_place = not args.experiment and not args.output
        if resume_dir and os.path.isfile(os.path.join(resume_dir, 'args.yaml')) and continue_in_place:
            # A resumed run continues in its own folder unless --output or --experiment sends it elsewhere;
            # summary rows from the resumed epoch on are replaced.
            self.run_dir = resume_dir
            trim_summary(os.path.join(self.run_dir, 'summary.csv'), self.start_epoch)
        else:
            experiment = args.experiment or '-'.join([
                datetime.now().strftime('%Y%m%d-%H%M%S'), safe_model_name(args.model), str(args.input_size[-1])])
            self.run_dir = create_run_dir(args.output or os.path.join('.', 'output', 'train'), experiment)
        self.saver = ResumableCheckpointSaver(
            model=self.task.get_trainable_module(),
            optimizer=self.optimizer,
            args=args,
            amp_scaler=self.loss_scaler,
            checkpoint_dir=self.run_dir,
            recovery_dir=self.run_dir,
            decreasing=self.decreasing_metric,
            max_history=args.checkpoint_hist,
            task=self.task,
            extra_state_fn=lambda: self._pending_extra_state,
        )
        if self.resume_state is not None and self.run_dir == resume_dir and self.resume_state.get('saver'):
            self.saver.load_state_dict(self.resume_state['saver'])
        write_args_yaml(self.run_dir, vars(args))
        _logger.info(f'Writing to {self.run_dir}')

    # Checkpoints

    def _gather_extra_state(self, batch_idx: Optional[int]) -> Dict[str, Any]:
        """Collect the resume state of every rank (a collective call under DDP)."""
        per_rank = {'rng': capture_rng_state(), 'loss': [self.loss_meter.total, self.loss_meter.count]}
        gathered = all_gather_objects(per_rank, self.args.distributed)
        extra = {
            'scheduler': self.lr_scheduler.state_dict() if self.lr_scheduler is not None else None,
            'rng_states': [g['rng'] for g in gathered],
            'num_updates': self.num_updates,
            'batch_idx': batch_idx,
            'world_size': self.args.world_size,
        }
        if batch_idx is not None:
            extra['epoch_rng_states'] = self.epoch_rng_states
            extra['epoch_loss'] = [g['loss'] for g in gathered]
        return extra

    def save_checkpoint(self, epoch: int, metric: Optional[float]):
        """Save the end-of-epoch checkpoint on the primary rank; returns the saver's (best metric, best epoch)."""
        self._pending_extra_state = self._gather_extra_state(batch_idx=None)
        if self.saver is None:
            return None, None
        return self.saver.save_checkpoint(epoch, metric=metric)

    def save_recovery(self, epoch: int, batch_idx: int) -> Optional[str]:
        """Save a mid-epoch recovery checkpoint after `batch_idx` batches of `epoch`; returns its path."""
        self._pending_extra_state = self._gather_extra_state(batch_idx=batch_idx)
        if self.saver is None:
            return None
        self.saver.save_recovery(epoch, batch_idx=batch_idx)
        return self.saver.curr_recovery_file

    def _restore_rank_state(self, states: Optional[List[Dict[str, Any]]]) -> None:
        if not states:
            return
        if len(states) != self.args.world_size:
            _logger.warning(f'The checkpoint has generator states of {len(states)} ranks, this run has '
                            f'{self.args.world_size}: continuing with fresh seeds, so the run is not exact.')
            return
        restore_rng_state(states[self.args.rank])

    # Training

    def train_step(self, input: torch.Tensor, target: torch.Tensor, need_update: bool = True,
                   accum_steps: int = 1, epoch: int = 0, batch_idx: int = 0) -> float:
        """Run forward and backward on one batch, then update the weights when `need_update`.

        Raises:
            NonFiniteLossError: when the loss is NaN or infinite on any rank, before the backward pass.
        """
        from timm import utils

        args = self.args
        if self.mixup_fn is not None:
            input, target = self.mixup_fn(input, target)
        if args.channels_last:
            input = input.contiguous(memory_format=torch.channels_last)
        no_sync = args.distributed and not need_update
        with self.task.no_sync() if no_sync else nullcontext():
            with self.amp_autocast():
                loss = self.task(input, target)['loss']
            loss_value = float(loss.detach().float().item())
            if any_rank_true(not math.isfinite(loss_value), args.distributed, self.device):
                raise NonFiniteLossError(
                    f'Training loss is {loss_value} at epoch {epoch}, step {batch_idx} (batch {batch_idx + 1} of '
                    f'{len(self.loader_train)}, update {self.num_updates + 1}); stopped before the update. '
                    f'Lower --lr, set --clip-grad, or leave out --amp.')
            if accum_steps > 1:
                loss = loss / accum_steps
            clip_parameters = None
            if args.clip_grad is not None:
                clip_parameters = self.task.get_clip_parameters(exclude_head='agc' in args.clip_mode)
            if self.loss_scaler is not None:
                self.loss_scaler(loss, self.optimizer, clip_grad=args.clip_grad, clip_mode=args.clip_mode,
                                 parameters=clip_parameters, need_update=need_update)
            else:
                loss.backward()
                if need_update:
                    if args.clip_grad is not None:
                        utils.dispatch_clip_grad(clip_parameters, value=args.clip_grad, mode=args.clip_mode)
                    self.optimizer.step()
        if need_update:
            self.num_updates += 1
            self.optimizer.zero_grad()
            self.task.update_ema(step=self.num_updates)
        return loss_value

    def _current_lr(self) -> float:
        lrs = [group['lr'] for group in self.optimizer.param_groups]
        return sum(lrs) / len(lrs)

    def train_one_epoch(self, epoch: int, skip_batches: int = 0) -> Dict[str, float]:
        """Train one epoch; with `skip_batches` continue a recovery checkpoint's epoch after that many batches."""
        from timm import utils

        args = self.args
        loader = self.loader_train
        if args.mixup_off_epoch and epoch >= args.mixup_off_epoch:
            if args.prefetcher and loader.mixup_enabled:
                loader.mixup_enabled = False
            elif self.mixup_fn is not None:
                self.mixup_fn.mixup_enabled = False
        for source in (loader.sampler, getattr(loader, 'batch_sampler', None), loader.dataset):
            if hasattr(source, 'set_epoch'):
                source.set_epoch(epoch)
                break
        self.task.get_trainable_module().train()

        resume = self.resume_state if skip_batches else None
        if resume is not None:
            # The epoch's data order and worker seeds come from the generator state at its start.
            self.epoch_rng_states = resume['epoch_rng_states']
            self._restore_rank_state(self.epoch_rng_states)
            total, count = resume['epoch_loss'][args.rank] if len(resume['epoch_loss']) > args.rank else (0.0, 0)
            self.loss_meter = _LossMeter(total, count)
        else:
            self.epoch_rng_states = all_gather_objects(capture_rng_state(), args.distributed)
            self.loss_meter = _LossMeter()
        iterator = iter(loader)
        for _ in range(skip_batches):
            next(iterator)
        if resume is not None:
            self._restore_rank_state(resume['rng_states'])

        num_batches = len(loader)
        accum = args.grad_accum_steps
        last_accum_steps = num_batches % accum
        last_batch_idx_to_accum = num_batches - last_accum_steps
        progress = self._progress_bar(epoch, num_batches, skip_batches)
        samples = 0
        start = time.time()
        self.optimizer.zero_grad()
        for batch_idx, (input, target) in enumerate(iterator, start=skip_batches):
            last_batch = batch_idx == num_batches - 1
            need_update = last_batch or (batch_idx + 1) % accum == 0
            accum_steps = last_accum_steps if batch_idx >= last_batch_idx_to_accum else accum
            if not args.prefetcher:
                input, target = input.to(self.device), target.to(self.device)
            loss_value = self.train_step(input, target, need_update, accum_steps, epoch, batch_idx)
            self.loss_meter.update(loss_value, input.shape[0])
            samples += input.shape[0] * args.world_size
            self.batches_done = batch_idx + 1
            if not need_update:
                continue
            update_idx = batch_idx // accum
            if progress is not None:
                progress.update(accum if not last_batch else num_batches - progress.n)
                progress.set_postfix(loss=f'{self.loss_meter.avg:.4f}', lr=f'{self._current_lr():.2e}')
            if update_idx % args.log_interval == 0 or last_batch:
                loss_avg = self.loss_meter.avg
                if args.distributed:
                    loss_avg = utils.reduce_tensor(torch.tensor([loss_avg], device=self.device),
                                                   args.world_size).item()
                if self.is_primary and progress is None:
                    elapsed = max(time.time() - start, 1e-9)
                    _logger.info(
                        f'Train: {epoch} [{update_idx:>4d}/{self.updates_per_epoch} '
                        f'({100.0 * (update_idx + 1) / self.updates_per_epoch:>3.0f}%)]  '
                        f'Loss: {loss_value:#.3g} ({loss_avg:#.3g})  {samples / elapsed:>7.1f} img/s  '
                        f'LR: {self._current_lr():.3e}')
            if self.lr_scheduler is not None:
                self.lr_scheduler.step_update(num_updates=self.num_updates, metric=self.loss_meter.avg)
            stop = self.stop_request is not None and self.stop_request.signum is not None
            if any_rank_true(stop, args.distributed, self.device) and not last_batch:
                path = self.save_recovery(epoch, batch_idx + 1)
                if progress is not None:
                    progress.close()
                raise TrainingInterrupted(self.stop_request.signum if self.stop_request.signum else 15,
                                          epoch, batch_idx + 1, path)
            if args.recovery_interval and (update_idx + 1) % args.recovery_interval == 0 and not last_batch:
                self.save_recovery(epoch, batch_idx + 1)
        if progress is not None:
            progress.close()
        elapsed = time.time() - start
        if hasattr(self.optimizer, 'sync_lookahead'):
            self.optimizer.sync_lookahead()
        loss_avg = self.loss_meter.avg
        if args.distributed:
            loss_avg = utils.reduce_tensor(torch.tensor([loss_avg], device=self.device), args.world_size).item()
        self.last_throughput = samples / elapsed if elapsed > 0 else float('nan')
        return OrderedDict([('loss', loss_avg)])

    def _progress_bar(self, epoch: int, total: int, initial: int):
        if not self.show_progress:
            return None
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, desc=f'Epoch {epoch}', unit='batch', leave=False,
                    dynamic_ncols=True, file=sys.stderr)

    @torch.inference_mode()
    def validate(self, model: nn.Module, log_suffix: str = '') -> Dict[str, float]:
        """Return the mean cross-entropy loss, top-1 and top-5 accuracy (%) of `model` on the validation split."""
        from timm import utils

        args = self.args
        model.eval()
        totals = torch.zeros(4, dtype=torch.float64)
        topk = (1, min(5, args.num_classes))
        for input, target in self.loader_eval:
            if not args.prefetcher:
                input, target = input.to(self.device), target.to(self.device)
            if args.channels_last:
                input = input.contiguous(memory_format=torch.channels_last)
            with self.amp_autocast():
                output = model(input)
                if isinstance(output, (tuple, list)):
                    output = output[0]
                loss = self.validate_loss_fn(output, target)
            acc1, acc5 = utils.accuracy(output.float(), target, topk=topk)
            n = output.shape[0]
            totals += torch.tensor([loss.item() * n, acc1.item() * n, acc5.item() * n, n], dtype=torch.float64)
        if args.distributed:
            totals_device = totals.to(self.device)
            torch.distributed.all_reduce(totals_device)
            totals = totals_device.cpu()
        n = max(totals[3].item(), 1.0)
        metrics = OrderedDict([('loss', totals[0].item() / n), ('top1', totals[1].item() / n),
                               ('top5', totals[2].item() / n)])
        if log_suffix and self.is_primary:
            _logger.debug(f'Eval{log_suffix}: {metrics}')
        return metrics

    def _evaluate(self) -> Optional[Dict[str, float]]:
        from timm import utils

        args = self.args
        if self.loader_eval is None:
            return None
        metrics = self.validate(self.task.get_eval_model())
        ema_model = self.task.get_trainable_module(ema=True)
        if ema_model is not None and not args.model_ema_force_cpu:
            if args.distributed and args.dist_bn in ('broadcast', 'reduce'):
                utils.distribute_bn(ema_model, args.world_size, args.dist_bn == 'reduce')
            ema_metrics = self.validate(self.task.get_eval_model(ema=True), log_suffix=' (EMA)')
            metrics.update((f'ema_{key}', value) for key, value in ema_metrics.items())
        return metrics

    def _log_epoch(self, epoch: int, train_metrics: Dict[str, float], eval_metrics: Optional[Dict[str, float]],
                   lr: float, epoch_time: float) -> None:
        if not self.is_primary:
            return
        parts = [f'Epoch {epoch}/{self.num_epochs - 1}', f'train loss {train_metrics["loss"]:.4f}',
                 f'lr {lr:.3e}', f'{self.last_throughput:.1f} img/s']
        if eval_metrics is not None:
            parts.append(f'eval loss {eval_metrics["loss"]:.4f} top-1 {eval_metrics["top1"]:.2f}% '
                         f'top-5 {eval_metrics["top5"]:.2f}%')
            if 'ema_top1' in eval_metrics:
                parts.append(f'EMA top-1 {eval_metrics["ema_top1"]:.2f}% top-5 {eval_metrics["ema_top5"]:.2f}%')
        parts.append(f'{epoch_time:.1f} s')
        _logger.info(', '.join(parts))

    def fit(self) -> TrainResult:
        """Train from the start (or resume) epoch to the end; returns where the checkpoints are.

        Raises:
            TrainingInterrupted: after a SIGINT or SIGTERM, once the recovery checkpoint is written.
            NonFiniteLossError: when the loss becomes NaN or infinite.
        """
        from timm import utils

        args = self.args
        best_metric, best_epoch = (None, None)
        if self.saver is not None and self.saver.best_metric is not None:
            best_metric, best_epoch = self.saver.best_metric, self.saver.best_epoch
        if self.resume_state is not None and not self.skip_batches and self.start_epoch > 0:
            self._restore_rank_state(self.resume_state.get('rng_states'))
        if self.is_primary:
            _logger.info(f'Training epochs {self.start_epoch} to {self.num_epochs - 1}, {self.updates_per_epoch} '
                         f'updates per epoch, on {args.world_size} process(es), {self.device}.')
        epochs_done = 0
        with StopRequest() as self.stop_request:
            for epoch in range(self.start_epoch, self.num_epochs):
                epoch_start = time.time()
                skip = self.skip_batches if epoch == self.start_epoch else 0
                train_metrics = self.train_one_epoch(epoch, skip_batches=skip)
                if args.distributed and args.dist_bn in ('broadcast', 'reduce'):
                    utils.distribute_bn(self.task.get_trainable_module(), args.world_size, args.dist_bn == 'reduce')
                lr = self._current_lr()
                epochs_done += 1
                if (epoch + 1) % args.val_interval != 0 and epoch + 1 != self.num_epochs:
                    if self.lr_scheduler is not None:
                        self.lr_scheduler.step(epoch + 1, metric=None)
                    self._log_epoch(epoch, train_metrics, None, lr, time.time() - epoch_start)
                    continue
                eval_metrics = self._evaluate()
                if self.run_dir is not None:
                    utils.update_summary(epoch, train_metrics, eval_metrics,
                                         filename=os.path.join(self.run_dir, 'summary.csv'), lr=lr)
                    if args.plot:
                        self._plot()
                source = eval_metrics if eval_metrics is not None else train_metrics
                latest_metric = source[self.eval_metric]
                best_metric, best_epoch = self.save_checkpoint(epoch, latest_metric)
                if self.lr_scheduler is not None:
                    self.lr_scheduler.step(epoch + 1, latest_metric)
                self._log_epoch(epoch, train_metrics, eval_metrics, lr, time.time() - epoch_start)
                if self.stop_request.signum is not None and epoch + 1 < self.num_epochs:
                    # The end-of-epoch checkpoint just written is the recovery point.
                    raise TrainingInterrupted(self.stop_request.signum, epoch + 1, 0,
                                              os.path.join(self.run_dir, 'last.pth.tar') if self.run_dir else None)
        return self._result(best_metric, best_epoch, epochs_done)

    def _plot(self) -> None:
        from .plot import plot_learning_curve

        rows = read_summary(os.path.join(self.run_dir, 'summary.csv'))
        try:
            plot_learning_curve(rows, os.path.join(self.run_dir, 'learning_curve.png'),
                                title=f'{self.args.model} on {self.args.dataset or "digits"}')
        except (OSError, ValueError, RuntimeError) as e:
            _logger.warning(f'Could not draw the learning curve: {e}')

    def _result(self, best_metric, best_epoch, epochs_done: int) -> TrainResult:
        result = TrainResult(
            run_dir=self.run_dir, eval_metric=self.eval_metric, best_metric=best_metric, best_epoch=best_epoch,
            epochs_done=epochs_done, wall_time_s=time.time() - self.start_time, last_checkpoint=None,
            best_checkpoint=None)
        if self.run_dir is not None:
            last = os.path.join(self.run_dir, 'last.pth.tar')
            best = os.path.join(self.run_dir, 'model_best.pth.tar')
            result['last_checkpoint'] = last if os.path.exists(last) else None
            result['best_checkpoint'] = best if os.path.exists(best) else result['last_checkpoint']
        return result
