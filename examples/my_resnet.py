"""A small ResNet for 3x32x32 images, written the way models are written outside skiplab:
``skiplab profile examples/my_resnet.py:make_model --input-shape 3,32,32`` profiles it.

Three stages of two basic blocks (He et al., arXiv 1512.03385, Sec. 4.2: the CIFAR-10
ResNets), widths 16, 32, 64; the first block of the second and third stage halves the
resolution and meets its input through a 1x1 projection.
"""

from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU()
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:  # shapes differ: a projection, never a silent reshape
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))  # the residual merge: one add per element


class ResNet(nn.Module):
    def __init__(self, widths=(16, 32, 64), blocks_per_stage: int = 2, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU())
        stages, c_in = [], widths[0]
        for i, c in enumerate(widths):
            blocks = [BasicBlock(c_in, c, stride=1 if i == 0 else 2)]
            blocks += [BasicBlock(c, c) for _ in range(blocks_per_stage - 1)]
            stages.append(nn.Sequential(*blocks))
            c_in = c
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, classes))

    def forward(self, x):  # (B, 3, H, W) -> (B, classes)
        return self.head(self.stages(self.stem(x)))


def make_model() -> nn.Module:
    return ResNet()
