"""The CNN-2D family: Conv2d sublayers on images, layout (B, C, H, W)."""

from torch import nn

from .conv import ConvFamily


class CNN2D(ConvFamily):
    name = "cnn2d"
    counts_on_meta = True  # no op picks its kernel by device (skiplab.cost.prefix)
    summary = "2-D convolutions (same padding, stride 1) -> norm -> activation; global average pool"
    layout = "(B, C, H, W)"
    spatial_dims = 2
    conv, batch_norm = nn.Conv2d, nn.BatchNorm2d
    default_input_shape = (1, 8, 8)  # scikit-learn's 8x8 digits
    input_form = "(channels, height, width)"
    # 2-D convolutions on CUDA run faster on NHWC tensors (tensor cores; PyTorch's "channels
    # last" tutorial); applied on CUDA only (skiplab.run.step.wants_channels_last).
    channels_last = True


CNN2D_FAMILY = CNN2D()
