"""Any timm residual network with ShakeDrop, as one registered timm architecture.

ShakeDrop: Yamada, Iwamura, Akiba, Kise, "ShakeDrop Regularization for Deep Residual Learning",
IEEE Access 7, 2019 (arXiv:1802.02375).

`timm.create_model('shakedrop', base_model='resnet18', ...)` builds timm's `resnet18` and puts ShakeDrop into every
residual branch with `timm_shakedrop.apply_shakedrop`. Registering the result under one name lets timm's Hub
format describe a converted model: `config.json` names the architecture `shakedrop` and records `base_model` and
the `shakedrop_*` arguments in `model_args`, and the `keep_prob` buffers of the weights carry the rates. So
`timm.models.save_for_hf` followed by `timm.create_model('local-dir:...', pretrained=True)` (or `hf-hub:`)
rebuilds the converted model, and timm's train.py trains it with `--model shakedrop --model-kwargs
base_model=resnet18`. The state dict is the base model's plus one `keep_prob` buffer per residual branch, and the
pretrained config is the base model's, so `pretrained=True` without a config loads the base model's weights.
"""
import difflib
from typing import Any

from timm.models import build_model_with_cfg, is_model, parse_model_name, register_model, split_model_name_tag
from timm.models._builder import resolve_pretrained_cfg
from torch import nn

__all__ = ['CONVERTED_ARCHITECTURE', 'create_converted_model']

# Registered name of a timm model converted with `apply_shakedrop`.
CONVERTED_ARCHITECTURE = 'shakedrop'
# Keyword arguments of timm's feature extraction wrappers, which this architecture does not build.
_FEATURE_KWARGS = ('features_only', 'out_indices', 'feature_cls')


def _check_base_model(base_model: Any) -> tuple[str, str]:
    """Return the architecture and pretrained tag of `base_model`, or raise ValueError naming close names."""
    import timm

    if base_model is None:
        raise ValueError(
            f"`base_model` is required: the name of the timm model to convert, e.g. "
            f"timm.create_model('{CONVERTED_ARCHITECTURE}', base_model='resnet18').")
    if not isinstance(base_model, str):
        raise ValueError(f'`base_model` must be a timm model name, got {base_model!r}.')
    source, name = parse_model_name(base_model)
    if source:
        raise ValueError(
            f'`base_model` must be a model name registered with timm, got {base_model!r}; a {source}: model '
            f'brings its own weights, so create it and convert it with timm_shakedrop.apply_shakedrop instead.')
    architecture, tag = split_model_name_tag(name)
    if architecture == CONVERTED_ARCHITECTURE:
        raise ValueError(f'`base_model` must be a model without ShakeDrop, got {base_model!r}.')
    if not is_model(architecture):
        close = difflib.get_close_matches(architecture, timm.list_models(), n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ''
        raise ValueError(f'Unknown `base_model` {base_model!r}: timm has no such model.{hint}')
    return architecture, tag


def _build_converted(
        base_model: str,
        drop_path_rate: float | None = None,
        shakedrop_alpha_range: tuple[float, float] | None = None,
        shakedrop_beta_range: tuple[float, float] = (0.0, 1.0),
        shakedrop_level: str = 'sample',
        shakedrop_gate_level: str | None = None,
        **base_kwargs,
) -> nn.Module:
    """Build timm's `base_model` from `base_kwargs` without stochastic depth and convert it."""
    import timm

    from ..convert import apply_shakedrop

    model = timm.create_model(base_model, pretrained=False, **base_kwargs)
    # Config files store tuples as JSON lists.
    alpha_range = None if shakedrop_alpha_range is None else tuple(shakedrop_alpha_range)
    return apply_shakedrop(
        model,
        drop_path_rate=drop_path_rate,
        alpha_range=alpha_range,
        beta_range=tuple(shakedrop_beta_range),
        level=shakedrop_level,
        gate_level=shakedrop_gate_level,
    )


def create_converted_model(
        variant: str,
        pretrained: bool = False,
        base_model: str | None = None,
        pretrained_cfg: str | dict[str, Any] | None = None,
        **kwargs,
) -> nn.Module:
    """Build `base_model` with ShakeDrop in every residual branch, through timm's `build_model_with_cfg`.

    Args:
        variant: Registered name of the architecture (`shakedrop`).
        pretrained: Load weights named by the pretrained config: a `local-dir:` or `hf-hub:` config, an overlay,
            or without either the base model's own weights (which have no `keep_prob`, so the built rates stay).
        base_model: timm model to convert, optionally with a pretrained tag (`resnet18.a1_in1k`).
        pretrained_cfg: Config of saved weights (timm passes the one of a `local-dir:` or `hf-hub:` folder);
            None takes the base model's default config, a string is a tag of the base model.
        **kwargs: `drop_path_rate` and the `shakedrop_*` arguments go to `apply_shakedrop` (see
            `_build_converted`), the others to timm's `create_model` for the base model.
    """
    architecture, tag = _check_base_model(base_model)
    feature_kwargs = [k for k in _FEATURE_KWARGS if kwargs.get(k)]
    if feature_kwargs:
        # NOTE: feature extraction wrappers need the base model's feature_cfg, which timm keeps inside its builder.
        raise ValueError(
            f'`{feature_kwargs[0]}` is not supported by {variant!r}; build the model and wrap it with '
            f'timm.models.FeatureGetterNet or create_feature_extractor.')
    if pretrained_cfg is None or isinstance(pretrained_cfg, str):
        base_cfg = resolve_pretrained_cfg(architecture, pretrained_cfg=pretrained_cfg or tag or None).to_dict()
        pretrained_cfg = dict(base_cfg, architecture=variant)
    return build_model_with_cfg(
        _build_converted,
        variant,
        pretrained,
        pretrained_cfg=pretrained_cfg,
        base_model=base_model,
        **kwargs,
    )


@register_model
def shakedrop(pretrained: bool = False, **kwargs) -> nn.Module:
    """The timm model named by `base_model` with ShakeDrop in every residual branch."""
    return create_converted_model(CONVERTED_ARCHITECTURE, pretrained=pretrained, **kwargs)
