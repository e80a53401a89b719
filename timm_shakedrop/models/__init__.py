from .shakedrop_pyramidnet import PyramidBasicBlock, PyramidBottleneck, PyramidNet, pyramid_widths
from .shakedrop_resnet import CifarResNet, ShakeDropResNet
