r"""What a convolution's filters are: orientation tuning, "is it oriented", the data's patch components.

**Orientation tuning.** Filter ``f`` of a kernel ``k`` (kh, kw, C, F) is
shown a gray stimulus ``s`` (the same on every channel), so its response is
``r = sum_{i,j} kbar[i, j] * s[i, j]`` with ``kbar = sum_c k[:, :, c, f]``.
Two stimuli at angle ``theta`` (the direction of the contour, 0 = horizontal,
90 = vertical, y pointing down) and at every offset ``t`` of the contour
from the patch centre, in half-pixel steps, drawn anti-aliased:

* a step edge ``s = clip(n . p - t, -1/2, 1/2) * 2`` (dark on one side, light on the other),
* a bar of width ``BAR_WIDTH``: ``s = clip(BAR_WIDTH / 2 + 1/2 - |n . p - t|, 0, 1)``,

with ``p`` a pixel's position from the patch centre and ``n = (-sin theta,
cos theta)`` the contour's normal. The tuning curve is the best response
over offsets (positions), both polarities (phase) and both stimuli, of the
kernel with its mean removed (a uniform field has no orientation, so the
response to overall brightness, ``mean(kbar) * sum(s)``, is left out)::

    R(theta) = max_{t, stimulus, sign} sign * ((kbar - mean(kbar)) . s_{theta, t})

**Selectivity** of a tuning curve ``R >= 0`` over angles spread evenly on
[0, 180): one minus the circular variance of the doubled angles,
``OSI = |sum_theta R(theta) exp(2 i theta)| / sum_theta R(theta)`` (0: the
same response at every angle, a blob; 1: a response at one angle only).

**Spectral tuning** (:func:`fourier_tuning`): the kernel's energy
``|DFT|^2`` in each orientation bin, the frequency ray along the contour's normal.

**Oriented** (:func:`oriented`): a filter's OSI (of its spectral tuning by
default, or of its stimulus tuning) is above the 95th percentile of the OSIs
of random Gaussian filters of the same shape and norm (:func:`null_selectivity`,
a fixed seed), and above its own OSI at initialisation when that kernel is known.

**The data's patches** (:func:`patch_components`): the principal components
of random ``kh x kw`` patches of the images, the eigenvectors of their
covariance ``(1/n) sum (p - mean)(p - mean)^T`` in decreasing eigenvalue,
each signed so that its largest-magnitude entry is positive.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..layers.conv import pad_hw, resolve_padding

ANGLES = np.arange(0.0, 180.0, 11.25)  # 16 orientations, degrees
BAR_WIDTH = 1.5                        # pixels
NULL_SAMPLES = 2000
NULL_SEED = 0
NULL_QUANTILE = 0.95


def _check_kernel(kernel) -> np.ndarray:
    k = np.asarray(kernel, np.float64)
    if k.ndim == 3:
        k = k[..., None]
    if k.ndim != 4:
        raise ValueError(f"a kernel must have shape (kh, kw, C, F) or (kh, kw, C), received {k.shape}")
    return k


def stimuli(kh, kw, angles=ANGLES, bar_width=BAR_WIDTH):
    """The stimulus bank ``(len(angles), n_stimuli, kh * kw)``: edges and bars at every offset, per angle."""
    yy, xx = np.mgrid[0:kh, 0:kw].astype(np.float64)
    yy, xx = yy - (kh - 1) / 2, xx - (kw - 1) / 2
    reach = np.ceil(np.hypot(kh, kw) / 2) + 1                      # offsets symmetric, on the half-pixel grid
    offsets = np.arange(-reach, reach + 0.25, 0.5)
    bank = []
    for a in np.deg2rad(np.asarray(angles, np.float64)):
        d = (-np.sin(a) * xx + np.cos(a) * yy).ravel()[None, :] - offsets[:, None]   # signed distance to the contour
        edge = np.clip(d, -0.5, 0.5) * 2
        bar = np.clip(bar_width / 2 + 0.5 - np.abs(d), 0, 1)
        bank.append(np.concatenate([edge, bar]))
    return np.stack(bank)


def tuning_curves(kernel, angles=ANGLES) -> np.ndarray:
    """``R`` (F, len(angles)): each filter's best response to an edge or a bar at each angle (module docstring)."""
    k = _check_kernel(kernel)
    kh, kw, _, f = k.shape
    flat = k.sum(axis=2).reshape(kh * kw, f)                       # gray stimulus: the channels add up
    flat = flat - flat.mean(axis=0)                                 # a uniform field has no orientation
    resp = np.einsum("asp,pf->fas", stimuli(kh, kw, angles), flat)
    return np.abs(resp).max(axis=2)


def fourier_tuning(kernel, angles=ANGLES, size=33) -> np.ndarray:
    """(F, len(angles)): each (channel-summed) kernel's spectral energy ``sum |DFT|^2`` per orientation bin.

    A contour at angle ``theta`` varies along its normal ``n = (-sin theta, cos theta)``, so its energy
    lies on the frequency ray of that direction. Every frequency but DC of the ``size x size``
    zero-padded DFT (odd, so that no Nyquist row breaks the symmetry) goes to the bin of the nearest angle (angles are taken modulo 180; a tie is split).
    """
    k = _check_kernel(kernel).sum(axis=2)
    power = np.abs(np.fft.fft2(k, s=(size, size), axes=(0, 1))) ** 2    # (size, size, F)
    fy, fx = np.meshgrid(np.fft.fftfreq(size), np.fft.fftfreq(size), indexing="ij")
    contour = np.rad2deg(np.arctan2(-fx, fy)) % 180.0                     # n = (fx, fy) -> theta
    ang = np.asarray(angles, np.float64)
    gap = np.abs((contour[..., None] - ang + 90.0) % 180.0 - 90.0)       # distance on the half circle
    share = np.isclose(gap, gap.min(axis=-1, keepdims=True), atol=1e-9)
    share = share / share.sum(axis=-1, keepdims=True)                    # a frequency between two bins: half each
    share[(fy == 0) & (fx == 0)] = 0.0                                    # DC has no orientation
    return np.einsum("yxf,yxa->fa", power, share)


def selectivity(curves, angles=ANGLES) -> np.ndarray:
    """OSI of each tuning curve (the last axis): ``|sum R exp(2 i theta)| / sum R``, in [0, 1]."""
    r = np.asarray(curves, np.float64)
    z = np.exp(2j * np.deg2rad(np.asarray(angles, np.float64)))
    total = r.sum(axis=-1)
    return np.abs((r * z).sum(axis=-1)) / np.where(total > 0, total, 1.0)


def preferred_angle(curves, angles=ANGLES) -> np.ndarray:
    """The angle (degrees, [0, 180)) of the tuning curve's vector sum: the filter's preferred contour."""
    r = np.asarray(curves, np.float64)
    z = (r * np.exp(2j * np.deg2rad(np.asarray(angles, np.float64)))).sum(axis=-1)
    a = (np.rad2deg(np.angle(z)) / 2) % 180.0
    return np.where(a > 180.0 - 1e-9, 0.0, a)                        # -0.0 % 180 would read 180


TUNINGS = {"fourier": fourier_tuning, "stimulus": tuning_curves}   # the tuning curves ``oriented`` can judge by
DEFAULT_TUNING = "fourier"


def null_selectivity(kh, kw, channels=1, samples=NULL_SAMPLES, seed=NULL_SEED, tuning=DEFAULT_TUNING) -> np.ndarray:
    """The OSIs of ``samples`` random Gaussian filters (kh, kw, channels), each scaled to unit norm.

    OSI does not depend on a filter's norm, so this one null serves filters of any norm.
    """
    rng = np.random.default_rng(seed)
    k = rng.standard_normal((kh, kw, channels, samples))
    k /= np.sqrt((k ** 2).sum(axis=(0, 1, 2), keepdims=True))
    return selectivity(TUNINGS[tuning](k))


@lru_cache(maxsize=32)
def null_threshold(kh, kw, channels=1, quantile=NULL_QUANTILE, samples=NULL_SAMPLES, seed=NULL_SEED,
                   tuning=DEFAULT_TUNING) -> float:
    """The OSI that ``quantile`` of random filters of this shape stay below (by ``tuning``'s curves)."""
    return float(np.quantile(null_selectivity(kh, kw, channels, samples, seed, tuning), quantile))


def oriented(kernel, initial=None, quantile=NULL_QUANTILE, tuning=DEFAULT_TUNING) -> dict:
    """Which filters of ``kernel`` (kh, kw, C, F) are oriented, and the numbers behind the verdict.

    ``tuning``: ``"fourier"`` (:func:`fourier_tuning`, the default: on the default subject it separates
    learned from random filters best, benchmarks/README.md) or ``"stimulus"`` (:func:`tuning_curves`).

    Returns ``{"selectivity": (F,), "threshold": float, "initial_selectivity": (F,) or None,
    "preferred": (F,) degrees, "oriented": (F,) bool, "count": int, "filters": F}``.
    """
    k = _check_kernel(kernel)
    kh, kw, c, f = k.shape
    if tuning not in TUNINGS:
        raise ValueError(f"tuning is one of {sorted(TUNINGS)}, received {tuning!r}")
    curve_of = TUNINGS[tuning]
    curves = curve_of(k)
    osi = selectivity(curves)
    thr = null_threshold(kh, kw, c, quantile, tuning=tuning)
    ok = osi > thr
    osi0 = None
    if initial is not None:
        k0 = _check_kernel(initial)
        if k0.shape != k.shape:
            raise ValueError(f"the initial kernel has shape {k0.shape}, the kernel {k.shape}")
        osi0 = selectivity(curve_of(k0))
        ok &= osi > osi0
    return {"selectivity": osi, "threshold": thr, "initial_selectivity": osi0, "preferred": preferred_angle(curves),
            "oriented": ok, "count": int(ok.sum()), "filters": int(f), "curves": curves}


def random_patches(images, kh, kw, n=20000, seed=0) -> np.ndarray:
    """``n`` random ``kh x kw`` patches (n, kh, kw, C) of ``images`` (N, H, W, C), positions drawn uniformly."""
    x = np.asarray(images, np.float64)
    if x.ndim != 4 or x.shape[1] < kh or x.shape[2] < kw:
        raise ValueError(f"images must be (N, H, W, C) of at least {kh}x{kw} pixels, received {x.shape}")
    rng = np.random.default_rng(seed)
    i = rng.integers(0, len(x), n)
    r = rng.integers(0, x.shape[1] - kh + 1, n)
    c = rng.integers(0, x.shape[2] - kw + 1, n)
    rows = r[:, None] + np.arange(kh)[None, :]
    cols = c[:, None] + np.arange(kw)[None, :]
    return x[i[:, None, None], rows[:, :, None], cols[:, None, :]]


def patch_components(images, kh, kw, n=20000, seed=0, skip_flat=0.02):
    """``(components (kh, kw, C, m), variance ratio (m,))``: principal components of the images' patches.

    Patches with less than ``skip_flat`` standard deviation (empty background) are left out, so the
    components describe the strokes rather than the blank page. Signs: largest-magnitude entry positive.
    """
    p = random_patches(images, kh, kw, n, seed)
    p = p.reshape(len(p), -1)
    p = p[p.std(axis=1) > skip_flat]
    if len(p) < 2:
        raise ValueError("the images have no patches with contrast; principal components need some")
    p = p - p.mean(axis=0)
    evals, evecs = np.linalg.eigh(p.T @ p / len(p))
    order = np.argsort(evals)[::-1]
    evals, evecs = evals[order], evecs[:, order]
    peak = evecs[np.argmax(np.abs(evecs), axis=0), np.arange(evecs.shape[1])]
    evecs = evecs * np.sign(peak)[None, :]
    c = np.asarray(images).shape[3]
    return evecs.reshape(kh, kw, c, -1), evals / evals.sum()


def top_patch_average(layer, x, k=16):
    """``(F, kh_eff, kw_eff, C)``: per filter of conv ``layer``, the mean of the ``k`` input patches it answers most.

    ``x`` (N, H, W, C) is the layer's input. Each response's patch is the window of the padded input
    that the output position reads (dilated kernels read a wider window; it is taken whole).
    """
    x = np.asarray(x, np.float32)
    y = layer.forward(x)                                            # (N, Ho, Wo, F)
    (kh, kw), (sh, sw), (dh, dw) = layer.kernel_size, layer.strides, layer.dilation
    pads = resolve_padding(layer.padding, x.shape[1:3], layer.kernel_size, layer.strides, layer.dilation)
    xp = pad_hw(x, pads)
    eh, ew = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    n, ho, wo, f = y.shape
    out = np.zeros((f, eh, ew, x.shape[3]), np.float64)
    for j in range(f):
        flat = y[..., j].ravel()
        best = np.argsort(flat)[::-1][:k]
        b, r, c = np.unravel_index(best, (n, ho, wo))
        out[j] = np.mean([xp[bi, ri * sh:ri * sh + eh, ci * sw:ci * sw + ew] for bi, ri, ci in zip(b, r, c)], axis=0)
    return out


def filter_change(snapshots) -> dict:
    """How far each filter has moved from its initialization, per snapshot.

    For filter ``f`` at step ``t``: ``||k_t[..., f] - k_0[..., f]|| / ||k_0[..., f]||``
    (Frobenius norms over ``kh x kw x C``). Returns ``{"steps", "per_filter"
    (steps x F), "total" (the same for the whole kernel), "half_step"}``, where
    ``half_step`` is the first snapshot whose total change reaches half the final one.
    """
    steps = [int(s) for s in snapshots]
    k = np.stack([np.asarray(snapshots[s], np.float64) for s in snapshots])     # (T, kh, kw, C, F)
    d = k - k[0]
    per = np.sqrt((d ** 2).sum(axis=(1, 2, 3))) / np.maximum(np.sqrt((k[0] ** 2).sum(axis=(0, 1, 2))), 1e-12)
    total = np.sqrt((d ** 2).sum(axis=(1, 2, 3, 4))) / max(float(np.sqrt((k[0] ** 2).sum())), 1e-12)
    half = next((s for s, v in zip(steps, total) if v >= total[-1] / 2), steps[-1])
    return {"steps": steps, "per_filter": per, "total": total, "half_step": int(half)}
