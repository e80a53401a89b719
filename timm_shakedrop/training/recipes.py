"""Named training recipes: argument defaults that any command-line flag overrides.

* `shakedrop-cifar`: the CIFAR recipe of Yamada et al., "ShakeDrop Regularization for Deep Residual
  Learning", IEEE Access 2019 (arXiv:1802.02375). It trains 300 epochs at batch 128 with SGD, Nesterov
  momentum 0.9 and weight decay 1e-4. The lr is 0.5, divided by 10 after 150 and after 225 epochs. The
  images are padded by 4 pixels, cropped at random to 32x32, flipped and normalized per channel.
* `pyramidnet272-autoaugment`: the PyramidNet-272 + ShakeDrop recipe of the augmentation-search papers
  (Cubuk et al., "AutoAugment", CVPR 2019, arXiv:1805.09501; Lim et al., "Fast AutoAugment", NeurIPS 2019):
  1800 epochs, batch 64, lr 0.05 with cosine decay to 0 at every step, Nesterov 0.9, weight decay 5e-5,
  gradient clipping at global norm 5, Cutout 16x16 and AutoAugment's CIFAR-10 policy.
* `quick`: the embedded digits in a few minutes on a CPU: PyramidNet-20 with ShakeDrop at
  `drop_path_rate` 0.1, 6 epochs, batch 32, lr 0.15 with cosine decay at every step, pad-and-crop without
  flips (a mirrored digit is another symbol), and an EMA of the weights (decay 0.998 with warmup) that picks
  the best checkpoint.
* `timm`: nothing changed, the defaults of timm's train.py.

Weight decay applies to every parameter, BN and biases included, in the three ShakeDrop recipes:
`filter_bias_and_bn=False` overrides timm's optimizer factory, which leaves them out by default.
"""
import difflib
from typing import Any, Dict, Optional

__all__ = ['RECIPES', 'default_recipe_for', 'get_recipe']

_PAD_CROP = dict(
    train_crop_mode='pad',
    crop_padding=4,
    hflip=0.5,
    vflip=0.0,
    color_jitter=0.0,
    aa=None,
    reprob=0.0,
    smoothing=0.0,
    mixup=0.0,
    cutmix=0.0,
)

RECIPES: Dict[str, Dict[str, Any]] = {
    'shakedrop-cifar': dict(
        _PAD_CROP,
        model='shakedrop_pyramidnet272',
        epochs=300,
        batch_size=128,
        opt='nesterov',
        momentum=0.9,
        lr=0.5,
        sched='multistep',
        # timm decays once epoch index t + 1 reaches a milestone, so these keep lr 0.5 for epochs 0-149, 0.05
        # for 150-224 and 0.005 for 225-299: the paper's decay after 1/2 and 3/4 of the epochs.
        decay_milestones=[151, 226],
        decay_rate=0.1,
        warmup_epochs=0,
        weight_decay=1e-4,
        filter_bias_and_bn=False,
    ),
    'pyramidnet272-autoaugment': dict(
        _PAD_CROP,
        model='shakedrop_pyramidnet272',
        epochs=1800,
        batch_size=64,
        opt='nesterov',
        momentum=0.9,
        lr=0.05,
        sched='cosine',
        sched_on_updates=True,
        min_lr=0.0,
        warmup_epochs=0,
        weight_decay=5e-5,
        filter_bias_and_bn=False,
        clip_grad=5.0,
        clip_mode='norm',
        aa='cifar10',
        cutout=16,
    ),
    'quick': dict(
        _PAD_CROP,
        model='shakedrop_pyramidnet20_a48',
        drop_path=0.1,
        epochs=6,
        batch_size=32,
        opt='nesterov',
        momentum=0.9,
        lr=0.15,
        sched='cosine',
        sched_on_updates=True,
        min_lr=0.0,
        warmup_epochs=0,
        weight_decay=5e-5,
        filter_bias_and_bn=False,
        crop_padding=2,
        hflip=0.0,
        model_ema=True,
        model_ema_decay=0.998,
        model_ema_warmup=True,
        eval_metric='ema_top1',
        # One torch thread and no loader workers: on a 2-core CPU shared with other processes, two OpenMP
        # threads ran this network's small convolutions several times slower than one.
        num_threads=1,
        workers=0,
    ),
    'timm': {},
}

_DESCRIPTIONS = {
    'shakedrop-cifar': 'ShakeDrop paper, CIFAR: 300 epochs, lr 0.5 stepped at 150 and 225',
    'pyramidnet272-autoaugment': 'AutoAugment papers: 1800 epochs, cosine, Cutout, CIFAR-10 AutoAugment',
    'quick': 'a few minutes on a CPU with the embedded digits',
    'timm': "timm's train.py defaults",
}


def recipe_help() -> str:
    """Return one line per recipe for `--help`."""
    return '; '.join(f'{name}: {text}' for name, text in _DESCRIPTIONS.items())


def get_recipe(name: str) -> Dict[str, Any]:
    """Return a copy of the argument defaults of recipe `name`.

    Raises:
        ValueError: for an unknown name, listing the close names and all recipes.
    """
    if name not in RECIPES:
        close = difflib.get_close_matches(name, RECIPES, n=2, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ''
        raise ValueError(f'Unknown recipe {name!r}.{hint} Recipes: {", ".join(RECIPES)}.')
    return {key: (list(value) if isinstance(value, list) else value) for key, value in RECIPES[name].items()}


def default_recipe_for(dataset_kind: str) -> Optional[str]:
    """Return the recipe used when `--recipe` is not given: 'quick' for digits, 'shakedrop-cifar' for CIFAR."""
    return {'digits': 'quick', 'cifar10': 'shakedrop-cifar', 'cifar100': 'shakedrop-cifar'}.get(dataset_kind, 'timm')
