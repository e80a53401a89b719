"""Datasets and transforms: the embedded digits, CIFAR and image folders, and the pad-and-crop pipeline."""
import os
import pickle

import numpy as np
import pytest
import torch

from timm_shakedrop.data import (
    DatasetUnavailableError,
    DigitsDataset,
    create_eval_dataset,
    create_eval_transform,
    create_split_dataset,
    dataset_class_names,
    dataset_kind,
    resolve_data_config,
)
from timm_shakedrop.training.transforms import Cutout, create_train_transform

FAST_ARGV = ['--img-size', '16', '-j', '0', '--num-threads', '1', '--log-interval', '1000']


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Run each test on one torch thread: two OpenMP threads slow down badly when other processes share the
    two cores of the test machine."""
    num_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(num_threads)


def test_digits_split_sizes_and_strata():
    train, validation = DigitsDataset('train'), DigitsDataset('validation')
    assert len(train) + len(validation) == 1797
    assert len(validation) == 359
    all_counts = np.bincount(np.concatenate([train.targets, validation.targets]), minlength=10)
    val_counts = np.bincount(validation.targets, minlength=10)
    # One fifth of each class, rounded.
    assert np.array_equal(val_counts, np.round(all_counts * 0.2).astype(int))


def test_digits_split_deterministic_and_disjoint():
    first, second = DigitsDataset('train'), DigitsDataset('train')
    assert np.array_equal(first.indices, second.indices)
    validation = DigitsDataset('val')
    assert validation.split == 'validation'
    assert not set(first.indices.tolist()) & set(validation.indices.tolist())


def test_digits_images_are_32px_gray_rgb():
    dataset = DigitsDataset('validation')
    image, label = dataset[0]
    assert image.mode == 'RGB'
    assert image.size == (32, 32)
    pixels = np.asarray(image)
    assert np.array_equal(pixels[..., 0], pixels[..., 1])
    assert np.array_equal(pixels[..., 0], pixels[..., 2])
    assert dataset.images.max() == 255
    assert dataset.images.min() == 0
    assert isinstance(label, int)
    assert dataset_class_names(dataset) == [str(i) for i in range(10)]


def test_digits_subset_is_class_balanced():
    dataset = DigitsDataset('train', num_samples=40)
    assert np.array_equal(np.bincount(dataset.targets, minlength=10), np.full(10, 4))
    with pytest.raises(ValueError, match=r'`num_samples` must be in \[1, 1438\]'):
        DigitsDataset('train', num_samples=5000)
    with pytest.raises(ValueError, match="`split` 'holdout' is not a split of the digits dataset"):
        DigitsDataset('holdout')


@pytest.mark.parametrize('dataset,data_dir,kind', [
    ('', None, 'digits'),
    ('digits', None, 'digits'),
    ('torch/cifar10', 'x', 'cifar10'),
    ('torch/CIFAR100', 'x', 'cifar100'),
    ('', 'x', 'folder'),
    ('hfds/some-set', 'x', 'timm'),
])
def test_dataset_kind(dataset, data_dir, kind):
    assert dataset_kind(dataset, data_dir) == kind


def test_resolve_data_config_by_dataset():
    model = 'shakedrop_pyramidnet20_a48'
    digits = resolve_data_config({'model': model})
    assert digits['input_size'] == (3, 32, 32)
    assert digits['crop_pct'] == 1.0
    assert digits['mean'][0] == digits['mean'][1] == digits['mean'][2]
    cifar100 = resolve_data_config({'model': model, 'dataset': 'torch/cifar100', 'data_dir': 'x'})
    assert cifar100['mean'] == (0.5071, 0.4865, 0.4409)
    folder = resolve_data_config({'model': 'shakedrop_pyramidnet101_a360_imagenet', 'data_dir': 'x'})
    assert folder['input_size'] == (3, 224, 224)
    assert folder['crop_pct'] == 0.875
    explicit = resolve_data_config({'model': model, 'img_size': 16, 'mean': [0.5], 'std': [0.25]})
    assert explicit['input_size'] == (3, 16, 16)
    assert explicit['mean'] == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match=r'The digits images have 3 channels, got `input_size` \(1, 32, 32\)'):
        resolve_data_config({'model': model, 'input_size': [1, 32, 32]})


def test_eval_transform_matches_timm_loader():
    from timm.data import create_loader

    config = resolve_data_config({'model': 'shakedrop_pyramidnet20_a48'})
    dataset = DigitsDataset('validation', num_samples=8)
    loader = create_loader(dataset, input_size=config['input_size'], batch_size=8, is_training=False,
                           interpolation=config['interpolation'], mean=config['mean'], std=config['std'],
                           crop_pct=config['crop_pct'], crop_mode=config['crop_mode'], num_workers=0,
                           use_prefetcher=False, device=torch.device('cpu'))
    images, labels = next(iter(loader))
    reference = DigitsDataset('validation', num_samples=8, transform=create_eval_transform(config))
    expected = torch.stack([reference[i][0] for i in range(8)])
    torch.testing.assert_close(images, expected, rtol=0, atol=0)
    # Normalized pixels: (x / 255 - mean) / std.
    raw = torch.from_numpy(np.array(DigitsDataset('validation', num_samples=1)[0][0])).permute(2, 0, 1)
    torch.testing.assert_close(expected[0], (raw / 255.0 - config['mean'][0]) / config['std'][0], rtol=0,
                               atol=1e-6)


def test_create_eval_dataset_digits():
    dataset, class_names = create_eval_dataset({'model': 'shakedrop_pyramidnet20_a48', 'dataset': 'digits'})
    assert len(dataset) == 359
    assert class_names == [str(i) for i in range(10)]
    image, label = dataset[5]
    assert image.shape == (3, 32, 32)
    assert image.dtype == torch.float32
    assert 0 <= label < 10


def test_cutout_fills_a_clipped_square():
    torch.manual_seed(0)
    cutout = Cutout(4)
    filled_areas = set()
    for _ in range(50):
        out = cutout(torch.ones(3, 8, 8))
        mask = out[0] == 0
        assert torch.equal(mask, out[1] == 0)
        rows, cols = mask.any(1).sum().item(), mask.any(0).sum().item()
        assert 1 <= rows <= 4
        assert 1 <= cols <= 4
        assert mask.sum().item() == rows * cols
        filled_areas.add(rows * cols)
    assert 16 in filled_areas
    assert min(filled_areas) < 16
    uint8 = Cutout(8, fill=(10, 20, 30))(torch.full((3, 8, 8), 200, dtype=torch.uint8))
    assert uint8.dtype == torch.uint8
    assert {int(v) for v in uint8[:, 4, 4]} <= {10, 20, 30, 200}
    with pytest.raises(ValueError, match='Cutout `size` must be a positive number of pixels, got 0'):
        Cutout(0)


def _recipe_transform(argv, use_prefetcher=False):
    from timm_shakedrop.cli.train import parse_args

    args = parse_args(argv)
    config = resolve_data_config(vars(args))
    return create_train_transform(args, config, use_prefetcher)


def test_shakedrop_cifar_transform():
    transform = _recipe_transform(['--recipe', 'shakedrop-cifar', '--dataset', 'torch/cifar10', '--data-dir', 'x'])
    names = [type(t).__name__ for t in transform.transforms]
    assert names == ['Resize', 'RandomCrop', 'RandomHorizontalFlip', 'ToTensor', 'Normalize']
    assert transform.transforms[1].padding == 4
    assert transform.transforms[1].size == (32, 32)
    assert transform.transforms[2].p == 0.5
    assert tuple(transform.transforms[4].mean) == (0.4914, 0.4822, 0.4465)


def test_autoaugment_recipe_transform():
    from torchvision.transforms import AutoAugmentPolicy

    transform = _recipe_transform(['--recipe', 'pyramidnet272-autoaugment', '--dataset', 'torch/cifar10',
                                   '--data-dir', 'x'])
    names = [type(t).__name__ for t in transform.transforms]
    assert names == ['Resize', 'RandomCrop', 'RandomHorizontalFlip', 'AutoAugment', 'ToTensor', 'Normalize',
                     'Cutout']
    assert transform.transforms[3].policy == AutoAugmentPolicy.CIFAR10
    assert transform.transforms[6].size == 16
    image = DigitsDataset('train', num_samples=1)[0][0]
    assert transform(image).shape == (3, 32, 32)
    prefetch = _recipe_transform(['--recipe', 'pyramidnet272-autoaugment', '--dataset', 'torch/cifar10',
                                  '--data-dir', 'x'], use_prefetcher=True)
    assert prefetch(image).dtype == torch.uint8


def test_quick_recipe_never_flips_digits():
    transform = _recipe_transform([])
    names = [type(t).__name__ for t in transform.transforms]
    assert 'RandomHorizontalFlip' not in names
    assert names[:2] == ['Resize', 'RandomCrop']


def test_torchvision_policy_needs_pad_crops():
    with pytest.raises(ValueError, match='`--aa cifar10` is a torchvision CIFAR policy'):
        _recipe_transform(['--recipe', 'timm', '--aa', 'cifar10'])


# Image folders

def _write_image_folder(root, splits=('train', 'validation'), classes=('0', '1', '2'), per_class=4):
    """Write digits PNGs as root/split/class/*.png and return root."""
    digits = DigitsDataset('train')
    for split in splits:
        for name in classes:
            folder = os.path.join(root, split, name)
            os.makedirs(folder, exist_ok=True)
            indices = np.flatnonzero(digits.targets == int(name))[:per_class]
            for i, index in enumerate(indices):
                digits[int(index)][0].save(os.path.join(folder, f'{i}.png'))
    return root


def test_image_folder_eval_dataset(tmp_path):
    root = _write_image_folder(str(tmp_path / 'folder'))
    dataset, class_names = create_eval_dataset({'model': 'shakedrop_pyramidnet20_a48', 'data_dir': root})
    assert class_names == ['0', '1', '2']
    assert len(dataset) == 12
    image, label = dataset[11]
    assert image.shape == (3, 32, 32)
    assert label == 2


def test_image_folder_without_validation_split(tmp_path):
    root = _write_image_folder(str(tmp_path / 'folder'), splits=('train',))
    with pytest.raises(DatasetUnavailableError, match=r"No 'validation' split in image folder .*validation/"):
        create_split_dataset('', root, 'validation')


@pytest.mark.slow
def test_image_folder_training_run(tmp_path, capsys):
    from timm_shakedrop.cli.train import main

    root = _write_image_folder(str(tmp_path / 'folder'))
    assert main(FAST_ARGV + ['--data-dir', root, '-b', '4', '--epochs', '1', '--output', str(tmp_path / 'out'),
                             '--experiment', 'folder']) == 0
    from timm_shakedrop.training import load_training_checkpoint

    checkpoint = load_training_checkpoint(str(tmp_path / 'out' / 'folder' / 'last.pth.tar'))
    assert checkpoint['state_dict']['head.fc.weight'].shape[0] == 3
    assert checkpoint['args'].recipe == 'timm'
    assert checkpoint['args'].class_names == ['0', '1', '2']


# CIFAR, from files in torchvision's python format that this test writes

def _write_fake_cifar10(root, per_batch=10):
    folder = os.path.join(root, 'cifar-10-batches-py')
    os.makedirs(folder)
    rng = np.random.RandomState(0)
    for name in ['data_batch_1', 'data_batch_2', 'data_batch_3', 'data_batch_4', 'data_batch_5', 'test_batch']:
        entry = {'data': rng.randint(0, 256, (per_batch, 3072), dtype=np.uint8),
                 'labels': [i % 10 for i in range(per_batch)]}
        with open(os.path.join(folder, name), 'wb') as f:
            pickle.dump(entry, f)
    with open(os.path.join(folder, 'batches.meta'), 'wb') as f:
        pickle.dump({'label_names': ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse',
                                     'ship', 'truck']}, f)
    return root


@pytest.fixture
def fake_cifar10(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as cifar

    # The real archive's MD5 sums cannot match these files.
    monkeypatch.setattr(cifar, 'check_integrity', lambda *args, **kwargs: True)
    monkeypatch.setattr(cifar.CIFAR10, '_check_integrity', lambda self: True)
    return _write_fake_cifar10(str(tmp_path / 'cifar'))


@pytest.mark.slow
def test_cifar10_training_run_and_eval_dataset(fake_cifar10, tmp_path):
    import yaml

    from timm_shakedrop.cli.train import main

    argv = ['--dataset', 'torch/cifar10', '--data-dir', fake_cifar10, '--model', 'shakedrop_pyramidnet20_a48',
            '--epochs', '1', '-b', '10', '-j', '0', '--num-threads', '1', '--output', str(tmp_path / 'out'),
            '--experiment', 'cifar']
    assert main(argv) == 0
    with open(tmp_path / 'out' / 'cifar' / 'args.yaml') as f:
        args = yaml.safe_load(f)
    assert args['recipe'] == 'shakedrop-cifar'
    assert args['mean'] == [0.4914, 0.4822, 0.4465]
    assert args['weight_decay'] == 1e-4
    dataset, class_names = create_eval_dataset(args)
    assert class_names[:2] == ['airplane', 'automobile']
    assert len(dataset) == 10
    assert dataset[0][0].shape == (3, 32, 32)


def test_cifar_missing_files(tmp_path):
    with pytest.raises(DatasetUnavailableError, match='CIFAR-100 is not available .*cifar-100-python/'):
        create_eval_dataset({'dataset': 'torch/cifar100', 'data_dir': str(tmp_path), 'model': 'resnet18'})
    with pytest.raises(DatasetUnavailableError, match='no --data-dir given'):
        create_split_dataset('torch/cifar10', None, 'train')
