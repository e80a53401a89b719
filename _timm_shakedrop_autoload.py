"""Start-up hook that registers the timm-shakedrop models in every process that imports timm.

Site-packages runs `install` at interpreter start-up, through `timm_shakedrop.pth` on Python versions that
execute `.pth` import lines and through the PEP 829 entry point in `timm_shakedrop.start` on those that read
start files. `install` imports neither torch nor timm: it only puts a finder on `sys.meta_path` that waits
for `import timm` and imports `timm_shakedrop` as soon as timm has finished loading, so that
`timm.create_model('shakedrop_...')`, timm's train.py and `hf-hub:` names see the models without any import
of this package.

Set the environment variable `TIMM_SHAKEDROP_AUTOLOAD=0` to switch the hook off.
"""
import os
import sys

ENV_VAR = 'TIMM_SHAKEDROP_AUTOLOAD'
_FALSE_VALUES = ('0', 'false', 'no', 'off')


def is_enabled() -> bool:
    """Return False when `TIMM_SHAKEDROP_AUTOLOAD` switches the hook off."""
    return os.environ.get(ENV_VAR, '1').strip().lower() not in _FALSE_VALUES


def _register_models() -> None:
    try:
        import timm_shakedrop  # noqa: F401  (importing registers the models)
    except Exception as e:  # a broken plugin must never break `import timm`
        import warnings
        warnings.warn(
            f'timm-shakedrop could not register its models after timm was imported: {e!r}. '
            f'Set {ENV_VAR}=0 to switch the start-up hook off.',
            RuntimeWarning,
            stacklevel=2,
        )


class _RegisteringLoader:
    """Loader proxy that runs the wrapped loader, then registers the models."""

    def __init__(self, loader):
        self._loader = loader

    def __getattr__(self, name):
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        # Put the real loader back, so that importlib.resources and reloads see timm's own loader.
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        _register_models()


class TimmImportFinder:
    """Meta path finder that intercepts the first `import timm` and nothing else."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != 'timm':
            return None
        # The finder has done its job once timm is found: later imports of timm go straight to the path.
        remove()
        from importlib.machinery import PathFinder

        spec = PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, 'exec_module'):
            return spec
        spec.loader = _RegisteringLoader(spec.loader)
        return spec


def install() -> None:
    """Arrange for `timm_shakedrop` to be imported right after timm; a no-op when switched off."""
    if not is_enabled():
        return
    if 'timm' in sys.modules:
        _register_models()
        return
    if not any(isinstance(finder, TimmImportFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, TimmImportFinder())


def remove() -> None:
    """Take the finder off `sys.meta_path` if it is there."""
    sys.meta_path[:] = [finder for finder in sys.meta_path if not isinstance(finder, TimmImportFinder)]
