from .norm_act_conv import can_fuse_norm_act_conv, norm_act_conv
from .padded_shortcut import add_padded_shortcut
from .shake_drop import (
    GATE_LEVELS,
    LEVELS,
    ShakeDrop,
    shake_drop,
    shake_drop_eval_scale,
    shake_drop_keep_probs,
    validate_shake_drop_args,
)
