"""Helpers shared by the ShakeDrop model families: rate resolution and keep-probability loading."""
import logging
from typing import Dict, Optional

from torch import nn

from ..layers import ShakeDrop

_logger = logging.getLogger(__name__)

# 1 - p_L of the ShakeDrop paper, used when `drop_path_rate` is not given.
DEFAULT_DROP_PATH_RATE = 0.5


def resolve_drop_path_rate(drop_path_rate: Optional[float]) -> float:
    """Return the rate to build with: the given one, or the ShakeDrop default 0.5 for None."""
    if drop_path_rate is None:
        return DEFAULT_DROP_PATH_RATE
    if not 0.0 <= float(drop_path_rate) <= 1.0:
        raise ValueError(f'`drop_path_rate` must be in [0, 1] (it is 1 - p_L), got {drop_path_rate}.')
    return float(drop_path_rate)


def check_drop_block_rate(drop_block_rate: Optional[float]) -> None:
    """Accept None or 0 for `drop_block_rate`, which timm's train.py may pass; these networks have no DropBlock."""
    if drop_block_rate:
        raise ValueError(
            f'`drop_block_rate` must be None or 0 because this network has no DropBlock layers, '
            f'got {drop_block_rate}. Use `drop_path_rate` to set ShakeDrop.')


def shake_drop_modules(model: nn.Module) -> Dict[str, ShakeDrop]:
    """Return the ShakeDrop modules of `model` by qualified name, in forward order."""
    return {name: module for name, module in model.named_modules() if isinstance(module, ShakeDrop)}


def configure_keep_prob_loading(model: nn.Module, rate_is_explicit: bool, drop_path_rate: float) -> None:
    """Decide whose keep probabilities a later `load_state_dict` keeps, and log what it did.

    Weights saved from a ShakeDrop model carry each unit's `keep_prob` buffer, which sets its evaluation scale.
    The precedence on loading:

    * `drop_path_rate` passed explicitly when the model was built: the built rates stay, the loaded ones are
      dropped with an info line (this is how to fine-tune at another rate);
    * otherwise the loaded rates replace the built ones, so the model evaluates exactly as it did when saved;
    * weights without `keep_prob` entries (plain networks, timm's own ResNet weights) load, the built rates
      stay, and a warning says which rate was assumed.
    """
    modules = shake_drop_modules(model)
    for module in modules.values():
        module.keep_prob_from_weights = not rate_is_explicit
    if not modules:
        return
    model._shakedrop_built_rate = drop_path_rate
    # A module-level function, not a closure, so that `torch.save(model)` pickles and `copy.deepcopy` (as timm's
    # EMA does) gives the copy a hook that reads the copy's own modules.
    model.register_load_state_dict_post_hook(log_keep_prob_source)


def log_keep_prob_source(model: nn.Module, incompatible_keys) -> None:
    """Log, once per `load_state_dict`, which ShakeDrop rates the model kept (a load state dict post hook)."""
    modules = list(shake_drop_modules(model).values())
    events = [m.last_keep_prob_load for m in modules]
    missing = events.count('missing')
    overridden = events.count('kept')
    drop_path_rate = getattr(model, '_shakedrop_built_rate', None)
    if missing and any(m.keep_prob_from_weights for m in modules):
        _logger.warning(
            f'{missing} of {len(modules)} ShakeDrop units found no `keep_prob` in the loaded weights and keep '
            f'the rates built with drop_path_rate={drop_path_rate}; their evaluation scale is the keep '
            f'probability, so pass the rate the weights were trained with, or drop_path_rate=0 for weights '
            f'trained without ShakeDrop.')
    elif missing:
        _logger.info(
            f'{missing} of {len(modules)} ShakeDrop units found no `keep_prob` in the loaded weights and use '
            f'drop_path_rate={drop_path_rate} passed at creation.')
    if overridden:
        _logger.info(
            f'Kept the ShakeDrop rates of drop_path_rate={drop_path_rate} passed at creation in place of '
            f'the {overridden} keep probabilities stored in the loaded weights.')
    for m in modules:
        m.last_keep_prob_load = None
