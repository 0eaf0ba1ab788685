#!/usr/bin/python3
"""The standard training step of shared/reference-models.md, in PyTorch, for comparison with
`peel bench train-step`: batch 128 of random inputs and labels, forward in train mode, mean
cross-entropy, backward, SGD (lr 0.1, momentum 0.9, weight decay 5e-4).

--norm (as `peel bench train-step --norm`, docs/normalization.md): every BN slot of the model holds
the chosen norm. bn uses the fixtures' reference models unchanged; the others are built below from
the official code's definitions (joe-siyuan-qiao/Batch-Channel-Normalization README `BCNorm`,
`EstBN`, imagenet/models/layers.py for WS; gupta-abhay/pytorch-frn for FRN + TLU) and peel's
choices (group_count, LN = GroupNorm(1, C), TLU in place of every ReLU for frn). NOTE: this --norm
path was written without PyTorch at hand and has never been run; check it before trusting a figure.

Inputs: small_cnn 1x28x28; vgg11 and resnet18 3x32x32 (CIFAR-10), K = 10 classes. The models are
those of tests/fixtures/torch/generate.py, initialised as reference-models.md says.

Prints progress to stderr and, as its last stdout line, one JSON object:
{"model", "width", "batch", "threads", "images_per_sec" (median over repetitions),
 "images_per_sec_reps", "peak_rss_mb" (getrusage maxrss), "torch", "channels_last"}.

    /usr/bin/python3 bench/pytorch_train_step.py --model small_cnn --threads 2
    /usr/bin/python3 bench/pytorch_train_step.py --model resnet18 --width 0.25 --threads 2
"""
import argparse
import json
import os
import resource
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "torch"))
from generate import build_model, reference_init  # noqa: E402

INPUT_CHW = {"small_cnn": (1, 28, 28), "vgg11": (3, 32, 32), "resnet18": (3, 32, 32)}


# ---- The normalisations of docs/normalization.md ------------------------------------------------

NORMS = ["bn", "gn", "ln", "gn+ws", "bcn+ws", "frn", "wn", "none"]


def group_count(c):
    """peel's nn::group_count: 32 when 32 divides C, C when C < 32, else the largest divisor below 32."""
    if c % 32 == 0:
        return 32
    if c < 32:
        return c
    return max(g for g in range(1, 32) if c % g == 0)


class WSConv2d(nn.Conv2d):
    """Weight standardisation, the BCN repository's form: per output filter,
    (W - mean) / sqrt(var_unbiased + 1e-5)."""

    def forward(self, x):
        w = self.weight
        flat = w.view(w.size(0), -1)
        mean = flat.mean(dim=1).view(-1, 1, 1, 1)
        std = torch.sqrt(flat.var(dim=1, unbiased=True) + 1e-5).view(-1, 1, 1, 1)
        return F.conv2d(x, (w - mean) / std, self.bias, self.stride, self.padding, self.dilation, self.groups)


class EstBN(nn.Module):
    """The official EstBN: normalises with its running estimates in train and eval; in training it
    first moves them (no gradient), the variance about the *old* running mean, at rate r."""

    def __init__(self, num_features, moving_speed):
        super().__init__()
        self.num_features = num_features
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("estbn_moving_speed", torch.full((1,), float(moving_speed)))

    def forward(self, x):
        ms = self.estbn_moving_speed.item()
        if self.training:
            with torch.no_grad():
                xt = x.transpose(0, 1).contiguous().view(self.num_features, -1)
                mean = xt.mean(dim=1)
                xt = xt - self.running_mean.view(-1, 1)
                var = torch.mean(xt * xt, dim=1)
                self.running_mean.mul_(1 - ms).add_(ms * mean)
                self.running_var.mul_(1 - ms).add_(ms * var)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        out = (x - self.running_mean.view(shape)) / torch.sqrt(self.running_var + 1e-5).view(shape)
        return self.weight.view(shape) * out + self.bias.view(shape)


class BCNorm(nn.Module):
    """The official BCNorm: the batch part (BN, or EstBN), then group normalisation without a
    per-channel affine, then one scale and shift per group."""

    def __init__(self, num_channels, num_groups, estimate, moving_speed, eps=1e-5):
        super().__init__()
        self.num_groups, self.eps = num_groups, eps
        self.weight = nn.Parameter(torch.ones(1, num_groups, 1))
        self.bias = nn.Parameter(torch.zeros(1, num_groups, 1))
        self.bn = EstBN(num_channels, moving_speed) if estimate else nn.BatchNorm2d(num_channels)

    def forward(self, x):
        out = self.bn(x)
        # reshape where the official code has view: the same on NCHW memory, and also valid for
        # --channels-last (a copy there).
        out = out.reshape(1, x.size(0) * self.num_groups, -1)
        out = torch.batch_norm(out, None, None, None, None, True, 0, self.eps, True)
        out = out.reshape(x.size(0), self.num_groups, -1)
        out = self.weight * out + self.bias
        return out.reshape(x.shape)


class FRN(nn.Module):
    """Filter response normalisation: y = gamma x / sqrt(mean_{H,W} x^2 + |eps|) + beta."""

    def __init__(self, c, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1, c, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.register_buffer("eps", torch.tensor(eps))

    def forward(self, x):
        nu2 = x.pow(2).mean(dim=(2, 3), keepdim=True)
        return self.weight * (x * torch.rsqrt(nu2 + self.eps.abs())) + self.bias


class TLU(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.tau = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, x):
        return torch.max(x, self.tau)


class Slot(nn.Module):
    """One BN slot: the norm, then its activation (ReLU, TLU for frn) when `act`."""

    def __init__(self, norm, c, act, options):
        super().__init__()
        if norm == "bn":
            self.norm = nn.BatchNorm2d(c)
        elif norm in ("gn", "gn+ws"):
            self.norm = nn.GroupNorm(group_count(c), c, eps=1e-5)
        elif norm == "ln":
            self.norm = nn.GroupNorm(1, c, eps=1e-5)
        elif norm == "bcn+ws":
            self.norm = BCNorm(c, group_count(c), options["bcn_batch_part"] == "estimated",
                               options["estbn_moving_speed"])
        elif norm == "frn":
            self.norm = FRN(c)
        else:  # wn, none: no norm layer
            self.norm = nn.Identity()
        self.act = (TLU(c) if norm == "frn" else nn.ReLU()) if act else nn.Identity()

    def forward(self, x):
        return self.act(self.norm(x))


def conv(norm, cin, cout, k, stride=1, padding=1):
    bias = norm in ("wn", "none")
    cls = WSConv2d if norm in ("gn+ws", "bcn+ws") else nn.Conv2d
    layer = cls(cin, cout, k, stride=stride, padding=padding, bias=bias)
    nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
    if norm == "wn":
        layer = nn.utils.weight_norm(layer)
    return layer


class SmallCNN(nn.Module):
    def __init__(self, norm, options, num_classes=10, in_channels=1):
        super().__init__()
        widths = [(in_channels, 32), (32, 32), (32, 64), (64, 64), (64, 128)]
        for i, (cin, cout) in enumerate(widths, start=1):
            setattr(self, f"conv{i}", conv(norm, cin, cout, 3))
            setattr(self, f"bn{i}", Slot(norm, cout, True, options))
        self.fc = nn.Linear(128, num_classes)

    def forward(self, x):
        x = self.bn1(self.conv1(x))
        x = F.max_pool2d(self.bn2(self.conv2(x)), 2)
        x = self.bn3(self.conv3(x))
        x = F.max_pool2d(self.bn4(self.conv4(x)), 2)
        x = self.bn5(self.conv5(x))
        return self.fc(x.mean(dim=(2, 3)))


class BasicBlock(nn.Module):
    def __init__(self, norm, options, cin, cout, stride):
        super().__init__()
        self.conv1 = conv(norm, cin, cout, 3, stride)
        self.bn1 = Slot(norm, cout, True, options)
        self.conv2 = conv(norm, cout, cout, 3)
        self.bn2 = Slot(norm, cout, False, options)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(conv(norm, cin, cout, 1, stride, 0), Slot(norm, cout, False, options))
        self.act = TLU(cout) if norm == "frn" else nn.ReLU()

    def forward(self, x):
        out = self.bn2(self.conv2(self.bn1(self.conv1(x))))
        return self.act(out + (x if self.downsample is None else self.downsample(x)))


class ResNet18(nn.Module):
    def __init__(self, norm, options, width=1.0, num_classes=10, in_channels=3):
        super().__init__()
        c = [int(round(64 * width * 2 ** i)) for i in range(4)]
        self.conv1 = conv(norm, in_channels, c[0], 3)
        self.bn1 = Slot(norm, c[0], True, options)
        cin = c[0]
        for i, stride in enumerate([1, 2, 2, 2]):
            setattr(self, f"layer{i + 1}", nn.Sequential(BasicBlock(norm, options, cin, c[i], stride),
                                                         BasicBlock(norm, options, c[i], c[i], 1)))
            cin = c[i]
        self.fc = nn.Linear(c[3], num_classes)

    def forward(self, x):
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.bn1(self.conv1(x))))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


VGG11_PLAN = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]


class VGG11(nn.Module):
    def __init__(self, norm, options, width=1.0, num_classes=10, in_channels=3):
        super().__init__()
        layers, cin = [], in_channels
        for v in VGG11_PLAN:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                cout = int(round(v * width))
                layers += [conv(norm, cin, cout, 3), Slot(norm, cout, True, options)]
                cin = cout
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


def build_norm_model(name, width, norm, options, num_classes=10):
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r} ({', '.join(NORMS)})")
    if name == "small_cnn":
        return SmallCNN(norm, options, num_classes)
    if name == "vgg11":
        return VGG11(norm, options, width, num_classes)
    if name == "resnet18":
        return ResNet18(norm, options, width, num_classes)
    raise ValueError(f"unknown model {name!r} (small_cnn, vgg11, resnet18)")


def phase_breakdown(model, opt, x, y, steps):
    """Median milliseconds of each phase of a step, over `steps` extra steps (as peel's bench)."""
    phases = ["zero_grad", "forward", "loss", "backward", "sgd_step"]
    times = {p: [] for p in phases}
    for _ in range(steps):
        t = [time.perf_counter()]
        opt.zero_grad()
        t.append(time.perf_counter())
        logits = model(x)
        t.append(time.perf_counter())
        loss = F.cross_entropy(logits, y)
        t.append(time.perf_counter())
        loss.backward()
        t.append(time.perf_counter())
        opt.step()
        t.append(time.perf_counter())
        for i, p in enumerate(phases):
            times[p].append(1000 * (t[i + 1] - t[i]))
    return {p: round(statistics.median(v), 4) for p, v in times.items()}


def main():
    parser = argparse.ArgumentParser(description="PyTorch standard training step (images/s)")
    parser.add_argument("--model", required=True, choices=sorted(INPUT_CHW))
    parser.add_argument("--width", type=float, default=1.0, help="vgg11/resnet18 width factor")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--reps", type=int, default=7, help="timed repetitions")
    parser.add_argument("--steps", type=int, default=0,
                        help="steps per repetition (default: about 1 s of work, at least 2)")
    parser.add_argument("--channels-last", action="store_true",
                        help="NHWC memory format for model and input (default NCHW)")
    parser.add_argument("--norm", default="bn", choices=NORMS, help="normalisation in every BN slot")
    parser.add_argument("--bcn-batch-part", default="batch", choices=["batch", "estimated"],
                        help="bcn+ws: BN or EstBN")
    parser.add_argument("--estbn-moving-speed", type=float, default=0.01, help="EstBN's r")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.model == "small_cnn" and args.width != 1.0:
        parser.error("small_cnn has no width factor")
    if args.batch < 1 or args.threads < 1 or args.reps < 1 or args.warmup < 0 or args.steps < 0:
        parser.error("--batch, --threads, --reps must be positive; --warmup, --steps not negative")

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.norm == "bn":
        model = reference_init(build_model(args.model, args.width, num_classes=args.classes)).train()
    else:
        options = {"bcn_batch_part": args.bcn_batch_part, "estbn_moving_speed": args.estbn_moving_speed}
        model = build_norm_model(args.model, args.width, args.norm, options, args.classes).train()
    x = torch.randn((args.batch,) + INPUT_CHW[args.model])
    y = torch.randint(0, args.classes, (args.batch,))
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)

    def step():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    start = time.perf_counter()
    for _ in range(max(args.warmup, 1)):
        loss = step()
    per_step = (time.perf_counter() - start) / max(args.warmup, 1)
    steps = args.steps or max(2, int(round(1.0 / per_step)))
    rates = []
    for rep in range(args.reps):
        start = time.perf_counter()
        for _ in range(steps):
            loss = step()
        seconds = time.perf_counter() - start
        rates.append(args.batch * steps / seconds)
        print(f"rep {rep}: {steps} steps, {seconds:.3f} s, {rates[-1]:.1f} images/s, "
              f"loss {loss.item():.4f}", file=sys.stderr)

    breakdown = phase_breakdown(model, opt, x, y, args.reps * steps)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux
    print(json.dumps({
        "model": args.model, "width": args.width if args.model != "small_cnn" else None,
        "norm": args.norm, "bcn_batch_part": args.bcn_batch_part,
        "batch": args.batch, "threads": args.threads, "images_per_sec": round(statistics.median(rates), 2),
        "images_per_sec_reps": [round(r, 2) for r in rates], "peak_rss_mb": round(peak_rss_mb, 1),
        "step_ms": round(1000 * args.batch / statistics.median(rates), 4), "phase_ms_median": breakdown,
        "steps_per_rep": steps, "channels_last": args.channels_last, "torch": torch.__version__,
        "framework": "pytorch"}))


if __name__ == "__main__":
    main()
