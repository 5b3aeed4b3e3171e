"""What the benchmarks share: the data they train on, the PyTorch twin of each zoo network, and the timed loops.

Every twin is the same network as the cnnlab model of that name (same layers,
same widths, no bias where cnnlab has none); ``check_twin`` compares their
parameter counts, so a twin that drifts from the zoo fails loudly instead of
timing a different network. Only the layout differs: PyTorch computes on
(N, C, H, W) batches, cnnlab on (N, H, W, C).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

import cnnlab

ROOT = Path(__file__).resolve().parents[1]
# ../shared/data seen from the project's root; a git worktree one level deeper sees it at ../../shared/data.
DATA_DIRS = (ROOT.parent / "shared" / "data", ROOT.parent.parent / "shared" / "data")


def data_dir():
    """The first of ``DATA_DIRS`` that exists, or None."""
    return next((d for d in DATA_DIRS if d.is_dir()), None)


def load_images(kind, n, root=None):
    """``n`` training images ``(x, y, source)`` of ``kind`` ``"mnist"`` (28, 28, 1) or ``"cifar10"`` (32, 32, 3).

    Real images from ``root`` (default ``data_dir()``) when they are there,
    repeated to reach ``n``; random images of the right shape otherwise (the
    time a network takes does not depend on the pixel values).
    """
    root = data_dir() if root is None else Path(root)
    x = None
    if kind == "mnist" and root is not None and (root / "mnist" / "train-images-idx3-ubyte.gz").is_file():
        from cnnlab.datasets.idx import read_idx
        pixels = read_idx(root / "mnist" / "train-images-idx3-ubyte.gz")[:n]     # uint8: convert only what is used
        x = (pixels[..., None] / np.float32(255)).astype(np.float32)
        y = read_idx(root / "mnist" / "train-labels-idx1-ubyte.gz")[:n].astype(np.int64)
        source = "MNIST training images"
    elif kind == "cifar10" and root is not None and sorted((root / "cifar10-sample").glob("data_batch_*.bin")):
        from cnnlab.datasets.cifar import read_cifar10_bin
        x, y = read_cifar10_bin(sorted((root / "cifar10-sample").glob("data_batch_*.bin"))[0])
        x, y = x[:n], y[:n]
        source = "CIFAR-10 training images"
    if x is None:
        shape = {"mnist": (28, 28, 1), "cifar10": (32, 32, 3)}[kind]
        rng = np.random.default_rng(0)
        x, y = rng.random((n,) + shape, dtype=np.float32), rng.integers(0, 10, n)
        source = f"random {kind}-shaped images"
    reps = -(-n // len(x))
    if reps > 1:
        x, y = np.concatenate([x] * reps)[:n], np.concatenate([y] * reps)[:n]
    return x, y, source


# ---------------------------------------------------------------------------
# The machine a table comes from
# ---------------------------------------------------------------------------
# Settings that cap a library's kernels below what the CPU has (the "AVX2 emulation" sets all four).
CAPS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "NUMBA_CPU_NAME", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")


def machine():
    """One line naming what a speed depends on: the CPU's model and family, its widest vector ISA, OpenBLAS's
    chosen core type (``threadpoolctl``'s ``architecture``), numba's target CPU, and any capping setting.

    Ratios against PyTorch do not carry from one x86 CPU to the next (issue 26), so every table says this.
    """
    info = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
                if not line.strip():
                    break                                    # the first processor is enough
    except OSError:
        pass
    flags = set(info.get("flags", "").split())
    isa = ("AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "AVX" if "avx" in flags
           else "SSE" if flags else "unknown")
    if isa in ("AVX-512", "AVX2") and "fma" in flags:
        isa += "+FMA"
    cpu = (f"{info.get('model name', 'unknown CPU')} (family {info.get('cpu family', '?')}, "
           f"model {info.get('model', '?')}), {isa}, {os.cpu_count()} cores")
    from threadpoolctl import threadpool_info
    blas = [f"{p.get('internal_api')} {p.get('version')} core type {p.get('architecture') or '?'}"
            for p in threadpool_info() if p.get("user_api") == "blas"]
    try:
        import llvmlite.binding as llvm
        jit = f"numba target {os.environ.get('NUMBA_CPU_NAME') or llvm.get_host_cpu_name()}"
    except ImportError:
        jit = "no numba"
    caps = [f"{k}={os.environ[k]}" for k in CAPS if k in os.environ]
    return "; ".join([cpu, ", ".join(blas) or "no BLAS found", jit, "set: " + " ".join(caps) if caps else "no caps set"])


# ---------------------------------------------------------------------------
# The PyTorch twins of the zoo
# ---------------------------------------------------------------------------
def torch_lenet5(torch):
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
                         nn.Linear(84, 10))


def _torch_conv_bn_relu(nn, c_in, c_out, k=3, padding=1):
    return [nn.Conv2d(c_in, c_out, k, padding=padding, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


def torch_mnist_fast(torch):
    nn = torch.nn
    return nn.Sequential(*_torch_conv_bn_relu(nn, 1, 32, 5, 2), nn.MaxPool2d(2),
                         *_torch_conv_bn_relu(nn, 32, 64, 5, 0), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(1600, 256, bias=False), nn.BatchNorm1d(256), nn.ReLU(),
                         nn.Dropout(0.3), nn.Linear(256, 10))


def torch_mnist_accurate(torch):
    nn = torch.nn
    return nn.Sequential(*_torch_conv_bn_relu(nn, 1, 32, 5, 2), nn.MaxPool2d(2),
                         *_torch_conv_bn_relu(nn, 32, 64), *_torch_conv_bn_relu(nn, 64, 64), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(3136, 256, bias=False), nn.BatchNorm1d(256), nn.ReLU(),
                         nn.Dropout(0.3), nn.Linear(256, 10))


def torch_cifar_small(torch):
    nn = torch.nn
    return nn.Sequential(*_torch_conv_bn_relu(nn, 3, 32), *_torch_conv_bn_relu(nn, 32, 32), nn.MaxPool2d(2),
                         *_torch_conv_bn_relu(nn, 32, 64), *_torch_conv_bn_relu(nn, 64, 64), nn.MaxPool2d(2),
                         *_torch_conv_bn_relu(nn, 64, 128), *_torch_conv_bn_relu(nn, 128, 128), nn.MaxPool2d(2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10))


def _torch_resnet(torch, n):
    """He et al.'s CIFAR ResNet of depth 6 n + 2 as cnnlab.models builds it (projection shortcuts where the shape changes)."""
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self, c_in, c_out, stride):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
                                      nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out))
            self.shortcut = nn.Identity() if stride == 1 and c_in == c_out else nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

        def forward(self, x):
            return torch.relu(self.body(x) + self.shortcut(x))

    layers, c_in = _torch_conv_bn_relu(nn, 3, 16), 16
    for stage, filters in enumerate((16, 32, 64)):
        for block in range(n):
            layers.append(Block(c_in, filters, 2 if stage > 0 and block == 0 else 1))
            c_in = filters
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))


def torch_resnet20(torch):
    """cnnlab.models.resnet20: 3 blocks per stage."""
    return _torch_resnet(torch, 3)


def torch_resnet8(torch):
    """cnnlab.models.resnet8: 1 block per stage."""
    return _torch_resnet(torch, 1)


# name -> (PyTorch twin, the images it trains on)
TWINS = {"lenet5": (torch_lenet5, "mnist"), "mnist_fast": (torch_mnist_fast, "mnist"),
         "mnist_accurate": (torch_mnist_accurate, "mnist"),
         "cifar_small": (torch_cifar_small, "cifar10"), "resnet8": (torch_resnet8, "cifar10"),
         "resnet20": (torch_resnet20, "cifar10")}


def check_twin(name, model, net):
    """Raise if the cnnlab model and its PyTorch twin do not have the same number of parameters."""
    theirs = sum(p.numel() for p in net.parameters())
    if model.num_params != theirs:
        raise SystemExit(f"{name}: cnnlab has {model.num_params} parameters, its PyTorch twin {theirs}: "
                         "the twin in benchmarks/common.py no longer matches the zoo")


# ---------------------------------------------------------------------------
# The timed loops: images per second
# ---------------------------------------------------------------------------
# Each loop returns images per second of ``clock``: the wall clock by default; ``time.process_time`` (this
# process's CPU time) for one-core runs on a busy machine, where it leaves out the time spent waiting for a core.
def time_cnnlab_train(model, x, y, bs, workers=None, clock=time.perf_counter):
    """One epoch of ``model.fit`` (SGD with momentum, shuffled) on ``x``."""
    opt = cnnlab.optim.SGD(lr=0.01, momentum=0.9)
    t = clock()
    model.fit(x, y, epochs=1, batch_size=bs, optimizer=opt, verbose=0, workers=workers)
    return len(x) / (clock() - t)


def time_torch_train(torch, net, xt, yt, bs, clock=time.perf_counter):
    """One epoch of the same training in PyTorch: shuffled batches, cross-entropy, SGD with momentum."""
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    t = clock()
    perm = torch.randperm(len(xt))                 # shuffle, as cnnlab's fit does
    for i in range(0, len(xt), bs):
        idx = perm[i:i + bs]
        opt.zero_grad()
        loss_fn(net(xt[idx]), yt[idx]).backward()
        opt.step()
    return len(xt) / (clock() - t)


def time_cnnlab_infer(model, x, bs=256, workers=None, clock=time.perf_counter):
    t = clock()
    model.predict(x, batch_size=bs, workers=workers)
    return len(x) / (clock() - t)


def time_torch_infer(torch, net, xt, bs=256, clock=time.perf_counter):
    net.eval()
    t = clock()
    with torch.no_grad():
        for i in range(0, len(xt), bs):
            torch.softmax(net(xt[i:i + bs]), dim=1)
    return len(xt) / (clock() - t)


def to_torch(torch, x, y):
    """(N, H, W, C) images and labels as PyTorch's (N, C, H, W) float tensor and long tensor."""
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))), torch.from_numpy(y.astype(np.int64))


def alternate(a, b, steps):
    """Run ``a`` and ``b`` alternately ``steps`` times each (after one warm-up); CPU seconds of each."""
    a(), b()
    ta, tb = [], []
    for _ in range(steps):
        for f, out in ((a, ta), (b, tb)):
            t = time.process_time()
            f()
            out.append(time.process_time() - t)
    return np.array(ta), np.array(tb)
