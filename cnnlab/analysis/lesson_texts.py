"""Sentences of the lesson that depend on the model, chosen by rules from measured numbers.

Each function takes the numbers a computation of :mod:`cnnlab.analysis` returned and says what
is true for *this* model; the rules (thresholds) are module constants, so a page and its tests
read the same rule. Nothing here computes: it only chooses and fills the words.
"""
from __future__ import annotations

MOST = 0.75             # "most filters are oriented" from this fraction up (6 of 8)
ABSORBS = 0.5           # a pooled map "absorbs" a shift when it changes by less than this fraction of the unpooled change
KEEPS_PREDICTION = 0.9  # a model "keeps its prediction" at a shift when at least this fraction of predictions stay
STILL = 0.1             # features "nearly unchanged" below this relative change
NOTHING = 0.005         # learned filters "add nothing measurable" below this accuracy gain
LITTLE = 0.05           # ... "add little" below this one


def _pct(v) -> str:
    return f"{100 * v:.0f}%"


def filters_sentence(count, filters, trained=True, threshold=None) -> str:
    """How many first-layer filters are oriented (:func:`cnnlab.analysis.filters.oriented`), said truthfully.

    An untrained model is never called an edge detector, whatever its count (about 5% of random filters pass).
    """
    test = "orientation selectivity above that of 95% of random filters of the same size"
    if threshold is not None:
        test += f" ({threshold:.2f})"
    if not trained:
        return (f"These {filters} filters are untrained: {count} of them pass the test ({test}) by chance alone, as "
                f"about 1 in 20 random filters does. An untrained model is not an edge detector; train it and look again.")
    if count == 0:
        return (f"None of the {filters} filters is oriented ({test}, and above its own value at the start): this "
                f"model's first layer has not become an edge or bar detector.")
    verb = "is" if count == 1 else "are"
    if count >= MOST * filters:
        return (f"{count} of the {filters} filters {verb} oriented: each answers an edge or bar at one angle far "
                f"more than at others ({test}, and above its own value at the start). Training made them edge and "
                f"bar detectors.")
    return (f"Only {count} of the {filters} filters {verb} oriented ({test}, and above its own value at the start); "
            f"the others have no clear preferred angle.")


def random_filters_sentence(trained_accuracy, frozen_accuracy, chance) -> str:
    """How well the same model does with its first layer frozen at random initialisation, against trained."""
    gap = trained_accuracy - frozen_accuracy
    head = (f"With its first layer frozen at its random start, the same model reaches {_pct(frozen_accuracy)} "
            f"test accuracy; trained, {_pct(trained_accuracy)} (chance: {_pct(chance)}).")
    if gap < NOTHING:
        return head + (f" Learning the first layer's filters adds nothing measurable here ({100 * gap:+.1f} points): "
                       f"random filters already pass on what this task needs, and the layers after them learn to read them.")
    if frozen_accuracy - chance > 0.5 * (trained_accuracy - chance) and gap < LITTLE:
        return head + (f" Random filters already carry most of what this task needs; learning them adds "
                       f"{100 * gap:.1f} points.")
    return head + f" Learning the filters is worth {100 * gap:.0f} points."


def pooling_sentence(pool_count, change=None, shift=1) -> str:
    """What sub-sampling does to a shift of ``shift`` pixels, from :func:`cnnlab.analysis.equivariance.pooling_shift_change`.

    ``pool_count``: the model's sub-sampling layers; ``change``: ``{kind: [relative change per shift]}``
    (index ``shift``). A model without pooling is told so, in one line.
    """
    if pool_count == 0:
        return ("This model has no pooling or strided layer: its maps keep every position, so a shift of the "
                "input moves them pixel for pixel and nothing is absorbed before the classifier.")
    names = {"subset": "keeping one pixel in each window", "average": "the window's average", "max": "the window's maximum"}
    none = change["none"][shift]
    parts = [f"{names[k]} changes by {_pct(change[k][shift])}" for k in ("subset", "average", "max")]
    best = min(("subset", "average", "max"), key=lambda k: change[k][shift])
    text = (f"Shift the input by {shift} pixel{'s' if shift != 1 else ''}: unpooled, the map changes by {_pct(none)}; "
            + ", ".join(parts) + ".")
    if change[best][shift] < ABSORBS * none:
        return text + f" {names[best].capitalize()} absorbs most of the shift."
    return text + " No kind of sub-sampling absorbs much of it here."


def invariance_sentence(name, shifts, feature_change, agreement) -> str:
    """How shift-invariant model ``name`` is, from feature change and prediction agreement at each shift.

    ``shifts`` (pixels, ascending), ``feature_change`` (relative change of the features the classifier
    reads) and ``agreement`` (fraction of predictions unchanged), one value per shift. Three cases:
    features nearly unchanged (below ``STILL``) and predictions kept; predictions kept though the features
    change (the classifier absorbs the shift); predictions lost.
    """
    largest = max(shifts)
    i = list(shifts).index(largest)
    moved = [(s, a) for s, a in zip(shifts, agreement) if s > 0]
    kept = all(a >= KEEPS_PREDICTION for _, a in moved)
    change, last = feature_change[i], agreement[i]
    if kept and change < STILL:
        return (f"{name} is nearly shift-invariant: shifted by up to {largest} pixels, its features change by at "
                f"most {_pct(max(feature_change))} and it keeps {_pct(last)} of its predictions.")
    if kept:
        return (f"{name} keeps {_pct(last)} of its predictions for shifts up to {largest} pixels, although its "
                f"features change by {_pct(change)}: the layers after them absorb the shift, the features do not.")
    reach = max([s for s, a in moved if a >= KEEPS_PREDICTION and all(b >= KEEPS_PREDICTION for t, b in moved if t <= s)],
                default=0)
    text = (f"{name} is not shift-invariant: shifted by {largest} pixels, its features change by {_pct(change)} "
            f"and it keeps only {_pct(last)} of its predictions")
    return text + (f" (at least {_pct(KEEPS_PREDICTION)} up to {reach} pixels)." if reach else ".")
