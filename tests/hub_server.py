"""A Hugging Face Hub-compatible HTTP server for tests, and the pytest fixtures that start it.

The server implements the part of the Hub's HTTP API that huggingface_hub 2.4 calls for a model repository:
create it and its branches, read its info and refs, upload, commit (ndjson), open pull requests, validate
model-card metadata, and download. Uploads go through preupload and then either the Git LFS batch API with a signed
storage URL or "regular" base64 files inside the commit. Downloads are HEAD and GET on `resolve` with
X-Repo-Commit, ETag and Content-Length, and a 302 to the storage server for LFS files, like the Hub's CDN
redirect.

Two `ThreadingHTTPServer`s listen on ephemeral ports of 127.0.0.1: the API and a storage server that plays the
part of the Hub's object storage, so LFS uploads and downloads leave the API origin as they do on the Hub (the
client must then drop its token). Requests are validated strictly: the bearer token, the permission on the
namespace, the JSON shape of every body (unknown or missing fields are rejected), the ndjson commit lines, the
storage signatures, and the content of every upload against what its preupload and LFS batch calls declared.
Files live on disk under the directory given to the server; repository state (commits, refs, pull requests)
lives in memory.

Xet storage is not implemented: huggingface_hub uses it for every LFS file whenever `hf_xet` is installed and
not disabled, so a test either sets HF_HUB_DISABLE_XET=1 before huggingface_hub is imported (the LFS leg) or
runs the server with `upload_mode='regular'`. The Xet token routes answer 501 with a message that says so.
"""
import base64
import dataclasses
import hashlib
import hmac
import json
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import yaml

__all__ = [
    'HubServer',
    'RequestRecord',
    'WRITE_TOKEN',
    'READ_TOKEN',
    'hub_server',
    'hub_env',
    'one_torch_thread',
    'closed_port',
    'hub_subprocess_env',
]

# Tokens the fixtures register: a write token for user "alice" (member of "shakedrop-org") and a read token for
# user "bob". They look like Hub user access tokens so that leak checks search for a realistic string.
WRITE_TOKEN = 'hf_testWriteTokenAlice0123456789abcdef'
READ_TOKEN = 'hf_testReadTokenBob0123456789abcdefghij'

# Files above this size, or matching these patterns, are stored with LFS in `upload_mode='auto'`. The size is the
# Hub's limit for regular files and the patterns are a subset of the Hub's default .gitattributes.
_LFS_SIZE_THRESHOLD = 10 * 1024 * 1024
_LFS_PATTERNS = ('*.safetensors', '*.bin', '*.pt', '*.pth', '*.ckpt', '*.h5', '*.msgpack', '*.onnx', '*.tar')
_GITATTRIBUTES = ''.join(f'{pattern} filter=lfs diff=lfs merge=lfs -text\n' for pattern in _LFS_PATTERNS)

_LICENSES = ('apache-2.0', 'mit', 'bsd-3-clause', 'cc-by-4.0', 'cc-by-sa-4.0', 'cc-by-nc-4.0', 'openrail', 'other')
_PIPELINE_TAGS = ('image-classification', 'image-feature-extraction', 'object-detection', 'image-segmentation')
_REPO_NAME = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$')
_SHA256 = re.compile(r'^[0-9a-f]{64}$')
_COMMIT_OID = re.compile(r'^[0-9a-f]{40}$')
_SIGNATURE_LIFETIME_S = 3600


def _now_iso() -> str:
    return datetime.now(timezone.utc).strftime('%Y-%m-%dT%H:%M:%S.%f')[:-3] + 'Z'


def _git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b'blob %d\0' % len(data) + data).hexdigest()


def _lfs_pointer(sha256: str, size: int) -> bytes:
    return f'version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n'.encode()


def _matches_lfs_pattern(path: str) -> bool:
    name = path.rsplit('/', 1)[-1]
    return any(name.endswith(pattern[1:]) for pattern in _LFS_PATTERNS)


@dataclasses.dataclass
class _Entry:
    """A file in a commit's tree: regular content (stored by git blob oid) or an LFS object (by sha256)."""
    lfs: bool
    oid: str  # git blob oid of the content, or of the LFS pointer
    size: int
    sha256: str | None = None


@dataclasses.dataclass
class _Commit:
    oid: str
    parent: str | None
    summary: str
    description: str
    author: str
    date: str
    tree: dict[str, _Entry]


@dataclasses.dataclass
class _PullRequest:
    num: int
    title: str
    description: str
    author: str
    created_at: str
    status: str = 'open'


@dataclasses.dataclass
class _Repo:
    repo_id: str
    private: bool
    created_at: str
    commits: dict[str, _Commit] = dataclasses.field(default_factory=dict)
    branches: dict[str, str] = dataclasses.field(default_factory=dict)
    tags: dict[str, str] = dataclasses.field(default_factory=dict)
    pr_refs: dict[int, str] = dataclasses.field(default_factory=dict)
    pull_requests: dict[int, _PullRequest] = dataclasses.field(default_factory=dict)
    # (revision, path) -> (size, first 512 bytes) declared by the last preupload call
    declared: dict[tuple[str, str], tuple[int, bytes]] = dataclasses.field(default_factory=dict)

    @property
    def namespace(self) -> str:
        return self.repo_id.split('/')[0]


@dataclasses.dataclass
class _Token:
    user: str
    role: str  # 'write' or 'read'
    orgs: tuple[str, ...]


@dataclasses.dataclass
class RequestRecord:
    """One request as the server saw it. The token itself is never recorded, only whether one was sent."""
    server: str  # 'api' or 'storage'
    method: str
    path: str
    query: str
    status: int
    authorization: bool
    user: str | None


@dataclasses.dataclass
class _Fault:
    method: str
    path_pattern: re.Pattern
    status: int
    message: str
    code: str | None
    remaining: int | None


class HubError(Exception):
    """An HTTP error response: status, message (X-Error-Message and the JSON `error`), optional X-Error-Code."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}


class HubServer:
    """A Hub-compatible API server and its storage server, both on 127.0.0.1.

    Args:
        root: Directory for stored file contents (created if missing).
        upload_mode: Upload mode that preupload returns for non-empty files: 'auto' (LFS for large files and
            weight patterns, as the Hub does), 'lfs' (every file) or 'regular' (every file, the mode that a client
            with Xet installed can use against this server).
    """

    def __init__(self, root: Path, upload_mode: str = 'auto'):
        if upload_mode not in ('auto', 'lfs', 'regular'):
            raise ValueError(f"`upload_mode` must be 'auto', 'lfs' or 'regular', got {upload_mode!r}.")
        self.root = Path(root)
        self.upload_mode = upload_mode
        self.requests: list[RequestRecord] = []
        self._tokens: dict[str, _Token] = {}
        self._repos: dict[str, _Repo] = {}
        self._faults: list[_Fault] = []
        self._lock = threading.RLock()
        self._secret = os.urandom(32)
        self._commit_counter = 0
        self._servers: list[ThreadingHTTPServer] = []
        self._threads: list[threading.Thread] = []
        self.url = ''
        self.storage_url = ''
        (self.root / 'git').mkdir(parents=True, exist_ok=True)
        (self.root / 'lfs').mkdir(parents=True, exist_ok=True)

    # Lifecycle

    def start(self) -> 'HubServer':
        api = _HTTPServer(('127.0.0.1', 0), _ApiHandler, self, 'api')
        storage = _HTTPServer(('127.0.0.1', 0), _StorageHandler, self, 'storage')
        self._servers = [api, storage]
        self.url = f'http://127.0.0.1:{api.server_address[1]}'
        self.storage_url = f'http://127.0.0.1:{storage.server_address[1]}'
        for server in self._servers:
            thread = threading.Thread(target=server.serve_forever, kwargs=dict(poll_interval=0.05), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers, self._threads = [], []

    def __enter__(self) -> 'HubServer':
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # Set-up and inspection, for tests

    def add_token(self, token: str, user: str, role: str = 'write', orgs: tuple[str, ...] = ()) -> None:
        if role not in ('write', 'read'):
            raise ValueError(f"`role` must be 'write' or 'read', got {role!r}.")
        self._tokens[token] = _Token(user, role, tuple(orgs))

    def fail(self, method: str, path_pattern: str, status: int, message: str = 'Internal Error',
             code: str | None = None, times: int | None = None) -> None:
        """Fail API requests whose path matches `path_pattern` with `status` (`times` times, or always when None).

        `code` becomes the X-Error-Code header, e.g. 'RepoNotFound', which huggingface_hub maps to its errors.
        """
        self._faults.append(_Fault(method.upper(), re.compile(path_pattern), status, message, code, times))

    def create_repo(self, repo_id: str, private: bool = False) -> None:
        """Create a repository directly, with its initial commit, as if its owner had made it."""
        with self._lock:
            self._create_repo(repo_id, private, author=repo_id.split('/')[0])

    def repo_exists(self, repo_id: str) -> bool:
        return repo_id in self._repos

    def is_private(self, repo_id: str) -> bool:
        return self._repos[repo_id].private

    def branches(self, repo_id: str) -> dict[str, str]:
        return dict(self._repos[repo_id].branches)

    def pull_request_refs(self, repo_id: str) -> dict[int, str]:
        return dict(self._repos[repo_id].pr_refs)

    def commit_history(self, repo_id: str, revision: str = 'main') -> list[dict[str, Any]]:
        """Return the commits reachable from `revision`, newest first, as dicts of oid, summary and files."""
        repo = self._repos[repo_id]
        oid = self._resolve(repo, revision)
        history = []
        while oid is not None:
            commit = repo.commits[oid]
            history.append(dict(oid=commit.oid, summary=commit.summary, description=commit.description,
                                author=commit.author, files=sorted(commit.tree)))
            oid = commit.parent
        return history

    def file_entry(self, repo_id: str, path: str, revision: str = 'main') -> _Entry:
        repo = self._repos[repo_id]
        return repo.commits[self._resolve(repo, revision)].tree[path]

    def read_file(self, repo_id: str, path: str, revision: str = 'main') -> bytes:
        return self._read_entry(self.file_entry(repo_id, path, revision))

    def stored_contents(self) -> Iterator[tuple[str, bytes]]:
        """Yield every stored blob and LFS object, with commit messages and pull-request texts."""
        for folder in ('git', 'lfs'):
            for path in sorted((self.root / folder).iterdir()):
                yield f'{folder}/{path.name}', path.read_bytes()
        for repo in self._repos.values():
            for commit in repo.commits.values():
                yield f'commit/{commit.oid}', (commit.summary + '\n' + commit.description).encode()
            for pr in repo.pull_requests.values():
                yield f'pr/{pr.num}', (pr.title + '\n' + pr.description).encode()

    def api_requests(self, method: str | None = None, path_pattern: str | None = None) -> list[RequestRecord]:
        pattern = re.compile(path_pattern) if path_pattern else None
        return [
            r for r in self.requests
            if (method is None or r.method == method) and (pattern is None or pattern.search(r.path))
        ]

    # Storage

    def _store_regular(self, data: bytes) -> _Entry:
        oid = _git_blob_oid(data)
        path = self.root / 'git' / oid
        if not path.exists():
            path.write_bytes(data)
        return _Entry(lfs=False, oid=oid, size=len(data))

    def _lfs_path(self, sha256: str) -> Path:
        return self.root / 'lfs' / sha256

    def _read_entry(self, entry: _Entry) -> bytes:
        if entry.lfs:
            return self._lfs_path(entry.sha256).read_bytes()
        return (self.root / 'git' / entry.oid).read_bytes()

    def _sign(self, action: str, oid: str, size: int, expires: int) -> str:
        message = f'{action}:{oid}:{size}:{expires}'.encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def _signed_storage_url(self, action: str, oid: str, size: int) -> str:
        expires = int(time.time()) + _SIGNATURE_LIFETIME_S
        route = 'upload' if action == 'upload' else 'objects'
        signature = self._sign(action, oid, size, expires)
        return f'{self.storage_url}/{route}/{oid}?size={size}&expires={expires}&sig={signature}'

    def _check_signature(self, action: str, oid: str, query: dict[str, str]) -> int:
        try:
            size = int(query['size'])
            expires = int(query['expires'])
            signature = query['sig']
        except (KeyError, ValueError):
            raise HubError(403, 'Missing or malformed storage signature.') from None
        if expires < time.time():
            raise HubError(403, 'Storage signature expired.')
        if not hmac.compare_digest(signature, self._sign(action, oid, size, expires)):
            raise HubError(403, 'Invalid storage signature.')
        return size

    # Repositories and revisions

    def _next_commit_oid(self, seed: str) -> str:
        self._commit_counter += 1
        return hashlib.sha1(f'{seed}:{self._commit_counter}:{time.time_ns()}'.encode()).hexdigest()

    def _create_repo(self, repo_id: str, private: bool, author: str) -> _Repo:
        repo = _Repo(repo_id=repo_id, private=private, created_at=_now_iso())
        entry = self._store_regular(_GITATTRIBUTES.encode())
        oid = self._next_commit_oid(repo_id)
        repo.commits[oid] = _Commit(oid, None, 'initial commit', '', author, _now_iso(), {'.gitattributes': entry})
        repo.branches['main'] = oid
        self._repos[repo_id] = repo
        return repo

    def _resolve(self, repo: _Repo, revision: str) -> str:
        """Return the commit oid a revision (branch, tag, refs/heads/X, refs/pr/N or commit oid) points to."""
        if revision.startswith('refs/heads/'):
            revision = revision[len('refs/heads/'):]
        if revision in repo.branches:
            return repo.branches[revision]
        if revision in repo.tags:
            return repo.tags[revision]
        match = re.fullmatch(r'refs/pr/(\d+)', revision)
        if match and int(match.group(1)) in repo.pr_refs:
            return repo.pr_refs[int(match.group(1))]
        if _COMMIT_OID.fullmatch(revision) and revision in repo.commits:
            return revision
        raise HubError(404, f'Invalid rev id: {revision}', code='RevisionNotFound')

    def _upload_mode_for(self, path: str, size: int) -> str:
        if size == 0 or self.upload_mode == 'regular':
            return 'regular'
        if self.upload_mode == 'lfs':
            return 'lfs'
        return 'lfs' if size > _LFS_SIZE_THRESHOLD or _matches_lfs_pattern(path) else 'regular'


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, handler, hub: HubServer, name: str):
        super().__init__(address, handler)
        self.hub = hub
        self.name = name


class _BaseHandler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    server: _HTTPServer

    def log_message(self, format, *args):  # noqa: A002 - the base class names it so
        pass

    # Request reading

    def _read_body(self) -> bytes:
        if self.headers.get('Transfer-Encoding', '').lower() == 'chunked':
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b';')[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b'\r\n', b'\n', b''):
                        pass
                    return b''.join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get('Content-Length') or 0)
        return self.rfile.read(length) if length else b''

    def _handle(self) -> None:
        split = urlsplit(self.path)
        self._query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        self._segments = [unquote(s) for s in split.path.split('/')[1:]]
        self._user: str | None = None
        body = self._read_body()
        self._recorded = False
        try:
            self._dispatch(split.path, body)
        except HubError as error:
            self._send_error(error)
        except Exception as error:  # a bug in the server must reach the test as a 500, not a hang
            self._send_error(HubError(500, f'Test server error: {type(error).__name__}: {error}'))

    def _record(self, status: int) -> None:
        # Recorded before the response goes out, so a client that has its answer always finds the request logged.
        if self._recorded:
            return
        self._recorded = True
        hub = self.server.hub
        with hub._lock:
            hub.requests.append(RequestRecord(
                server=self.server.name,
                method=self.command,
                path=urlsplit(self.path).path,
                query=urlsplit(self.path).query,
                status=status,
                authorization='Authorization' in self.headers,
                user=self._user,
            ))

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _handle

    # Responses

    def _send(self, status: int, body: bytes = b'', headers: dict | None = None,
              content_type: str = 'application/json') -> int:
        self._record(status)
        self.send_response(status)
        self.send_header('Content-Type', content_type)
        self.send_header('Content-Length', str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != 'HEAD' and body:
            self.wfile.write(body)
        return status

    def _send_json(self, status: int, payload: Any, headers: dict | None = None) -> int:
        return self._send(status, json.dumps(payload).encode(), headers)

    def _send_error(self, error: HubError) -> int:
        headers = {'X-Error-Message': error.message, **error.headers}
        if error.code:
            headers['X-Error-Code'] = error.code
        return self._send_json(error.status, {'error': error.message}, headers)

    def _dispatch(self, path: str, body: bytes) -> int:
        raise NotImplementedError


def _expect_object(payload: Any, required: dict[str, tuple], optional: dict[str, tuple], where: str) -> dict:
    """Check that `payload` is a JSON object with exactly the `required` keys plus some `optional` ones."""
    if not isinstance(payload, dict):
        raise HubError(400, f'{where}: expected a JSON object, got {type(payload).__name__}.')
    unknown = set(payload) - set(required) - set(optional)
    if unknown:
        raise HubError(400, f'{where}: unexpected field(s) {sorted(unknown)}.')
    for key, types in required.items():
        if key not in payload:
            raise HubError(400, f'{where}: missing field {key!r}.')
        if not isinstance(payload[key], types):
            raise HubError(400, f'{where}: field {key!r} has type {type(payload[key]).__name__}.')
    for key, types in optional.items():
        if key in payload and not isinstance(payload[key], types):
            raise HubError(400, f'{where}: field {key!r} has type {type(payload[key]).__name__}.')
    return payload


def _check_repo_path(path: str) -> None:
    parts = path.split('/')
    if not path or path.startswith('/') or '\\' in path or any(p in ('', '.', '..') for p in parts):
        raise HubError(400, f'Invalid path in repository: {path!r}.')
    if parts[0] == '.git':
        raise HubError(400, f'Path {path!r} is inside the reserved .git folder.')


class _ApiHandler(_BaseHandler):
    """The Hub API: /api/... routes, the Git LFS batch API and /resolve downloads."""

    # Authentication and access

    def _auth(self) -> _Token | None:
        header = self.headers.get('Authorization')
        if header is None:
            return None
        scheme, _, token = header.partition(' ')
        info = self.server.hub._tokens.get(token) if scheme == 'Bearer' else None
        if info is None:
            raise HubError(401, 'Invalid credentials in Authorization header')
        self._user = info.user
        return info

    def _require_token(self) -> _Token:
        token = self._auth()
        if token is None:
            raise HubError(401, 'You must be authenticated to access this endpoint.')
        return token

    @staticmethod
    def _can_write_namespace(token: _Token | None, namespace: str) -> bool:
        return token is not None and token.role == 'write' and namespace in (token.user, *token.orgs)

    def _visible_repo(self, repo_id: str, token: _Token | None) -> _Repo:
        repo = self.server.hub._repos.get(repo_id)
        member = token is not None and repo is not None and repo.namespace in (token.user, *token.orgs)
        if repo is None or (repo.private and not member):
            status = 404 if token is not None else 401
            raise HubError(status, 'Repository not found', code='RepoNotFound')
        return repo

    def _writable_repo(self, repo_id: str, token: _Token) -> _Repo:
        repo = self._visible_repo(repo_id, token)
        if not self._can_write_namespace(token, repo.namespace):
            raise HubError(403, f'You do not have write access to {repo_id}.')
        return repo

    def _json_body(self, body: bytes, content_types: tuple[str, ...] = ('application/json',)) -> Any:
        content_type = self.headers.get('Content-Type', '').split(';')[0].strip()
        if content_type not in content_types:
            raise HubError(400, f'Expected Content-Type {" or ".join(content_types)}, got {content_type!r}.')
        try:
            return json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise HubError(400, f'Request body is not valid JSON: {error}.') from None

    # Routing

    def _dispatch(self, path: str, body: bytes) -> int:
        hub = self.server.hub
        for fault in list(hub._faults):
            if fault.method == self.command and fault.path_pattern.search(path):
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        hub._faults.remove(fault)
                raise HubError(fault.status, fault.message, code=fault.code)
        seg = self._segments
        method = self.command
        with hub._lock:
            if seg[:1] == ['api']:
                return self._dispatch_api(method, seg[1:], body)
            if len(seg) >= 5 and seg[2] == 'resolve' and method in ('GET', 'HEAD'):
                return self._resolve_file(f'{seg[0]}/{seg[1]}', seg[3], '/'.join(seg[4:]))
            if len(seg) == 6 and seg[1].endswith('.git') and seg[2:5] == ['info', 'lfs', 'objects']:
                repo_id = f'{seg[0]}/{seg[1][:-len(".git")]}'
                if method == 'POST' and seg[5] == 'batch':
                    return self._lfs_batch(repo_id, body)
                if method == 'POST' and seg[5] == 'verify':
                    return self._lfs_verify(repo_id, body)
        raise HubError(404, f'The test server does not implement {method} {path}.')

    def _dispatch_api(self, method: str, seg: list[str], body: bytes) -> int:
        if seg == ['repos', 'create'] and method == 'POST':
            return self._create_repo(body)
        if seg == ['whoami-v2'] and method == 'GET':
            return self._whoami()
        if seg == ['agent-harnesses'] and method == 'GET':
            # huggingface_hub fetches this registry for its user agent unless telemetry is disabled.
            return self._send_json(200, {'standardEnvVars': [], 'harnesses': {}})
        if seg == ['validate-yaml'] and method == 'POST':
            return self._validate_yaml(body)
        if len(seg) >= 3 and seg[0] in ('datasets', 'spaces', 'kernels'):
            raise HubError(400, 'The test server serves model repositories only.')
        if len(seg) < 3 or seg[0] != 'models':
            raise HubError(404, f'The test server does not implement {method} /api/{"/".join(seg)}.')
        repo_id, rest = f'{seg[1]}/{seg[2]}', seg[3:]
        if not rest and method == 'GET':
            return self._repo_info(repo_id, None)
        if len(rest) == 2 and rest[0] == 'revision' and method == 'GET':
            return self._repo_info(repo_id, rest[1])
        if rest == ['refs'] and method == 'GET':
            return self._refs(repo_id)
        if len(rest) == 2 and rest[0] == 'branch' and method == 'POST':
            return self._create_branch(repo_id, rest[1], body)
        if len(rest) == 2 and rest[0] == 'preupload' and method == 'POST':
            return self._preupload(repo_id, rest[1], body)
        if len(rest) == 2 and rest[0] == 'commit' and method == 'POST':
            return self._commit(repo_id, rest[1], body)
        if rest == ['discussions'] and method == 'POST':
            return self._create_discussion(repo_id, body)
        if len(rest) == 2 and rest[0] == 'discussions' and method == 'GET':
            return self._discussion_details(repo_id, rest[1])
        if len(rest) == 2 and rest[0] in ('xet-write-token', 'xet-read-token'):
            raise HubError(501, 'Xet storage is not implemented by this test server: set HF_HUB_DISABLE_XET=1 '
                                'before importing huggingface_hub, or start the server with upload_mode="regular".')
        raise HubError(404, f'The test server does not implement {method} /api/{"/".join(seg)}.')

    # Account and metadata

    def _whoami(self) -> int:
        token = self._require_token()
        orgs = [{'name': org, 'type': 'org'} for org in token.orgs]
        return self._send_json(200, {
            'type': 'user', 'name': token.user, 'orgs': orgs,
            'auth': {'type': 'access_token', 'accessToken': {'displayName': 'test', 'role': token.role}},
        })

    def _validate_yaml(self, body: bytes) -> int:
        payload = _expect_object(self._json_body(body), {'content': (str,), 'repoType': (str,)}, {}, 'validate-yaml')
        if payload['repoType'] != 'model':
            return self._send_json(400, {'errors': [{'message': 'Only model cards are validated here.'}]})
        content = payload['content']
        if not content.startswith('---\n'):
            return self._send_json(200, {'warnings': [{'message': 'Empty or missing yaml metadata in repo card'}]})
        end = content.find('\n---', 4)
        if end < 0:
            return self._send_json(400, {'errors': [{'message': 'Metadata block is not closed by ---.'}]})
        try:
            metadata = yaml.safe_load(content[4:end]) or {}
        except yaml.YAMLError as error:
            return self._send_json(400, {'errors': [{'message': f'Invalid YAML: {error}'}]})
        errors = []
        if not isinstance(metadata, dict):
            errors.append('"metadata" must be an object')
            metadata = {}
        if 'license' in metadata and metadata['license'] not in _LICENSES:
            errors.append(f'"license" must be one of {list(_LICENSES)}')
        if 'pipeline_tag' in metadata and metadata['pipeline_tag'] not in _PIPELINE_TAGS:
            errors.append(f'"pipeline_tag" must be one of {list(_PIPELINE_TAGS)}')
        if 'library_name' in metadata and not isinstance(metadata['library_name'], str):
            errors.append('"library_name" must be a string')
        for key in ('tags', 'datasets'):
            value = metadata.get(key, [])
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                errors.append(f'"{key}" must be an array of strings')
        if errors:
            return self._send_json(400, {'errors': [{'message': e} for e in errors]})
        return self._send_json(200, {'warnings': []})

    def _create_repo(self, body: bytes) -> int:
        token = self._require_token()
        payload = _expect_object(
            self._json_body(body),
            required={'name': (str,), 'organization': (str, type(None))},
            optional={'visibility': (str,), 'type': (str,), 'private': (bool,)},
            where='repos/create',
        )
        if payload.get('type', 'model') != 'model':
            raise HubError(400, 'The test server creates model repositories only.')
        visibility = payload.get('visibility', 'public')
        if visibility not in ('public', 'private'):
            raise HubError(400, f'Invalid visibility {visibility!r}.')
        if not _REPO_NAME.match(payload['name']) or '--' in payload['name']:
            raise HubError(400, f'Invalid repository name {payload["name"]!r}.')
        namespace = payload['organization'] or token.user
        repo_id = f'{namespace}/{payload["name"]}'
        url = f'{self.server.hub.url}/{repo_id}'
        if not self._can_write_namespace(token, namespace):
            raise HubError(403, f'You do not have the rights to create a model under the namespace "{namespace}".')
        if repo_id in self.server.hub._repos:
            return self._send_json(409, {'error': 'You already created this model repo', 'url': url},
                                   {'X-Error-Message': 'You already created this model repo'})
        self.server.hub._create_repo(repo_id, visibility == 'private', author=token.user)
        return self._send_json(200, {'url': url, 'name': repo_id, 'id': hashlib.md5(repo_id.encode()).hexdigest()})

    def _repo_info(self, repo_id: str, revision: str | None) -> int:
        token = self._auth()
        repo = self._visible_repo(repo_id, token)
        oid = self.server.hub._resolve(repo, revision or 'main')
        commit = repo.commits[oid]
        with_blobs = self._query.get('blobs') in ('True', 'true', '1')
        siblings = []
        for path, entry in sorted(commit.tree.items()):
            sibling = {'rfilename': path}
            if with_blobs:
                sibling.update(size=entry.size, blobId=entry.oid)
                if entry.lfs:
                    sibling['lfs'] = {'sha256': entry.sha256, 'size': entry.size, 'pointerSize': 130}
            siblings.append(sibling)
        info = {
            'id': repo_id, 'modelId': repo_id, 'author': repo.namespace, 'sha': oid, 'private': repo.private,
            'gated': False, 'disabled': False, 'downloads': 0, 'likes': 0, 'tags': [],
            'createdAt': repo.created_at, 'lastModified': commit.date, 'siblings': siblings,
        }
        card = commit.tree.get('README.md')
        if card is not None:
            text = self.server.hub._read_entry(card).decode()
            if text.startswith('---\n') and '\n---' in text[4:]:
                card_data = yaml.safe_load(text[4:text.index('\n---', 4)]) or {}
                info['cardData'] = card_data
                info['tags'] = list(card_data.get('tags', []))
                for key in ('library_name', 'pipeline_tag'):
                    if key in card_data:
                        info[key] = card_data[key]
        return self._send_json(200, info)

    def _refs(self, repo_id: str) -> int:
        repo = self._visible_repo(repo_id, self._auth())
        refs = {
            'branches': [dict(name=n, ref=f'refs/heads/{n}', targetCommit=c) for n, c in sorted(repo.branches.items())],
            'converts': [],
            'tags': [dict(name=n, ref=f'refs/tags/{n}', targetCommit=c) for n, c in sorted(repo.tags.items())],
        }
        if self._query.get('include_prs') == '1':
            refs['pullRequests'] = [
                dict(name=f'refs/pr/{n}', ref=f'refs/pr/{n}', targetCommit=c) for n, c in sorted(repo.pr_refs.items())
            ]
        return self._send_json(200, refs)

    def _create_branch(self, repo_id: str, branch: str, body: bytes) -> int:
        token = self._require_token()
        repo = self._writable_repo(repo_id, token)
        payload = _expect_object(self._json_body(body), {}, {'startingPoint': (str,)}, 'branch')
        if not re.fullmatch(r'[A-Za-z0-9][A-Za-z0-9._/-]*', branch) or branch.startswith('refs/'):
            raise HubError(400, f'Invalid branch name {branch!r}.')
        if branch in repo.branches or branch in repo.tags:
            raise HubError(409, 'Reference already exists')
        start = self.server.hub._resolve(repo, payload.get('startingPoint', 'main'))
        repo.branches[branch] = start
        return self._send_json(200, {})

    # Upload

    def _preupload(self, repo_id: str, revision: str, body: bytes) -> int:
        token = self._require_token()
        create_pr = self._query.get('create_pr') == '1'
        repo = self._visible_repo(repo_id, token) if create_pr else self._writable_repo(repo_id, token)
        head = self.server.hub._resolve(repo, revision)
        payload = _expect_object(self._json_body(body), {'files': (list,)}, {'gitIgnore': (str,)}, 'preupload')
        answers = []
        for item in payload['files']:
            _expect_object(item, {'path': (str,), 'sample': (str,), 'size': (int,)}, {}, 'preupload file')
            _check_repo_path(item['path'])
            try:
                sample = base64.b64decode(item['sample'], validate=True)
            except ValueError:
                raise HubError(400, f'preupload file {item["path"]!r}: sample is not base64.') from None
            if len(sample) > 512 or len(sample) != min(item['size'], 512):
                raise HubError(400, f'preupload file {item["path"]!r}: sample must be the first 512 bytes.')
            mode = self.server.hub._upload_mode_for(item['path'], item['size'])
            repo.declared[(revision, item['path'])] = (item['size'], sample)
            answer = {'path': item['path'], 'uploadMode': mode, 'shouldIgnore': False}
            existing = repo.commits[head].tree.get(item['path'])
            if existing is not None:
                answer['oid'] = existing.sha256 if existing.lfs else existing.oid
            answers.append(answer)
        return self._send_json(200, {'files': answers, 'commitOid': head})

    def _lfs_batch(self, repo_id: str, body: bytes) -> int:
        token = self._require_token()
        if self.headers.get('Accept') != 'application/vnd.git-lfs+json':
            raise HubError(406, 'The LFS batch API requires Accept: application/vnd.git-lfs+json.')
        self._visible_repo(repo_id, token)
        payload = _expect_object(
            self._json_body(body, ('application/vnd.git-lfs+json', 'application/json')),
            required={'operation': (str,), 'transfers': (list,), 'objects': (list,), 'hash_algo': (str,)},
            optional={'ref': (dict,)},
            where='lfs batch',
        )
        if payload['operation'] != 'upload' or payload['hash_algo'] != 'sha256':
            raise HubError(400, 'Only sha256 uploads are supported.')
        if 'basic' not in payload['transfers']:
            raise HubError(400, 'The test server offers the "basic" transfer only.')
        objects = []
        for item in payload['objects']:
            _expect_object(item, {'oid': (str,), 'size': (int,)}, {}, 'lfs object')
            if not _SHA256.match(item['oid']):
                raise HubError(400, f'Invalid sha256 oid {item["oid"]!r}.')
            answer = {'oid': item['oid'], 'size': item['size'], 'authenticated': True}
            if not self.server.hub._lfs_path(item['oid']).exists():
                answer['actions'] = {
                    'upload': {'href': self.server.hub._signed_storage_url('upload', item['oid'], item['size'])},
                    'verify': {'href': f'{self.server.hub.url}/{repo_id}.git/info/lfs/objects/verify'},
                }
            objects.append(answer)
        return self._send_json(200, {'transfer': 'basic', 'objects': objects},
                               {'Content-Type': 'application/vnd.git-lfs+json'})

    def _lfs_verify(self, repo_id: str, body: bytes) -> int:
        token = self._require_token()
        self._visible_repo(repo_id, token)
        payload = _expect_object(self._json_body(body, ('application/vnd.git-lfs+json', 'application/json')),
                                 {'oid': (str,), 'size': (int,)}, {}, 'lfs verify')
        path = self.server.hub._lfs_path(payload['oid'])
        if not path.exists() or path.stat().st_size != payload['size']:
            raise HubError(404, f'LFS object {payload["oid"]} with size {payload["size"]} was not uploaded.')
        return self._send_json(200, {})

    def _parse_commit(self, body: bytes) -> tuple[dict, list[dict]]:
        content_type = self.headers.get('Content-Type', '').split(';')[0].strip()
        if content_type != 'application/x-ndjson':
            raise HubError(400, f'A commit must be sent as application/x-ndjson, got {content_type!r}.')
        try:
            lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise HubError(400, f'Commit body is not valid ndjson: {error}.') from None
        if not lines:
            raise HubError(400, 'Empty commit payload.')
        keys = {'key': (str,), 'value': (dict,)}
        header = _expect_object(lines[0], keys, {}, 'commit line 1')
        if header['key'] != 'header':
            raise HubError(400, 'The first commit line must be the header.')
        value = _expect_object(header['value'], {'summary': (str,), 'description': (str,)},
                               {'parentCommit': (str,)}, 'commit header')
        if not value['summary'].strip():
            raise HubError(400, 'The commit summary is empty.')
        operations = []
        for number, line in enumerate(lines[1:], start=2):
            item = _expect_object(line, keys, {}, f'commit line {number}')
            where = f'commit line {number} ({item["key"]})'
            if item['key'] == 'file':
                _expect_object(item['value'], {'content': (str,), 'path': (str,), 'encoding': (str,)}, {}, where)
                if item['value']['encoding'] != 'base64':
                    raise HubError(400, f'{where}: only base64 encoding is supported.')
            elif item['key'] == 'lfsFile':
                _expect_object(item['value'], {'path': (str,), 'algo': (str,), 'oid': (str,)}, {'size': (int,)},
                               where)
                if item['value']['algo'] != 'sha256' or not _SHA256.match(item['value']['oid']):
                    raise HubError(400, f'{where}: expected a sha256 oid.')
            elif item['key'] in ('deletedFile', 'deletedFolder'):
                _expect_object(item['value'], {'path': (str,)}, {}, where)
            else:
                raise HubError(400, f'{where}: unknown operation.')
            _check_repo_path(item['value']['path'].rstrip('/') if item['key'] == 'deletedFolder'
                             else item['value']['path'])
            operations.append(item)
        if not operations:
            raise HubError(400, 'The commit has no operations.')
        return value, operations

    def _commit(self, repo_id: str, revision: str, body: bytes) -> int:
        hub = self.server.hub
        token = self._require_token()
        create_pr = self._query.get('create_pr') == '1'
        pr_match = re.fullmatch(r'refs/pr/(\d+)', revision)
        repo = self._visible_repo(repo_id, token)
        if not (create_pr or pr_match):
            repo = self._writable_repo(repo_id, token)
        header, operations = self._parse_commit(body)
        if create_pr and revision not in ('main', 'refs/heads/main'):
            raise HubError(400, 'Pull requests can only be opened against main.')
        base = hub._resolve(repo, revision)
        if 'parentCommit' in header and header['parentCommit'] != base:
            raise HubError(412, f'Parent commit {header["parentCommit"]} is not the head of {revision}.')

        # Build the new tree first, so that a rejected operation leaves the repository as it was.
        tree = dict(repo.commits[base].tree)
        for item in operations:
            value = item['value']
            path = value['path']
            if item['key'] == 'file':
                data = base64.b64decode(value['content'])
                self._check_declared(repo, revision, path, data)
                if hub.upload_mode != 'regular' and hub._upload_mode_for(path, len(data)) == 'lfs':
                    raise HubError(400, f'{path} must be uploaded with LFS (preupload answered "lfs").')
                tree[path] = hub._store_regular(data)
            elif item['key'] == 'lfsFile':
                lfs_path = hub._lfs_path(value['oid'])
                if not lfs_path.exists():
                    raise HubError(400, f'{path}: LFS object {value["oid"]} was not uploaded.')
                size = lfs_path.stat().st_size
                if 'size' in value and value['size'] != size:
                    raise HubError(400, f'{path}: size {value["size"]} does not match the uploaded object.')
                declared = repo.declared.get((revision, path))
                if declared is not None and declared[0] != size:
                    raise HubError(400, f'{path}: size {size} differs from the preupload declaration.')
                tree[path] = _Entry(lfs=True, oid=_git_blob_oid(_lfs_pointer(value['oid'], size)), size=size,
                                    sha256=value['oid'])
            elif item['key'] == 'deletedFile':
                if path not in tree:
                    raise HubError(404, f"A file with this name doesn't exist: {path}", code='EntryNotFound')
                del tree[path]
            else:
                prefix = path.rstrip('/') + '/'
                for existing in [p for p in tree if p.startswith(prefix)]:
                    del tree[existing]

        pr_num = None
        if create_pr:
            pr_num = self._open_pull_request(repo, token, header['summary'], header['description'])
            revision = f'refs/pr/{pr_num}'
        oid = hub._next_commit_oid(repo_id)
        repo.commits[oid] = _Commit(oid, base, header['summary'], header['description'], token.user, _now_iso(),
                                    tree)
        if revision.startswith('refs/heads/'):
            revision = revision[len('refs/heads/'):]
        match = re.fullmatch(r'refs/pr/(\d+)', revision)
        if match:
            repo.pr_refs[int(match.group(1))] = oid
        elif revision in repo.branches:
            repo.branches[revision] = oid
        else:
            raise HubError(400, f'Cannot commit to {revision}: it is not a branch or a pull request.')
        response = {'success': True, 'commitOid': oid, 'commitUrl': f'{hub.url}/{repo_id}/commit/{oid}',
                    'hookOutput': ''}
        if pr_num is not None:
            response['pullRequestUrl'] = f'{hub.url}/{repo_id}/discussions/{pr_num}'
        return self._send_json(200, response)

    @staticmethod
    def _check_declared(repo: _Repo, revision: str, path: str, data: bytes) -> None:
        declared = repo.declared.get((revision, path))
        if declared is None:
            return
        size, sample = declared
        if size != len(data) or data[:512] != sample:
            raise HubError(400, f'{path}: content differs from the preupload declaration.')

    # Pull requests

    def _open_pull_request(self, repo: _Repo, token: _Token, title: str, description: str) -> int:
        num = max([0, *repo.pull_requests, *repo.pr_refs]) + 1
        repo.pull_requests[num] = _PullRequest(num, title, description, token.user, _now_iso())
        repo.pr_refs[num] = repo.branches['main']
        return num

    def _create_discussion(self, repo_id: str, body: bytes) -> int:
        token = self._require_token()
        repo = self._visible_repo(repo_id, token)
        payload = _expect_object(
            self._json_body(body),
            {'title': (str,), 'description': (str,), 'pullRequest': (bool,)}, {}, 'discussions',
        )
        if not payload['pullRequest']:
            raise HubError(400, 'The test server opens pull requests only, not discussions.')
        if not payload['title'].strip():
            raise HubError(400, 'The pull request title is empty.')
        num = self._open_pull_request(repo, token, payload['title'], payload['description'])
        return self._send_json(200, {'num': num, 'pullRequest': True,
                                     'url': f'{self.server.hub.url}/{repo_id}/discussions/{num}'})

    def _discussion_details(self, repo_id: str, num_text: str) -> int:
        repo = self._visible_repo(repo_id, self._auth())
        if not num_text.isdigit() or int(num_text) not in repo.pull_requests:
            raise HubError(404, f'Discussion {num_text} not found.')
        pr = repo.pull_requests[int(num_text)]
        event = {
            'id': hashlib.md5(f'{repo_id}:{pr.num}'.encode()).hexdigest()[:24], 'type': 'comment',
            'createdAt': pr.created_at, 'author': {'name': pr.author},
            'data': {'edited': False, 'hidden': False, 'latest': {'raw': pr.description}},
        }
        return self._send_json(200, {
            'num': pr.num, 'title': pr.title, 'status': pr.status, 'isPullRequest': True,
            'createdAt': pr.created_at, 'author': {'name': pr.author},
            'repo': {'name': repo_id, 'type': 'model'}, 'events': [event],
            'changes': {'base': 'refs/heads/main'}, 'filesWithConflicts': [], 'diff': '',
        })

    # Download

    def _resolve_file(self, repo_id: str, revision: str, path: str) -> int:
        hub = self.server.hub
        repo = self._visible_repo(repo_id, self._auth())
        oid = hub._resolve(repo, revision)
        entry = repo.commits[oid].tree.get(path)
        if entry is None:
            raise HubError(404, 'Entry not found', code='EntryNotFound', headers={'X-Repo-Commit': oid})
        if entry.lfs:
            location = hub._signed_storage_url('download', entry.sha256, entry.size)
            return self._send(302, b'', {
                'Location': location, 'X-Repo-Commit': oid, 'ETag': f'"{entry.oid}"',
                'X-Linked-Etag': f'"{entry.sha256}"', 'X-Linked-Size': str(entry.size),
            }, content_type='text/plain')
        data = hub._read_entry(entry)
        return self._send(200, data, {'X-Repo-Commit': oid, 'ETag': f'"{entry.oid}"', 'Accept-Ranges': 'bytes'},
                          content_type='application/octet-stream')


class _StorageHandler(_BaseHandler):
    """Object storage for LFS content, reached only through URLs that the API signed."""

    def _dispatch(self, path: str, body: bytes) -> int:
        hub = self.server.hub
        if 'Authorization' in self.headers:
            raise HubError(400, 'Requests to storage must not carry an Authorization header (the URL is signed).')
        seg = self._segments
        if len(seg) != 2 or not _SHA256.match(seg[1]):
            raise HubError(404, f'No such storage route: {path}.')
        oid = seg[1]
        if seg[0] == 'upload' and self.command == 'PUT':
            size = hub._check_signature('upload', oid, self._query)
            if len(body) != size or hashlib.sha256(body).hexdigest() != oid:
                raise HubError(400, f'Uploaded content does not match oid {oid} and size {size}.')
            target = hub._lfs_path(oid)
            tmp = target.with_name(target.name + f'.{threading.get_ident()}.tmp')
            tmp.write_bytes(body)
            os.replace(tmp, target)
            return self._send(200, b'', {'ETag': f'"{oid}"'}, content_type='text/plain')
        if seg[0] == 'objects' and self.command in ('GET', 'HEAD'):
            size = hub._check_signature('download', oid, self._query)
            data = hub._lfs_path(oid).read_bytes()
            if len(data) != size:
                raise HubError(500, f'Stored object {oid} has the wrong size.')
            match = re.fullmatch(r'bytes=(\d+)-', self.headers.get('Range', ''))
            if match:
                start = int(match.group(1))
                return self._send(206, data[start:], {'Content-Range': f'bytes {start}-{size - 1}/{size}'},
                                  content_type='application/octet-stream')
            return self._send(200, data, {'Accept-Ranges': 'bytes'}, content_type='application/octet-stream')
        raise HubError(405, f'{self.command} is not allowed on {path}.')


# Pytest fixtures and helpers


@pytest.fixture
def hub_server(tmp_path) -> Iterator[HubServer]:
    """A running HubServer with the write token of "alice" and the read token of "bob".

    It answers "regular" to every preupload, the mode an in-process client (with hf_xet installed) can use;
    set `upload_mode = 'auto'` for a client started with HF_HUB_DISABLE_XET=1.
    """
    server = HubServer(tmp_path / 'hub-server-data', upload_mode='regular')
    server.add_token(WRITE_TOKEN, user='alice', role='write', orgs=('shakedrop-org',))
    server.add_token(READ_TOKEN, user='bob', role='read')
    with server:
        yield server


@pytest.fixture
def one_torch_thread():
    """Run torch on one thread: on a loaded 2-core machine, thread contention makes small models far slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@dataclasses.dataclass
class HubEnv:
    """What `hub_env` set up: the server and the empty Hugging Face cache the process now uses."""
    server: HubServer
    cache_dir: Path


@pytest.fixture
def hub_env(hub_server, tmp_path, monkeypatch) -> HubEnv:
    """Point huggingface_hub in this process at `hub_server`, with an empty cache and no stored token.

    huggingface_hub reads HF_ENDPOINT and the cache and token paths when it is imported, so this patches the
    module constants that its functions read at call time.
    """
    from huggingface_hub import constants

    cache_dir = tmp_path / 'hf-cache'
    monkeypatch.setattr(constants, 'ENDPOINT', hub_server.url)
    monkeypatch.setattr(constants, 'HUGGINGFACE_CO_URL_TEMPLATE',
                        hub_server.url + '/{repo_id}/resolve/{revision}/{filename}')
    monkeypatch.setattr(constants, 'HF_HUB_CACHE', str(cache_dir))
    monkeypatch.setattr(constants, 'HF_TOKEN_PATH', str(tmp_path / 'hf-home' / 'token'))
    monkeypatch.setattr(constants, 'HF_STORED_TOKENS_PATH', str(tmp_path / 'hf-home' / 'stored_tokens'))
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', False)
    # With telemetry on, building request headers fetches an agent registry from the endpoint.
    monkeypatch.setattr(constants, 'HF_HUB_DISABLE_TELEMETRY', True)
    for name in ('HF_TOKEN', 'HUGGING_FACE_HUB_TOKEN', 'HF_OIDC_RESOURCE', 'HF_ENDPOINT'):
        monkeypatch.delenv(name, raising=False)
    return HubEnv(hub_server, cache_dir)


def closed_port() -> int:
    """Return a port on 127.0.0.1 that was just bound and closed, so connecting to it is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def hub_subprocess_env(server: HubServer, tmp_path: Path, token: str | None = None,
                       disable_xet: bool = True) -> dict[str, str]:
    """Return an environment for a fresh interpreter that talks to `server`, with its own empty cache."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(('HF_', 'HUGGING'))}
    env.update(
        HF_ENDPOINT=server.url,
        HF_HOME=str(tmp_path / 'subprocess-hf-home'),
        HF_HUB_CACHE=str(tmp_path / 'subprocess-hf-cache'),
        HF_HUB_DISABLE_TELEMETRY='1',
        HF_HUB_DISABLE_UPDATE_CHECK='1',
        HF_HUB_DISABLE_PROGRESS_BARS='1',
        NO_PROXY='127.0.0.1',
        no_proxy='127.0.0.1',
    )
    if disable_xet:
        env['HF_HUB_DISABLE_XET'] = '1'
    if token is not None:
        env['HF_TOKEN'] = token
    return env


# Training checkpoints for tests


@dataclasses.dataclass
class TimmRun:
    """A run folder written with timm's own CheckpointSaver and update_summary."""
    run_dir: Path
    checkpoint: Path
    model: Any  # the trained model, eval mode
    ema_model: Any  # the EMA copy, eval mode, or None


def make_timm_run(run_dir: Path, *, ema: bool = True, drop_path: float = 0.2, summary: str | None = 'timm',
                  seed: int = 0, **extra_args: Any) -> TimmRun:
    """Train `shakedrop_pyramidnet20_a48` for one SGD step and save it as timm's train.py would.

    Args:
        run_dir: Folder for the checkpoint, args.yaml and summary.csv.
        ema: Keep an EMA of the weights (saved as `state_dict_ema`).
        drop_path: ShakeDrop's drop_path_rate (1 - p_L).
        summary: 'timm' writes eval_* only (timm's train.py reports the EMA metrics there when it evaluates
            an EMA), 'ema_columns' adds eval_ema_* as this package's trainer does, None writes no summary.csv.
        seed: Seed of the weights and the training batch.
        **extra_args: Extra or replaced entries of the run's argparse.Namespace.
    """
    import argparse

    import timm
    import torch
    from timm.utils import CheckpointSaver, ModelEmaV3, update_summary

    run_dir.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = timm.create_model('shakedrop_pyramidnet20_a48', drop_path_rate=drop_path)
    ema_model = ModelEmaV3(model, decay=0.5) if ema else None
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    images = torch.randn(8, 3, 32, 32, generator=generator)
    targets = torch.randint(0, 10, (8,), generator=generator)
    loss = torch.nn.functional.cross_entropy(model(images), targets)
    loss.backward()
    optimizer.step()
    if ema_model is not None:
        ema_model.update(model)

    args = argparse.Namespace(
        model='shakedrop_pyramidnet20_a48', num_classes=None, drop_path=drop_path, model_ema=ema,
        model_ema_force_cpu=False, eval_metric='top1', dataset='torch/cifar10', data_dir='data',
        input_size=None, img_size=None, mean=None, std=None, crop_pct=None, interpolation='', gp=None,
        bn_momentum=None, bn_eps=None, model_kwargs={}, epochs=1,
    )
    for key, value in extra_args.items():
        setattr(args, key, value)
    (run_dir / 'args.yaml').write_text(yaml.safe_dump(vars(args), default_flow_style=False))
    metric = 31.25
    if summary is not None:
        eval_metrics = {'loss': 2.125, 'top1': metric, 'top5': 75.0}
        if summary == 'ema_columns':
            eval_metrics.update(ema_loss=2.0, ema_top1=37.5, ema_top5=81.25)
        update_summary(0, {'loss': loss.item()}, eval_metrics, str(run_dir / 'summary.csv'), lr=0.1,
                       write_header=True)
    saver = CheckpointSaver(model, optimizer, args=args, model_ema=ema_model, checkpoint_dir=str(run_dir),
                            recovery_dir=str(run_dir))
    saver.save_checkpoint(0, metric=metric)
    return TimmRun(run_dir, run_dir / 'model_best.pth.tar', model.eval(),
                   ema_model.module.eval() if ema_model is not None else None)
