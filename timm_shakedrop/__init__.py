"""ShakeDrop ResNets and PyramidNets as timm models.

Importing this package registers its models with timm. Installing it does the same for every process that
imports timm, through the start-up hook in `_timm_shakedrop_autoload`.
"""
__version__ = '0.1.0'

from .convert import apply_shakedrop, find_residual_slots  # noqa: E402
from .layers import ShakeDrop, shake_drop, shake_drop_eval_scale, shake_drop_keep_probs  # noqa: E402
from .models import PyramidNet  # noqa: E402
