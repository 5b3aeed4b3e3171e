r"""One output unit of any layer, down to the numbers: what it read, the weights, each term, the sum.

A unit is addressed as ``(channel, y, x)`` for feature maps ``(H, W, C)`` and ``(channel,)``
(``y = x = 0``) for flat outputs ``(units,)``. :func:`unit` dispatches on the layer's kind:

* convolution: the window of the zero-padded input at ``(y*s_h, x*s_w)``, taps ``d`` apart, its products
  with the kernel, their per-channel sums, ``value = sum + bias`` (``conv_steps``);
* pooling: the window, which input won the max (or the average; global average pooling: the whole map);
* dense: ``value = sum_i inputs_i * weights_i + bias``;
* BatchNorm: ``value = gamma * (x - mean) / sqrt(var + eps) + beta`` with the running statistics;
* element-wise activations: the function as text and its value.

Arrays are float64 NumPy arrays (``serve`` packs them as JSON); ``rows`` and ``cols`` are in the
unpadded input's coordinates.
"""
from __future__ import annotations

import numpy as np

from ..layers import pool
from ..layers.conv import pad_hw, resolve_padding
from .convolution import conv_steps
from .layers import capture, kind as layer_kind, layer_input, receptive_field


def _check_unit(layer, channel, y, x):
    shape = layer.output_shape
    if len(shape) == 3:
        h, w, c = shape
        ok = 0 <= channel < c and 0 <= y < h and 0 <= x < w
        what = f"channel in [0, {c - 1}], y in [0, {h - 1}], x in [0, {w - 1}]"
    else:
        ok, what = 0 <= channel < shape[-1] and y == 0 and x == 0, f"channel in [0, {shape[-1] - 1}] and y = x = 0"
    if not ok:
        raise ValueError(f"layer {layer.name!r} outputs {tuple(shape)}: expected {what}, "
                         f"received channel={channel}, y={y}, x={x}")


def conv_unit(layer, inp, channel, y, x) -> dict:
    """Output ``(y, x, channel)`` of conv ``layer`` for its input ``inp`` (H, W, C), term by term.

    The window of the zero-padded input starts at ``(y*s_h, x*s_w)`` with taps ``d`` apart; the
    ``conv_steps`` computes its products, per-channel sums, sum + bias = value.
    Grouped convolutions see only their group's channels.
    """
    kern = layer.params["kernel"]
    kh, kw, cg, f = kern.shape
    g = channel // (f // layer.groups)
    (sh, sw), (dh, dw) = layer.strides, layer.dilation
    pads = resolve_padding(layer.padding, inp.shape[:2], (kh, kw), (sh, sw), (dh, dw))
    xp = pad_hw(np.asarray(inp, np.float64)[None], pads)[0]
    r0, c0 = y * sh, x * sw
    window = xp[r0:r0 + dh * (kh - 1) + 1, c0:c0 + dw * (kw - 1) + 1, g * cg:(g + 1) * cg]
    bias = float(layer.params["bias"][channel]) if "bias" in layer.params else 0.0
    _, _, records = conv_steps(window, kern[..., channel], bias, stride=1, padding="valid", dilation=(dh, dw))
    rec = records[0]
    rows = [r0 + p * dh - pads[0] for p in range(kh)]            # in the unpadded input's coordinates
    cols = [c0 + q * dw - pads[2] for q in range(kw)]
    taps = window[::dh, ::dw]                                     # the pixels under the kernel (kh, kw, cg)
    return {"kind": "conv", "rows": rows, "cols": cols, "channels": list(range(g * cg, (g + 1) * cg)),
            "pads": list(pads), "strides": [sh, sw], "dilation": [dh, dw], "groups": layer.groups,
            "patch": taps, "kernel": np.asarray(kern[..., channel], np.float64), "products": rec["products"],
            "channel_sums": np.asarray(rec["channel_sums"]).tolist(), "sum": rec["sum"], "bias": rec["bias"],
            "value": rec["value"]}


def pool_unit(layer, inp, channel, y, x) -> dict:
    """The window a pooling unit reads, and which input won the max or what the average was."""
    a = np.asarray(inp, np.float64)
    if isinstance(layer, pool.GlobalAvgPool2D):
        win = a[:, :, channel]
        return {"kind": "pool", "op": "mean", "rows": list(range(a.shape[0])), "cols": list(range(a.shape[1])),
                "window": win, "value": float(win.mean())}
    if isinstance(layer, pool.Subsample):
        r, c = y * layer.stride[0], x * layer.stride[1]
        return {"kind": "pool", "op": "subsample", "rows": [r], "cols": [c], "window": a[r:r + 1, c:c + 1, channel],
                "value": float(a[r, c, channel])}
    (kh, kw), (sh, sw) = layer.pool_size, layer.strides
    pads = resolve_padding(layer.padding, a.shape[:2], (kh, kw), (sh, sw), (1, 1))
    is_max = isinstance(layer, pool.MaxPool2D)
    xp = pad_hw(a[None, :, :, channel:channel + 1], pads, value=-np.inf if is_max else 0.0)[0, :, :, 0]
    win = xp[y * sh:y * sh + kh, x * sw:x * sw + kw]
    rows = [y * sh + p - pads[0] for p in range(kh)]
    cols = [x * sw + q - pads[2] for q in range(kw)]
    padded = ~np.isfinite(win)                       # max pooling pads with -inf: it never wins
    out = {"kind": "pool", "op": "max" if is_max else "mean", "rows": rows, "cols": cols,
           "window": np.where(padded, 0.0, win), "padded": padded.tolist()}
    if is_max:
        p, q = np.unravel_index(int(np.argmax(win)), win.shape)     # the first maximum in row-major order
        out.update(argmax=[int(p), int(q)], value=float(win[p, q]))
    else:
        out["value"] = float(win.mean())
    return out


def dense_unit(layer, inp, channel, top=10) -> dict:
    """Unit ``channel`` of a dense layer: inputs, weights, products, sum + bias.

    ``top``: the indices of the ``top`` largest products by ``|w_k * v_k|``, largest first;
    ``rest_sum``: the sum of the other products, so ``sum = sum(products[top]) + rest_sum``.
    """
    v = np.asarray(inp, np.float64).reshape(-1)
    w = np.asarray(layer.params["kernel"][:, channel], np.float64)
    products = v * w
    bias = float(layer.params["bias"][channel]) if "bias" in layer.params else 0.0
    order = np.argsort(-np.abs(products), kind="stable")
    return {"kind": "dense", "inputs": v, "weights": w, "products": products,
            "top": order[:top].tolist(), "rest_sum": float(products[order[top:]].sum()),
            "rest_count": int(max(0, products.size - top)),
            "sum": float(products.sum()), "bias": bias, "value": float(products.sum() + bias)}


def activation_formula(layer, v) -> tuple[str, float]:
    """The element-wise function a layer applies, as text, and its value at ``v``."""
    name = type(layer).__name__
    if name == "ReLU":
        return "max(0, x)", max(0.0, v)
    if name == "LeakyReLU":
        a = float(layer.alpha)
        return f"x if x > 0 else {a:g} * x", v if v > 0 else a * v
    if name == "Tanh":
        return "tanh(x)", float(np.tanh(v))
    if name == "Sigmoid":
        return "1 / (1 + exp(-x))", float(1 / (1 + np.exp(-v)))
    return name, None


def unit(model, x, layer_name, channel, y=0, x_pos=0) -> dict:
    """The numbers behind one output unit of any layer, with the model's own value for comparison.

    Every detail carries ``value`` (recomputed from its parts) and ``model_value`` (what the
    forward pass gave), and for feature maps the input ``receptive_field`` of the unit.
    """
    layer = model[layer_name]
    _check_unit(layer, channel, y, x_pos)
    logits, acts = capture(model, x)
    out = acts[layer.name]
    model_value = float(out[y, x_pos, channel] if out.ndim == 3 else out[channel])
    inp = layer_input(model, np.asarray(x, np.float32), acts, layer)
    kind = layer_kind(layer) if inp is not None else "other"
    if kind == "conv":
        detail = conv_unit(layer, inp, channel, y, x_pos)
    elif kind == "pool":
        detail = pool_unit(layer, inp, channel, y, x_pos)
    elif kind == "dense":
        detail = dense_unit(layer, inp, channel)
    elif kind == "norm":
        mean, var = float(layer.buffers["running_mean"][channel]), float(layer.buffers["running_var"][channel])
        gamma, beta = float(layer.params["gamma"][channel]), float(layer.params["beta"][channel])
        xin = float(inp[y, x_pos, channel] if inp.ndim == 3 else inp[channel])
        x_hat = (xin - mean) / np.sqrt(var + layer.eps)
        detail = {"kind": "norm", "input": xin, "mean": mean, "var": var, "eps": layer.eps, "x_hat": float(x_hat),
                  "gamma": gamma, "beta": beta, "value": float(gamma * x_hat + beta)}
    elif kind == "activation" and inp.shape == out.shape:
        xin = float(inp[y, x_pos, channel] if inp.ndim == 3 else inp[channel])
        formula, value = activation_formula(layer, xin)
        detail = {"kind": "activation", "function": type(layer).__name__, "input": xin, "formula": formula,
                  "value": model_value if value is None else value}
    else:
        detail = {"kind": kind, "value": model_value}
    detail.update(layer=layer.name, layer_class=type(layer).__name__, channel=channel, y=y, x=x_pos,
                  model_value=model_value)
    if len(layer.output_shape) == 3 and len(model.input_shape) == 3:
        detail["receptive_field"] = receptive_field(model, layer, y, y, x_pos, x_pos)
    return detail
