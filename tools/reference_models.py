"""PyTorch definitions that the TypeScript models are checked against (imported by gen_model_fixtures.py).

ShuffleNetV1 and ShuffleV1Block follow the authors' code (megvii-model/ShuffleNet-Series, ShuffleNetV1/network.py,
MIT, Copyright (c) 2019 Megvii Technology), generalised to any stage widths, to the paper's shuffle order and
position, to no shuffle and to a small-input stem. One change: the final 7x7 AvgPool is AdaptiveAvgPool2d(1),
which is identical at 224x224 and also runs at other sizes. AlexNet is torchvision's. MobileNetV1 has no
canonical PyTorch module; this one uses the names documented in src/models/mobilenet.ts.

Table4Net is the paper's Table 4 experiment (section 4.1.3): ShuffleNet's stem, stages and head with every unit of
stages 2-4 replaced. VGG-like: two 3x3 convs, each with BN (the paper adds it) and ReLU. ResNet: torchvision's
Bottleneck, ratio 1:4. ResNeXt: the same, ratio 1:2, cardinality 16. Xception-like: ShuffleV1Block with g = 1 (the
paper: "equivalent to ShuffleNet with g = 1"). The paper does not say how ResNet / ResNeXt downsample; as
documented in src/models/shufflenet.ts, they downsample like ShuffleNet (a stride-2 3x3 average pool of the input,
concatenated before the ReLU'd branch, which then makes oup - inp channels), so only the unit differs.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


def shuffle(x, g, order):
    b, c, h, w = x.shape
    if order == 'authors':  # Megvii: reshape (n, g), transpose
        return x.reshape(b, c // g, g, h, w).permute(0, 2, 1, 3, 4).reshape(b, c, h, w)
    return x.reshape(b, g, c // g, h, w).transpose(1, 2).reshape(b, c, h, w)  # paper: (g, n), transpose


class ShuffleV1Block(nn.Module):
    def __init__(self, inp, oup, *, group, first_group, mid_channels, ksize, stride, order, position, use_shuffle):
        super().__init__()
        self.stride, self.group, self.order, self.position = stride, group, order, position
        self.use_shuffle = use_shuffle and group > 1
        pad = ksize // 2
        outputs = oup - inp if stride == 2 else oup
        self.branch_main_1 = nn.Sequential(
            nn.Conv2d(inp, mid_channels, 1, 1, 0, groups=1 if first_group else group, bias=False),
            nn.BatchNorm2d(mid_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid_channels, mid_channels, ksize, stride, pad, groups=mid_channels, bias=False),
            nn.BatchNorm2d(mid_channels),
        )
        self.branch_main_2 = nn.Sequential(
            nn.Conv2d(mid_channels, outputs, 1, 1, 0, groups=group, bias=False),
            nn.BatchNorm2d(outputs),
        )
        if stride == 2:
            self.branch_proj = nn.AvgPool2d(kernel_size=3, stride=2, padding=1)

    def forward(self, old_x):
        x = old_x
        if self.position == 'before-dw':
            m = self.branch_main_1
            x = m[2](m[1](m[0](x)))
            if self.use_shuffle:
                x = shuffle(x, self.group, self.order)
            x = m[4](m[3](x))
        else:
            x = self.branch_main_1(x)
            if self.use_shuffle:
                x = shuffle(x, self.group, self.order)
        x = self.branch_main_2(x)
        if self.stride == 1:
            return F.relu(x + old_x)
        return torch.cat((self.branch_proj(old_x), F.relu(x)), 1)


class ShuffleNetV1(nn.Module):
    def __init__(self, widths, group, n_class=1000, in_channels=3, order='authors', position='after-dw',
                 use_shuffle=True, small_input=False):
        super().__init__()
        stem, *stages = widths
        self.small_input = small_input
        self.first_conv = nn.Sequential(
            nn.Conv2d(in_channels, stem, 3, 1 if small_input else 2, 1, bias=False),
            nn.BatchNorm2d(stem),
            nn.ReLU(inplace=True),
        )
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        features = []
        inp = stem
        for s, (repeat, oup) in enumerate(zip([4, 8, 4], stages)):
            for i in range(repeat):
                features.append(ShuffleV1Block(inp, oup, group=group, first_group=(s == 0 and i == 0),
                                               mid_channels=oup // 4, ksize=3, stride=2 if i == 0 else 1,
                                               order=order, position=position, use_shuffle=use_shuffle))
                inp = oup
        self.features = nn.Sequential(*features)
        self.globalpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(inp, n_class, bias=False))

    def forward(self, x):
        x = self.first_conv(x)
        if not self.small_input:
            x = self.maxpool(x)
        x = self.globalpool(self.features(x))
        return self.classifier(x.flatten(1))


class Bottleneck(nn.Module):
    """torchvision.models.resnet.Bottleneck (names conv1..3 / bn1..3, the stride and the groups on the 3x3, no conv
    biases, ReLU after the sum) with ShuffleNet's shortcut instead of a projection: identity at stride 1; at stride 2
    AvgPool(3, 2, 1) of the input, concatenated first, and the branch makes only the missing oup - inp channels."""

    def __init__(self, inp, oup, stride, width, groups):
        super().__init__()
        self.stride = stride
        self.conv1 = nn.Conv2d(inp, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, oup - inp if stride == 2 else oup, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(self.conv3.out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AvgPool2d(3, 2, 1) if stride == 2 else None

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.stride == 1:
            return self.relu(out + x)
        return torch.cat((self.pool(x), self.relu(out)), 1)


class VGGBlock(nn.Module):
    """Two 3x3 convs (the first carries the stride), each followed by BN and ReLU; no shortcut."""

    def __init__(self, inp, oup, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(inp, oup, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(oup)
        self.conv2 = nn.Conv2d(oup, oup, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(oup)

    def forward(self, x):
        return F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


def table4_unit(kind, inp, oup, stride):
    if kind == 'vgg':
        return VGGBlock(inp, oup, stride)
    if kind == 'resnet':
        return Bottleneck(inp, oup, stride, width=oup // 4, groups=1)
    if kind == 'resnext':
        return Bottleneck(inp, oup, stride, width=oup // 2, groups=16)
    if kind == 'xception':
        return ShuffleV1Block(inp, oup, group=1, first_group=True, mid_channels=oup // 4, ksize=3, stride=stride,
                              order='authors', position='after-dw', use_shuffle=False)
    raise ValueError(kind)


class Table4Net(nn.Module):
    """ShuffleNetV1 (the same stem, max pool, 4 / 8 / 4 units of which the first has stride 2, pool and bias-free
    FC, the same names) built from `kind` units: 'vgg', 'resnet', 'resnext' or 'xception'."""

    def __init__(self, kind, widths, n_class=1000, in_channels=3):
        super().__init__()
        stem, *stages = widths
        self.first_conv = nn.Sequential(
            nn.Conv2d(in_channels, stem, 3, 2, 1, bias=False),
            nn.BatchNorm2d(stem),
            nn.ReLU(inplace=True),
        )
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        features = []
        inp = stem
        for repeat, oup in zip([4, 8, 4], stages):
            for i in range(repeat):
                features.append(table4_unit(kind, inp, oup, 2 if i == 0 else 1))
                inp = oup
        self.features = nn.Sequential(*features)
        self.globalpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(inp, n_class, bias=False))

    def forward(self, x):
        x = self.globalpool(self.features(self.maxpool(self.first_conv(x))))
        return self.classifier(x.flatten(1))


MOBILENET_BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]


class MobileNetV1(nn.Module):
    def __init__(self, alpha, n_class=1000, small_input=False):
        super().__init__()
        w = lambda c: int(c * alpha)
        # small_input (CIFAR-10): the stem and the first stride-2 block at stride 1, 8x downsampling, not 32x.
        layers = [nn.Sequential(nn.Conv2d(3, w(32), 3, 1 if small_input else 2, 1, bias=False), nn.BatchNorm2d(w(32)),
                                nn.ReLU(inplace=True))]
        c = w(32)
        for i, (out, stride) in enumerate(MOBILENET_BLOCKS):
            if small_input and i == 1:
                stride = 1
            layers.append(nn.Sequential(
                nn.Conv2d(c, c, 3, stride, 1, groups=c, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                nn.Conv2d(c, w(out), 1, bias=False), nn.BatchNorm2d(w(out)), nn.ReLU(inplace=True)))
            c = w(out)
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, n_class)

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)).flatten(1))


def load_weights(model, data):
    """Copies our weights into `model`: data/weights.json (names and shapes, in order) and data/weights.bin
    (their float32 values, one after another), as the benchmarks write them (bench/harness.ts)."""
    import json
    import os

    import numpy as np
    with open(os.path.join(data, 'weights.json')) as f:
        tensors = json.load(f)
    flat = np.fromfile(os.path.join(data, 'weights.bin'), dtype=np.float32)
    own = model.state_dict()
    at = 0
    for t in tensors:
        n = int(np.prod(t['shape'])) if t['shape'] else 1
        if t['name'] not in own or list(own[t['name']].shape) != t['shape']:
            raise ValueError(f"weight {t['name']} {t['shape']} is not in the PyTorch model (or not that shape)")
        own[t['name']].copy_(torch.from_numpy(flat[at:at + n].reshape(t['shape'])))
        at += n
    unset = [k for k in own if k not in {t['name'] for t in tensors} and not k.endswith('num_batches_tracked')]
    if unset:
        raise ValueError(f'weights not given: {unset}')
