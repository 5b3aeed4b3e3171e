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
import time
from pathlib import Path

import numpy as np

import cnnlab

MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


def load_data(n):
    if (MNIST / "train-images-idx3-ubyte.gz").is_file():
        from cnnlab.datasets import load_mnist
        (x, y), _ = load_mnist(MNIST)
        source = "MNIST training images"
    else:
        rng = np.random.default_rng(0)
        x, y = rng.random((n, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, n)
        source = "random MNIST-shaped images"
    reps = -(-n // len(x))
    return np.concatenate([x] * reps)[:n], np.concatenate([y] * reps)[:n], source


def torch_lenet5(torch):
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
                         nn.Linear(84, 10))


def time_cnnlab_train(x, y, bs):
    model = cnnlab.models.lenet5()
    opt = cnnlab.optim.SGD(lr=0.01, momentum=0.9)
    t = time.perf_counter()
    model.fit(x, y, epochs=1, batch_size=bs, optimizer=opt, verbose=0)
    return len(x) / (time.perf_counter() - t)


def time_torch_train(torch, xt, yt, bs):
    net = torch_lenet5(torch)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    t = time.perf_counter()
    perm = torch.randperm(len(xt))                 # shuffle, as cnnlab's fit does
    for i in range(0, len(xt), bs):
        idx = perm[i:i + bs]
        opt.zero_grad()
        loss_fn(net(xt[idx]), yt[idx]).backward()
        opt.step()
    return len(xt) / (time.perf_counter() - t)


def time_cnnlab_infer(model, x):
    t = time.perf_counter()
    model.predict(x, batch_size=256)
    return len(x) / (time.perf_counter() - t)


def time_torch_infer(torch, net, xt):
    t = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(xt), 256):
            torch.softmax(net(xt[i:i + 256]), dim=1)
    return len(xt) / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=60000, help="training images per epoch")
    ap.add_argument("--infer-images", type=int, default=10000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 128])
    args = ap.parse_args()
    import torch
    torch.set_num_threads(2)
    x, y, source = load_data(args.images)
    xt = torch.tensor(x.transpose(0, 3, 1, 2).copy())
    yt = torch.tensor(y, dtype=torch.long)
    print(f"LeNet-5, one epoch of {len(x)} {source}; torch {torch.__version__} with 2 threads; "
          f"median of {args.repeats} alternating runs after a warm-up")
    rows = []
    for bs in args.batch_sizes:
        time_cnnlab_train(x[:2048], y[:2048], bs)             # warm-up both
        time_torch_train(torch, xt[:2048], yt[:2048], bs)
        ours, theirs = [], []
        for _ in range(args.repeats):
            ours.append(time_cnnlab_train(x, y, bs))
            theirs.append(time_torch_train(torch, xt, yt, bs))
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
