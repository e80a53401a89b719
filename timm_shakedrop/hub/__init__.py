"""From a training checkpoint to weights on the Hugging Face Hub and back.

* `export_checkpoint`: a timm-format training checkpoint to model.safetensors, config.json (timm's Hub format)
  and a model card, verified by rebuilding the model with `timm.create_model('local-dir:...')`;
* `push_to_hub`: that folder to a Hub model repository in one commit (the `timm-shakedrop push` command);
* `create_model_from_hub`: `timm.create_model('hf-hub:...', pretrained=True)` with errors that name the next step.
"""
from ._checkpoint import RunMetrics, TrainingCheckpoint, load_training_checkpoint
from ._export import EXPORT_FILES, REPO_ID_PLACEHOLDER, ExportResult, export_checkpoint
from ._load import create_model_from_hub, describe_hub_load_error, is_cached
from ._push import PushError, PushResult, push_to_hub

__all__ = [
    'EXPORT_FILES',
    'REPO_ID_PLACEHOLDER',
    'ExportResult',
    'PushError',
    'PushResult',
    'RunMetrics',
    'TrainingCheckpoint',
    'create_model_from_hub',
    'describe_hub_load_error',
    'export_checkpoint',
    'is_cached',
    'load_training_checkpoint',
    'push_to_hub',
]
