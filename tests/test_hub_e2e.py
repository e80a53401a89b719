"""End to end through HF_ENDPOINT: train, export, push with the real command, load in a fresh interpreter.

The push runs in a fresh interpreter with HF_HUB_DISABLE_XET=1 set before huggingface_hub is imported, so the
weights take the Git LFS path (batch API, upload to the signed storage URL, verify). The Xet path that
huggingface_hub takes when hf_xet is installed and enabled is exercised only against the real Hub.
"""
import shutil
import subprocess
import sys
import textwrap

import hub_server as hub
import pytest
import timm
import torch
from timm.models import load_checkpoint

from timm_shakedrop.cli import main as cli_main

# Fixtures of hub_server.py, bound here so that pytest finds them.
hub_server, one_torch_thread = hub.hub_server, hub.one_torch_thread
pytestmark = [pytest.mark.usefixtures('one_torch_thread'), pytest.mark.slow]

REPO = 'shakedrop-org/digits-pn20'

_LOAD_SCRIPT = textwrap.dedent('''
    import sys

    import timm  # the start-up hook registers the timm-shakedrop models
    import torch

    torch.set_num_threads(1)
    x = torch.load(sys.argv[2])
    model = timm.create_model(f'hf-hub:{sys.argv[1]}', pretrained=True).eval()
    with torch.no_grad():
        torch.save(model(x), sys.argv[3])
''')


def _command_prefix() -> list[str]:
    script = shutil.which('timm-shakedrop')
    return [script] if script else [sys.executable, '-m', 'timm_shakedrop']


def test_train_export_push_load(tmp_path, hub_server, capsys):
    hub_server.upload_mode = 'auto'  # LFS for model.safetensors, as on the Hub

    # Train a few steps on a digits subset, in this process.
    code = cli_main(['train', '--model', 'shakedrop_pyramidnet20_a48', '--epochs', '1', '--train-num-samples', '64',
                     '--val-num-samples', '32', '-b', '32', '-j', '0', '--num-threads', '1', '--model-ema',
                     '--no-plot', '--output', str(tmp_path / 'runs'), '--experiment', 'e2e'])
    assert code == 0, capsys.readouterr().err
    checkpoint = tmp_path / 'runs' / 'e2e' / 'model_best.pth.tar'
    assert checkpoint.is_file()

    # Export, in this process.
    export_dir = tmp_path / 'export'
    assert cli_main(['export', str(checkpoint), '--output', str(export_dir)]) == 0
    card = (export_dir / 'README.md').read_text()
    assert 'timm-shakedrop train --config args.yaml' in card
    assert "(columns `eval_ema_*`)" in card

    # Push with the real command in a fresh interpreter, through HF_ENDPOINT, on the LFS path.
    env = hub.hub_subprocess_env(hub_server, tmp_path, token=hub.WRITE_TOKEN, disable_xet=True)
    push = subprocess.run([*_command_prefix(), 'push', str(export_dir), '--repo-id', REPO],
                          env=env, capture_output=True, text=True, timeout=300)
    assert push.returncode == 0, push.stderr
    assert f'Pushed {export_dir} to {hub_server.url}/{REPO}' in push.stdout
    assert 'Traceback' not in push.stderr
    assert hub.WRITE_TOKEN not in push.stdout + push.stderr
    entry = hub_server.file_entry(REPO, 'model.safetensors')
    assert entry.lfs
    assert hub_server.read_file(REPO, 'model.safetensors') == (export_dir / 'model.safetensors').read_bytes()
    assert not hub_server.file_entry(REPO, 'config.json').lfs
    assert len(hub_server.api_requests('POST', r'^/shakedrop-org/digits-pn20\.git/info/lfs/objects/batch$')) == 1
    assert len(hub_server.api_requests('POST', r'/info/lfs/objects/verify$')) == 1
    storage_puts = [r for r in hub_server.requests if r.server == 'storage' and r.method == 'PUT']
    assert [r.status for r in storage_puts] == [200]
    assert not storage_puts[0].authorization
    for name, content in hub_server.stored_contents():
        assert hub.WRITE_TOKEN.encode() not in content, name

    # Load with pretrained=True in a fresh interpreter with an empty cache, and compare bit for bit.
    x = torch.randn((4, 3, 32, 32), generator=torch.Generator().manual_seed(0))
    torch.save(x, tmp_path / 'x.pt')
    load_env = hub.hub_subprocess_env(hub_server, tmp_path / 'fresh', disable_xet=False)
    assert not (tmp_path / 'fresh').exists()
    load = subprocess.run([sys.executable, '-c', _LOAD_SCRIPT, REPO, str(tmp_path / 'x.pt'), str(tmp_path / 'y.pt')],
                          env=load_env, capture_output=True, text=True, timeout=300)
    assert load.returncode == 0, load.stderr
    loaded_output = torch.load(tmp_path / 'y.pt')

    reference = timm.create_model('shakedrop_pyramidnet20_a48')
    load_checkpoint(reference, str(checkpoint), use_ema=True)  # timm's own loader, on the EMA weights
    with torch.no_grad():
        expected = reference.eval()(x)
    assert torch.equal(loaded_output, expected)
    # The metadata request gets a redirect to storage, like the Hub's redirect to its CDN.
    metadata = hub_server.api_requests('HEAD', r'/resolve/main/model.safetensors$')
    assert [r.status for r in metadata] == [302]
