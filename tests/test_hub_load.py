"""Loading pushed weights with `pretrained=True`: hf-hub names, registered tags, offline caches and adaptation."""
import logging
import socket
from pathlib import Path

import hub_server as hub
import pytest
import timm
import torch
from huggingface_hub import constants
from huggingface_hub.errors import LocalEntryNotFoundError

from timm_shakedrop.hub import create_model_from_hub, export_checkpoint, is_cached, push_to_hub

WRITE_TOKEN = hub.WRITE_TOKEN
# Fixtures of hub_server.py, bound here so that pytest finds them.
hub_server, hub_env, one_torch_thread = hub.hub_server, hub.hub_env, hub.one_torch_thread
pytestmark = pytest.mark.usefixtures('one_torch_thread')

REPO = 'shakedrop-org/pn20'


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """A timm run and its export, shared by this module's tests."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp('load-export')
    run = hub.make_timm_run(root / 'run')
    export_checkpoint(run.checkpoint, root / 'export')
    torch.set_num_threads(threads)
    return run, root / 'export'


@pytest.fixture
def pushed(hub_env, trained):
    run, folder = trained
    push_to_hub(folder, REPO, token=WRITE_TOKEN)
    return run


def _x() -> torch.Tensor:
    return torch.randn((2, 3, 32, 32), generator=torch.Generator().manual_seed(7))


def _out(model, x=None):
    with torch.no_grad():
        return model.eval()(_x() if x is None else x)


def test_hf_hub_load_matches_checkpoint(pushed):
    model = timm.create_model(f'hf-hub:{REPO}', pretrained=True)
    assert torch.equal(_out(model), _out(pushed.ema_model))
    assert model.pretrained_cfg['hf_hub_id'] == REPO
    assert tuple(model.pretrained_cfg['mean']) == (0.4914, 0.4822, 0.4465)
    keep = dict(model.named_buffers())['stages.2.2.drop_path.keep_prob']
    assert float(keep) == pytest.approx(0.8, abs=1e-7)


def test_hf_hub_load_pull_request_revision(hub_env, trained):
    run, folder = trained
    result = push_to_hub(folder, REPO, token=WRITE_TOKEN, create_pr=True)
    assert result.pr_url == f'{hub_env.server.url}/{REPO}/discussions/1'
    model = timm.create_model(f'hf-hub:{REPO}@refs/pr/1', pretrained=True)
    assert torch.equal(_out(model), _out(run.ema_model))
    # main still has only the initial commit, so it has no config.json.
    with pytest.raises(RuntimeError, match='has no config.json or model.safetensors'):
        create_model_from_hub(REPO)


def test_loader_function_matches_timm(pushed):
    model = create_model_from_hub(REPO)
    assert torch.equal(_out(model), _out(pushed.ema_model))
    assert is_cached(REPO)


def test_registered_tag_with_hub_overlay(pushed):
    model = timm.create_model('shakedrop_pyramidnet20_a48.cifar10', pretrained=True,
                              pretrained_cfg_overlay=dict(hf_hub_id=REPO))
    assert torch.equal(_out(model), _out(pushed.ema_model))


def test_offline_warm_cache_opens_no_socket(pushed, hub_env, monkeypatch):
    from huggingface_hub.utils import close_session

    expected = _out(timm.create_model(f'hf-hub:{REPO}', pretrained=True))
    close_session()  # no pooled connection survives: any request would have to connect
    connects = []

    def reject_connect(sock, address):
        connects.append(address)
        raise OSError(f'test: connect to {address} attempted while offline')

    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', True)
    monkeypatch.setattr(socket.socket, 'connect', reject_connect)
    requests_before = len(hub_env.server.requests)
    model = create_model_from_hub(REPO)
    tag_model = timm.create_model('shakedrop_pyramidnet20_a48.cifar10', pretrained=True,
                                  pretrained_cfg_overlay=dict(hf_hub_id=REPO))
    assert connects == []
    assert len(hub_env.server.requests) == requests_before
    assert torch.equal(_out(model), expected)
    assert torch.equal(_out(tag_model), expected)


def test_offline_cold_cache_message(hub_env, monkeypatch):
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', True)
    with pytest.raises(RuntimeError, match=r'The weights of hf-hub:shakedrop-org/pn20 are not in the Hugging Face '
                                           r'cache .* offline mode is on \(HF_HUB_OFFLINE=1\)\. Fetch them first '
                                           r'with `hf download shakedrop-org/pn20`'):
        create_model_from_hub(REPO)
    assert not is_cached(REPO)
    # A bare timm.create_model fails in huggingface_hub before any code of this package runs.
    with pytest.raises(LocalEntryNotFoundError):
        timm.create_model(f'hf-hub:{REPO}', pretrained=True)
    assert hub_env.server.requests == []


def test_unreachable_hub_cold_cache_message(hub_env, monkeypatch):
    import huggingface_hub.utils._http as hf_http

    # hf_hub_download retries a refused connection with backoff when nothing is cached; skip the waiting.
    monkeypatch.setattr(hf_http.time, 'sleep', lambda seconds: None)
    endpoint = f'http://127.0.0.1:{hub.closed_port()}'
    monkeypatch.setattr(constants, 'ENDPOINT', endpoint)
    monkeypatch.setattr(constants, 'HUGGINGFACE_CO_URL_TEMPLATE', endpoint + '/{repo_id}/resolve/{revision}/{filename}')
    with pytest.raises(RuntimeError, match='not in the Hugging Face cache .* the Hub could not be reached'):
        create_model_from_hub(REPO)


def test_loader_repository_not_found(hub_env):
    with pytest.raises(RuntimeError, match='hf-hub:shakedrop-org/missing was not found at'):
        create_model_from_hub('shakedrop-org/missing')


def test_loader_rejects_revision_in_repo_id(hub_env):
    with pytest.raises(ValueError, match='pass the revision as `revision`'):
        create_model_from_hub(f'{REPO}@dev')


def test_num_classes_reinitializes_head(pushed, caplog):
    caplog.set_level(logging.INFO)
    model = timm.create_model(f'hf-hub:{REPO}', pretrained=True, num_classes=3)
    assert model.num_classes == 3
    assert model.get_classifier().weight.shape == (3, 64)
    assert 'Missing keys (head.fc.weight, head.fc.bias) discovered while loading pretrained weights' in caplog.text
    with torch.no_grad():
        features = model.eval().forward_features(_x())
        expected = pushed.ema_model.eval().forward_features(_x())
    assert torch.equal(features, expected)


def test_in_chans_one_adapts_stem(pushed, caplog):
    caplog.set_level(logging.INFO)
    model = timm.create_model(f'hf-hub:{REPO}', pretrained=True, in_chans=1)
    stem = model.stem[0].weight
    assert stem.shape == (16, 1, 3, 3)
    torch.testing.assert_close(stem[:, 0], pushed.ema_model.stem[0].weight.sum(dim=1), rtol=0, atol=1e-6)
    assert 'Converted input conv stem.0 pretrained weights from 3 to 1 channel(s)' in caplog.text
    assert _out(model, torch.zeros(1, 1, 32, 32)).shape == (1, 10)


def test_pretrained_without_weights_raises():
    with pytest.raises(RuntimeError, match='No pretrained weights exist for shakedrop_pyramidnet20_a48'):
        timm.create_model('shakedrop_pyramidnet20_a48', pretrained=True)
    with pytest.raises(RuntimeError, match='No pretrained weights exist for shakedrop_pyramidnet20_a48'):
        timm.create_model('shakedrop_pyramidnet20_a48.cifar100', pretrained=True)


def test_is_cached_is_false_for_other_revision(pushed, tmp_path):
    timm.create_model(f'hf-hub:{REPO}', pretrained=True)
    assert is_cached(REPO)
    assert not is_cached(REPO, revision='dev')
    assert not is_cached(REPO, cache_dir=Path(tmp_path / 'other-cache'))
