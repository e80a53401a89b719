from .shakedrop_converted import CONVERTED_ARCHITECTURE, create_converted_model
from .shakedrop_pyramidnet import PyramidBasicBlock, PyramidBottleneck, PyramidNet, pyramid_widths
from .shakedrop_resnet import CifarResNet, ShakeDropResNet
