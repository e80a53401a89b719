"""Tests of `timm-shakedrop push` and `push_to_hub` against the Hub-compatible test server, over real HTTP.

These run in this process, where hf_xet is installed, so the server returns "regular" for every file. The LFS
leg runs in a fresh interpreter with HF_HUB_DISABLE_XET=1 in test_hub_e2e.py.
"""
import logging
import shutil
from pathlib import Path

import hub_server as hub
import pytest
from huggingface_hub import constants

from timm_shakedrop.cli import main as cli_main
from timm_shakedrop.hub import REPO_ID_PLACEHOLDER, PushError, export_checkpoint, push_to_hub

READ_TOKEN = hub.READ_TOKEN
WRITE_TOKEN = hub.WRITE_TOKEN
closed_port = hub.closed_port
make_timm_run = hub.make_timm_run
# Fixtures of hub_server.py, bound here so that pytest finds them.
hub_server, hub_env = hub.hub_server, hub.hub_env

REPO = 'shakedrop-org/pn20'


@pytest.fixture(scope='module')
def exported(tmp_path_factory) -> Path:
    """One exported folder shared by the tests of this module, which only read it."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp('push-export')
    run = make_timm_run(root / 'run')
    export_checkpoint(run.checkpoint, root / 'export')
    torch.set_num_threads(threads)
    return root / 'export'


def _copy(exported: Path, tmp_path: Path) -> Path:
    target = tmp_path / 'export-copy'
    shutil.copytree(exported, target)
    return target


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith('timm-shakedrop push: error:')]


def _assert_no_commit(server, repo_id=REPO):
    if server.repo_exists(repo_id):
        assert [c['summary'] for c in server.commit_history(repo_id)] == ['initial commit']


# Success paths


def test_push_creates_repo_and_commits(hub_env, exported):
    server = hub_env.server
    result = push_to_hub(exported, REPO, token=WRITE_TOKEN, commit_message='Add PyramidNet-20')
    assert result.repo_id == REPO
    assert result.revision == 'main'
    assert result.pr_url is None
    history = server.commit_history(REPO)
    assert [c['summary'] for c in history] == ['Add PyramidNet-20', 'initial commit']
    assert history[0]['files'] == ['.gitattributes', 'README.md', 'config.json', 'model.safetensors']
    assert result.commit_oid == history[0]['oid']
    assert not server.is_private(REPO)
    for name in ('model.safetensors', 'config.json'):
        assert server.read_file(REPO, name) == (exported / name).read_bytes()
    card = server.read_file(REPO, 'README.md').decode()
    assert card == (exported / 'README.md').read_text().replace(REPO_ID_PLACEHOLDER, REPO)
    assert f"timm.create_model('hf-hub:{REPO}', pretrained=True)" in card
    assert result.files == {name: (exported / name).stat().st_size for name in result.files}


def test_push_uses_one_commit_and_validates_card(hub_env, exported):
    server = hub_env.server
    push_to_hub(exported, REPO, token=WRITE_TOKEN)
    assert len(server.api_requests('POST', r'/commit/')) == 1
    assert len(server.api_requests('POST', r'^/api/validate-yaml$')) >= 1
    assert not server.file_entry(REPO, 'model.safetensors').lfs  # the regular leg


def test_push_cli_with_hf_token(hub_env, exported, monkeypatch, capsys):
    monkeypatch.setenv('HF_TOKEN', WRITE_TOKEN)
    code = cli_main(['push', str(exported), '--repo-id', REPO, '--commit-message', 'From HF_TOKEN'])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert f'Pushed {exported} to {hub_env.server.url}/{REPO}' in out
    assert 'commit: ' in out
    assert hub_env.server.commit_history(REPO)[0]['summary'] == 'From HF_TOKEN'


def test_push_with_stored_login(hub_env, exported):
    token_path = Path(constants.HF_TOKEN_PATH)
    token_path.parent.mkdir(parents=True)
    token_path.write_text(WRITE_TOKEN)
    result = push_to_hub(exported, REPO)
    assert result.repo_id == REPO


def test_push_bare_name_goes_to_token_owner(hub_env, exported):
    result = push_to_hub(exported, 'pn20', token=WRITE_TOKEN)
    assert result.repo_id == 'alice/pn20'
    assert hub_env.server.repo_exists('alice/pn20')


def test_push_create_pr(hub_env, exported, capsys):
    server = hub_env.server
    server.create_repo(REPO)
    main_before = server.branches(REPO)['main']
    code = cli_main(['push', str(exported), '--repo-id', REPO, '--create-pr', '--token', WRITE_TOKEN])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert f'pull request: {server.url}/{REPO}/discussions/1' in out
    assert server.branches(REPO)['main'] == main_before
    assert set(server.pull_request_refs(REPO)) == {1}
    assert 'model.safetensors' in server.commit_history(REPO, 'refs/pr/1')[0]['files']


def test_push_revision_creates_branch(hub_env, exported, tmp_path):
    server = hub_env.server
    push_to_hub(exported, REPO, token=WRITE_TOKEN)
    main_head = server.branches(REPO)['main']
    changed = _copy(exported, tmp_path)
    card = changed / 'README.md'
    card.write_text(card.read_text() + '\nA note for the dev branch.\n')
    result = push_to_hub(changed, REPO, token=WRITE_TOKEN, revision='dev')
    assert result.revision == 'dev'
    assert server.branches(REPO)['main'] == main_head
    assert server.commit_history(REPO, 'dev')[1]['oid'] == main_head
    assert b'A note for the dev branch.' in server.read_file(REPO, 'README.md', 'dev')
    assert len(server.api_requests('POST', r'/branch/dev$')) == 1
    card.write_text(card.read_text() + 'Second note.\n')
    push_to_hub(changed, REPO, token=WRITE_TOKEN, revision='dev')
    assert len(server.api_requests('POST', r'/branch/dev$')) == 1


def test_push_private_new_repo(hub_env, exported):
    push_to_hub(exported, REPO, token=WRITE_TOKEN, private=True)
    assert hub_env.server.is_private(REPO)


def test_push_private_on_public_repo_warns(hub_env, exported, capsys):
    hub_env.server.create_repo(REPO, private=False)
    with pytest.warns(UserWarning, match='already exists and is public; --private does not change'):
        push_to_hub(exported, REPO, token=WRITE_TOKEN, private=True)
    assert not hub_env.server.is_private(REPO)
    code = cli_main(['push', str(exported), '--repo-id', REPO, '--private', '--token', WRITE_TOKEN])
    err = capsys.readouterr().err
    assert code == 0
    assert f'WARNING: UserWarning: {REPO} already exists and is public' in err


@pytest.mark.parametrize('create_pr', [False, True])
def test_push_lfs_path_with_xet_switched_off(hub_env, exported, monkeypatch, create_pr):
    # huggingface_hub reads this flag on every call, so patching it takes this process down the LFS code path,
    # including the ?create_pr=1 commit of that path. The fresh-interpreter leg is in test_hub_e2e.py.
    monkeypatch.setattr(constants, 'HF_HUB_DISABLE_XET', True)
    server = hub_env.server
    server.upload_mode = 'auto'
    result = push_to_hub(exported, REPO, token=WRITE_TOKEN, create_pr=create_pr)
    revision = 'refs/pr/1' if create_pr else 'main'
    assert server.file_entry(REPO, 'model.safetensors', revision).lfs
    assert not server.file_entry(REPO, 'README.md', revision).lfs
    assert server.read_file(REPO, 'model.safetensors', revision) == (exported / 'model.safetensors').read_bytes()
    assert len(server.api_requests('POST', r'\.git/info/lfs/objects/batch$')) == 1
    assert [r.query for r in server.api_requests('POST', r'/commit/')] == (['create_pr=1'] if create_pr else [''])
    assert result.pr_url == (f'{server.url}/{REPO}/discussions/1' if create_pr else None)


def test_push_twice_without_changes(hub_env, exported):
    first = push_to_hub(exported, REPO, token=WRITE_TOKEN)
    second = push_to_hub(exported, REPO, token=WRITE_TOKEN)
    assert second.commit_oid == first.commit_oid
    assert len(hub_env.server.commit_history(REPO)) == 2


# Refusals before any request


def test_push_create_pr_with_revision_rejected_before_request(hub_env, exported, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(['push', str(exported), '--repo-id', REPO, '--create-pr', '--revision', 'dev',
                  '--token', WRITE_TOKEN])
    assert exit_info.value.code == 2
    assert '--create-pr opens a pull request against main' in capsys.readouterr().err
    with pytest.raises(ValueError, match='Pull requests are opened against main only'):
        push_to_hub(exported, REPO, token=WRITE_TOKEN, create_pr=True, revision='dev')
    assert hub_env.server.requests == []


def test_push_without_token(hub_env, exported, capsys):
    code = cli_main(['push', str(exported), '--repo-id', REPO])
    err = capsys.readouterr().err
    assert code == 1
    assert _error_lines(err) == ['timm-shakedrop push: error: No Hugging Face access token: pass --token '
                                 '(token=...), set HF_TOKEN, or run `hf auth login`.']
    assert 'Traceback' not in err
    assert hub_env.server.requests == []


def test_push_refuses_file_with_token(hub_env, exported, tmp_path):
    folder = _copy(exported, tmp_path)
    card = folder / 'README.md'
    card.write_text(card.read_text() + f'\nexport HF_TOKEN={WRITE_TOKEN}\n')
    with pytest.raises(ValueError, match='contains the Hugging Face access token; it will not be uploaded'):
        push_to_hub(folder, REPO, token=WRITE_TOKEN)
    assert hub_env.server.requests == []


def test_push_refuses_unexpected_files(hub_env, exported, tmp_path):
    folder = _copy(exported, tmp_path)
    (folder / 'checkpoint.pth.tar').write_bytes(b'not for upload')
    with pytest.raises(ValueError, match=r"unexpected: \['checkpoint.pth.tar'\]"):
        push_to_hub(folder, REPO, token=WRITE_TOKEN)
    (folder / 'checkpoint.pth.tar').unlink()
    (folder / 'config.json').unlink()
    with pytest.raises(ValueError, match=r"missing: \['config.json'\]"):
        push_to_hub(folder, REPO, token=WRITE_TOKEN)
    assert hub_env.server.requests == []


@pytest.mark.parametrize('old, new, match', [
    ('- timm\n', '- timm\n- transformers\n', "tags must not contain 'transformers'"),
    ('library_name: timm', 'library_name: transformers', "library_name must be 'timm'"),
    ('pipeline_tag: image-classification', 'pipeline_tag: text-generation', 'pipeline_tag must be'),
    ('license: apache-2.0\n', '', 'license is missing'),
])
def test_push_checks_card_metadata_locally(hub_env, exported, tmp_path, old, new, match):
    folder = _copy(exported, tmp_path)
    card = folder / 'README.md'
    text = card.read_text()
    assert old in text
    card.write_text(text.replace(old, new, 1))
    with pytest.raises(ValueError, match=match):
        push_to_hub(folder, REPO, token=WRITE_TOKEN)
    assert hub_env.server.requests == []


def test_push_rejects_folder_that_is_missing(hub_env, tmp_path):
    with pytest.raises(ValueError, match='is not a folder'):
        push_to_hub(tmp_path / 'missing', REPO, token=WRITE_TOKEN)


def test_push_rejects_bad_repo_id(hub_env, exported):
    with pytest.raises(ValueError, match='`repo_id` must be ORG/NAME or NAME'):
        push_to_hub(exported, 'a/b/c', token=WRITE_TOKEN)


# Failures of the server or the network


def _push_cli(exported, *extra):
    return cli_main(['push', str(exported), '--repo-id', REPO, *extra])


def test_push_rejected_token(hub_env, exported, capsys):
    code = _push_cli(exported, '--token', 'hf_notAValidToken000000000000000')
    err = capsys.readouterr().err
    assert code == 1
    assert 'Traceback' not in err
    lines = _error_lines(err)
    assert len(lines) == 1
    assert 'create_repo failed:' in lines[0]
    assert 'rejected the access token (HTTP 401' in lines[0]
    assert not hub_env.server.repo_exists(REPO)


def test_push_read_only_token(hub_env, exported, capsys):
    code = _push_cli(exported, '--token', READ_TOKEN)
    err = capsys.readouterr().err
    assert code == 1
    lines = _error_lines(err)
    assert len(lines) == 1
    assert 'may not write to shakedrop-org/pn20 (HTTP 403' in lines[0]
    assert not hub_env.server.repo_exists(REPO)


def test_push_read_only_token_on_existing_repo(hub_env, exported, capsys):
    hub_env.server.create_repo(REPO)
    code = _push_cli(exported, '--token', READ_TOKEN)
    err = capsys.readouterr().err
    assert code == 1
    assert 'HTTP 403' in _error_lines(err)[0]
    _assert_no_commit(hub_env.server)


def test_push_repository_not_found(hub_env, exported, capsys):
    hub_env.server.fail('POST', r'/preupload/', 404, 'Repository not found', code='RepoNotFound')
    code = _push_cli(exported, '--token', WRITE_TOKEN)
    err = capsys.readouterr().err
    assert code == 1
    lines = _error_lines(err)
    assert len(lines) == 1
    assert 'upload_folder failed: repository shakedrop-org/pn20 was not found' in lines[0]
    assert '(HTTP 404)' in lines[0]
    _assert_no_commit(hub_env.server)


def test_push_server_error(hub_env, exported, capsys):
    hub_env.server.fail('POST', r'^/api/repos/create$', 500, 'Internal Error')
    code = _push_cli(exported, '--token', WRITE_TOKEN)
    err = capsys.readouterr().err
    assert code == 1
    lines = _error_lines(err)
    assert lines == [f'timm-shakedrop push: error: create_repo failed: server error at {hub_env.server.url} '
                     f'(HTTP 500: Internal Error); retry later.']
    assert 'Traceback' not in err
    assert not hub_env.server.repo_exists(REPO)


def test_push_commit_server_error_leaves_no_commit(hub_env, exported, capsys, monkeypatch):
    import huggingface_hub.utils._http as hf_http

    # huggingface_hub retries a failed commit POST with backoff; skip the waiting.
    monkeypatch.setattr(hf_http.time, 'sleep', lambda seconds: None)
    hub_env.server.fail('POST', r'/commit/', 500, 'Internal Error')
    code = _push_cli(exported, '--token', WRITE_TOKEN)
    err = capsys.readouterr().err
    assert code == 1
    lines = _error_lines(err)
    assert len(lines) == 1
    assert 'upload_folder failed: server error' in lines[0]
    assert 'Traceback' not in err
    _assert_no_commit(hub_env.server)
    assert len(hub_env.server.api_requests('POST', r'/commit/')) >= 1


def test_push_connection_refused(hub_env, exported, capsys):
    endpoint = f'http://127.0.0.1:{closed_port()}'
    code = _push_cli(exported, '--token', WRITE_TOKEN, '--endpoint', endpoint)
    err = capsys.readouterr().err
    assert code == 1
    lines = _error_lines(err)
    assert len(lines) == 1
    assert f'create_repo failed: cannot connect to {endpoint} (ConnectError' in lines[0]
    assert 'Traceback' not in err


def test_push_offline_mode(hub_env, exported, monkeypatch):
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', True)
    with pytest.raises(PushError, match=r'offline mode is on \(HF_HUB_OFFLINE=1\)'):
        push_to_hub(exported, REPO, token=WRITE_TOKEN)
    assert hub_env.server.requests == []


def test_push_server_rejects_card_metadata(hub_env, exported, tmp_path, capsys):
    # The local check accepts any license id; the server's list does not have this one.
    folder = _copy(exported, tmp_path)
    card = folder / 'README.md'
    card.write_text(card.read_text().replace('license: apache-2.0', 'license: not-a-license', 1))
    code = _push_cli(folder, '--token', WRITE_TOKEN)
    err = capsys.readouterr().err
    assert code == 1
    lines = _error_lines(err)
    assert len(lines) == 1
    assert 'Invalid metadata in README.md' in lines[0]
    assert '"license" must be one of' in lines[0]
    _assert_no_commit(hub_env.server)
    assert hub_env.server.api_requests('POST', r'/preupload/') == []


# The token never leaks


def test_push_token_is_never_printed_logged_or_uploaded(hub_env, exported, capsys, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)
    assert _push_cli(exported, '--token', WRITE_TOKEN, '--verbose', '--create-pr') == 0
    assert _push_cli(exported, '--token', WRITE_TOKEN, '--revision', 'dev') == 0
    hub_env.server.fail('POST', r'/preupload/', 500, 'Internal Error', times=1)
    monkeypatch.setattr(__import__('huggingface_hub.utils._http', fromlist=['time']).time, 'sleep',
                        lambda seconds: None)
    assert _push_cli(exported, '--token', WRITE_TOKEN, '--commit-message', 'after a retry') == 0
    assert _push_cli(exported, '--token', WRITE_TOKEN, '--endpoint', f'http://127.0.0.1:{closed_port()}') == 1
    out, err = capsys.readouterr()
    assert WRITE_TOKEN not in out
    assert WRITE_TOKEN not in err
    assert WRITE_TOKEN not in caplog.text
    for name, content in hub_env.server.stored_contents():
        assert WRITE_TOKEN.encode() not in content, name
    # The token went only to the API; the storage server is reached through signed URLs.
    assert all(r.authorization for r in hub_env.server.requests if r.server == 'api' and r.method == 'POST')
