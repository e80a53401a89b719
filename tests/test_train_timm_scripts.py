"""The keyword sets that timm's train.py, validate.py and inference.py pass to `create_model` work for every
registered ShakeDrop model, and their checkpoint loading reads this package's training checkpoints.

The keywords are those of timm's scripts as of timm 1.0.31:
* train.py: pretrained, in_chans, num_classes, drop_rate, drop_path_rate, drop_block_rate, global_pool,
  bn_momentum, bn_eps, scriptable, checkpoint_path, plus --model-kwargs;
* validate.py: pretrained, num_classes, in_chans, global_pool, scriptable, plus --model-kwargs, then
  `load_checkpoint(model, checkpoint, use_ema)`;
* inference.py: num_classes, in_chans, pretrained, checkpoint_path, plus --model-kwargs.
"""
import pytest
import timm
import torch

SHAKEDROP_MODELS = timm.list_models('shakedrop_*')
# Models small enough for a forward pass on a tiny input in every test run.
SMALL_MODELS = ['shakedrop_pyramidnet20_a48', 'shakedrop_pyramidnet56_a48']


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Run each test on one torch thread: two OpenMP threads slow down badly when other processes share the
    two cores of the test machine."""
    num_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(num_threads)


def _train_py_kwargs(num_classes=None, drop_path=None, drop_block=None, checkpoint_path=''):
    """The keywords timm's train.py passes with its default flags (and --drop-path / --drop-block)."""
    return dict(pretrained=False, in_chans=3, num_classes=num_classes, drop_rate=0.0, drop_path_rate=drop_path,
                drop_block_rate=drop_block, global_pool=None, bn_momentum=None, bn_eps=None, scriptable=False,
                checkpoint_path=checkpoint_path)


def _validate_py_kwargs(num_classes=None):
    return dict(pretrained=False, num_classes=num_classes, in_chans=3, global_pool=None, scriptable=False)


def _inference_py_kwargs(num_classes=None, checkpoint_path=''):
    return dict(num_classes=num_classes, in_chans=3, pretrained=False, checkpoint_path=checkpoint_path)


def test_shakedrop_models_are_registered():
    assert 'shakedrop_pyramidnet20_a48' in SHAKEDROP_MODELS
    assert 'shakedrop_pyramidnet272' in SHAKEDROP_MODELS


@pytest.mark.parametrize('model_name', SHAKEDROP_MODELS)
def test_train_py_keywords_on_meta_device(model_name):
    # train.py's keyword names include all of validate.py's and inference.py's.
    with torch.device('meta'):
        model = timm.create_model(model_name, **_train_py_kwargs(num_classes=100, drop_path=0.3, drop_block=0.0))
    assert model.num_classes == 100
    assert model.get_classifier().out_features == 100


@pytest.mark.parametrize('script', ['validate', 'inference'])
def test_eval_script_keywords(script):
    kwargs = _validate_py_kwargs(num_classes=5) if script == 'validate' else _inference_py_kwargs(num_classes=5)
    model = timm.create_model('shakedrop_pyramidnet20_a48', **kwargs).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 16, 16)).shape == (1, 5)


@pytest.mark.parametrize('model_name', SMALL_MODELS)
def test_train_py_keywords_forward(model_name):
    model = timm.create_model(model_name, **_train_py_kwargs(num_classes=7, drop_path=0.2, drop_block=None),
                              **{'shakedrop_level': 'batch'})
    model.train()
    out = model(torch.randn(2, 3, 16, 16))
    out.sum().backward()
    assert out.shape == (2, 7)
    assert all(p.grad is not None for p in model.parameters())


def test_train_py_bn_overrides():
    model = timm.create_model('shakedrop_pyramidnet20_a48', **dict(_train_py_kwargs(), bn_momentum=0.01,
                                                                   bn_eps=1e-3))
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms
    assert all(m.momentum == 0.01 and m.eps == 1e-3 for m in norms)


def test_drop_block_rate_is_rejected_with_reason():
    with pytest.raises(ValueError, match='`drop_block_rate` must be None or 0'):
        timm.create_model('shakedrop_pyramidnet20_a48', **_train_py_kwargs(drop_block=0.1))


def _training_checkpoint(tmp_path, with_ema: bool):
    """Write a checkpoint in this package's training format, with distinct EMA weights."""
    import argparse

    from timm_shakedrop.training import ResumableCheckpointSaver

    model = timm.create_model('shakedrop_pyramidnet20_a48', num_classes=10)
    model.train()
    model(torch.randn(4, 3, 16, 16)).sum().backward()  # sets BN running statistics
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    ema = timm.create_model('shakedrop_pyramidnet20_a48', num_classes=10) if with_ema else None
    saver = ResumableCheckpointSaver(model, optimizer, args=argparse.Namespace(model='shakedrop_pyramidnet20_a48'),
                                     model_ema=ema, checkpoint_dir=str(tmp_path), recovery_dir=str(tmp_path))
    saver.save_checkpoint(0, metric=50.0)
    return str(tmp_path / 'model_best.pth.tar'), model, ema


@pytest.mark.parametrize('use_ema', [False, True])
def test_validate_py_loads_training_checkpoint(tmp_path, use_ema):
    from timm.models import load_checkpoint

    path, model, ema = _training_checkpoint(tmp_path, with_ema=True)
    loaded = timm.create_model('shakedrop_pyramidnet20_a48', **_validate_py_kwargs(num_classes=10))
    load_checkpoint(loaded, path, use_ema)
    source = ema if use_ema else model
    for key, value in source.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0, msg=key)


def test_train_and_inference_py_checkpoint_path(tmp_path):
    path, model, _ = _training_checkpoint(tmp_path, with_ema=False)
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    for kwargs in (_train_py_kwargs(num_classes=10, checkpoint_path=path),
                   _inference_py_kwargs(num_classes=10, checkpoint_path=path)):
        loaded = timm.create_model('shakedrop_pyramidnet20_a48', **kwargs).eval()
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=1e-6)
