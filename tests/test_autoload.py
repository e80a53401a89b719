"""Start-up hook: models registered in any process that imports timm, without importing torch at start-up."""
import json
import os
import pkgutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import _timm_shakedrop_autoload as autoload

REPO_ROOT = Path(__file__).resolve().parents[1]
START_FILE = REPO_ROOT / 'startup' / 'timm_shakedrop.start'
PTH_FILE = REPO_ROOT / 'startup' / 'timm_shakedrop.pth'


def _run_python(code: str, env_overrides=None, args=()):
    env = dict(os.environ)
    env.pop(autoload.ENV_VAR, None)
    env.update(env_overrides or {})
    return subprocess.run(
        [sys.executable, *args, '-c', code], capture_output=True, text=True, timeout=180, env=env,
    )


def test_import_timm_registers_models():
    result = _run_python(
        "import json, sys, timm\n"
        "print(json.dumps(dict(\n"
        "    imported='timm_shakedrop' in sys.modules,\n"
        "    registered=timm.is_model('shakedrop_pyramidnet272'),\n"
        "    num_classes=timm.create_model('shakedrop_pyramidnet20_a48').num_classes,\n"
        "    loader=type(timm.__loader__).__name__,\n"
        "    spec_loader=type(timm.__spec__.loader).__name__,\n"
        ")))"
    )
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    assert facts['imported']
    assert facts['registered']
    assert facts['num_classes'] == 10
    # The proxy loader hands timm back its own loader once the models are registered.
    assert facts['loader'] != '_RegisteringLoader'
    assert facts['spec_loader'] != '_RegisteringLoader'


def test_env_var_switches_hook_off():
    result = _run_python(
        "import sys, timm\nprint(timm.is_model('shakedrop_pyramidnet272'), 'timm_shakedrop' in sys.modules)",
        env_overrides={autoload.ENV_VAR: '0'},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ['False', 'False']


def test_startup_imports_neither_torch_nor_timm():
    result = _run_python(
        "import sys\n"
        "finders = [type(f).__name__ for f in sys.meta_path]\n"
        "print('torch' in sys.modules, 'timm' in sys.modules, 'TimmImportFinder' in finders)"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ['False', 'False', 'True']


def test_start_file_entry_point_registers():
    """Python 3.11 reads no PEP 829 start files: resolve and call the entry point as site.py would."""
    entry_points = [line.strip() for line in START_FILE.read_text().splitlines() if line.strip()]
    assert entry_points == ['_timm_shakedrop_autoload:install']
    assert pkgutil.resolve_name(entry_points[0]) is autoload.install
    # -S skips site-packages processing, so neither the .pth line nor any other hook runs first.
    code = (
        "import json, sys, pkgutil\n"
        f"sys.path[:] = json.loads({json.dumps(json.dumps(sys.path))})\n"
        "assert not any(type(f).__name__ == 'TimmImportFinder' for f in sys.meta_path)\n"
        f"pkgutil.resolve_name({entry_points[0]!r})()\n"
        "import timm\n"
        "print(timm.is_model('shakedrop_pyramidnet272'))"
    )
    result = _run_python(code, args=('-S',))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == 'True'


def _pth_line() -> str:
    lines = [line for line in PTH_FILE.read_text().splitlines() if line.strip()]
    assert len(lines) == 1, lines
    # site.py executes a .pth line only when it starts with `import`.
    assert lines[0].startswith('import '), lines
    return lines[0]


def test_pth_line_calls_install():
    # Under -S the installed .pth does not run first, so the exec below is the only call.
    code = (
        "import json, sys\n"
        f"sys.path[:] = json.loads({json.dumps(json.dumps(sys.path))})\n"
        f"exec({_pth_line()!r})\n"
        "print(any(type(f).__name__ == 'TimmImportFinder' for f in sys.meta_path))"
    )
    result = _run_python(code, args=('-S',))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == 'True'


def test_pth_line_without_hook_module():
    """An editable install whose checkout moved leaves the .pth behind: start-up must not print a traceback."""
    code = (
        "import os, sys\n"
        "hook_file = '_timm_shakedrop_autoload.py'\n"
        "sys.path[:] = [p for p in sys.path if not os.path.exists(os.path.join(p or '.', hook_file))]\n"
        f"exec({_pth_line()!r})\n"
        "print(any(type(f).__name__ == 'TimmImportFinder' for f in sys.meta_path))"
    )
    result = _run_python(code, args=('-S',))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ''
    assert result.stdout.strip() == 'False'


def test_installed_hook_files_match_repository():
    site_packages = Path(sysconfig.get_paths()['purelib'])
    for source in (PTH_FILE, START_FILE):
        installed = site_packages / source.name
        if not installed.exists():
            pytest.skip(f'{installed} is not installed; run `pip install -e .` first')
        assert installed.read_text() == source.read_text()


def test_install_is_idempotent(monkeypatch):
    monkeypatch.setattr(sys, 'meta_path', [f for f in sys.meta_path if not isinstance(f, autoload.TimmImportFinder)])
    monkeypatch.delitem(sys.modules, 'timm', raising=False)
    autoload.install()
    autoload.install()
    assert sum(isinstance(f, autoload.TimmImportFinder) for f in sys.meta_path) == 1
    autoload.remove()
    assert not any(isinstance(f, autoload.TimmImportFinder) for f in sys.meta_path)


@pytest.mark.parametrize('value, enabled', [('0', False), ('false', False), ('OFF', False), ('1', True), ('', True)])
def test_is_enabled_values(monkeypatch, value, enabled):
    monkeypatch.setenv(autoload.ENV_VAR, value)
    assert autoload.is_enabled() is enabled


def test_broken_plugin_warns_instead_of_failing():
    result = _run_python(
        "import sys\n"
        "class Broken:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'timm_shakedrop':\n"
        "            raise ImportError('simulated failure')\n"
        "sys.meta_path.insert(1, Broken())\n"
        "import warnings\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    import timm\n"
        "print(timm.is_model('resnet18'), any('could not register' in str(w.message) for w in caught))"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ['True', 'True']


def test_wheel_ships_hook_files(tmp_path):
    result = subprocess.run(
        [sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q', '-w', str(tmp_path),
         str(REPO_ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    wheels = list(tmp_path.glob('timm_shakedrop-*.whl'))
    assert len(wheels) == 1
    names = zipfile.ZipFile(wheels[0]).namelist()
    assert 'timm_shakedrop.pth' in names
    assert 'timm_shakedrop.start' in names
    assert '_timm_shakedrop_autoload.py' in names
    assert 'timm_shakedrop/models/shakedrop_pyramidnet.py' in names
    assert not any(name.startswith('tests/') for name in names)
