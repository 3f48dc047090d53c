"""The PyTorch CPU baseline of the *_vs_torch benchmarks: the training loop a researcher would write by hand.

A network here is a torch module with `units` (an nn.ModuleList: stem first, then each block, the same
partition as tl_research's UnitModel) and `head` (global average pooling, then one nn.Linear). One run:

- frozen depth k: units 0..k-1 get requires_grad=False, run in eval mode (BatchNorm on its running
  statistics) and under torch.no_grad, so no backward pass goes through them; k = len(units) trains the head;
- the head's classifier starts at zero (as tl_research's Head); units from the source weights or, from
  scratch, flax's default initialisers (conv kernels LeCun-normal, truncated; BatchNorm ones and zeros);
- SGD with momentum, decoupled weight decay on the kernels (conv and linear weights) of the trained units and
  the head (w <- w * (1 - lr * wd), then the momentum step: optax's trace + add_decayed_weights + lr);
- the batches of tl_research's EpochSampler (a fresh permutation of the training set every epoch, drawn with
  numpy's default_rng([seed, epoch]); the stream runs on across epoch ends), so both sides see the same
  examples in the same order;
- validation accuracy every `eval_every` steps and at the last step; the test accuracy of the best
  validation step's weights (the first of equal ones) is the run's result.

torch.set_num_threads(threads); run it with OMP_WAIT_POLICY=PASSIVE in the environment (the benchmarks do),
or OpenMP's spinning threads slow it several times over on a busy machine.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


def lecun_normal_(weight: torch.Tensor, generator: torch.Generator) -> None:
    """flax's lecun_normal: truncated normal on [-2, 2] std, rescaled to variance 1 / fan_in."""
    fan_in = weight[0].numel()
    std = math.sqrt(1.0 / fan_in) / 0.87962566103423978
    with torch.no_grad():
        nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std, generator=generator)


class SameConv(nn.Conv2d):
    """nn.Conv2d with XLA's SAME padding (out = ceil(in / stride); an odd total pads one more at the end,
    which torch's symmetric `padding` cannot express for stride 2 on even sizes)."""

    def __init__(self, c_in, c_out, k, stride=1):
        super().__init__(c_in, c_out, k, stride, padding=0, bias=False)

    def forward(self, x):
        pads = []
        for size in (x.shape[3], x.shape[2]):  # F.pad: last dimension first
            out = -(-size // self.stride[0])
            total = max((out - 1) * self.stride[0] + self.kernel_size[0] - size, 0)
            pads += [total // 2, total - total // 2]
        if any(pads):
            x = F.pad(x, pads)
        return super().forward(x)


def batch_norm(c):
    return nn.BatchNorm2d(c, eps=1e-5, momentum=0.1)  # flax momentum 0.9 = torch momentum 0.1


class Stem(nn.Module):
    def __init__(self, c_in, width):
        super().__init__()
        self.conv, self.bn = SameConv(c_in, width, 3), batch_norm(width)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class BasicBlock(nn.Module):
    """tl_research.models.resnet_cifar.BasicBlock: two 3x3 convs, a 1x1 projection when the shape changes."""

    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv1, self.bn1 = SameConv(c_in, c_out, 3, stride), batch_norm(c_out)
        self.conv2, self.bn2 = SameConv(c_out, c_out, 3), batch_norm(c_out)
        self.proj = self.proj_bn = None
        if stride != 1 or c_in != c_out:
            self.proj, self.proj_bn = SameConv(c_in, c_out, 1, stride), batch_norm(c_out)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        shortcut = x if self.proj is None else self.proj_bn(self.proj(x))
        return F.relu(y + shortcut)


class UnitNet(nn.Module):
    """units -> global average pool -> linear head."""

    def __init__(self, units, features: int, num_classes: int):
        super().__init__()
        self.units = nn.ModuleList(units)
        self.head = nn.Linear(features, num_classes)
        with torch.no_grad():
            self.head.weight.zero_()
            self.head.bias.zero_()

    def forward(self, x, frozen_depth: int = 0):
        for i, unit in enumerate(self.units):
            if i < frozen_depth:
                with torch.no_grad():
                    x = unit(x)
            else:
                x = unit(x)
        return self.head(x.mean(dim=(2, 3)))


def resnet_cifar(stage_sizes, width, in_channels, num_classes, seed: int) -> UnitNet:
    """tl_research.models.resnet_cifar.build in torch, initialised as flax initialises it."""
    units, channels = [Stem(in_channels, width)], width
    for stage, size in enumerate(stage_sizes):
        out = width * 2 ** stage
        for b in range(size):
            units.append(BasicBlock(channels, out, 2 if (stage > 0 and b == 0) else 1))
            channels = out
    net = UnitNet(units, channels, num_classes)
    g = torch.Generator().manual_seed(seed)
    for m in net.units.modules():
        if isinstance(m, nn.Conv2d):
            lecun_normal_(m.weight, g)
    return net


def with_new_head(source: UnitNet, num_classes: int) -> UnitNet:
    """A copy of the source's units (weights and BatchNorm statistics) under a fresh zero head."""
    return UnitNet([copy.deepcopy(u) for u in source.units], source.head.in_features, num_classes)


def epoch_batches(n: int, batch: int, seed: int, steps: int):
    """tl_research.data.pipeline.EpochSampler's stream: the example positions of every step."""
    perms = {}
    for step in range(steps):
        pos = np.arange(step * batch, (step + 1) * batch)
        epochs, offsets = np.divmod(pos, n)
        for e in set(epochs.tolist()):
            if e not in perms:
                perms[e] = np.random.default_rng([seed, e]).permutation(n)
        yield np.array([perms[e][o] for e, o in zip(epochs, offsets)], dtype=np.int64)


def accuracy(net: UnitNet, images: torch.Tensor, labels: torch.Tensor, batch: int) -> float:
    net.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(images), batch):
            correct += int((net(images[i:i + batch]).argmax(1) == labels[i:i + batch]).sum())
    return correct / len(images)


def _set_mode(net: UnitNet, frozen_depth: int) -> None:
    net.train()
    for unit in net.units[:frozen_depth]:
        unit.eval()


def train_run(net: UnitNet, data: dict, *, frozen_depth: int, seed: int, steps: int, batch: int, lrs,
              momentum: float, weight_decay: float, eval_every: int, eval_batch: int) -> dict:
    """One run (see the module docstring); data: float32 NCHW tensors train_x / val_x / test_x and int64
    labels. Returns {"val_accuracy", "test_accuracy", "best_step"}."""
    for unit in net.units[:frozen_depth]:
        unit.requires_grad_(False)
    params = [p for p in net.parameters() if p.requires_grad]
    decayed = [p for name, p in net.named_parameters() if p.requires_grad and name.endswith("weight")
               and p.ndim > 1]
    opt = torch.optim.SGD(params, lr=float(lrs[0]), momentum=momentum)
    best, best_state, best_step = -1.0, None, 0
    tx, ty = data["train_x"], data["train_y"]
    for step, idx in enumerate(epoch_batches(len(tx), batch, seed, steps), start=1):
        _set_mode(net, frozen_depth)
        lr = float(lrs[step - 1])
        idx = torch.from_numpy(idx)
        loss = F.cross_entropy(net(tx[idx], frozen_depth), ty[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():
            for p in decayed:
                p.mul_(1.0 - lr * weight_decay)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
        if step % 10 == 0:
            if not math.isfinite(loss.item()):
                raise RuntimeError(f"loss diverged at step {step}")
        if step % eval_every == 0 or step == steps:
            val = accuracy(net, data["val_x"], data["val_y"], eval_batch)
            if val > best:
                best, best_step = val, step
                best_state = copy.deepcopy(net.state_dict())
    net.load_state_dict(best_state)
    return {"val_accuracy": best, "test_accuracy": accuracy(net, data["test_x"], data["test_y"], eval_batch),
            "best_step": best_step}


def tensors(npz: dict, mean, std) -> dict:
    """uint8 NHWC arrays -> float32 NCHW tensors scaled to [0, 1] and normalised by mean and std."""
    mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    out = {}
    for split in ("train", "val", "test"):
        x = torch.from_numpy(np.ascontiguousarray(npz[f"{split}_x"])).permute(0, 3, 1, 2).float() / 255.0
        out[f"{split}_x"] = ((x - mean) / std).contiguous()
        out[f"{split}_y"] = torch.from_numpy(np.asarray(npz[f"{split}_y"], np.int64))
    return out


def triangular(base_lr: float, max_lr: float, step_size: int, steps: int) -> np.ndarray:
    """Smith's triangular cyclical LR at steps t = 0..steps-1 (base at 0, max at step_size)."""
    t = np.arange(steps, dtype=np.float64)
    cycle = np.floor(1.0 + t / (2.0 * step_size))
    x = np.abs(t / step_size - 2.0 * cycle + 1.0)
    return base_lr + (max_lr - base_lr) * np.maximum(0.0, 1.0 - x)


def cosine_with_warmup(lr: float, warmup: int, steps: int) -> np.ndarray:
    """Linear warmup from 0 over `warmup` steps, then cosine decay to 0 over the rest (optax's)."""
    t = np.arange(steps, dtype=np.float64)
    main = steps - warmup
    decay = 0.5 * lr * (1.0 + np.cos(np.pi * np.minimum(t - warmup, main) / main))
    return np.where(t < warmup, lr * t / max(warmup, 1), decay)
