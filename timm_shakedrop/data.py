"""Datasets for training and evaluation: the embedded digits, CIFAR through torchvision, and image folders.

The embedded default is scikit-learn's copy of the UCI optical handwritten digits (1,797 images of 8x8
pixels with 16 gray levels, 10 classes). It needs no download: each image is scaled to 0-255, upsampled
bilinearly to 32x32, and replicated into 3 identical channels, so that every model runs on it unchanged
with `in_chans=3`. The split into train and validation is stratified and fixed: one fifth of each class,
chosen by a seeded `numpy.random.RandomState` permutation, is the validation split.

`create_eval_dataset(args)` rebuilds the validation split of a finished run from its `args.yaml`.
"""
import functools
import logging
import os
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch
import torch.utils.data

_logger = logging.getLogger(__name__)

__all__ = [
    'DIGITS_DATASET',
    'DatasetUnavailableError',
    'DigitsDataset',
    'create_eval_dataset',
    'create_eval_transform',
    'create_split_dataset',
    'dataset_class_names',
    'dataset_kind',
    'resolve_data_config',
]

DIGITS_DATASET = 'digits'
DIGITS_IMAGE_SIZE = 32
DIGITS_CLASSES = tuple(str(digit) for digit in range(10))
# Fraction of each class that goes to the validation split, and the seed of the per-class permutation.
DIGITS_VAL_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)

# Archive, extracted folder and files of each CIFAR version under --data-dir, for the error message.
_CIFAR_FILES = {
    'cifar10': ('cifar-10-python.tar.gz', 'cifar-10-batches-py', 'data_batch_1..5, test_batch, batches.meta'),
    'cifar100': ('cifar-100-python.tar.gz', 'cifar-100-python', 'train, test, meta'),
}
_TRAIN_SPLITS = ('train', 'training')
_EVAL_SPLITS = ('validation', 'val', 'valid', 'eval', 'evaluation', 'test')


class DatasetUnavailableError(RuntimeError):
    """A dataset's files are missing or unreadable. The message names the folder where they are expected."""


# Digits

@functools.lru_cache(maxsize=1)
def _digits_arrays() -> Tuple[np.ndarray, np.ndarray]:
    """Return all digits images as uint8 [N, 32, 32, 3] and their labels as int64 [N]."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images).float().unsqueeze(1) * (255.0 / 16.0)
    images = torch.nn.functional.interpolate(
        images, size=(DIGITS_IMAGE_SIZE, DIGITS_IMAGE_SIZE), mode='bilinear', align_corners=False)
    images = images.round().clamp(0, 255).to(torch.uint8).squeeze(1).numpy()
    images = np.ascontiguousarray(np.repeat(images[..., None], 3, axis=-1))
    return images, digits.target.astype(np.int64)


def _digits_split_indices(labels: np.ndarray, split: str) -> np.ndarray:
    """Return the indices of `split`, interleaved over the classes so that any prefix is class-balanced."""
    rng = np.random.RandomState(DIGITS_SPLIT_SEED)
    per_class = []
    for label in range(len(DIGITS_CLASSES)):
        members = rng.permutation(np.flatnonzero(labels == label))
        num_val = int(round(len(members) * DIGITS_VAL_FRACTION))
        per_class.append(members[:num_val] if split == 'validation' else members[num_val:])
    # Round-robin over the classes: sample i of every class, then sample i + 1 of every class, ...
    order = []
    for rank in range(max(len(members) for members in per_class)):
        order.extend(int(members[rank]) for members in per_class if rank < len(members))
    return np.asarray(order, dtype=np.int64)


def _canonical_split(split: str) -> str:
    split = (split or '').lower()
    if split in _TRAIN_SPLITS:
        return 'train'
    if split in _EVAL_SPLITS:
        return 'validation'
    raise ValueError(
        f'`split` {split!r} is not a split of the digits dataset; use one of {_TRAIN_SPLITS + _EVAL_SPLITS}.')


class DigitsDataset(torch.utils.data.Dataset):
    """The embedded digits split as 32x32 RGB PIL images, in timm's dataset interface.

    Args:
        split: 'train' or 'validation' (timm's synonyms such as 'val' and 'test' are accepted).
        transform: Applied to each PIL image; timm's `create_loader` replaces it.
        target_transform: Applied to each integer label.
        num_samples: Keep only the first `num_samples` images of the split, a class-balanced subset.
    """

    classes = list(DIGITS_CLASSES)

    def __init__(self, split: str = 'train', transform=None, target_transform=None,
                 num_samples: Optional[int] = None):
        self.split = _canonical_split(split)
        images, labels = _digits_arrays()
        indices = _digits_split_indices(labels, self.split)
        if num_samples is not None:
            if not 0 < int(num_samples) <= len(indices):
                raise ValueError(
                    f'`num_samples` must be in [1, {len(indices)}] for the digits {self.split} split, '
                    f'got {num_samples}.')
            indices = indices[:int(num_samples)]
        self.indices = indices
        self.images = images[indices]
        self.targets = labels[indices]
        self.transform = transform
        self.target_transform = target_transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        from PIL import Image

        image = Image.fromarray(self.images[index], mode='RGB')
        target = int(self.targets[index])
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return image, target


@functools.lru_cache(maxsize=1)
def digits_mean_std() -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    """Return the per-channel mean and std of the digits train split in [0, 1], rounded to 4 decimals."""
    images, labels = _digits_arrays()
    train = images[_digits_split_indices(labels, 'train')].astype(np.float64) / 255.0
    mean = round(float(train.mean()), 4)
    std = round(float(train.std()), 4)
    return (mean,) * 3, (std,) * 3


# Dataset selection

def dataset_kind(dataset: Optional[str], data_dir: Optional[str] = None) -> str:
    """Return 'digits', 'cifar10', 'cifar100', 'folder' or 'timm' (any other timm dataset name).

    No dataset name and no data directory selects the embedded digits; a directory without a name is an
    image folder, as in timm.
    """
    name = (dataset or '').strip()
    lowered = name.lower()
    if lowered == DIGITS_DATASET or (not name and not data_dir):
        return 'digits'
    if lowered in ('torch/cifar10', 'cifar10'):
        return 'cifar10'
    if lowered in ('torch/cifar100', 'cifar100'):
        return 'cifar100'
    if not name or lowered in ('folder', 'imagefolder', 'image_folder'):
        return 'folder'
    return 'timm'


def native_data_config(kind: str) -> Dict[str, Any]:
    """Return the data config that suits a dataset's own image size and statistics, or {} if it has none."""
    if kind == 'digits':
        mean, std = digits_mean_std()
    elif kind == 'cifar10':
        mean, std = CIFAR10_MEAN, CIFAR10_STD
    elif kind == 'cifar100':
        mean, std = CIFAR100_MEAN, CIFAR100_STD
    else:
        return {}
    return dict(input_size=(3, 32, 32), mean=mean, std=std, crop_pct=1.0, crop_mode='center',
                interpolation='bilinear')


def resolve_data_config(args: Mapping[str, Any], model=None, pretrained_cfg=None) -> Dict[str, Any]:
    """Resolve input size, interpolation, mean, std, crop percentage and crop mode for a run.

    Explicit values in `args` win. Digits and CIFAR fill in the rest with their own 32x32 size and channel
    statistics. Other datasets take them from the model's pretrained config, as timm's train.py does.
    """
    from timm.data import resolve_data_config as timm_resolve_data_config

    kind = dataset_kind(args.get('dataset'), args.get('data_dir'))
    merged = dict(args)
    native = native_data_config(kind)
    explicit_size = any(args.get(key) is not None for key in ('input_size', 'img_size'))
    for key, value in native.items():
        if key == 'input_size' and explicit_size:
            continue
        if merged.get(key) is None:
            merged[key] = value
    if merged.get('input_size') is not None and merged['input_size'][0] != 3 and kind in ('digits', 'cifar10',
                                                                                          'cifar100'):
        raise ValueError(f'The {kind} images have 3 channels, got `input_size` {tuple(merged["input_size"])}.')
    if pretrained_cfg is None and model is None and args.get('model'):
        pretrained_cfg = _pretrained_cfg_for(args['model'])
    config = timm_resolve_data_config(merged, pretrained_cfg=pretrained_cfg, model=model)
    config['input_size'] = tuple(int(v) for v in config['input_size'])
    config['mean'] = tuple(float(v) for v in config['mean'])
    config['std'] = tuple(float(v) for v in config['std'])
    return config


def _pretrained_cfg_for(model_name: str) -> Dict[str, Any]:
    from timm.models import get_pretrained_cfg, parse_model_name, split_model_name_tag

    try:
        source, name = parse_model_name(model_name)
        if source:
            return {}
        cfg = get_pretrained_cfg(name)
        if cfg is None:
            cfg = get_pretrained_cfg(split_model_name_tag(name)[0])
    except (RuntimeError, ValueError):
        return {}
    return cfg.to_dict() if cfg is not None else {}


def create_eval_transform(data_config: Mapping[str, Any]):
    """Return timm's evaluation transform for `data_config`: resize, center crop, tensor, normalization."""
    from timm.data import create_transform

    return create_transform(
        data_config['input_size'],
        is_training=False,
        interpolation=data_config['interpolation'],
        mean=data_config['mean'],
        std=data_config['std'],
        crop_pct=data_config['crop_pct'],
        crop_mode=data_config.get('crop_mode'),
    )


# Split creation

def _missing_cifar_message(kind: str, data_dir: Optional[str], reason: str) -> str:
    archive, folder, files = _CIFAR_FILES[kind]
    where = os.path.abspath(data_dir) if data_dir else '--data-dir DIR'
    return (f'{kind.upper().replace("CIFAR", "CIFAR-")} is not available in {where} ({reason}): put the '
            f'python version there, extracted as {os.path.join(where, folder)}/ ({files}) or as {archive} '
            f'from https://www.cs.toronto.edu/~kriz/cifar.html, or pass --dataset-download where the '
            f'network is reachable.')


def _create_cifar(kind: str, data_dir: Optional[str], split: str, download: bool):
    from torchvision.datasets import CIFAR10, CIFAR100

    if not data_dir:
        raise DatasetUnavailableError(_missing_cifar_message(kind, data_dir, 'no --data-dir given'))
    dataset_cls = CIFAR10 if kind == 'cifar10' else CIFAR100
    train = split.lower() in _TRAIN_SPLITS
    if not train and split.lower() not in _EVAL_SPLITS:
        raise ValueError(f'CIFAR has a train and a test split, got split {split!r}.')
    try:
        return dataset_cls(root=data_dir, train=train, download=download)
    except (RuntimeError, OSError, EOFError, ValueError) as e:
        # torchvision raises RuntimeError for missing or corrupt files and URLError (an OSError) offline.
        reason = 'download failed' if download else 'files missing or corrupt'
        raise DatasetUnavailableError(_missing_cifar_message(kind, data_dir, f'{reason}: {e}')) from e


def _folder_split_root(data_dir: str, split: str) -> str:
    """Return the folder of `split` under `data_dir`, accepting timm's split synonyms."""
    candidates = [split]
    if split.lower() in _TRAIN_SPLITS:
        candidates += list(_TRAIN_SPLITS)
    elif split.lower() in _EVAL_SPLITS:
        candidates += list(_EVAL_SPLITS)
    for name in candidates:
        path = os.path.join(data_dir, name)
        if os.path.isdir(path):
            return path
    raise DatasetUnavailableError(
        f'No {split!r} split in image folder {os.path.abspath(data_dir)}: expected a sub-folder '
        f'{os.path.join(os.path.abspath(data_dir), split)}/ with one folder of images per class '
        f'(also accepted: {", ".join(candidates[1:]) or "none"}).')


def _create_folder(data_dir: Optional[str], split: str, class_map: Optional[str]):
    from timm.data import create_dataset

    if not data_dir:
        raise DatasetUnavailableError('An image folder dataset needs --data-dir DIR with train/ and validation/.')
    if not os.path.isdir(data_dir):
        raise DatasetUnavailableError(
            f'Data directory {os.path.abspath(data_dir)} does not exist: create it with train/ and validation/ '
            f'sub-folders holding one folder of images per class, or leave out --data-dir to train on the '
            f'embedded digits.')
    root = _folder_split_root(data_dir, split)
    try:
        return create_dataset('', root=root, split=split, search_split=False, class_map=class_map or '')
    except (RuntimeError, OSError) as e:
        raise DatasetUnavailableError(f'Could not read image folder {root}: {e}') from e


def _create_timm_dataset(name: str, data_dir: Optional[str], split: str, download: bool, class_map: Optional[str]):
    from timm.data import create_dataset

    try:
        return create_dataset(name, root=data_dir, split=split, download=download, class_map=class_map or '')
    except (RuntimeError, OSError, AssertionError, ValueError) as e:
        raise DatasetUnavailableError(f'Could not create dataset {name!r} from {data_dir}: {e}') from e


class _SubsetDataset(torch.utils.data.Dataset):
    """Evenly spaced subset of a map-style dataset that forwards `transform`, so timm's loader can set it."""

    def __init__(self, dataset, num_samples: int):
        if not 0 < num_samples <= len(dataset):
            raise ValueError(f'`num_samples` must be in [1, {len(dataset)}], got {num_samples}.')
        self.dataset = dataset
        self.indices = np.linspace(0, len(dataset) - 1, num_samples).round().astype(np.int64)

    @property
    def transform(self):
        return self.dataset.transform

    @transform.setter
    def transform(self, value):
        self.dataset.transform = value

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        return self.dataset[int(self.indices[index])]


def create_split_dataset(
        dataset: Optional[str],
        data_dir: Optional[str],
        split: str,
        num_samples: Optional[int] = None,
        download: bool = False,
        class_map: Optional[str] = None,
):
    """Create one split of a dataset, without a transform (timm's `create_loader` sets it).

    Raises:
        DatasetUnavailableError: when the files are missing or unreadable, saying where they belong.
        ValueError: for a split the dataset does not have or an out-of-range `num_samples`.
    """
    kind = dataset_kind(dataset, data_dir)
    if kind == 'digits':
        return DigitsDataset(split, num_samples=num_samples)
    if kind in ('cifar10', 'cifar100'):
        ds = _create_cifar(kind, data_dir, split, download)
    elif kind == 'folder':
        ds = _create_folder(data_dir, split, class_map)
    else:
        ds = _create_timm_dataset(dataset, data_dir, split, download, class_map)
    if len(ds) == 0:
        raise DatasetUnavailableError(f'The {split!r} split of {dataset or data_dir} contains no images.')
    if num_samples is not None:
        ds = _SubsetDataset(ds, int(num_samples))
    return ds


def dataset_class_names(ds) -> List[str]:
    """Return the class names of a dataset made by `create_split_dataset`, in label order."""
    if isinstance(ds, _SubsetDataset):
        ds = ds.dataset
    classes = getattr(ds, 'classes', None)
    if classes:
        return [str(name) for name in classes]
    reader = getattr(ds, 'reader', None)
    class_to_idx = getattr(reader, 'class_to_idx', None) or getattr(ds, 'class_to_idx', None)
    if class_to_idx:
        return [str(name) for name, _ in sorted(class_to_idx.items(), key=lambda item: item[1])]
    raise ValueError(f'Cannot find the class names of dataset {type(ds).__name__}; pass --num-classes.')


def create_eval_dataset(args: Mapping[str, Any]) -> Tuple[torch.utils.data.Dataset, List[str]]:
    """Rebuild a run's validation split with its evaluation transform.

    Args:
        args: The run's arguments as loaded from its `args.yaml` (a dict). Used keys: `dataset`, `data_dir`,
            `val_split`, `val_num_samples`, `class_map`, `class_names`, `model`, and the data config keys
            `input_size`, `img_size`, `mean`, `std`, `interpolation`, `crop_pct` and `crop_mode`.
            `timm-shakedrop train` stores the resolved values. Missing ones are resolved as in training.

    Returns:
        `(dataset, class_names)`: the dataset yields `(image, label)` with `image` a normalized float CHW
        tensor and `label` an int; `class_names` lists the names in label order. Nothing is downloaded.

    Raises:
        DatasetUnavailableError: when the validation files are not on this machine.
    """
    args = dict(args)
    ds = create_split_dataset(
        args.get('dataset'),
        args.get('data_dir'),
        args.get('val_split') or 'validation',
        num_samples=args.get('val_num_samples'),
        download=False,
        class_map=args.get('class_map'),
    )
    data_config = resolve_data_config(args)
    ds.transform = create_eval_transform(data_config)
    names = args.get('class_names') or dataset_class_names(ds)
    return ds, list(names)

