"""Load models pushed with `push_to_hub` through timm's `hf-hub:` source, with errors that name the next step.

`timm.create_model('hf-hub:ORG/NAME', pretrained=True)` works on its own; `create_model_from_hub` calls it and
turns huggingface_hub's errors (weights not cached while offline, repository or file not found) into a
RuntimeError that names the repository and the next step.
"""
import logging
from pathlib import Path

from huggingface_hub import constants, try_to_load_from_cache
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from torch import nn

_logger = logging.getLogger(__name__)

__all__ = ['create_model_from_hub', 'describe_hub_load_error', 'is_cached']

_HUB_FILES = ('config.json', 'model.safetensors')


def is_cached(repo_id: str, revision: str | None = None, cache_dir: str | Path | None = None) -> bool:
    """Return True when config.json and model.safetensors of `repo_id` at `revision` are in the local cache."""
    return all(
        isinstance(try_to_load_from_cache(repo_id, name, cache_dir=cache_dir, revision=revision), str)
        for name in _HUB_FILES
    )


def _fetch_hint(repo_id: str, revision: str | None) -> str:
    revision_flag = f' --revision {revision}' if revision else ''
    return f'`hf download {repo_id}{revision_flag}` (or load it once) with network access and HF_HUB_OFFLINE unset'


def describe_hub_load_error(error: BaseException, repo_id: str, revision: str | None = None,
                            cache_dir: str | Path | None = None) -> str | None:
    """Return a one-line explanation of a failed Hub load with the next step, or None for other errors."""
    where = f'hf-hub:{repo_id}' + (f'@{revision}' if revision else '')
    cache = Path(cache_dir or constants.HF_HUB_CACHE)
    offline = constants.HF_HUB_OFFLINE
    if isinstance(error, (LocalEntryNotFoundError, OfflineModeIsEnabled)):
        if offline:
            return (f'The weights of {where} are not in the Hugging Face cache ({cache}) and offline mode is on '
                    f'(HF_HUB_OFFLINE=1). Fetch them first with {_fetch_hint(repo_id, revision)}.')
        return (f'The weights of {where} are not in the Hugging Face cache ({cache}) and the Hub could not be '
                f'reached ({constants.ENDPOINT}). Check the connection or HF_ENDPOINT, or fetch them with '
                f'{_fetch_hint(repo_id, revision)}.')
    if isinstance(error, GatedRepoError):
        return f'{where} is gated: accept its conditions on the Hub and log in with `hf auth login`.'
    if isinstance(error, RepositoryNotFoundError):
        return (f'{where} was not found at {constants.ENDPOINT}, or it is private and no valid token was sent: '
                f'check the repository id, or log in with `hf auth login` or HF_TOKEN.')
    if isinstance(error, RevisionNotFoundError):
        return f'{where}: the revision {revision or "main"} does not exist in {repo_id}.'
    if isinstance(error, EntryNotFoundError):
        return (f'{where} has no config.json or model.safetensors, so it was not pushed by `timm-shakedrop push`; '
                f'list its files with `hf download {repo_id} --dry-run`.')
    return None


def create_model_from_hub(
        repo_id: str,
        *,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        **kwargs,
) -> nn.Module:
    """Create the timm model of a Hub repository with its pretrained weights.

    The same as `timm.create_model('hf-hub:REPO_ID@REVISION', pretrained=True, cache_dir=..., **kwargs)`, with
    clear errors. `num_classes`, `in_chans` and the other timm arguments pass through: a different
    `num_classes` re-initializes the classifier, `in_chans=1` adapts the first convolution.

    Raises:
        RuntimeError: the weights are not cached while offline, the Hub is unreachable, or the repository,
            revision or files do not exist. The message names the fix.
    """
    import timm

    if '@' in repo_id or repo_id.startswith('hf-hub:'):
        raise ValueError(f'`repo_id` must be ORG/NAME without a source prefix or @revision, got {repo_id!r}; pass '
                         f'the revision as `revision`.')
    name = f'hf-hub:{repo_id}' + (f'@{revision}' if revision else '')
    try:
        return timm.create_model(name, pretrained=True, cache_dir=cache_dir, **kwargs)
    except (OSError, ValueError) as error:
        message = describe_hub_load_error(error, repo_id, revision, cache_dir)
        if message is None:
            raise
        raise RuntimeError(message) from error
