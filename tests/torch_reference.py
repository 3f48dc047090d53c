"""Test-only PyTorch re-implementations of torchvision's ImageNet models, with torchvision's exact parameter
names (torchvision itself does not import here), and of timm's EfficientNet-B0 names.

Each model's `units(x)` returns (logits, [output of every depth unit]) in the same partition as this
codebase's UnitModel (stem, each block, ...), with NCHW outputs transposed to NHWC.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn


def nhwc(t: torch.Tensor) -> np.ndarray:
    t = t.detach()
    return (t.permute(0, 2, 3, 1) if t.ndim == 4 else t).numpy()


def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and non-trivial BatchNorm statistics, scaled so activations stay O(1) in deep nets."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (1.0 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
            elif isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.2 * torch.randn(n, generator=g))
                m.running_mean.copy_(0.2 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
                m.num_batches_tracked.fill_(1234)
    return model.eval()


def conv_bn_act(c_in, c_out, k, stride=1, groups=1, act=nn.ReLU):
    """torchvision's Conv2dNormActivation: a Sequential (conv, BN[, activation])."""
    layers = [nn.Conv2d(c_in, c_out, k, stride, (k - 1) // 2, groups=groups, bias=False), nn.BatchNorm2d(c_out)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


# --- ResNet (torchvision/models/resnet.py) --------------------------------------------------------------------

class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, c_in, width, stride, downsample):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.downsample = downsample

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, c_in, width, stride, downsample):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, width * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width * 4)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + (x if self.downsample is None else self.downsample(x)))


RESNET_DEPTHS = {18: (BasicBlock, (2, 2, 2, 2)), 34: (BasicBlock, (3, 4, 6, 3)), 50: (Bottleneck, (3, 4, 6, 3)),
                 101: (Bottleneck, (3, 4, 23, 3)), 152: (Bottleneck, (3, 8, 36, 3))}


class ResNet(nn.Module):
    def __init__(self, depth: int, num_classes: int = 1000):
        super().__init__()
        block, stages = RESNET_DEPTHS[depth]
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        c = 64
        for s, n in enumerate(stages):
            width, blocks = 64 * 2**s, []
            for b in range(n):
                stride = 2 if s > 0 and b == 0 else 1
                down = None
                if stride != 1 or c != width * block.expansion:
                    down = nn.Sequential(nn.Conv2d(c, width * block.expansion, 1, stride, bias=False),
                                         nn.BatchNorm2d(width * block.expansion))
                blocks.append(block(c, width, stride, down))
                c = width * block.expansion
            setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)

    @torch.no_grad()
    def units(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outs = [x]
        for s in range(1, 5):
            for blk in getattr(self, f"layer{s}"):
                x = blk(x)
                outs.append(x)
        return self.fc(torch.flatten(self.avgpool(x), 1)), outs


# --- VGG16 (torchvision/models/vgg.py, configuration "D") -----------------------------------------------------

class VGG16(nn.Module):
    def __init__(self, num_classes: int = 1000, fc_units: int = 4096):
        super().__init__()
        layers, c = [], 3
        for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"):
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU()]
                c = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(nn.Linear(512 * 7 * 7, fc_units), nn.ReLU(), nn.Dropout(),
                                        nn.Linear(fc_units, fc_units), nn.ReLU(), nn.Dropout(),
                                        nn.Linear(fc_units, num_classes))

    @torch.no_grad()
    def units(self, x):
        outs = []
        for layer in self.features:
            x = layer(x)
            if isinstance(layer, nn.MaxPool2d):
                outs.append(x)
        x = torch.flatten(self.avgpool(x), 1)
        x = self.classifier[:6](x)
        outs.append(x)
        return self.classifier[6](x), outs


# --- MobileNetV2 (torchvision/models/mobilenetv2.py) ----------------------------------------------------------

class InvertedResidual(nn.Module):
    def __init__(self, c_in, c_out, stride, t):
        super().__init__()
        hidden = c_in * t
        self.use_res_connect = stride == 1 and c_in == c_out
        layers = [conv_bn_act(c_in, hidden, 1, act=nn.ReLU6)] if t != 1 else []
        layers += [conv_bn_act(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
                   nn.Conv2d(hidden, c_out, 1, bias=False), nn.BatchNorm2d(c_out)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1))

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        features, c = [conv_bn_act(3, 32, 3, 2, act=nn.ReLU6)], 32
        for t, out, n, s in self.SETTINGS:
            for i in range(n):
                features.append(InvertedResidual(c, out, s if i == 0 else 1, t))
                c = out
        features.append(conv_bn_act(c, 1280, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    @torch.no_grad()
    def units(self, x):
        outs = []
        for layer in self.features:
            x = layer(x)
            outs.append(x)
        return self.classifier(x.mean((2, 3))), outs


# --- EfficientNet-B0 (torchvision/models/efficientnet.py) -----------------------------------------------------

B0 = ((1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
      (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1))


class SqueezeExcitation(nn.Module):
    def __init__(self, channels, squeeze, reduce="fc1", expand="fc2"):
        super().__init__()
        self.names = (reduce, expand)
        setattr(self, reduce, nn.Conv2d(channels, squeeze, 1))
        setattr(self, expand, nn.Conv2d(squeeze, channels, 1))

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        s = getattr(self, self.names[1])(nn.functional.silu(getattr(self, self.names[0])(s)))
        return x * torch.sigmoid(s)


class MBConv(nn.Module):
    def __init__(self, c_in, c_out, k, stride, e):
        super().__init__()
        hidden = c_in * e
        self.use_res_connect = stride == 1 and c_in == c_out
        layers = [conv_bn_act(c_in, hidden, 1, act=nn.SiLU)] if e != 1 else []
        layers += [conv_bn_act(hidden, hidden, k, stride, groups=hidden, act=nn.SiLU),
                   SqueezeExcitation(hidden, max(1, c_in // 4)), conv_bn_act(hidden, c_out, 1, act=None)]
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.block(x) if self.use_res_connect else self.block(x)


class EfficientNetB0(nn.Module):
    def __init__(self, num_classes: int = 1000):
        super().__init__()
        features = [conv_bn_act(3, 32, 3, 2, act=nn.SiLU)]
        for e, k, s, c_in, c_out, n in B0:
            features.append(nn.Sequential(*[MBConv(c_in if i == 0 else c_out, c_out, k, s if i == 0 else 1, e)
                                            for i in range(n)]))
        features.append(conv_bn_act(320, 1280, 1, act=nn.SiLU))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    @torch.no_grad()
    def units(self, x):
        x = self.features[0](x)
        outs = [x]
        for stage in self.features[1:-1]:
            for blk in stage:
                x = blk(x)
                outs.append(x)
        x = self.features[-1](x)
        outs.append(x)
        return self.classifier(x.mean((2, 3))), outs


def timm_efficientnet_b0_state_dict(model: EfficientNetB0) -> dict[str, torch.Tensor]:
    """The same weights under timm's efficientnet_b0 names (conv_stem, blocks.S.B.conv_dw, ...), written out
    by hand from timm's module structure rather than from the converter's table."""
    sd, f = {}, model.features

    def put(prefix, module):
        for k, v in module.state_dict().items():
            sd[f"{prefix}.{k}"] = v

    put("conv_stem", f[0][0])
    put("bn1", f[0][1])
    for s in range(7):
        for j, blk in enumerate(f[s + 1]):
            p, b = f"blocks.{s}.{j}", blk.block
            if len(b) == 3:  # DepthwiseSeparableConv
                put(f"{p}.conv_dw", b[0][0]), put(f"{p}.bn1", b[0][1])
                put(f"{p}.se.conv_reduce", b[1].fc1), put(f"{p}.se.conv_expand", b[1].fc2)
                put(f"{p}.conv_pw", b[2][0]), put(f"{p}.bn2", b[2][1])
            else:  # InvertedResidual
                put(f"{p}.conv_pw", b[0][0]), put(f"{p}.bn1", b[0][1])
                put(f"{p}.conv_dw", b[1][0]), put(f"{p}.bn2", b[1][1])
                put(f"{p}.se.conv_reduce", b[2].fc1), put(f"{p}.se.conv_expand", b[2].fc2)
                put(f"{p}.conv_pwl", b[3][0]), put(f"{p}.bn3", b[3][1])
    put("conv_head", f[8][0])
    put("bn2", f[8][1])
    put("classifier", model.classifier[1])
    return sd
