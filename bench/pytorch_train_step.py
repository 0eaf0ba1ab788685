#!/usr/bin/python3
"""The standard training step of shared/reference-models.md, in PyTorch, for comparison with
`peel bench train-step`: batch 128 of random inputs and labels, forward in train mode, mean
cross-entropy, backward, SGD (lr 0.1, momentum 0.9, weight decay 5e-4).

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
import torch.nn.functional as F

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "torch"))
from generate import build_model, reference_init  # noqa: E402

INPUT_CHW = {"small_cnn": (1, 28, 28), "vgg11": (3, 32, 32), "resnet18": (3, 32, 32)}


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
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.model == "small_cnn" and args.width != 1.0:
        parser.error("small_cnn has no width factor")
    if args.batch < 1 or args.threads < 1 or args.reps < 1 or args.warmup < 0 or args.steps < 0:
        parser.error("--batch, --threads, --reps must be positive; --warmup, --steps not negative")

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = reference_init(build_model(args.model, args.width, num_classes=args.classes)).train()
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

    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux
    print(json.dumps({
        "model": args.model, "width": args.width if args.model != "small_cnn" else None,
        "batch": args.batch, "threads": args.threads, "images_per_sec": round(statistics.median(rates), 2),
        "images_per_sec_reps": [round(r, 2) for r in rates], "peak_rss_mb": round(peak_rss_mb, 1),
        "steps_per_rep": steps, "channels_last": args.channels_last, "torch": torch.__version__,
        "framework": "pytorch"}))


if __name__ == "__main__":
    main()
