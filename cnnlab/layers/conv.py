r"""2-D convolution: one small neuron replicated over every position of the image.

A convolution layer is a single hidden neuron with a ``kh x kw x C`` weight
patch (plus a bias) that looks at every patch of the input; all the copies
share the same weights. Each of the ``filters`` neurons produces one *feature
map*. For input ``x`` of shape ``(N, H, W, C)`` and kernel ``w`` of shape
``(kh, kw, C // groups, F)``::

    y[n, i, j, f] = b[f] + sum_{p, q, c} x_pad[n, i*s_h + p*d_h, j*s_w + q*d_w, g(f)*C_g + c] * w[p, q, c, f]

with strides ``s``, dilation ``d`` and ``g(f) = f // (F // groups)`` the group
of filter ``f``. The output size along each axis is::

    H_out = floor((H + pad_top + pad_bottom - d_h * (kh - 1) - 1) / s_h) + 1        (geometry.py computes it)

Fast path (``Conv2D``): copy every patch into one column of a matrix
(im2col), then a single matrix product with the shared weights does all
positions and all filters at once: ``y = W @ cols``. The backward pass is two
more products: ``dW = dy @ cols^T`` and ``dcols = W^T @ dy``, whose columns
are added back onto the pixels they came from (col2im). The layer computes
with the batch innermost in memory (see ``to_chwn``). ``conv2d_naive`` is the
same formula as plain loops; it stays here as the readable reference the fast
paths are tested against. Stride-1 3x3 and 5x5 layers with many channels
take the other fast path, Winograd's F(2x2, 3x3) and F(2x2, 5x5)
(``winograd.py``): 2.25x and 2.78x fewer multiply-adds. With numba
installed, the passes that NumPy would make over memory term by term run as
compiled loops (``compiled.py``), and stride-1 layers with 3- or 5-wide
kernels and few channels (LeNet-5's, ResNet's first stage) convolve directly,
with no patch matrix (``Conv2D._algorithm`` picks the path).
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .. import initializers
from . import compiled, winograd
from ..checks import check_pair, check_positive_int
from .base import Layer
# The window geometry lives in geometry.py (shared with pooling); its names stay importable from here.
from .geometry import (from_chwn, output_size, pad_hw, resolve_padding, to_chwn, validate_padding, window_geometry,
                       window_slice)


# ---------------------------------------------------------------------------
# The readable reference
# ---------------------------------------------------------------------------
def conv2d_naive(x, kernel, bias=None, strides=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1), groups=1):
    """Convolution as loops over output pixels, filters and taps: the formula, verbatim."""
    n, h, w, c = x.shape
    kh, kw, cg, f = kernel.shape
    fg = f // groups
    xp = pad_hw(x, pads)
    ho = output_size(h, kh, strides[0], pads[0] + pads[1], dilation[0], "conv2d_naive", "height")
    wo = output_size(w, kw, strides[1], pads[2] + pads[3], dilation[1], "conv2d_naive", "width")
    y = np.zeros((n, ho, wo, f), dtype=np.result_type(x, kernel))
    for i in range(ho):
        for j in range(wo):
            for o in range(f):
                g = o // fg
                acc = np.zeros(n, dtype=y.dtype)
                for p in range(kh):
                    for q in range(kw):
                        pixel = xp[:, i * strides[0] + p * dilation[0], j * strides[1] + q * dilation[1],
                                   g * cg:(g + 1) * cg]
                        acc += pixel @ kernel[p, q, :, o]
                y[:, i, j, o] = acc + (bias[o] if bias is not None else 0)
    return y


# ---------------------------------------------------------------------------
# im2col / col2im: every patch becomes one column of a matrix
# ---------------------------------------------------------------------------
def im2col(xp, kernel_hw, out_hw, strides, dilation):
    """Patches of the padded ``xp`` (C, Hp, Wp, N) as a matrix of shape (C*kh*kw, Ho*Wo*N).

    Column ``m`` holds the patch under output pixel ``m = (i, j, n)``; rows run
    over ``(c, p, q)``, so ``kernel (F, C*kh*kw) @ cols`` is the convolution and
    a group's channels are one block of rows. Row ``(c, p, q)`` is tap
    ``(p, q)`` of channel ``c`` for every output pixel: one strided slice of
    the image, whose lines of ``Wo * N`` numbers are copied whole.
    """
    c, _, _, n = xp.shape
    (kh, kw), (ho, wo), (sh, sw), (dh, dw) = kernel_hw, out_hw, strides, dilation
    s_c, s_h, s_w, s_n = xp.strides
    view = as_strided(xp, shape=(c, kh, kw, ho, wo, n),
                      strides=(s_c, dh * s_h, dw * s_w, sh * s_h, sw * s_w, s_n), writeable=False)
    return np.ascontiguousarray(view).reshape(c * kh * kw, ho * wo * n)  # reshape of a contiguous copy: a view


def col2im(dcols, dxp, kernel_hw, out_hw, strides, dilation, row0=0):
    """The adjoint of ``im2col``: add every row of ``dcols`` (C*kh*kw, Ho*Wo*N) back onto the pixels of ``dxp`` it came from.

    ``dxp`` is the padded input's gradient (C, Hp, Wp, N), added to in place
    from row ``row0`` on (a band of output rows reads the input from there).
    One strided add per tap ``(p, q)``, each over all channels at once: no
    scattered writes, and ``np.add.at`` is not needed because within one tap
    no two output pixels read the same input pixel. With the compiled loops
    (``compiled.py``) the taps of one output row are added while the input
    rows they touch are in cache.
    """
    c, n = dxp.shape[0], dxp.shape[3]
    (kh, kw), (ho, wo) = kernel_hw, out_hw
    if compiled.enabled():
        return compiled.col2im(np.ascontiguousarray(dcols), dxp, row0, kh, kw, ho, wo, *strides, *dilation)
    taps = dcols.reshape(c, kh, kw, ho, wo, n)                   # view: rows back to (channel, tap), columns to images
    band = dxp[:, row0:]                                         # a view
    for p in range(kh):
        for q in range(kw):
            band[window_slice(p, q, out_hw, strides, dilation)] += taps[:, p, q]
    return dxp


# ---------------------------------------------------------------------------
# Matrix products in cache-sized blocks
# ---------------------------------------------------------------------------
def _block(k, n, m):
    """Columns per block when a (k x m) matrix with few rows meets an (n x k) or (n x m) one; ``m`` for one call.

    BLAS splits such products badly when ``m`` is long, so they run in
    blocks that stay in the core's L2 cache (about 256 KB per block; measured
    in benchmarks/README.md, "How Conv2D picks its algorithm"). Products with
    more rows than that are compute-bound and go whole.
    """
    if k + n >= 128:
        return m
    cols = max(256, 65536 // (k + n))
    return m if m < 2 * cols else cols


def matmul_blocked(a, b, out=None):
    """``a @ b`` for (F, K) @ (K, M), in blocks of columns of ``b``; written into ``out`` when given."""
    (f, k), m = a.shape, b.shape[1]
    step = _block(k, f, m)
    if out is None:
        out = np.empty((f, m), np.result_type(a, b))
    for s in range(0, m, step):
        np.matmul(a, b[:, s:s + step], out=out[:, s:s + step])
    return out


def matmul_nt_blocked(a, b):
    """``a @ b.T`` for (K, M) and (F, M): a sum over the long axis ``M``, accumulated block by block."""
    (k, m), f = a.shape, b.shape[0]
    step = _block(k, f, m)
    out = a[:, :step] @ b[:, :step].T
    for s in range(step, m, step):
        out += a[:, s:s + step] @ b[:, s:s + step].T
    return out


# ---------------------------------------------------------------------------
# The layer
# ---------------------------------------------------------------------------
class Conv2D(Layer):
    """2-D convolution over (N, H, W, C) images.

    Args:
        filters: number of output feature maps ``F``.
        kernel_size: ``k`` or ``(kh, kw)``.
        strides: ``s`` or ``(sh, sw)``.
        padding: ``"valid"`` (none), ``"same"`` (output ``ceil(H/s)``), ``p`` or ``(ph, pw)``.
        dilation: ``d`` or ``(dh, dw)``; a tap is ``d`` pixels from the next.
        groups: split input channels and filters into ``groups`` independent convolutions.
        use_bias: add a learned bias per filter.
        kernel_initializer: ``"he_uniform"`` (default), ``"he_normal"``, ``"glorot_uniform"``, ...

    Shapes: input ``(N, H, W, C)``, kernel ``(kh, kw, C // groups, F)``, bias ``(F,)``,
    output ``(N, H_out, W_out, F)`` (see the module docstring for ``H_out``).
    """

    def __init__(self, filters, kernel_size, strides=1, padding="valid", dilation=1, groups=1,
                 use_bias=True, kernel_initializer="he_uniform", name=None):
        super().__init__(name)
        self.filters = check_positive_int("filters", filters, "Conv2D")
        self.kernel_size = check_pair("kernel_size", kernel_size, "Conv2D")
        self.strides = check_pair("strides", strides, "Conv2D")
        self.dilation = check_pair("dilation", dilation, "Conv2D")
        self.groups = check_positive_int("groups", groups, "Conv2D")
        self.padding = validate_padding(padding, "Conv2D")
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        if self.filters % self.groups:
            raise ValueError(f"Conv2D: filters ({filters}) must be divisible by groups ({groups})")

    any_spatial_size = True  # fully convolutional: any H, W; the channels must match

    def compute_output_shape(self, input_shape):
        self.require_image(input_shape)
        h, w, c = input_shape
        if c % self.groups:
            raise ValueError(f"{self.label}: input channels ({c}) must be divisible by groups ({self.groups})")
        _, (ho, wo) = window_geometry((h, w), self.kernel_size, self.strides, self.padding, self.dilation, self.label)
        return (ho, wo, self.filters)

    def param_shapes(self, input_shape):
        kh, kw = self.kernel_size
        shape = {"kernel": (kh, kw, input_shape[2] // self.groups, self.filters)}
        return {**shape, "bias": (self.filters,)} if self.use_bias else shape

    def build_params(self, input_shape):
        shape = self.param_shapes(input_shape)["kernel"]
        kh, kw, cg, _ = shape
        self.params["kernel"] = self.kernel_initializer(shape, kh * kw * cg, kh * kw * self.filters // self.groups,
                                                        self.rng).astype(self.dtype)
        if self.use_bias:
            self.params["bias"] = np.zeros(self.filters, self.dtype)

    def _kernel_matrix(self, kernel=None):
        """The kernel (kh, kw, C_g, F) as a matrix (g, F_g, C_g*kh*kw) with columns in im2col's (c, p, q) order."""
        kernel = self.params["kernel"] if kernel is None else kernel
        kh, kw, cg, f = kernel.shape
        return kernel.transpose(3, 2, 0, 1).reshape(self.groups, f // self.groups, cg * kh * kw)

    # The patch matrix is kh*kw times larger than the input. Built whole, it falls out of the core's
    # cache before the product reads it, so it is built in bands of output rows of about BAND_BYTES,
    # each used while it is still in cache. The backward pass rebuilds each band instead of keeping
    # them. Exception: in training, a layer with many filters keeps a matrix of up to KEEP_WHOLE_BYTES
    # whole, because its backward pass then costs more band by band (25 small adds per band) than
    # rebuilding saves; a larger matrix would not stay in cache anyway, and is banded.
    # (What bands bought, measured: benchmarks/README.md, "How Conv2D picks its algorithm".)
    BAND_BYTES = 384 * 1024
    BAND_BELOW_FILTERS = 16
    KEEP_WHOLE_BYTES = 4 << 20

    def _bands(self, ho, row_bytes, training):
        """``(r0, r1)`` ranges of output rows computed together."""
        rows = ho
        if not training or self.filters < self.BAND_BELOW_FILTERS or ho * row_bytes > self.KEEP_WHOLE_BYTES:
            rows = max(1, self.BAND_BYTES // row_bytes)
        return [(r0, min(ho, r0 + rows)) for r0 in range(0, ho, rows)]

    def _band_input(self, xp, r0, r1):
        """The rows of the padded input that output rows ``r0:r1`` read: a view."""
        sh, dh = self.strides[0], self.dilation[0]
        return xp[:, r0 * sh:(r1 - 1) * sh + (self.kernel_size[0] - 1) * dh + 1]

    def forward(self, x, training=False):
        x = self._prepare(x)                                                    # builds the layer on first use
        return self._forward(x, training, self.params["kernel"], self.params.get("bias"))

    def forward_folded(self, x, scale, shift, relu=False, pool=None):
        """Inference of this convolution followed by the per-filter map ``y * scale + shift`` (then ``max(., 0)``
        where ``relu``, then the ``MaxPool2D`` ``pool`` if given), as one convolution: the map is folded into
        the kernel and bias, so it costs nothing.

        A ``BatchNorm`` at inference is such a map (``BatchNorm.folded``); ``cnnlab.stack`` folds it in
        inference-only passes. The result equals the layers' up to rounding; no backward pass follows.
        Where :meth:`pools_while_writing` says so, the pool runs inside the convolution's loop, which then
        writes only the pooled output; otherwise it runs after.
        """
        x = self._prepare(x)
        kernel, bias = self.folded_params(scale, shift)                         # filter f scaled by scale[f]
        if pool is not None and self.pools_while_writing(pool):
            if self._algorithm(x.shape[3]) == "winograd":
                return self._forward_winograd(x, *self._geometry(x), False, kernel, bias, relu, pooled=True)
            return self._forward_direct(x, *self._geometry(x), kernel, bias, relu, pool_size=pool.pool_size)
        y = self._forward(x, False, kernel, bias, relu)
        return y if pool is None else pool.forward(y)

    def pools_while_writing(self, pool) -> bool:
        """Whether :meth:`forward_folded` runs ``pool`` inside this layer's loop: a max pool whose windows tile the
        output (strides equal to the window, no padding) after the direct convolution (``_algorithm``), or a
        2x2 one after Winograd's, whose 2x2 output tiles are the pool's windows."""
        if getattr(pool, "reduction", None) != "max" or not pool.tiles(self.output_shape[:2]):
            return False
        algorithm = self._algorithm(self.input_shape[-1])
        return algorithm == "direct" or (algorithm == "winograd" and tuple(pool.pool_size) == (2, 2))

    def _geometry(self, x):
        """The padding ``(top, bottom, left, right)`` and output size ``(Ho, Wo)`` for the prepared batch ``x``."""
        return window_geometry(x.shape[1:3], self.kernel_size, self.strides, self.padding, self.dilation, self.label)

    def _forward(self, x, training, kernel, bias, relu=False):
        """The convolution of the prepared batch ``x`` with ``kernel`` (kh, kw, C_g, F) and ``bias`` (F,) or None,
        then ``max(., 0)`` where ``relu``."""
        n, h, w, _ = x.shape
        g, f = self.groups, self.filters
        pads, (ho, wo) = self._geometry(x)
        if bias is None and relu:
            bias = np.zeros(f, self.dtype)
        algorithm = self._algorithm(x.shape[3])
        if algorithm == "direct":
            return self._forward_direct(x, pads, (ho, wo), kernel, bias, relu)
        if algorithm == "winograd":
            return self._forward_winograd(x, pads, (ho, wo), training, kernel, bias, relu)
        xp = pad_hw(to_chwn(x), pads)                                          # (C, Hp, Wp, N)
        wmat = self._kernel_matrix(kernel)                                      # (g, F_g, K_g)
        k = wmat.shape[2] * g                                                   # rows of the patch matrix: C*kh*kw
        y = np.empty((f, ho, wo, n), self.dtype)                                # the output, stored (F, Ho, Wo, N)
        bands = self._bands(ho, k * wo * n * self.dtype.itemsize, training)
        for r0, r1 in bands:
            cols = im2col(self._band_input(xp, r0, r1), self.kernel_size, (r1 - r0, wo), self.strides,
                          self.dilation)                                        # (C*kh*kw, M), M = rows*Wo*N
            out = y[:, r0:r1].reshape(f, -1)                                    # view: this band of the output
            if g == 1:
                matmul_blocked(wmat[0], cols, out=out)
            else:
                np.matmul(wmat, cols.reshape(g, -1, cols.shape[1]), out=out.reshape(g, f // g, -1))
            if bias is not None:                                                # while the band is in cache
                out += bias[:, None]
                if relu:
                    np.maximum(out, 0, out=out)
        kept = cols if len(bands) == 1 else None                                # one band: keep it for backward
        self._cache = ("im2col", xp, kept, bands, pads, (ho, wo))
        return from_chwn(y)                                                     # (N, Ho, Wo, F), a view

    # Stride-1 3x3 convolutions with at least WINOGRAD_MIN_CHANNELS input channels, and no more filters
    # than input channels, use Winograd's F(2x2, 3x3): 2.25x fewer multiply-adds. Its transforms are
    # passes over memory (the transformed input is 4 numbers per input pixel), so they run in blocks of
    # tiles whose transforms stay in the core's cache (WINOGRAD_BAND_BYTES of transformed input), and
    # the backward pass recomputes them from the input instead of keeping them: training keeps only the
    # padded input, where im2col keeps its 9x larger patch matrix. With fewer channels the transforms
    # cost more than they save; with the compiled transforms (compiled.py, numba) they cost about half
    # as much, so Winograd pays from WINOGRAD_MIN_CHANNELS_COMPILED channels on, whatever the filters.
    # Stride-1 5x5 convolutions with at least WINOGRAD5_MIN_CHANNELS input channels use F(2x2, 5x5),
    # with the compiled loops only (its NumPy transforms are the reference): 36 multiplications per 2x2
    # outputs instead of 100, 6x6 tiles, transforms with coefficients up to 2.5.
    # The timings behind each threshold: benchmarks/README.md, "How Conv2D picks its algorithm".
    WINOGRAD_MIN_CHANNELS = 16
    WINOGRAD_MIN_CHANNELS_COMPILED = 8
    WINOGRAD5_MIN_CHANNELS = 16
    WINOGRAD_BAND_BYTES = 1 << 20

    def _algorithm(self, channels):
        """How this layer convolves ``channels`` input channels: ``"direct"``, ``"winograd"`` or ``"im2col"``
        (the comments above and below say when each is used, and what was measured)."""
        plain = self.strides == (1, 1) and self.dilation == (1, 1) and self.groups == 1
        if plain and compiled.enabled() and channels < self.DIRECT_BELOW_CHANNELS.get(self.kernel_size[1], 0):
            return "direct"
        if not plain or self.kernel_size not in ((3, 3), (5, 5)):
            return "im2col"
        if self.kernel_size == (5, 5):
            winograd_ok = compiled.enabled() and channels >= self.WINOGRAD5_MIN_CHANNELS
        elif compiled.enabled():
            winograd_ok = channels >= self.WINOGRAD_MIN_CHANNELS_COMPILED
        else:
            winograd_ok = channels >= self.WINOGRAD_MIN_CHANNELS and self.filters <= channels
        return "winograd" if winograd_ok else "im2col"

    def _winograd_blocks(self, c, tiles, n):
        """Blocks of tiles transformed together: ``(r0, r1, c0, c1)``, tile rows ``r0:r1`` and columns ``c0:c1``.

        Whole rows of tiles when they fit in ``WINOGRAD_BAND_BYTES``, otherwise parts of one row.
        """
        taps = winograd.TRANSFORMS[self.kernel_size[0]].n ** 2
        per_block = max(1, self.WINOGRAD_BAND_BYTES // (taps * max(c, self.filters) * n * self.dtype.itemsize))
        rows, cols = max(1, per_block // tiles[1]), min(per_block, tiles[1])
        return [(r0, min(tiles[0], r0 + rows), c0, min(tiles[1], c0 + cols))
                for r0 in range(0, tiles[0], rows) for c0 in range(0, tiles[1], cols)]

    def _forward_winograd(self, x, pads, out_hw, training, kernel, bias, relu, pooled=False):
        n, f = x.shape[0], self.filters
        tf = winograd.TRANSFORMS[self.kernel_size[0]]
        tiles = winograd.winograd_tiles(*out_hw)
        xq = winograd.parity_split(to_chwn(x), pads[0], pads[2],
                                   tiles[0] + tf.halo, tiles[1] + tf.halo)     # padded: (C, 2, 2, Ty+halo, Tx+halo, N)
        u = winograd.winograd_kernel(tf, kernel)                                # (n^2, F, C)
        blocks = self._winograd_blocks(x.shape[3], tiles, n)
        if pooled:                                                              # inference: no cache
            return self._winograd_max_pool(tf, xq, u, out_hw, blocks, bias, relu)
        y = np.empty((f, 2 * tiles[0], 2 * tiles[1], n), self.dtype)
        for r0, r1, c0, c1 in blocks:
            m = np.matmul(u, winograd.winograd_input_block(tf, xq, r0, r1, c0, c1))     # (n^2, F, tiles*N) = U V
            winograd.winograd_output_block(tf, m, y, r0, r1, c0, c1, bias, relu)     # bias (and ReLU) added there
        self._cache = ("winograd", xq, u, x.shape[1:3], pads, tiles)        # kept: input gradients follow inference too
        return from_chwn(y[:, :out_hw[0], :out_hw[1]])                          # (N, Ho, Wo, F), a view

    # At inference a 2x2 max pool after a Winograd layer (pools_while_writing) takes the maximum of each
    # 2x2 output tile: each block of tiles is transformed into a scratch that stays in cache and only its
    # pooled quarter is written (mnist_accurate's last convolution, cifar_small's second, fourth and sixth).
    # An odd output's last, overhanging tile row or column is the window the pool drops.
    def _winograd_max_pool(self, tf, xq, u, out_hw, blocks, bias, relu):
        ph, pw = out_hw[0] // 2, out_hw[1] // 2
        f, n = self.filters, xq.shape[5]
        y = np.empty((f, ph, pw, n), self.dtype)
        most = max((r1 - r0) * (c1 - c0) for r0, r1, c0, c1 in blocks)
        scratch = np.empty(f * 4 * most * n, self.dtype)
        for r0, r1, c0, c1 in blocks:
            m = np.matmul(u, winograd.winograd_input_block(tf, xq, r0, r1, c0, c1))
            out = scratch[:f * 4 * (r1 - r0) * (c1 - c0) * n].reshape(f, 2 * (r1 - r0), 2 * (c1 - c0), n)
            winograd.winograd_output_block(tf, m, out, 0, r1 - r0, 0, c1 - c0, bias, relu)   # the block's own tiles
            rows, cols = min(r1, ph) - r0, min(c1, pw) - c0
            if rows > 0 and cols > 0:
                t = out[:, :2 * rows, :2 * cols]
                np.maximum(np.maximum(t[:, 0::2, 0::2], t[:, 0::2, 1::2]),             # a NaN wins, as in MaxPool2D
                           np.maximum(t[:, 1::2, 0::2], t[:, 1::2, 1::2]), out=y[:, r0:r0 + rows, c0:c0 + cols])
        return from_chwn(y)                                                     # (N, Ho // 2, Wo // 2, F), a view

    def _backward_winograd(self, dy):
        _, xq, u, (h, w), pads, tiles = self._cache
        tf = winograd.TRANSFORMS[self.kernel_size[0]]
        f, c, n = self.filters, xq.shape[0], xq.shape[5]
        dyc = to_chwn(np.asarray(dy, dtype=self.dtype))                         # (F, Ho, Wo, N)
        if self.use_bias:
            self.grads["bias"][...] = dyc.reshape(f, -1).sum(axis=1)
        dyq = winograd.parity_split(dyc, 0, 0, *tiles)                          # (F, 2, 2, Ty, Tx, N); overhang: zeros
        ut = np.ascontiguousarray(u.transpose(0, 2, 1))                         # (n^2, C, F)
        du = np.zeros(u.shape, self.dtype)
        dxq = np.zeros(xq.shape, self.dtype) if self.needs_input_grad else None
        for r0, r1, c0, c1 in self._winograd_blocks(c, tiles, n):
            v = winograd.winograd_input_block(tf, xq, r0, r1, c0, c1)           # recomputed: (n^2, C, tiles*N)
            dm = winograd.winograd_output_adjoint_block(tf, dyq, r0, r1, c0, c1)    # (n^2, F, tiles*N)
            du += np.matmul(dm, v.transpose(0, 2, 1))                           # dU = dM V^T
            if dxq is not None:                                                 # blocks overlap by halo rows / columns: add
                winograd.winograd_input_adjoint_block(tf, np.matmul(ut, dm), dxq, r0, r1, c0, c1)   # dV = U^T dM
        self.grads["kernel"][...] = winograd.winograd_kernel_adjoint(tf, du)
        if dxq is None:
            return None
        return from_chwn(winograd.parity_merge(dxq, pads[0], pads[2], h, w))    # the padding's gradient is dropped

    # Stride-1 layers with 5-wide kernels and fewer than 16 input channels (LeNet-5's two layers, the first
    # layer of the MNIST models), and with 3-wide kernels and fewer than 32 (ResNet's first stage, the first
    # layers of the CIFAR models) run as a direct convolution in the compiled loops (compiled.direct5 and
    # direct3): no patch matrix and no transforms, each input row read once per kernel row and multiplied
    # by two (5 taps) or four (3 taps) filters' weights at once. With few channels im2col's matrix is thin,
    # and writing it costs more than BLAS's product gains; Winograd's transforms are passes over memory
    # that cost more than the multiplications they save. From DIRECT_BELOW_CHANNELS channels on,
    # Winograd is faster (benchmarks/README.md, "How Conv2D picks its algorithm" and "Residual networks on
    # an AVX2 CPU"). The input gradient is the same loop run on dy with the kernel turned by 180 degrees
    # and its channel and filter axes swapped (a "full" convolution).
    DIRECT_BELOW_CHANNELS = {5: 16, 3: 32}          # kernel width: direct below this many input channels

    # At inference a max pool whose windows tile the output can run inside the loop (pools_while_writing,
    # compiled.direct_max_pool): the output rows of one row of windows are computed for POOL_GROUP filters
    # at a time into a scratch that stays in cache, and only the pooled output is written. For mnist_fast's
    # first layer (1 -> 32 filters, 28x28, then BatchNorm, ReLU and a 2x2 pool) that is 4x less output.
    POOL_GROUP = 8

    def _forward_direct(self, x, pads, out_hw, kernel, bias, relu, pool_size=None):
        n, h, w, c = x.shape
        f, (ho, wo) = self.filters, out_hw
        top, _, left, right = pads
        xh = pad_hw(to_chwn(x), (0, 0, left, right))                          # (C, H, Wp, N): the rows' padding is skipped
        rows = xh.reshape(c, h, -1)                                             # view (C, H, Wp*N): the loops' rows
        kernel = np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))             # rows (F, C, kh, kw)
        bias = np.zeros(f, self.dtype) if bias is None else bias
        if pool_size is not None:                                               # inference: no cache
            (ph, pw), group = pool_size, min(f, self.POOL_GROUP)
            y = np.empty((f, ho // ph, wo // pw, n), self.dtype)
            scratch = np.empty((group, ph, wo * n), self.dtype)                 # one row of windows, `group` filters
            compiled.direct_max_pool(rows, top, n, kernel, bias, relu, ph, pw, group, scratch, y)
            return from_chwn(y)                                                 # (N, Ho // ph, Wo // pw, F), a view
        y = np.empty((f, ho, wo, n), self.dtype)
        compiled.direct(rows, top, n, kernel, bias, relu, y.reshape(f, ho, -1))   # view (F, Ho, Wo*N)
        self._cache = ("direct", xh, pads, (h, w))
        return from_chwn(y)                                                     # (N, Ho, Wo, F), a view

    def _backward_direct(self, dy):
        _, xh, (top, _, left, _), (h, w) = self._cache
        kh, kw, c, f = self.params["kernel"].shape
        n = xh.shape[3]
        dyc = to_chwn(np.asarray(dy, dtype=self.dtype))                         # (F, Ho, Wo, N)
        ho = dyc.shape[1]
        if self.use_bias:
            self.grads["bias"][...] = dyc.reshape(f, -1).sum(axis=1)
        dw = np.empty((f, c, kh, kw), self.dtype)
        compiled.direct_kernel_grad(xh.reshape(c, h, -1), top, n, dyc.reshape(f, ho, -1), dw)
        self.grads["kernel"][...] = dw.transpose(2, 3, 1, 0)                    # (F, C, kh, kw) -> (kh, kw, C, F)
        if not self.needs_input_grad:
            return None
        dyh = pad_hw(dyc, (0, 0, kw - 1, kw - 1))                               # (F, Ho, Wo + 2 kw - 2, N)
        turned = np.ascontiguousarray(self.params["kernel"][::-1, ::-1].transpose(2, 3, 0, 1))   # (C, F, kh, kw)
        dxh = np.empty(xh.shape, self.dtype)                                    # the gradient of xh: (C, H, Wp, N)
        compiled.direct(dyh.reshape(f, ho, -1), kh - 1 - top, n, turned, np.zeros(c, self.dtype), False,
                         dxh.reshape(c, h, -1))
        return from_chwn(dxh[:, :, left:left + w])                              # the columns' padding dropped

    def backward(self, dy):
        if self._cache[0] == "direct":
            return self._backward_direct(dy)
        if self._cache[0] == "winograd":
            return self._backward_winograd(dy)
        _, xp, kept, bands, pads, (ho, wo) = self._cache
        g, f = self.groups, self.filters
        kh, kw, cg, _ = self.params["kernel"].shape
        dyc = to_chwn(np.asarray(dy, dtype=self.dtype))                         # (F, Ho, Wo, N); no copy if dy came from a layer
        if self.use_bias:
            self.grads["bias"][...] = dyc.reshape(f, -1).sum(axis=1)
        wmat = self._kernel_matrix()                                            # (g, F_g, K_g)
        dw = np.zeros((g, wmat.shape[2], f // g), self.dtype)                   # (g, K_g, F_g)
        dxp = np.zeros(xp.shape, self.dtype) if self.needs_input_grad else None
        wt = np.ascontiguousarray(wmat.transpose(0, 2, 1))                      # (g, K_g, F_g): W^T, once per step
        for r0, r1 in bands:
            band = self._band_input(xp, r0, r1)
            cols = kept if kept is not None else im2col(band, self.kernel_size, (r1 - r0, wo), self.strides,
                                                        self.dilation)
            d = dyc[:, r0:r1].reshape(g, f // g, -1)                            # (g, F_g, M): a view
            colg = cols.reshape(g, -1, cols.shape[1])                           # (g, K_g, M): a view
            if g == 1:
                dw[0] += matmul_nt_blocked(colg[0], d[0])                       # cols @ dy^T
            else:
                dw += np.matmul(colg, d.transpose(0, 2, 1))
            if dxp is not None:
                if g == 1:
                    dcols = matmul_blocked(wt[0], d[0])                         # (K, M) = W^T dy
                else:
                    dcols = np.matmul(wt, d).reshape(-1, d.shape[2])            # (g, K_g, M) -> (C*kh*kw, M)
                sh = self.strides[0]                                            # the band's rows of dxp (a view)
                col2im(dcols, dxp, self.kernel_size, (r1 - r0, wo), self.strides, self.dilation, row0=r0 * sh)
        # rows (c, p, q) of each group -> kernel (kh, kw, C_g, F)
        self.grads["kernel"][...] = dw.reshape(g, cg, kh, kw, f // g).transpose(2, 3, 1, 0, 4).reshape(kh, kw, cg, f)
        if dxp is None:
            return None
        t, b, l, r = pads
        return from_chwn(dxp[:, t:xp.shape[1] - b, l:xp.shape[2] - r])

    def macs(self):
        ho, wo, f = self.output_shape
        kh, kw = self.kernel_size
        return ho * wo * f * kh * kw * (self.input_shape[2] // self.groups)

    def get_config(self):
        return {"filters": self.filters, "kernel_size": list(self.kernel_size), "strides": list(self.strides),
                "padding": self.padding if isinstance(self.padding, str) else list(self.padding),
                "dilation": list(self.dilation), "groups": self.groups, "use_bias": self.use_bias,
                "kernel_initializer": self.kernel_initializer.name}
