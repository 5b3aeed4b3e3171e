"""LeNet-5 on the CPU: cnnlab against PyTorch, side by side in one run.

    python benchmarks/bench_lenet5.py [--images 60000] [--repeats 3] [--batch-sizes 64 128]

Trains LeNet-5 for one epoch on MNIST-shaped data (the real MNIST training
images when ``../shared/data/mnist`` is present, random images otherwise) with
the same batch size and SGD with momentum in both libraries, PyTorch limited
to 2 threads. Runs alternate between the libraries after a warm-up; the median
of the repeats is reported, as images per second and as the ratio
cnnlab / PyTorch (> 1 means cnnlab is faster). Inference is timed the same way
at batch 256.
"""
import argparse

import numpy as np

import cnnlab
from common import (load_images, machine, time_cnnlab_infer, time_cnnlab_train, time_torch_infer, time_torch_train, to_torch,
                    torch_lenet5)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=60000, help="training images per epoch")
    ap.add_argument("--infer-images", type=int, default=10000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 128])
    args = ap.parse_args()
    import torch
    torch.set_num_threads(2)
    x, y, source = load_images("mnist", args.images)
    xt, yt = to_torch(torch, x, y)
    print(machine())
    print(f"LeNet-5, one epoch of {len(x)} {source}; torch {torch.__version__} with 2 threads; "
          f"median of {args.repeats} alternating runs after a warm-up")
    rows = []
    for bs in args.batch_sizes:
        time_cnnlab_train(cnnlab.models.lenet5(), x[:2048], y[:2048], bs)             # warm-up both
        time_torch_train(torch, torch_lenet5(torch), xt[:2048], yt[:2048], bs)
        ours, theirs = [], []
        for _ in range(args.repeats):
            ours.append(time_cnnlab_train(cnnlab.models.lenet5(), x, y, bs))
            theirs.append(time_torch_train(torch, torch_lenet5(torch), xt, yt, bs))
        rows.append((f"train, batch {bs}", ours, theirs))
    model, net = cnnlab.models.lenet5(), torch_lenet5(torch).eval()
    xi, xti = x[:args.infer_images], xt[:args.infer_images]
    time_cnnlab_infer(model, xi[:1024]), time_torch_infer(torch, net, xti[:1024])
    ours, theirs = [], []
    for _ in range(args.repeats):
        ours.append(time_cnnlab_infer(model, xi))
        theirs.append(time_torch_infer(torch, net, xti))
    rows.append(("inference, batch 256", ours, theirs))
    print(f"{'':22s} {'cnnlab img/s':>13s} {'PyTorch img/s':>14s} {'ratio':>7s}   (runs: cnnlab | PyTorch)")
    for name, ours, theirs in rows:
        a, b = np.median(ours), np.median(theirs)
        runs = " ".join(f"{v:,.0f}" for v in ours) + " | " + " ".join(f"{v:,.0f}" for v in theirs)
        print(f"{name:22s} {a:13,.0f} {b:14,.0f} {a / b:6.2f}x   ({runs})")


if __name__ == "__main__":
    main()
