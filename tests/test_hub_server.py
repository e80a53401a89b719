"""The test Hub server rejects malformed requests, so the push and load tests can trust what it accepted."""
import base64
import hashlib
import json
import urllib.error
import urllib.request

import hub_server as hub
import pytest

# Fixture of hub_server.py, bound here so that pytest finds it.
hub_server = hub.hub_server
AUTH = {'Authorization': f'Bearer {hub.WRITE_TOKEN}'}


def _request(method, url, body=None, headers=None):
    """Send one request with urllib and return (status, headers, body)."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    all_headers = dict(headers or {})
    if data is not None and 'Content-Type' not in all_headers:
        all_headers['Content-Type'] = 'application/json'
    request = urllib.request.Request(url, data=data, method=method, headers=all_headers)
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def _commit_body(*operations, summary='test commit'):
    lines = [{'key': 'header', 'value': {'summary': summary, 'description': ''}}, *operations]
    return b''.join(json.dumps(line).encode() + b'\n' for line in lines)


def _regular_file(path, data):
    return {'key': 'file', 'value': {'content': base64.b64encode(data).decode(), 'path': path,
                                     'encoding': 'base64'}}


def test_create_repo_needs_a_token(hub_server):
    status, headers, body = _request('POST', f'{hub_server.url}/api/repos/create',
                                     {'name': 'm', 'organization': None})
    assert status == 401
    assert json.loads(body)['error'] == 'You must be authenticated to access this endpoint.'


def test_unknown_token_is_rejected(hub_server):
    status, headers, _ = _request('POST', f'{hub_server.url}/api/repos/create', {'name': 'm', 'organization': None},
                                  {'Authorization': 'Bearer hf_unknown'})
    assert status == 401
    assert headers['X-Error-Message'] == 'Invalid credentials in Authorization header'


def test_create_repo_rejects_unknown_fields(hub_server):
    status, _, body = _request('POST', f'{hub_server.url}/api/repos/create',
                               {'name': 'm', 'organization': None, 'colour': 'red'}, AUTH)
    assert status == 400
    assert "unexpected field(s) ['colour']" in json.loads(body)['error']


def test_create_repo_in_foreign_namespace(hub_server):
    status, _, _ = _request('POST', f'{hub_server.url}/api/repos/create',
                            {'name': 'm', 'organization': 'someone-else'}, AUTH)
    assert status == 403


def test_commit_requires_ndjson(hub_server):
    hub_server.create_repo('alice/m')
    status, _, body = _request('POST', f'{hub_server.url}/api/models/alice/m/commit/main',
                               _commit_body(_regular_file('a.txt', b'a')), {**AUTH, 'Content-Type': 'text/plain'})
    assert status == 400
    assert 'application/x-ndjson' in json.loads(body)['error']


def test_commit_rejects_lfs_object_never_uploaded(hub_server):
    hub_server.create_repo('alice/m')
    oid = hashlib.sha256(b'weights').hexdigest()
    operation = {'key': 'lfsFile', 'value': {'path': 'model.safetensors', 'algo': 'sha256', 'oid': oid, 'size': 7}}
    status, _, body = _request('POST', f'{hub_server.url}/api/models/alice/m/commit/main', _commit_body(operation),
                               {**AUTH, 'Content-Type': 'application/x-ndjson'})
    assert status == 400
    assert 'was not uploaded' in json.loads(body)['error']
    assert [c['summary'] for c in hub_server.commit_history('alice/m')] == ['initial commit']


def test_commit_rejects_path_escape(hub_server):
    hub_server.create_repo('alice/m')
    status, _, _ = _request('POST', f'{hub_server.url}/api/models/alice/m/commit/main',
                            _commit_body(_regular_file('../evil', b'x')),
                            {**AUTH, 'Content-Type': 'application/x-ndjson'})
    assert status == 400


def test_commit_checks_parent(hub_server):
    hub_server.create_repo('alice/m')
    lines = [{'key': 'header', 'value': {'summary': 's', 'description': '', 'parentCommit': '0' * 40}},
             _regular_file('a.txt', b'a')]
    body = b''.join(json.dumps(line).encode() + b'\n' for line in lines)
    status, _, _ = _request('POST', f'{hub_server.url}/api/models/alice/m/commit/main', body,
                            {**AUTH, 'Content-Type': 'application/x-ndjson'})
    assert status == 412


def test_regular_commit_then_download(hub_server):
    hub_server.create_repo('alice/m')
    status, _, body = _request('POST', f'{hub_server.url}/api/models/alice/m/commit/main',
                               _commit_body(_regular_file('a.txt', b'hello')),
                               {**AUTH, 'Content-Type': 'application/x-ndjson'})
    assert status == 200
    commit_oid = json.loads(body)['commitOid']
    status, headers, body = _request('GET', f'{hub_server.url}/alice/m/resolve/main/a.txt')
    assert (status, body) == (200, b'hello')
    assert headers['X-Repo-Commit'] == commit_oid
    assert headers['ETag'] == f'"{hashlib.sha1(b"blob 5" + bytes([0]) + b"hello").hexdigest()}"'
    assert headers['Content-Length'] == '5'


def test_missing_file_has_entry_not_found_code(hub_server):
    hub_server.create_repo('alice/m')
    status, headers, _ = _request('HEAD', f'{hub_server.url}/alice/m/resolve/main/missing.bin')
    assert status == 404
    assert headers['X-Error-Code'] == 'EntryNotFound'
    assert headers['X-Repo-Commit'] == hub_server.branches('alice/m')['main']


def test_private_repo_is_hidden_from_anonymous(hub_server):
    hub_server.create_repo('alice/secret', private=True)
    status, headers, _ = _request('GET', f'{hub_server.url}/api/models/alice/secret')
    assert status == 401
    assert headers['X-Error-Code'] == 'RepoNotFound'
    status, _, _ = _request('GET', f'{hub_server.url}/api/models/alice/secret', headers=AUTH)
    assert status == 200


def test_lfs_upload_requires_valid_signature(hub_server):
    hub_server.create_repo('alice/m')
    data = b'0123456789' * 100
    oid = hashlib.sha256(data).hexdigest()
    batch = {'operation': 'upload', 'transfers': ['basic'], 'objects': [{'oid': oid, 'size': len(data)}],
             'hash_algo': 'sha256'}
    lfs_headers = {**AUTH, 'Accept': 'application/vnd.git-lfs+json', 'Content-Type': 'application/vnd.git-lfs+json'}
    status, _, body = _request('POST', f'{hub_server.url}/alice/m.git/info/lfs/objects/batch', batch, lfs_headers)
    assert status == 200
    href = json.loads(body)['objects'][0]['actions']['upload']['href']
    assert href.startswith(hub_server.storage_url)

    assert _request('PUT', href.replace('sig=', 'sig=0'), data)[0] == 403
    assert _request('PUT', href, data, AUTH)[0] == 400  # a signed URL must not carry the token
    assert _request('PUT', href, data[:-1] + b'x')[0] == 400  # content must match the oid
    assert _request('PUT', href, data)[0] == 200
    status, _, body = _request('POST', f'{hub_server.url}/alice/m.git/info/lfs/objects/batch', batch, lfs_headers)
    assert 'actions' not in json.loads(body)['objects'][0]  # already stored


def test_lfs_batch_needs_lfs_accept_header(hub_server):
    hub_server.create_repo('alice/m')
    batch = {'operation': 'upload', 'transfers': ['basic'], 'objects': [], 'hash_algo': 'sha256'}
    assert _request('POST', f'{hub_server.url}/alice/m.git/info/lfs/objects/batch', batch, AUTH)[0] == 406


def test_lfs_file_resolves_to_signed_storage_redirect(hub_server):
    hub_server.create_repo('alice/m')
    data = b'weights' * 50
    oid = hashlib.sha256(data).hexdigest()
    batch = {'operation': 'upload', 'transfers': ['basic'], 'objects': [{'oid': oid, 'size': len(data)}],
             'hash_algo': 'sha256'}
    lfs_headers = {**AUTH, 'Accept': 'application/vnd.git-lfs+json', 'Content-Type': 'application/vnd.git-lfs+json'}
    body = _request('POST', f'{hub_server.url}/alice/m.git/info/lfs/objects/batch', batch, lfs_headers)[2]
    assert _request('PUT', json.loads(body)['objects'][0]['actions']['upload']['href'], data)[0] == 200
    operation = {'key': 'lfsFile', 'value': {'path': 'model.safetensors', 'algo': 'sha256', 'oid': oid,
                                             'size': len(data)}}
    status = _request('POST', f'{hub_server.url}/api/models/alice/m/commit/main', _commit_body(operation),
                      {**AUTH, 'Content-Type': 'application/x-ndjson'})[0]
    assert status == 200

    opener = urllib.request.build_opener(_NoRedirect)
    with pytest.raises(urllib.error.HTTPError) as redirect:
        opener.open(urllib.request.Request(f'{hub_server.url}/alice/m/resolve/main/model.safetensors',
                                           method='HEAD'))
    headers = redirect.value.headers
    assert redirect.value.code == 302
    assert headers['X-Linked-Etag'] == f'"{oid}"'
    assert headers['X-Linked-Size'] == str(len(data))
    assert headers['Location'].startswith(f'{hub_server.storage_url}/objects/{oid}?')
    status, _, downloaded = _request('GET', headers['Location'])
    assert (status, downloaded) == (200, data)


def test_validate_yaml(hub_server):
    good = {'content': '---\nlicense: apache-2.0\nlibrary_name: timm\n---\n# card\n', 'repoType': 'model'}
    bad = {'content': '---\nlicense: [1, 2\n---\n', 'repoType': 'model'}
    assert _request('POST', f'{hub_server.url}/api/validate-yaml', good)[0] == 200
    status, _, body = _request('POST', f'{hub_server.url}/api/validate-yaml', bad)
    assert status == 400
    assert json.loads(body)['errors'][0]['message'].startswith('Invalid YAML')


def test_xet_token_routes_explain_themselves(hub_server):
    hub_server.create_repo('alice/m')
    status, _, body = _request('GET', f'{hub_server.url}/api/models/alice/m/xet-write-token/main', headers=AUTH)
    assert status == 501
    assert 'HF_HUB_DISABLE_XET=1' in json.loads(body)['error']


def test_unknown_route_is_a_clear_404(hub_server):
    status, _, body = _request('GET', f'{hub_server.url}/api/spaces-of-nothing')
    assert status == 404
    assert 'does not implement GET' in json.loads(body)['error']


def test_request_log_never_holds_the_token(hub_server):
    _request('POST', f'{hub_server.url}/api/repos/create', {'name': 'm', 'organization': None}, AUTH)
    assert hub_server.requests[-1].authorization
    assert hub_server.requests[-1].user == 'alice'
    assert hub.WRITE_TOKEN not in repr(hub_server.requests)
