"""One forward pass (batch 1, 224x224x3) of the classic CNNs imported from the onnx package's files.

Each model is given random weights (``tests/classics.py``; the time does not depend on them),
written, imported (timed), then run ``--repeat`` times by cnnlab (``predict``'s path, every core)
and by onnxruntime (2 threads), alternating; the minimum of each is reported, since the machine
is shared and the minimum is the run least disturbed by other work.

    python benchmarks/bench_classics.py                      # ResNet-50 and AlexNet, 5 passes each
    python benchmarks/bench_classics.py --models vgg19 --repeat 3
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def main():
    import onnx
    import onnxruntime as ort
    from classics import NAMES, logits_of, randomized
    from cnnlab.onnx import load
    from common import machine
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["resnet50", "bvlc_alexnet"], choices=NAMES)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    x = np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)
    print(machine())
    print(f"{'model':14} {'import s':>9} {'cnnlab s/pass':>14} {'onnxruntime s/pass':>19}")
    for name in args.models:
        with tempfile.TemporaryDirectory() as tmp:
            proto = randomized(name)
            path = Path(tmp) / f"{name}.onnx"
            onnx.save(proto, str(path))
            t = time.perf_counter()
            model = load(path)
            imported = time.perf_counter() - t
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.log_severity_level = 2, 3
        session = ort.InferenceSession(logits_of(proto).SerializeToString(), options,
                                       providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: x}
        images = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        model.logits(images)                                       # warm-up: compiled loops, worker processes
        ours, theirs = [], []
        for _ in range(args.repeat):
            t = time.perf_counter()
            model.logits(images)
            ours.append(time.perf_counter() - t)
            t = time.perf_counter()
            session.run(None, feed)
            theirs.append(time.perf_counter() - t)
        print(f"{name:14} {imported:9.1f} {min(ours):14.2f} {min(theirs):19.3f}", flush=True)


if __name__ == "__main__":
    main()
