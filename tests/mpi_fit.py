"""Trains a tiny model for a few steps and saves its weights: run by tests/test_distributed.py, under
``mpiexec -n N`` (the ranks share each batch) and alone (``--alone``: one process with worker processes).

    python tests/mpi_fit.py OUT.safetensors --dtype float64 --shards 4 [--batchnorm] [--augment] [--alone]
"""
import argparse

import numpy as np

import cnnlab
from cnnlab import layers as L
from cnnlab.augment import Augmenter

p = argparse.ArgumentParser()
p.add_argument("out")
p.add_argument("--dtype", default="float64")
p.add_argument("--shards", type=int, required=True)
p.add_argument("--batchnorm", action="store_true")
p.add_argument("--augment", action="store_true")
p.add_argument("--dropout", action="store_true")
p.add_argument("--alone", action="store_true")
p.add_argument("--epochs", type=int, default=2)
args = p.parse_args()

dtype = np.dtype(args.dtype)
data = np.random.default_rng(7)
x = data.random((200, 8, 8, 1)).astype(dtype)             # 200 = 3 batches of 64 and one of 8 (a single shard)
y = data.integers(0, 3, 200)
stack = [L.Conv2D(4, 3, padding="same")] + ([L.BatchNorm()] if args.batchnorm else []) + \
        [L.ReLU(), L.MaxPool2D(2), L.Flatten()] + ([L.Dropout(0.3)] if args.dropout else []) + [L.Dense(3)]
model = cnnlab.Sequential(stack, input_shape=(8, 8, 1), seed=3)
model.astype(dtype)
if cnnlab.distributed.is_root(False if args.alone else None):
    model.save(args.out + ".init")                        # the starting point: training must move away from it
augment = Augmenter.from_spec("translate=1,hflip=0.5") if args.augment else None
model.fit(x, y, epochs=args.epochs, batch_size=64, optimizer=cnnlab.optim.SGD(lr=0.1, momentum=0.9),
          verbose=0, augment=augment, workers=args.shards, comm=False if args.alone else None)
if cnnlab.distributed.is_root(False if args.alone else None):
    model.save(args.out)
