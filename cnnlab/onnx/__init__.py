"""ONNX in and out: ``export(model, "model.onnx")`` and ``load("model.onnx")``.

``export`` writes a cnnlab model as an ONNX graph (NCHW float32 ``input``, class
``probabilities`` out, any batch size); ``load`` reads an ONNX classification CNN (from
PyTorch, Keras via tf2onnx, or cnnlab) back into a cnnlab model taking ``(N, H, W, C)``
images, ready to train, evaluate and explain. Both need the ``onnx`` package
(``pip install "cnnlab[onnx]"``), imported only when they run.
"""
from __future__ import annotations


def export(model, path, channels_last=False, opset=None, class_names=None):
    """Write ``model`` (a model, a run directory or a ``.safetensors`` file) as ONNX; see ``cnnlab.onnx.exporter``."""
    from .exporter import DEFAULT_OPSET, export as _export
    return _export(model, path, channels_last=channels_last, opset=DEFAULT_OPSET if opset is None else opset,
                   class_names=class_names)


def load(path):
    """A cnnlab model from an ONNX file; see ``cnnlab.onnx.importer``."""
    from .importer import load as _load
    return _load(path)


__all__ = ["export", "load"]
