"""Push an exported folder to the Hugging Face Hub with huggingface_hub's `HfApi`.

Every check that needs no network runs before the first request: the folder contains exactly the exported files,
the model card metadata parses with `ModelCard`, config.json and the safetensors header read, and no file
contains the access token. Then `create_repo(exist_ok=True)`, `create_branch` when the revision is new, and one
`upload_folder` commit. huggingface_hub validates the card with the server before it uploads anything, so a
failure at any step leaves no partial commit.
"""
import dataclasses
import importlib
import json
import logging
import shutil
import tempfile
import warnings
from pathlib import Path

from huggingface_hub import HfApi, ModelCard, constants, get_token
from huggingface_hub.errors import (
    HfHubHTTPError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from ._export import CARD_FILE, CONFIG_FILE, EXPORT_FILES, REPO_ID_PLACEHOLDER, WEIGHTS_FILE
from .model_cards import validate_card_metadata

_logger = logging.getLogger(__name__)

__all__ = ['PushError', 'PushResult', 'push_to_hub']

DEFAULT_COMMIT_MESSAGE = 'Upload model exported by timm-shakedrop'


class PushError(RuntimeError):
    """A push failed: no token, a rejected token, a missing repository, a server error or no connection."""


@dataclasses.dataclass
class PushResult:
    """Repository, revision and commit of one push by `push_to_hub`."""
    repo_id: str
    repo_url: str
    revision: str
    commit_url: str
    commit_oid: str
    pr_url: str | None
    files: dict[str, int]  # file name -> size in bytes


def _one_line(text: str, token: str | None) -> str:
    text = ' '.join(str(text).split())
    return text.replace(token, '***') if token else text


def _check_folder(folder: Path, token: str) -> dict[str, int]:
    """Check the exported folder without any request and return its file sizes."""
    if not folder.is_dir():
        raise ValueError(f'{folder} is not a folder; export a checkpoint with `timm-shakedrop export` first.')
    present = {p.relative_to(folder).as_posix() for p in folder.rglob('*') if p.is_file()}
    missing = sorted(set(EXPORT_FILES) - present)
    unexpected = sorted(present - set(EXPORT_FILES))
    if missing or unexpected:
        raise ValueError(
            f'{folder} must contain exactly {", ".join(EXPORT_FILES)} as written by `timm-shakedrop export`; '
            f'missing: {missing or "none"}, unexpected: {unexpected or "none"}.')

    card = ModelCard.load(folder / CARD_FILE)
    for warning in validate_card_metadata(card, str(folder / CARD_FILE)):
        _logger.warning(warning)
    try:
        config = json.loads((folder / CONFIG_FILE).read_text(encoding='utf-8'))
    except json.JSONDecodeError as error:
        raise ValueError(f'{folder / CONFIG_FILE} is not valid JSON: {error}.') from None
    if not isinstance(config, dict) or not config.get('architecture') or 'pretrained_cfg' not in config:
        raise ValueError(f'{folder / CONFIG_FILE} is not a timm Hub config (no architecture or pretrained_cfg).')
    import safetensors

    try:
        with safetensors.safe_open(str(folder / WEIGHTS_FILE), framework='pt') as weights:
            if not list(weights.keys()):
                raise ValueError(f'{folder / WEIGHTS_FILE} contains no tensors.')
    except safetensors.SafetensorError as error:
        raise ValueError(f'{folder / WEIGHTS_FILE} is not a readable safetensors file: {error}.') from None

    sizes = {}
    for name in EXPORT_FILES:
        data = (folder / name).read_bytes()
        if token.encode() in data:
            raise ValueError(f'{folder / name} contains the Hugging Face access token; it will not be uploaded.')
        sizes[name] = len(data)
        _logger.info(f'{name}: {len(data):,} bytes')
    return sizes


def _stage(folder: Path, staging: Path, repo_id: str) -> None:
    """Copy the export into `staging`, with the repository id filled into the card's usage snippet."""
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        shutil.copy2(folder / name, staging / name)
    card = (folder / CARD_FILE).read_text(encoding='utf-8')
    (staging / CARD_FILE).write_text(card.replace(REPO_ID_PLACEHOLDER, repo_id), encoding='utf-8')


def _network_errors() -> tuple[type, ...]:
    """Return the connection and timeout errors of the HTTP clients that huggingface_hub versions use.

    huggingface_hub 2.4 sends its requests with httpx2, whose errors do not derive from OSError; the other
    clients are listed for other huggingface_hub versions.
    """
    found = []
    for module_name, names in (('httpx2', ('NetworkError', 'TimeoutException')),
                               ('httpx', ('NetworkError', 'TimeoutException')),
                               ('requests', ('ConnectionError', 'Timeout'))):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        found.extend(getattr(module, name) for name in names if isinstance(getattr(module, name, None), type))
    return tuple(found)


def _describe_error(error: BaseException, step: str, endpoint: str, repo_id: str) -> str:
    """Turn an exception of huggingface_hub or its HTTP client into one sentence that names the next step."""
    if isinstance(error, OfflineModeIsEnabled):
        return f'{step} failed: offline mode is on (HF_HUB_OFFLINE=1); unset HF_HUB_OFFLINE to push.'
    if isinstance(error, RepositoryNotFoundError):
        return (f'{step} failed: repository {repo_id} was not found at {endpoint} or this token cannot see it '
                f'(HTTP {error.response.status_code}); check --repo-id and the token.')
    if isinstance(error, RevisionNotFoundError):
        return f'{step} failed: the revision does not exist in {repo_id} (HTTP {error.response.status_code}).'
    if isinstance(error, HfHubHTTPError):
        status = error.response.status_code
        server = error.server_message or error.response.reason_phrase
        if status == 401:
            return (f'{step} failed: {endpoint} rejected the access token (HTTP 401: {server}); pass a valid '
                    f'token with --token, HF_TOKEN or `hf auth login`.')
        if status == 403:
            return (f'{step} failed: the token may not write to {repo_id} (HTTP 403: {server}); use a token with '
                    f'write access to its namespace.')
        if status >= 500:
            return f'{step} failed: server error at {endpoint} (HTTP {status}: {server}); retry later.'
        return f'{step} failed: HTTP {status} from {endpoint}: {server}.'
    if isinstance(error, _network_errors()):
        return f'{step} failed: cannot connect to {endpoint} ({type(error).__name__}: {error}).'
    if isinstance(error, ValueError):
        return f'{step} failed: {error}'
    return f'{step} failed: {type(error).__name__}: {error}'


def push_to_hub(
        folder: str | Path,
        repo_id: str,
        *,
        private: bool = False,
        revision: str | None = None,
        create_pr: bool = False,
        commit_message: str | None = None,
        token: str | None = None,
        endpoint: str | None = None,
) -> PushResult:
    """Upload a folder written by `export_checkpoint` to a Hugging Face Hub model repository in one commit.

    The repository is created when missing (`private` sets its visibility; an existing public repository
    stays public, with a warning). A `revision` that is not a branch yet is created from main. With
    `create_pr`, the commit opens a pull request against main.

    Args:
        folder: The exported folder (model.safetensors, config.json, README.md).
        repo_id: `ORG/NAME` or `NAME` (in the token owner's namespace).
        private: Create the repository as private.
        revision: Branch to commit to; None is main.
        create_pr: Open a pull request instead of committing to main. Pull requests target main only, so
            another `revision` raises ValueError.
        commit_message: Commit summary; None uses a default.
        token: Access token; None takes HF_TOKEN or the stored login (`hf auth login`).
        endpoint: Hub URL; None takes HF_ENDPOINT or https://huggingface.co.

    Raises:
        ValueError: invalid arguments or folder contents, found before any request.
        PushError: no token, or a request failed; the message is one line and never contains the token.
    """
    folder = Path(folder).expanduser().resolve()
    if not repo_id or repo_id.count('/') > 1 or repo_id.startswith('/') or repo_id.endswith('/'):
        raise ValueError(f'`repo_id` must be ORG/NAME or NAME, got {repo_id!r}.')
    if create_pr and revision not in (None, constants.DEFAULT_REVISION):
        raise ValueError(f'Pull requests are opened against main only, so `create_pr` cannot be used with '
                         f'revision {revision!r}; push to the branch without create_pr, or drop the revision.')
    token = token or get_token()
    if not token:
        raise PushError('No Hugging Face access token: pass --token (token=...), set HF_TOKEN, or run '
                        '`hf auth login`.')
    sizes = _check_folder(folder, token)
    endpoint = (endpoint or constants.ENDPOINT).rstrip('/')

    from timm_shakedrop import __version__

    api = HfApi(endpoint=endpoint, token=token, library_name='timm-shakedrop', library_version=__version__)
    step = 'create_repo'
    try:
        repo_url = api.create_repo(repo_id, private=private or None, exist_ok=True)
        repo_id = repo_url.repo_id
        step = 'repo_info'
        info = api.repo_info(repo_id)
        if private and not info.private:
            warnings.warn(
                f'{repo_id} already exists and is public; --private does not change an existing repository. Make '
                f'it private in its settings or with HfApi().update_repo_settings({repo_id!r}, private=True).',
                UserWarning, stacklevel=2)
        target = revision or constants.DEFAULT_REVISION
        if target != constants.DEFAULT_REVISION:
            step = 'list_repo_refs'
            refs = api.list_repo_refs(repo_id)
            if target in {t.name for t in refs.tags}:
                raise PushError(f'Revision {target!r} of {repo_id} is a tag; push to a branch.')
            if target not in {b.name for b in refs.branches}:
                step = 'create_branch'
                api.create_branch(repo_id, branch=target, exist_ok=True)
                _logger.info(f'Created branch {target!r} of {repo_id} from main.')
        step = 'upload_folder'
        with tempfile.TemporaryDirectory(prefix='timm-shakedrop-push-') as staging:
            _stage(folder, Path(staging), repo_id)
            commit = api.upload_folder(
                repo_id=repo_id,
                folder_path=staging,
                revision=None if create_pr else target,
                create_pr=create_pr,
                commit_message=commit_message or DEFAULT_COMMIT_MESSAGE,
                allow_patterns=list(EXPORT_FILES),
            )
    except PushError:
        raise
    except Exception as error:
        if not isinstance(error, (HfHubHTTPError, OfflineModeIsEnabled, ValueError, OSError, *_network_errors())):
            raise
        raise PushError(_one_line(_describe_error(error, step, endpoint, repo_id), token)) from error

    result = PushResult(
        repo_id=repo_id,
        repo_url=str(repo_url),
        revision='main' if create_pr else target,
        commit_url=commit.commit_url,
        commit_oid=commit.oid,
        pr_url=commit.pr_url,
        files=sizes,
    )
    _logger.info(f'Pushed {folder} to {result.repo_url} ({result.revision}): {result.pr_url or result.commit_url}')
    return result
