#!/usr/bin/env python3
"""PyTorch reference for `lorkd-train bench`: the plain multi-task (MTL) training step of
ShuffleNetV2 (torchvision's architecture, built here so torchvision is not needed) with T
department heads, timed the way lorkd-train times it (median of synchronised steps), in f32
and in bf16 autocast + channels_last, optionally with the paper's EKS layer (per-sample
weights, one grouped conv). Prints one JSON line per variant.

    python3 trainer/reference/torch_step.py --input 224 --batch 256 --departments 10
    python3 trainer/reference/torch_step.py --input 32 --batch 8 --iters 2 --cpu   # smoke test
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def channel_shuffle(x, groups):
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class Block(nn.Module):
    def __init__(self, inp, oup, stride):
        super().__init__()
        self.stride = stride
        bf = oup // 2
        if stride > 1:
            self.branch1 = nn.Sequential(
                nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False), nn.BatchNorm2d(inp),
                nn.Conv2d(inp, bf, 1, bias=False), nn.BatchNorm2d(bf), nn.ReLU(inplace=True))
        else:
            self.branch1 = nn.Sequential()
        cin = inp if stride > 1 else bf
        self.branch2 = nn.Sequential(
            nn.Conv2d(cin, bf, 1, bias=False), nn.BatchNorm2d(bf), nn.ReLU(inplace=True),
            nn.Conv2d(bf, bf, 3, stride, 1, groups=bf, bias=False), nn.BatchNorm2d(bf),
            nn.Conv2d(bf, bf, 1, bias=False), nn.BatchNorm2d(bf), nn.ReLU(inplace=True))

    def forward(self, x):
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2MTL(nn.Module):
    CHANNELS = {"0.5": [24, 48, 96, 192, 1024], "1.0": [24, 116, 232, 464, 1024],
                "1.5": [24, 176, 352, 704, 1024], "2.0": [24, 244, 488, 976, 2048]}

    def __init__(self, width, departments, classes, in_ch=3):
        super().__init__()
        c = self.CHANNELS[width]
        self.conv1 = nn.Sequential(nn.Conv2d(in_ch, c[0], 3, 2, 1, bias=False),
                                   nn.BatchNorm2d(c[0]), nn.ReLU(inplace=True))
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        stages, inp = [], c[0]
        for reps, oup in zip([4, 8, 4], c[1:4]):
            blocks = [Block(inp, oup, 2)] + [Block(oup, oup, 1) for _ in range(reps - 1)]
            stages.append(nn.Sequential(*blocks))
            inp = oup
        self.stage2, self.stage3, self.stage4 = stages
        self.conv5 = nn.Sequential(nn.Conv2d(inp, c[4], 1, bias=False), nn.BatchNorm2d(c[4]),
                                   nn.ReLU(inplace=True))
        self.heads = nn.ModuleList(nn.Linear(c[4], classes) for _ in range(departments))

    def features(self, x):
        x = self.maxpool(self.conv1(x))
        x = self.stage4(self.stage3(self.stage2(x)))
        return self.conv5(x).mean([2, 3])


class EksConv(nn.Module):
    """The paper's EKS layer: per-sample W_b = W0 + s·B_t A_t, one grouped conv."""

    def __init__(self, conv, departments, rank):
        super().__init__()
        self.conv = conv
        k = conv.kernel_size[0]
        self.s = 2.0
        self.A = nn.Parameter(torch.randn(departments, rank * k, conv.in_channels * k) * 0.01)
        self.B = nn.Parameter(torch.randn(departments, conv.out_channels * k, rank * k) * 0.01)
        self.ids = None

    def forward(self, x):
        n, cin, h, w = x.shape
        co, ci, k, _ = self.conv.weight.shape
        delta = (self.B @ self.A).reshape(-1, co, ci, k, k) * self.s
        wb = self.conv.weight.unsqueeze(0) + delta[self.ids]
        y = F.conv2d(x.reshape(1, n * cin, h, w), wb.reshape(n * co, ci, k, k), None,
                     self.conv.stride, self.conv.padding, 1, n)
        return y.reshape(n, co, y.shape[2], y.shape[3])


def with_eks(model, departments, rank):
    eks = []
    for name, m in list(model.named_modules()):
        for cname, c in list(m.named_children()):
            if isinstance(c, nn.Conv2d) and c.groups == 1:
                e = EksConv(c, departments, rank)
                setattr(m, cname, e)
                eks.append(e)
    return eks


def time_step(args, device, bf16_cl, eks):
    torch.manual_seed(args.seed)
    model = ShuffleNetV2MTL(args.width, args.departments, 5).to(device)
    layers = with_eks(model, args.departments, args.rank) if eks else []
    model = model.to(device)
    x = torch.randn(args.batch, 3, args.input, args.input, device=device)
    y = torch.randint(0, 5, (args.batch,), device=device)
    ids = torch.randint(0, args.departments, (args.batch,), device=device)
    for layer in layers:
        layer.ids = ids
    groups = [(t, (ids == t).nonzero().squeeze(1)) for t in range(args.departments)]
    groups = [(t, i) for t, i in groups if i.numel() > 0]
    if bf16_cl:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    cuda = device.type == "cuda"
    times = []
    for i in range(args.warmup + args.iters):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16_cl and cuda):
            f = model.features(x)
            loss = 0
            for t, idx in groups:
                z = model.heads[t](f[idx]).float()
                loss = loss + F.cross_entropy(z, y[idx], reduction="sum")
        opt.zero_grad(set_to_none=True)
        (loss / args.batch).backward()
        opt.step()
        if cuda:
            torch.cuda.synchronize()
        if i >= args.warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    ms = statistics.median(times)
    return {"framework": f"torch {torch.__version__}", "device": str(device),
            "variant": ("eks " if eks else "mtl ") + ("bf16+channels_last" if bf16_cl else "f32"),
            "width": args.width, "input": args.input, "batch": args.batch,
            "departments": args.departments, "ms": round(ms, 3),
            "images_per_sec": round(args.batch / ms * 1e3, 1),
            "cudnn_benchmark": torch.backends.cudnn.benchmark}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--width", default="1.0", choices=list(ShuffleNetV2MTL.CHANNELS))
    p.add_argument("--input", type=int, default=224)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--departments", type=int, default=10)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cpu", action="store_true")
    p.add_argument("--eks", action="store_true", help="also time the paper's EKS step")
    p.add_argument("--cudnn-benchmark", action="store_true")
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    for eks in [False, True] if args.eks else [False]:
        for bf16_cl in [False, True]:
            print(json.dumps(time_step(args, device, bf16_cl, eks)), flush=True)


if __name__ == "__main__":
    main()
