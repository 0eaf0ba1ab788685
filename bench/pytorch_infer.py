#!/usr/bin/python3
"""The evaluation forward in PyTorch, for comparison with `peel bench infer`: a reference model in
eval mode under torch.no_grad(), a batch of random inputs (small_cnn 1x28x28; vgg11 and resnet18
3x32x32), timed after warm-up. The models are those of tests/fixtures/torch/generate.py.

Prints progress to stderr and, as its last stdout line, one JSON object:
{"mode": "infer", "model", "width", "batch", "threads", "images_per_sec" (median), "images_per_sec_reps",
 "peak_rss_mb", "torch", "channels_last", "framework": "pytorch"}.

    /usr/bin/python3 bench/pytorch_infer.py --model small_cnn --threads 2
"""
import argparse
import json
import os
import resource
import statistics
import sys
import time

import torch

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "torch"))
from generate import build_model, reference_init  # noqa: E402

INPUT_CHW = {"small_cnn": (1, 28, 28), "vgg11": (3, 32, 32), "resnet18": (3, 32, 32)}


def main():
    parser = argparse.ArgumentParser(description="PyTorch evaluation forward (images/s)")
    parser.add_argument("--model", required=True, choices=sorted(INPUT_CHW))
    parser.add_argument("--width", type=float, default=1.0, help="vgg11/resnet18 width factor")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--batches", type=int, default=10, help="batches per repetition")
    parser.add_argument("--channels-last", action="store_true")
    args = parser.parse_args()
    if args.model == "small_cnn" and args.width != 1.0:
        parser.error("small_cnn has no width factor")
    if min(args.batch, args.threads, args.reps, args.batches) < 1 or args.warmup < 0:
        parser.error("--batch, --threads, --reps, --batches must be positive; --warmup not negative")

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = reference_init(build_model(args.model, args.width, num_classes=10)).eval()
    x = torch.randn((args.batch,) + INPUT_CHW[args.model])
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    rates = []
    with torch.no_grad():
        for _ in range(max(args.warmup, 1)):
            model(x)
        for rep in range(args.reps):
            start = time.perf_counter()
            for _ in range(args.batches):
                model(x)
            seconds = time.perf_counter() - start
            rates.append(args.batch * args.batches / seconds)
            print(f"rep {rep}: {rates[-1]:.1f} images/s", file=sys.stderr)
    print(json.dumps({
        "mode": "infer", "model": args.model, "width": args.width if args.model != "small_cnn" else None,
        "batch": args.batch, "threads": args.threads, "images_per_sec": round(statistics.median(rates), 2),
        "images_per_sec_reps": [round(r, 2) for r in rates],
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
        "channels_last": args.channels_last, "torch": torch.__version__, "framework": "pytorch"}))


if __name__ == "__main__":
    main()
