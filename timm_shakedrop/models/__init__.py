from .shakedrop_pyramidnet import PyramidBasicBlock, PyramidBottleneck, PyramidNet, pyramid_widths
