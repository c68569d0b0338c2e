"""The CNN-1D family: Conv1d sublayers on sequences, layout (B, C, L)."""

from torch import nn

from .conv import ConvFamily


class CNN1D(ConvFamily):
    name = "cnn1d"
    counts_on_meta = True  # no op picks its kernel by device (skiplab.cost.prefix)
    summary = "1-D convolutions (same padding, stride 1) -> norm -> activation; global average pool"
    layout = "(B, C, L)"
    spatial_dims = 1
    conv, batch_norm = nn.Conv1d, nn.BatchNorm1d
    default_input_shape = (1, 40)  # MNIST-1D as one channel of length 40
    input_form = "(channels, length)"


CNN1D_FAMILY = CNN1D()
