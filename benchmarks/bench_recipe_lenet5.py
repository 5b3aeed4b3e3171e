"""The LeNet-5 MNIST recipe end to end: ``cnnlab train`` against the same training in PyTorch.

    python benchmarks/bench_recipe_lenet5.py [--data-dir ../shared/data] [--repeats 2]

Runs ``cnnlab train --dataset mnist --model lenet5 --epochs 5`` (its defaults: batch 64,
SGD lr 0.05 momentum 0.9, one-cycle schedule) and a PyTorch script doing the same (same
data files, batch size, optimizer and one-cycle schedule, 2 threads), each as a fresh
process, alternating, and reports wall time (imports, data loading, training, test
evaluation) and test accuracy of each.
"""
import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import data_dir, machine

TORCH_SCRIPT = r'''
import sys, numpy as np, torch, torch.nn as nn
from cnnlab.datasets import load_mnist
sys.path.insert(0, sys.argv[2])                    # benchmarks/: the PyTorch twin of LeNet-5
from common import torch_lenet5
torch.set_num_threads(2)
torch.manual_seed(0)
(x, y), (xt, yt) = load_mnist(sys.argv[1])
x, xt = (torch.tensor(a.transpose(0, 3, 1, 2).copy()) for a in (x, xt))
y, yt = torch.tensor(y), torch.tensor(yt)
net = torch_lenet5(torch)
epochs, bs = 5, 64
opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
steps = -(-len(x) // bs)
sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=epochs * steps, pct_start=0.3,
                                            div_factor=25, final_div_factor=1e4, cycle_momentum=False)
loss_fn = nn.CrossEntropyLoss()
for epoch in range(epochs):
    perm = torch.randperm(len(x))
    for i in range(0, len(x), bs):
        idx = perm[i:i + bs]
        opt.zero_grad()
        loss_fn(net(x[idx]), y[idx]).backward()
        opt.step()
        sched.step()
net.eval()
with torch.no_grad():
    acc = (torch.cat([net(xt[i:i + 256]).argmax(1) for i in range(0, len(xt), 256)]) == yt).float().mean().item()
print(f"test accuracy: {acc * 100:.2f}%")
'''


def run(cmd):
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if proc.returncode != 0:
        sys.exit(f"{cmd[:4]} failed:\n{proc.stderr}")
    acc = float(re.search(r"test accuracy: ([\d.]+)%", proc.stdout + proc.stderr).group(1))
    return seconds, acc


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=str(data_dir()))
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    mnist = Path(args.data_dir) / "mnist"
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "torch_lenet5.py"
        script.write_text(TORCH_SCRIPT)
        ours, theirs = [], []
        for r in range(args.repeats):
            ours.append(run([sys.executable, "-m", "cnnlab", "train", "--dataset", "mnist", "--data-dir", args.data_dir,
                             "--model", "lenet5", "--epochs", "5", "--out", f"{tmp}/run{r}", "--quiet"]))
            theirs.append(run([sys.executable, str(script), str(mnist), str(Path(__file__).resolve().parent)]))
    print(machine())
    print("LeNet-5 on MNIST, 5 epochs, end to end (fresh process: imports, data, training, test evaluation)")
    for name, res in (("cnnlab train", ours), ("PyTorch", theirs)):
        secs, accs = zip(*res)
        print(f"  {name:13s} wall time median {np.median(secs):6.1f} s  (runs {', '.join(f'{s:.1f}' for s in secs)})"
              f"   test accuracy {', '.join(f'{a:.2f}%' for a in accs)}")
    print(f"  time ratio PyTorch / cnnlab: {np.median([s for s, _ in theirs]) / np.median([s for s, _ in ours]):.2f}x")


if __name__ == "__main__":
    main()
