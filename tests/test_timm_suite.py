"""timm's own model test suite, from the sdist of the installed timm release, run on this package's models.

pip fetches the sdist from the package index at test time, and only its `tests/` folder and `pyproject.toml`
are unpacked, so the suite imports the installed timm. timm's suite imports the module named by
`TORCH_BACKEND`, which registers these models.

By default the run covers one model of each architecture family (basic and bottleneck CIFAR units, ImageNet
stems, and the ResNet variants) to keep CI short. Set `TIMM_SHAKEDROP_TIMM_SUITE=all` to run it on every
registered model.
"""
import importlib.metadata
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import timm

import timm_shakedrop  # noqa: F401  (registers the models listed below)

REPRESENTATIVE_MODELS = [
    'shakedrop_pyramidnet20_a48',
    'shakedrop_pyramidnet164_a270',
    'shakedrop_pyramidnet101_a360_imagenet',
    'shakedrop_resnet20_cifar',
    'shakedrop_resnet164_cifar',
    'shakedrop_resnet18_cifar',
    'shakedrop_resnet50',
]


def _selected_models():
    registered = timm.list_models('shakedrop_*')
    if os.environ.get('TIMM_SHAKEDROP_TIMM_SUITE', '').strip().lower() == 'all':
        return registered
    return [name for name in REPRESENTATIVE_MODELS if name in registered]


@pytest.fixture(scope='module')
def timm_source(tmp_path_factory) -> Path:
    version = importlib.metadata.version('timm')
    download_dir = tmp_path_factory.mktemp('timm_sdist')
    result = subprocess.run(
        [sys.executable, '-m', 'pip', 'download', f'timm=={version}', '--no-binary', ':all:', '--no-deps',
         '--quiet', '--dest', str(download_dir)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, f'pip could not download the timm {version} sdist:\n{result.stderr}'
    archives = list(download_dir.glob('timm-*.tar.gz'))
    assert len(archives) == 1, f'expected one sdist in {download_dir}, found {archives}'
    root = f'timm-{version}/'
    with tarfile.open(archives[0]) as archive:
        members = [
            m for m in archive.getmembers()
            if m.name.startswith(root + 'tests/') or m.name == root + 'pyproject.toml'
        ]
        archive.extractall(download_dir, members=members, filter='data')
    source = download_dir / root
    assert (source / 'tests' / 'test_models.py').is_file()
    return source


def test_timm_model_suite_passes(timm_source):
    models = _selected_models()
    assert models, 'no registered shakedrop models were selected'
    env = dict(os.environ, TORCH_BACKEND='timm_shakedrop', HF_HUB_OFFLINE='1')
    # `-k` matches substrings of test ids; none of the selected names is a substring of another model's name.
    keyword = ' or '.join(models)
    result = subprocess.run(
        [sys.executable, '-m', 'pytest', 'tests/test_models.py', '-q', '-p', 'no:cacheprovider', '-k', keyword],
        cwd=timm_source, capture_output=True, text=True, env=env, timeout=3000,
    )
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr[-2000:]
    assert result.returncode == 0, f'timm test_models.py failed ({summary}):\n{result.stdout[-8000:]}'
    assert ' passed' in summary
    assert 'failed' not in summary
