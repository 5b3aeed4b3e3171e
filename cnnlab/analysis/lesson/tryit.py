r"""Step 14: try it yourself. A kernel, its size, stride, padding, dilation and a pooling size on the
learner's own input; the output and its size computed by the project's layers (``Conv2D`` through
:func:`..convolution.convolve`, then ``MaxPool2D``), never in the page.

Kernels (``kernel=``): ``edge`` (a vertical-edge detector: -1 in the left column, +1 in the right),
``blur`` (all ``1 / size^2``: the density of a uniform random displacement), ``sharpen`` (``2 delta -
blur``), ``custom`` (``values``: ``size * size`` numbers, row by row) and ``trained:K`` (filter ``K`` of
the served model's first convolution, on every channel; its own size). Hand kernels act on the gray image
(the mean of the channels). The output size along each axis is
``floor((H + p_before + p_after - d (k - 1) - 1) / s) + 1``, read off the layer's result.

The figure kind ``"tryit"``::

    {"kind": "tryit", "kernels": [..], "limits": {name: [lo, hi]}, "options": {..the current ones..},
     "input": (H, W), "kernel": (kh, kw), "output": (Ho, Wo), "pooled": (Hp, Wp) | None,
     "sizes": {"input": [H, W], "output": [Ho, Wo], "pooled": [Hp, Wp] | None}, "route": "/api/lesson/try", "alt"}

The page draws the arrays and, when a control changes, asks the route for new ones.
"""
from __future__ import annotations

import numpy as np

from ..convolution import convolve, parse_padding
from ..layers import first_conv
from ...layers import MaxPool2D

KERNELS = ("edge", "blur", "sharpen", "custom", "trained:K")
LIMITS = {"size": (1, 9), "stride": (1, 4), "dilation": (1, 4), "pool": (0, 4)}
DEFAULTS = {"kernel": "edge", "size": 3, "stride": 1, "padding": "valid", "dilation": 1, "pool": 2}
MAX_PADDING = 8


def hand_kernel(name, size, values=None) -> np.ndarray:
    """A ``size x size`` kernel by name (module docstring)."""
    if name == "edge":
        k = np.zeros((size, size))
        if size > 1:
            k[:, 0], k[:, -1] = -1.0, 1.0
        else:
            k[:] = 1.0
        return k
    if name == "blur":
        return np.full((size, size), 1.0 / size ** 2)
    if name == "sharpen":
        k = -np.full((size, size), 1.0 / size ** 2)
        k[size // 2, size // 2] += 2.0
        return k
    if name == "custom":
        if values is None:
            raise ValueError(f"kernel=custom needs values: {size * size} numbers separated by commas")
        v = np.asarray(values, np.float64).ravel()
        if v.size != size * size:
            raise ValueError(f"kernel=custom with size={size} needs {size * size} values, received {v.size}")
        if not np.all(np.isfinite(v)):
            raise ValueError("kernel=custom: every value must be a finite number")
        return v.reshape(size, size)
    raise ValueError(f"kernel must be one of {', '.join(KERNELS)}; received {name!r}")


def parse_values(text) -> list:
    """``"1,0,-1, ..."`` -> floats; a ``ValueError`` naming the first bad entry."""
    out = []
    for part in str(text).replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            out.append(float(part))
        except ValueError:
            raise ValueError(f"values must be numbers separated by commas; {part!r} is not a number") from None
    return out


def check_option(name, value):
    """An integer option within :data:`LIMITS`, or a ``ValueError`` saying which."""
    lo, hi = LIMITS[name]
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer from {lo} to {hi}; received {value!r}")
    return int(value)


def try_kernel(model, x, kernel="edge", size=3, stride=1, padding="valid", dilation=1, pool=2, values=None) -> dict:
    """The convolution of the input ``x`` (H, W, C) with the chosen kernel, then max pooling by ``pool``
    (0: none). Returns ``{"input", "kernel", "output", "pooled", "sizes", "options"}``; a ``ValueError``
    names any bad option."""
    stride, dilation, pool = (check_option(n, v) for n, v in (("stride", stride), ("dilation", dilation), ("pool", pool)))
    pad = parse_padding(padding)
    if isinstance(pad, tuple) and max(pad) > MAX_PADDING:
        raise ValueError(f"padding must be at most {MAX_PADDING}; received {padding!r}")
    x = np.asarray(x, np.float64)
    if str(kernel).startswith("trained:"):
        conv = first_conv(model, required=False)
        if conv is None:
            raise ValueError("kernel=trained:K needs a convolution; this model has none")
        f = conv.params["kernel"].shape[-1]
        try:
            j = int(str(kernel).split(":", 1)[1])
        except ValueError:
            j = -1
        if not 0 <= j < f:
            raise ValueError(f"kernel=trained:K needs K from 0 to {f - 1}; received {kernel!r}")
        if conv.params["kernel"].shape[2] != x.shape[2]:
            raise ValueError(f"{conv.name} reads {conv.params['kernel'].shape[2]} channels, the input has {x.shape[2]}")
        k = np.asarray(conv.params["kernel"][..., j], np.float64)
        image = x
    else:
        size = check_option("size", size)
        k = hand_kernel(kernel, size, values)[..., None]
        image = x.mean(axis=2, keepdims=True)
    span = dilation * (k.shape[0] - 1) + 1
    if isinstance(pad, tuple):
        room = (x.shape[0] + 2 * pad[0], x.shape[1] + 2 * pad[1])
    else:
        room = x.shape[:2]
    if span > min(room):
        raise ValueError(f"the kernel spans {span} pixels (size {k.shape[0]}, dilation {dilation}), more than the "
                         f"{room[0]}x{room[1]} padded input")
    out = convolve(image, k, stride=stride, padding=pad, dilation=dilation)
    pooled = None
    if pool > 1:
        if min(out.shape) < pool:
            raise ValueError(f"pool={pool} is larger than the {out.shape[0]}x{out.shape[1]} output")
        pooled = MaxPool2D(pool).forward(out[None, :, :, None].astype(np.float32))[0, :, :, 0]
    sizes = {"input": list(x.shape[:2]), "kernel": list(k.shape[:2]), "output": list(out.shape),
             "pooled": list(pooled.shape) if pooled is not None else None}
    return {"input": image[..., 0] if image.shape[2] == 1 else image, "kernel": k.sum(axis=2) if k.shape[2] != 3 else k,
            "output": out, "pooled": pooled, "sizes": sizes,
            "options": {"kernel": str(kernel), "size": int(k.shape[0]), "stride": stride, "padding": padding,
                        "dilation": dilation, "pool": pool},
            "alt": _alt(str(kernel), sizes, stride, padding, dilation, pool)}


def _alt(kernel, s, stride, padding, dilation, pool) -> str:
    """The text alternative of one answer: what went in, what came out, and their sizes."""
    name = {"custom": "typed"}.get(kernel, kernel.replace("trained:", "trained filter ") if kernel.startswith("trained:")
                                   else kernel)
    text = (f"The input ({s['input'][0]}x{s['input'][1]}) convolved with a {s['kernel'][0]}x{s['kernel'][1]} {name} "
            f"kernel (stride {stride}, padding {padding}, dilation {dilation}) gives a {s['output'][0]}x{s['output'][1]} map")
    if s["pooled"] is not None:
        text += f"; max pooling by {pool} gives {s['pooled'][0]}x{s['pooled'][1]}"
    return text + "."


def tryit(ctx) -> dict:
    """Step 14: the defaults computed, and the controls the page offers."""
    from .. import texts
    r = try_kernel(ctx.model, ctx.x, **DEFAULTS)
    conv = first_conv(ctx.model, required=False)
    kernels = list(KERNELS[:4]) + ([f"trained:{j}" for j in range(conv.params["kernel"].shape[-1])]
                                   if conv is not None and conv.params["kernel"].shape[2] == ctx.x.shape[2] else [])
    s = r["sizes"]
    fig = {"kind": "tryit", "kernels": kernels, "limits": {k: list(v) for k, v in LIMITS.items()},
           "options": r["options"], "input": r["input"], "kernel": r["kernel"], "output": r["output"],
           "pooled": r["pooled"], "sizes": s, "route": "/api/lesson/try", "alt": r["alt"]}
    return {"paragraphs": [texts.lesson_try(s["input"], s["kernel"], s["output"])],
            "numbers": {"output_size": s["output"], "pooled_size": s["pooled"]}, "figures": [fig],
            "link": {"view": "unit", "layer": conv.name, "c": 0, "y": 0, "x": 0} if conv is not None else None}
