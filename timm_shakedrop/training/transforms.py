"""Training transforms: timm's ImageNet-style pipeline, or the CIFAR pad-and-crop pipeline that timm lacks.

The CIFAR recipes of ShakeDrop (Yamada et al., 2019) and of the augmentation-search papers pad each 32x32
image by 4 pixels, crop a random 32x32 window and flip horizontally. timm's `create_transform` only offers
random-resized crops, so `train_crop_mode='pad'` builds that pipeline from torchvision parts. It can add
torchvision's AutoAugment CIFAR-10 policy (`auto_augment='cifar10'`), because timm's own policies are the
ImageNet ones. It can also add Cutout (DeVries & Taylor, 2017, arXiv:1708.04552), which timm does not have.
"""
from typing import Any, Mapping, Optional, Sequence

import torch
from torch import nn

__all__ = ['CROP_MODES', 'TORCHVISION_AUTO_AUGMENT', 'Cutout', 'create_train_transform']

# `--train-crop-mode` values: timm's random-resized crop modes and the pad-and-crop mode.
CROP_MODES = ('rrc', 'rkrc', 'rkrr', 'pad')
# `--aa` values served by torchvision's AutoAugment policies instead of timm's.
TORCHVISION_AUTO_AUGMENT = {'cifar10': 'CIFAR10', 'svhn': 'SVHN'}


class Cutout(nn.Module):
    """Fill one `size` x `size` square of a CHW tensor with `fill`, centred on a uniformly drawn pixel.

    As in DeVries & Taylor's reference code the square may extend past the border, where it is clipped, and
    it is applied to every image. After normalization, `fill=0` is the mean colour. A uint8 tensor, which
    timm's prefetcher normalizes later, gets the same result with the mean in 0-255 units as `fill`.
    """

    def __init__(self, size: int, fill: Sequence[float] = (0.0,)):
        super().__init__()
        if int(size) < 1:
            raise ValueError(f'Cutout `size` must be a positive number of pixels, got {size}.')
        self.size = int(size)
        self.fill = tuple(float(v) for v in fill)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        center_y = int(torch.randint(height, ()).item())
        center_x = int(torch.randint(width, ()).item())
        top, bottom = max(center_y - self.size // 2, 0), min(center_y + self.size - self.size // 2, height)
        left, right = max(center_x - self.size // 2, 0), min(center_x + self.size - self.size // 2, width)
        x = x.clone()
        fill = torch.tensor(self.fill, dtype=torch.float32).to(x.dtype).view(-1, 1, 1)
        x[..., top:bottom, left:right] = fill.expand(x.shape[0], bottom - top, right - left)
        return x

    def extra_repr(self) -> str:
        return f'size={self.size}, fill={self.fill}'


def _torchvision_interpolation(name: str):
    from torchvision.transforms import InterpolationMode

    if name in ('random', '', None):
        return InterpolationMode.BILINEAR
    return InterpolationMode(name)


def _pad_crop_transform(args, data_config: Mapping[str, Any], use_prefetcher: bool):
    from timm.data.random_erasing import RandomErasing
    from timm.data.transforms import MaybePILToTensor
    from torchvision import transforms

    _, height, width = data_config['input_size']
    steps = [
        transforms.Resize(min(height, width), interpolation=_torchvision_interpolation(data_config['interpolation'])),
        transforms.RandomCrop((height, width), padding=args.crop_padding, pad_if_needed=True),
    ]
    if args.hflip > 0:
        steps.append(transforms.RandomHorizontalFlip(args.hflip))
    if args.vflip > 0:
        steps.append(transforms.RandomVerticalFlip(args.vflip))
    if args.color_jitter:
        steps.append(transforms.ColorJitter(args.color_jitter, args.color_jitter, args.color_jitter))
    if args.aa:
        policy = TORCHVISION_AUTO_AUGMENT.get(args.aa.lower())
        if policy is None:
            raise ValueError(
                f"`--aa {args.aa}` is one of timm's ImageNet policies, which need a timm crop mode; with "
                f"`--train-crop-mode pad` use one of {sorted(TORCHVISION_AUTO_AUGMENT)} or none.")
        steps.append(transforms.AutoAugment(transforms.AutoAugmentPolicy[policy]))
    if use_prefetcher:
        # timm's PrefetchLoader converts to float, normalizes and applies random erasing on the device.
        steps.append(MaybePILToTensor())
        if args.cutout:
            steps.append(Cutout(args.cutout, fill=[round(255 * m) for m in data_config['mean']]))
        return transforms.Compose(steps)
    steps += [transforms.ToTensor(), transforms.Normalize(data_config['mean'], data_config['std'])]
    if args.reprob > 0:
        steps.append(RandomErasing(args.reprob, mode=args.remode, max_count=args.recount, device='cpu'))
    if args.cutout:
        steps.append(Cutout(args.cutout))
    return transforms.Compose(steps)


def create_train_transform(args, data_config: Mapping[str, Any], use_prefetcher: bool) -> Optional[nn.Module]:
    """Return the training transform that replaces the one timm's `create_loader` builds, or None to keep it.

    timm's transform is kept for its crop modes without Cutout or a torchvision AutoAugment policy.
    """
    from torchvision import transforms

    if args.no_aug:
        return None
    if args.train_crop_mode == 'pad':
        return _pad_crop_transform(args, data_config, use_prefetcher)
    if args.aa and args.aa.lower() in TORCHVISION_AUTO_AUGMENT:
        raise ValueError(f'`--aa {args.aa}` is a torchvision CIFAR policy and needs `--train-crop-mode pad`.')
    if not args.cutout:
        return None
    from timm.data import create_transform

    timm_transform = create_transform(
        data_config['input_size'],
        is_training=True,
        train_crop_mode=args.train_crop_mode,
        scale=args.scale,
        ratio=args.ratio,
        hflip=args.hflip,
        vflip=args.vflip,
        color_jitter=args.color_jitter,
        auto_augment=args.aa,
        interpolation=args.train_interpolation or data_config['interpolation'],
        mean=data_config['mean'],
        std=data_config['std'],
        re_prob=args.reprob,
        re_mode=args.remode,
        re_count=args.recount,
        use_prefetcher=use_prefetcher,
    )
    fill = [round(255 * m) for m in data_config['mean']] if use_prefetcher else (0.0,)
    return transforms.Compose([timm_transform, Cutout(args.cutout, fill=fill)])
