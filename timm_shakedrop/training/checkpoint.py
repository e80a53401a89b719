"""Checkpoints in timm's format, written atomically, with the state that exact resumption needs.

A checkpoint contains timm's keys (`state_dict`, `state_dict_ema` when EMA is on, `arch`, `args`, `epoch`,
`optimizer`, `metric`, `version`, `saver`, `amp_scaler` with fp16 AMP), so timm's validate.py, inference.py
and `load_checkpoint` read it. It also contains what timm's saver leaves out:

* `scheduler`: the learning-rate scheduler's state dict;
* `rng_states`: one dict per rank with the torch, CUDA, numpy and Python generator states;
* `num_updates`: optimizer updates done so far;
* `batch_idx`: None at the end of an epoch, or the number of batches already trained in epoch `epoch`
  (a recovery checkpoint written mid-epoch); then also `epoch_rng_states` (the generator states at the
  start of that epoch, which fix its data order) and `epoch_loss` (sum and count of the running loss).

Every value is a tensor or a plain Python value, so `torch.load(weights_only=True)` reads the file when
`argparse.Namespace` is allowed, as timm's loaders do.
"""
import argparse
import logging
import os
import random
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch
from timm.utils import CheckpointSaver

_logger = logging.getLogger(__name__)

__all__ = [
    'ResumableCheckpointSaver',
    'atomic_torch_save',
    'capture_rng_state',
    'load_training_checkpoint',
    'restore_rng_state',
]


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_torch_save(obj: Any, path: str) -> None:
    """Write `obj` with `torch.save` to a temporary file in the same folder, fsync it, then rename it to `path`.

    A process killed mid-write leaves at most a stale `*.partial` file; `path` is either the old complete
    file or the new complete file.
    """
    partial_path = f'{path}.partial'
    try:
        with open(partial_path, 'wb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial_path, path)
    except BaseException:
        if os.path.exists(partial_path):
            os.remove(partial_path)
        raise
    _fsync_dir(os.path.dirname(os.path.abspath(path)))


def capture_rng_state() -> Dict[str, Any]:
    """Return the torch, CUDA, numpy and Python generator states as tensors and plain values."""
    numpy_state = np.random.get_state()
    state = {
        'torch': torch.get_rng_state(),
        'numpy': {
            'name': numpy_state[0],
            'keys': torch.from_numpy(numpy_state[1].astype(np.int64)),
            'pos': int(numpy_state[2]),
            'has_gauss': int(numpy_state[3]),
            'cached_gaussian': float(numpy_state[4]),
        },
        'python': _python_state_to_plain(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def _python_state_to_plain(state):
    version, internal, gauss_next = state
    return {'version': version, 'internal': list(internal), 'gauss_next': gauss_next}


def restore_rng_state(state: Dict[str, Any]) -> None:
    """Set the generators back to a state from `capture_rng_state`."""
    torch.set_rng_state(state['torch'])
    numpy_state = state['numpy']
    np.random.set_state((
        numpy_state['name'],
        numpy_state['keys'].numpy().astype(np.uint32),
        numpy_state['pos'],
        numpy_state['has_gauss'],
        numpy_state['cached_gaussian'],
    ))
    python_state = state['python']
    random.setstate((python_state['version'], tuple(python_state['internal']), python_state['gauss_next']))
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


def plain_args(args: argparse.Namespace) -> argparse.Namespace:
    """Return a copy of `args` whose values `torch.load(weights_only=True)` accepts."""
    def convert(value):
        if isinstance(value, (str, int, float, bool)) or value is None:
            return value
        if isinstance(value, (list, tuple)):
            return type(value)(convert(v) for v in value)
        if isinstance(value, dict):
            return {str(k): convert(v) for k, v in value.items()}
        return str(value)

    return argparse.Namespace(**{key: convert(value) for key, value in vars(args).items()})


def load_training_checkpoint(path: str) -> Dict[str, Any]:
    """Load a training checkpoint on the CPU with `weights_only=True`, allowing `argparse.Namespace`."""
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(path, map_location='cpu', weights_only=True)


class ResumableCheckpointSaver(CheckpointSaver):
    """timm's `CheckpointSaver` with atomic writes and the extra resume state of `extra_state_fn`.

    timm's saver already writes `last.pth.tar` through a temporary file. This one also fsyncs each file,
    never deletes a checkpoint before its replacement is in place, and links `model_best.pth.tar` atomically.

    Args:
        extra_state_fn: Called at every save; returns the entries added to the checkpoint.
        **kwargs: Passed to `CheckpointSaver`.
    """

    def __init__(self, *args, extra_state_fn: Optional[Callable[[], Dict[str, Any]]] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.extra_state_fn = extra_state_fn

    def _save(self, save_path, epoch, metric=None):
        from timm.utils.model import get_state_dict

        state = {
            'epoch': epoch,
            'arch': self.args.model if self.args is not None else type(self.model).__name__.lower(),
            'optimizer': self.optimizer.state_dict(),
            'version': 2,
        }
        if self.args is not None:
            state['args'] = plain_args(self.args)
        if self.amp_scaler is not None:
            state[self.amp_scaler.state_dict_key] = self.amp_scaler.state_dict()
        if self.task is not None:
            state.update(self.task.get_checkpoint_state(unwrap_fn=self.unwrap_fn))
            state.update(self.task.get_checkpoint_state(ema=True, unwrap_fn=self.unwrap_fn))
        else:
            state['state_dict'] = get_state_dict(self.model, self.unwrap_fn)
            if self.model_ema is not None:
                state['state_dict_ema'] = get_state_dict(self.model_ema, self.unwrap_fn)
        if metric is not None:
            state['metric'] = metric
        state['saver'] = self.state_dict(epoch, metric)
        if self.extra_state_fn is not None:
            state.update(self.extra_state_fn())
        atomic_torch_save(state, save_path)

    def _replace(self, src, dst):
        # os.replace is atomic on POSIX and replaces an existing file on Windows too.
        os.replace(src, dst)

    def _duplicate(self, src, dst):
        link_path = f'{dst}.partial'
        if os.path.lexists(link_path):
            os.remove(link_path)
        if self.can_hardlink:
            try:
                os.link(src, link_path)
            except (OSError, NotImplementedError):
                self.can_hardlink = False
        if not self.can_hardlink:
            import shutil

            shutil.copy2(src, link_path)
        os.replace(link_path, dst)

    def recovery_files(self) -> List[str]:
        """Return the recovery checkpoints in the recovery folder, oldest first."""
        import glob

        files = glob.glob(os.path.join(self.recovery_dir, self.recovery_prefix + '-*' + self.extension))
        return sorted(files, key=os.path.getmtime)
