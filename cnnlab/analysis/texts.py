"""The sentences that explain a model to a learner, chosen by rules from measured numbers.

Every function here takes numbers measured on a model (and names to print) and
returns plain text (no HTML: a page escapes it, the explorer shows it as it
is). Where the wording depends on the numbers, the rule is a named threshold
below, so a sentence never says "barely" about a change that was large. The
``explain`` pages, the explorer (``serve``) and the notebooks take their
sentences from here.
"""
from __future__ import annotations

SMALL_CHANGE = 0.10       # a relative feature change below this is "barely"
LARGE_CHANGE = 0.50       # at or above this the features are as different as another picture's
SMALL_PROBABILITY = 0.05  # probability mass moved (half the L1 distance) below this: the prediction "barely moved"
NEARLY_UNCHANGED = 0.5    # one model's feature change below this fraction of every other's: it alone is invariant
LESS_THAN = 0.8           # a change below this fraction of another's is "less than" it, above its inverse "more
                          # than", between them "about as much as"
FAR_BETTER = 0.05         # training accuracy this far above test accuracy: the model fits but does not generalize
RESHAPED = 0.6            # filters that moved this much of their initial size no longer look like their random start


def _pct(v, digits=0) -> str:
    return f"{100 * v:.{digits}f}%"


def _listed(parts) -> str:
    return ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]


# ---------------------------------------------------------------------------
# Shifting the input
# ---------------------------------------------------------------------------
def shift_change(dy, dx, features_change, probability_change, prediction_changed, features_name="the features") -> str:
    """What a shift by ``(dy, dx)`` pixels did to one image's features and prediction.

    ``features_change``: ``||f(T x) - f(x)|| / ||f(x)||`` of the features the classifier reads;
    ``probability_change``: half the L1 distance between the two probability vectors;
    ``prediction_changed``: whether the top class differs. The verdict: *nearly invariant* when the
    features change by less than :data:`SMALL_CHANGE` and the probabilities by less than
    :data:`SMALL_PROBABILITY`; *not invariant* when the predicted class changes or the features change
    by :data:`LARGE_CHANGE` or more; *partly invariant* in between.
    """
    if dy == 0 and dx == 0:
        return "No shift: the maps, the features and the prediction are those of the original image."
    moved = " and ".join(p for p in (f"{abs(dy)} px {'down' if dy > 0 else 'up'}" if dy else "",
                                     f"{abs(dx)} px {'right' if dx > 0 else 'left'}" if dx else "") if p)
    feats = (f"barely changed ({_pct(features_change, 1)})" if features_change < SMALL_CHANGE
             else f"changed by {_pct(features_change)}")
    if prediction_changed:
        pred = "the predicted class changed"
    elif probability_change < SMALL_PROBABILITY:
        pred = f"the prediction barely moved ({_pct(probability_change, 1)} of the probability moved)"
    else:
        pred = f"the predicted class stayed, but {_pct(probability_change)} of the probability moved"
    if features_change < SMALL_CHANGE and probability_change < SMALL_PROBABILITY and not prediction_changed:
        verdict = "For this image, the model is nearly invariant to this shift."
    elif prediction_changed or features_change >= LARGE_CHANGE:
        verdict = ("For this image, the model is not invariant to this shift: its classifier still reads where "
                   "the features are, not only what they are.")
    else:
        verdict = "For this image, the model is only partly invariant to this shift."
    return (f"Moved {moved}, the feature maps move with the input (equivariance); {features_name} {feats} and "
            f"{pred}. {verdict}")


def invariance_verdict(changes, labels) -> str:
    """Which of several models keeps its classifier's features nearly unchanged under a shift.

    ``changes``: model key -> mean relative feature change at the largest shift; ``labels``: key -> name.
    One model is called invariant only when its change is below :data:`NEARLY_UNCHANGED` times every
    other model's; the max-pooling CNN (``cnn``) is compared with the MLP (``mlp``) when both are there.
    """
    order = sorted(changes, key=changes.get)
    lowest, others = order[0], [changes[n] for n in order[1:]]
    if others and changes[lowest] < NEARLY_UNCHANGED * min(others):
        text = (f"Only the {labels.get(lowest, lowest)} keeps its features nearly unchanged: each of its features "
                "is an average over the whole map, so it does not care where a pattern is.")
    else:
        text = ("No model keeps its features unchanged: each still ties features to positions, so invariance here "
                "is partial.")
    if "cnn" in changes and "mlp" in changes:
        a, b = changes["cnn"], changes["mlp"]
        if a < LESS_THAN * b:
            text += f" The max-pooling CNN's features change less than the MLP's ({a:.2f} against {b:.2f}): its pooling absorbed part of the shift."
        elif a <= b / LESS_THAN:
            text += (f" The max-pooling CNN's features change about as much as the MLP's ({a:.2f} against {b:.2f}): "
                     "its pooling absorbed little of this shift, and the dense layer on top of the flattened maps "
                     "still reads each position separately.")
        else:
            text += (f" The max-pooling CNN's features change more than the MLP's ({a:.2f} against {b:.2f}): "
                     "its pooling absorbed little of this shift, and the dense layer on top of the flattened maps "
                     "still reads each position separately.")
    return text


def mlp_training(mt) -> str:
    """How the MLP baseline was trained, and so whether its losses under a shift are missing invariance.

    ``mt``: ``None`` (the MLP was given) or ``{"epochs", "matched", "validation_images",
    "validation_accuracy", "cnn_validation_accuracy"}``.
    """
    if mt is None:
        return "The MLP was given, not trained here."
    if mt["matched"]:
        return (f"The MLP was trained for {mt['epochs']} epochs, until it matched the CNN's accuracy on "
                f"{mt['validation_images']} held-out training images ({_pct(mt['validation_accuracy'], 1)} against "
                f"{_pct(mt['cnn_validation_accuracy'], 1)}), so what it loses under a shift is missing invariance, "
                "not weak fitting.")
    return (f"The MLP was trained for {mt['epochs']} epochs (the most allowed) and reached "
            f"{_pct(mt['validation_accuracy'], 1)} on {mt['validation_images']} held-out training images against "
            f"the CNN's {_pct(mt['cnn_validation_accuracy'], 1)}: with about as many parameters it cannot fit "
            "this data as well, so part of its loss is weaker fitting, not only missing invariance.")


# ---------------------------------------------------------------------------
# Weight sharing
# ---------------------------------------------------------------------------
def weight_sharing_verdict(converged, epochs, train_accuracy, accuracy) -> str:
    """Whether the dense model lost to the convolution for lack of training or for lack of structure.

    ``converged``, ``epochs``, ``train_accuracy``: the dense model's; ``accuracy``: test accuracy per model
    key (``conv``, ``dense``). Within one point of the convolution it did as well; a training accuracy
    :data:`FAR_BETTER` above its test accuracy means it fits but does not generalize.
    """
    if not converged:
        return (f"The dense model had not stopped improving after {epochs} epochs, so part of its gap may be lack "
                "of training.")
    if accuracy["dense"] >= accuracy["conv"] - 0.01:
        return "Trained until its loss stopped falling, the dense model does as well as the convolution here."
    if train_accuracy - accuracy["dense"] > FAR_BETTER:
        return (f"The dense model was trained until its loss stopped falling and fits its training images "
                f"({_pct(train_accuracy, 1)}) far better than new ones ({_pct(accuracy['dense'], 1)}): it lost for "
                "lack of structure, not of training.")
    return (f"The dense model was trained until its loss stopped falling and still reaches only "
            f"{_pct(train_accuracy, 1)} on its own training images: with this parameter budget and no notion of "
            "neighbourhood it cannot fit the data as well; it lost for lack of structure, not of training.")


# ---------------------------------------------------------------------------
# Filters and what they respond to
# ---------------------------------------------------------------------------
def top_patch_cosines(top, random_mean, random_std) -> str:
    """Why a top-patch cosine well below 1 can still be a match: how far it stands above random patches'."""
    z = (top - random_mean) / random_std if random_std > 0 else float("inf")
    if z < 2:
        return (f"A mean cosine of {top:.2f} is not clearly a match: the same filters give random patches "
                f"{random_mean:+.2f} \u00b1 {random_std:.2f} on average, so the top patches stand only {z:.1f} "
                "standard deviations above chance; their large responses come mostly from contrast, not shape.")
    return (f"A mean cosine of {top:.2f} is a clear match even though it is far from 1: the same filters give random "
            f"patches {random_mean:+.2f} \u00b1 {random_std:.2f} on average, so the top patches stand about {z:.1f} "
            "standard deviations above chance.")


def filters_caption(described) -> str:
    """What a layer's filters are, from the counts of ``cnnlab.explain.features.describe_filters``.

    ``described``: ``{"filters": [{"kind", "direction"}], "chance": {"oriented", "blob"}, "channels",
    "percentile", "directions"}``; a filter is an edge, a bar or a blob only when its match beats
    ``percentile`` % of random filters' (the ``chance`` cosines).
    """
    rows = described["filters"]
    parts = []
    for kind, plural in (("edge", "edges"), ("bar", "bars")):
        found = [r["direction"] for r in rows if r["kind"] == kind]
        if found:
            ways = found[0] if len(found) == 1 else ", ".join(
                f"{found.count(d)} {d}" for d in described["directions"] if d in found)
            parts.append(f"{len(found)} oriented {kind if len(found) == 1 else plural} ({ways})")
    for kind in ("bright blob", "dark blob"):
        n = sum(r["kind"] == kind for r in rows)
        if n:
            parts.append(f"{n} {kind}{'s' if n > 1 else ''}")
    none = sum(r["kind"] == "none" for r in rows)
    if none:
        parts.append(f"{none} with no clear edge, bar or blob (they match the templates no better than most random "
                     "filters do)")
    ch = described["chance"]
    summed = f", each summed over its {described['channels']} input channels" if described["channels"] > 1 else ""
    return (f"What these {len(rows)} filters are, measured from their weights{summed}: {_listed(parts)}. A filter "
            f"counts as an edge, a bar or a blob when its cosine similarity with the best-matching template of that "
            f"shape beats {described['percentile']}% of random filters of its size ({ch['oriented']:.2f} for the "
            f"oriented templates, {ch['blob']:.2f} for the blob).")


def filter_evolution(snapshots, first_step, last_step, relative_change, per_filter, half_step) -> str:
    """How far training moved a layer's filters from their random start, measured on its snapshots.

    ``relative_change``: ``||k_T - k_0|| / ||k_0||`` for the whole kernel; ``per_filter`` the same per filter.
    Below :data:`RESHAPED` the filters are said to still look like their random start.
    """
    text = (f"{snapshots} snapshots from step {first_step} to {last_step:,}, closer together in the first steps. Left: "
            "the filters, one colour scale for all frames. Right: what training has added so far (the filter minus "
            f"its random start, on its own scale). By the last step the filters moved by {relative_change:.0%} of "
            f"their initial size (each filter between {min(per_filter):.0%} and {max(per_filter):.0%}); half of that "
            f"change happened by step {half_step:,}. ")
    if relative_change < RESHAPED:
        return text + ("So the filters on the left still look much like their random start: the structure training "
                       "added is in the right half.")
    return text + "Training has reshaped them: the random start is mostly gone."


def edge_responses(kernels, what, noun, strong, ink, sums, signs) -> str:
    """What two edge kernels slid over a picture show, every number measured on it.

    ``kernels``: per kernel ``{"name", "kernel_name", "strong", "on_border", "ratio_to_others", "border_share"}``
    (``on_border``: the fraction of its strong responses, ``|y| >= strong * max |y|``, on the ink's border;
    ``border_share``: the fraction of the picture that border covers). Strong responses land on the border
    "far more often than" chance when every kernel's fraction is over twice the border's share.
    """
    parts = []
    for s in kernels:
        ratio = (f"; there its response is {s['ratio_to_others']:.1f} times as strong as the other kernel's"
                 if s["ratio_to_others"] is not None else "")
        parts.append(f"the kernel for {s['name']} ({s['kernel_name']}) has {s['strong']} strong responses "
                     f"(|response| at least {strong:.0%} of its largest), {s['on_border']:.0%} of them on "
                     f"the ink's border{ratio}")
    share = kernels[0]["border_share"]
    least = min(s["on_border"] for s in kernels)
    chance = "far more often than" if least > 2 * share else "more often than" if least > share else "no more often than"
    return (f"Why convolve at all? Two hand-made 3\u00d73 kernels, run by cnnlab's Conv2D over {what} ('same' "
            f"padding, so each feature map is as large as the picture), each subtract the pixels on one side of the "
            f"centre from those on the other (the weights of each add up to {sums}). Where both sides are alike the "
            f"products cancel and the map stays near zero (white); where the {noun}'s ink meets the background they "
            f"do not, and the map lights up. Measured on this picture: {'; '.join(parts)}. The border (pixels within "
            f"one pixel of where ink, value above {ink}, meets background) covers {share:.0%} of the picture, so "
            f"strong responses land there {chance} by chance. Colours: {signs}.")


# ---------------------------------------------------------------------------
# What one unit looks for (the explorer's unit details: cnnlab.analysis.maximize.optimum)
# ---------------------------------------------------------------------------
def unit_optimum(unit, value, input_value, random_values, radius, optimised=None) -> str:
    """What an input optimised to excite ``unit`` says, against the current input and random inputs of the
    same L2 norm ``radius``. The unit is said to look for the pattern only when the optimum beats both."""
    noise_mean, noise_max = float(sum(random_values) / len(random_values)), float(max(random_values))
    via = (f" (an activation never decreases, so the input that maximises {optimised} below it was sought)"
           if optimised else "")
    numbers = (f"{unit} reaches {value:.3g} on the optimised input, {input_value:.3g} on yours and "
               f"{noise_mean:.3g} on average ({noise_max:.3g} at most) on {len(random_values)} random inputs, all of "
               f"the same size (L2 norm {radius:.3g}){via}.")
    if value <= 0:
        return f"No input of this size that the optimiser found turns this unit on: {numbers}"
    if value <= input_value:
        return f"Your input excites this unit at least as much as the optimiser's best: {numbers}"
    if value <= noise_max:
        return f"The optimised input does no better than random noise, so this unit shows no clear preference: {numbers}"
    times = f", {value / input_value:.1f} times yours" if input_value > 0 else ""
    return (f"The picture is what this unit looks for: of all inputs of your input's size, the optimiser's best "
            f"excites it most{times}. {numbers}")


# ---------------------------------------------------------------------------
# The lesson's questions, and where an explain page sits in the lesson
# ---------------------------------------------------------------------------
QUESTIONS = {
    "Q1": "How does the convolution step of a CNN work?",
    "Q2": "Why is it effective?",
    "Q3": "Why does the first convolution find small parts such as edges, and what finds corners?",
    "Q4": "How does this convolution relate to the one of probability theory, the density of a sum?",
}


def lesson_heading(step) -> str:
    """The heading of an explain page's section: its lesson step (``lesson.outline()``'s entry) and questions."""
    return f"Step {step['step']}: {step['title']} ({', '.join(step['questions'])})"


def lesson_order(steps, shown) -> str:
    """The explain index's opening: it follows the lesson (``steps``: the outline), showing the steps ``shown``."""
    rest = [str(s["step"]) for s in steps if s["step"] not in shown]
    asked = " ".join(f"{q}: {text}" for q, text in QUESTIONS.items())
    return (f"These pages follow the lesson of the explorer (cnnlab serve, its Lesson tab), in its order, on one "
            f"model; each heading names the lesson's step and the questions it answers ({asked}). Steps "
            f"{_listed(rest)} are in the explorer's lesson only, on your own drawing.")


# ---------------------------------------------------------------------------
# The walk through one model (the explain index), one paragraph per step
# ---------------------------------------------------------------------------
def conv_step(kernel_hw, input_hw, output_hw) -> str:
    """Step 1, how: one kernel, the sum at every position, and the sizes it gave."""
    return (f"A small kernel ({kernel_hw[0]}\u00d7{kernel_hw[1]}) slides over the image; at each position the pixels "
            "under it are multiplied by its weights and summed, plus a bias. Every output cell is that one sum: here "
            f"a {input_hw[0]}\u00d7{input_hw[1]} input gives a {output_hw[0]}\u00d7{output_hw[1]} output.")


def edge_summary(description, kernels) -> str:
    """Why the convolution step is useful: where two edge kernels fire on a real picture (``edge_responses``'s numbers)."""
    fired = " and ".join(f"{_pct(k['on_border'], 1)} of the strong responses of the kernel for {k['name']}"
                         for k in kernels)
    return (f"Why that is useful: two hand-made edge kernels slid over {description} light up where its ink meets the "
            f"background: {fired} lie on the ink's border, which covers {_pct(kernels[0]['border_share'], 1)} of the "
            "picture.")


def feature_maps_summary(layer_name, filters, source, class_name, probability) -> str:
    """Step 2, how: a layer of ``filters`` filters turns the input into as many maps; the prediction at the end."""
    return (f"The model's first convolution ({layer_name}) has {filters} filters, so it turns {source} into {filters} "
            "feature maps, each bright where its filter's pattern occurs (right: the filters themselves, red adds the "
            "pixel, blue subtracts it). Later layers combine these maps; the last one gives the class scores: here "
            f"{class_name} ({probability:.0%}).")


def weight_sharing_summary(n_train=None, dataset=None, params=None, accuracy=None) -> str:
    """Step 3, why: a convolution as a tied, sparse dense layer; with ``accuracy``, what the three models reached."""
    text = ("A convolution is a fully connected layer whose matrix is mostly zeros, with the same few weights "
            "repeated along its diagonals: one small neuron copied over every patch.")
    if accuracy:
        text += (f" This step trains its own three small models, each until its training loss stops falling, on the "
                 f"same {n_train:,} {dataset} images: the convolution ({params['conv']:,} parameters) reaches "
                 f"{_pct(accuracy['conv'], 1)}, the locally connected layer (the same sparsity, untied, "
                 f"{params['locally_connected']:,}) {_pct(accuracy['locally_connected'], 1)} and a dense network of "
                 f"about the convolution's size {_pct(accuracy['dense'], 1)}.")
    return text


def matched_filter_summary(noun, cosines) -> str:
    """Step 4, why: a kernel is a template; how similar the first-layer filters are to the patches they answer."""
    return ("The output of a convolution at a position is the dot product of its kernel with the patch there: largest "
            "where the patch looks like the kernel. So a kernel is a template and its feature map says where the "
            f"template matches. The model's first-layer filters, each compared with the {noun} patches that excite it "
            f"most, have mean cosine similarities between {min(cosines):.2f} and {max(cosines):.2f} with them.")


def invariance_summary(noun, shift, accuracy, changes) -> str:
    """Step 5, why: accuracy and feature change at the largest ``shift`` for the CNN, the GAP model and the MLP."""
    return ("Move the input and the feature maps move with it (equivariance); averaging a map over the whole image "
            f"throws the position away (invariance). Shifted by {shift} px, the {noun}s are still recognized "
            f"{_pct(accuracy['cnn'], 1)} of the time by this CNN and {_pct(accuracy['cnn_gap'], 1)} by one with global "
            f"average pooling, against {_pct(accuracy['mlp'], 1)} for an MLP of about the same size. The classifier's "
            f"features change by {changes['cnn_gap']:.2f} (relative) with global average pooling, {changes['cnn']:.2f} "
            f"with max pooling, {changes['mlp']:.2f} in the MLP. "
            + invariance_verdict(changes, {"cnn_gap": "model with global average pooling", "cnn": "CNN",
                                           "mlp": "MLP"}))


def saliency_summary(source, class_name, probability) -> str:
    """Step 6, what: the four saliency maps of one image and class."""
    return (f"For {source} and the class {class_name} (p = {probability:.2f}): which pixels a tiny change would move the "
            "score most (gradient; speckled, because that slope jumps from pixel to pixel), the same averaged over "
            "noisy copies (SmoothGrad), which regions hurt the prediction most when hidden (occlusion), and which "
            "regions of the last convolution's coarser maps carry the evidence (Grad-CAM).")


# ---------------------------------------------------------------------------
# The invariance experiment (explain invariance)
# ---------------------------------------------------------------------------
def shift_accuracy(shift, cnn, mlp) -> str:
    """Accuracy of the CNN and the MLP from no shift to ``shift`` px: ``cnn``, ``mlp`` = (unshifted, shifted)."""
    return (f"At {shift} px the CNN keeps {_pct(cnn[1], 1)} (from {_pct(cnn[0], 1)}), the MLP {_pct(mlp[1], 1)} "
            f"(from {_pct(mlp[0], 1)}).")


def canvas_result(noun, size, offset, gap, mlp, chance) -> str:
    """Trained in one corner of a ``size`` canvas, tested in the opposite one: the GAP CNN against the MLP.

    The MLP is said to have failed for its untrained weights only when it scores at least
    :data:`FAR_BETTER` below the CNN; otherwise the sentence says that the two did alike.
    """
    text = (f"Every training {noun} sits in the top-left corner of a {size}\u00d7{size} canvas. Tested in the "
            f"bottom-right corner (offset {offset} px), the CNN with global average pooling scores {_pct(gap, 1)}, the "
            f"MLP {_pct(mlp, 1)} (chance {_pct(chance, 1)})")
    if mlp < gap - FAR_BETTER:
        return text + ": the MLP's weights for pixels it never saw lit were never trained."
    return text + ": here the MLP did not fall behind the CNN, so this data does not show the difference."


# ---------------------------------------------------------------------------
# The lesson: oriented filters, random filters, sub-sampling, invariance
# ---------------------------------------------------------------------------
MOST = 0.75             # "most filters are oriented" from this fraction up (6 of 8)
ABSORBS = 0.5           # a pooled map "absorbs" a shift when it changes by less than this fraction of the unpooled change
KEEPS_PREDICTION = 0.9  # a model "keeps its prediction" at a shift when at least this fraction of predictions stay
STILL = 0.1             # features "nearly unchanged" below this relative change
NOTHING = 0.005         # learned filters "add nothing measurable" below this accuracy gain
LITTLE = 0.05           # ... "add little" below this one


def filters_sentence(count, filters, trained=True, threshold=None, initial_known=True) -> str:
    """How many first-layer filters are oriented (:func:`cnnlab.analysis.filters.oriented`), said truthfully.

    An untrained model is never called an edge detector, whatever its count (about 5% of random filters pass).
    ``initial_known=False``: the filters' values at initialisation are not known, so the test leaves out
    the comparison with them, and so does the sentence.
    """
    test = "more orientation-selective than 95% of random filters of the same size"
    if threshold is not None:
        test += f" ({threshold:.2f})"
    start = ", and than itself at the start" if initial_known else ""
    if not trained:
        return (f"These {filters} filters are untrained: {count} of them pass the test ({test}) by chance alone, as "
                f"about 1 in 20 random filters does. An untrained model is not an edge detector; train it and look again.")
    if count == 0:
        return (f"None of the {filters} filters is oriented ({test}{start}): this "
                f"model's first layer has not become an edge or bar detector.")
    verb = "is" if count == 1 else "are"
    if count >= MOST * filters:
        return (f"{count} of the {filters} filters {verb} oriented: each answers an edge or bar at one angle far "
                f"more than at others ({test}{start}). Training made them edge and "
                f"bar detectors.")
    return (f"Only {count} of the {filters} filters {verb} oriented ({test}{start}); "
            f"the others have no clear preferred angle.")


def random_filters_sentence(trained_accuracy, frozen_accuracy, chance) -> str:
    """How well the same model does with its first layer frozen at random initialisation, against trained."""
    gap = trained_accuracy - frozen_accuracy
    head = (f"With the first layer frozen at its random start: {_pct(frozen_accuracy, 1)} test accuracy; "
            f"trained: {_pct(trained_accuracy, 1)} (chance {_pct(chance)}).")
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
    worst, lowest = min(moved, key=lambda t: (t[1], -t[0]))          # the fewest predictions kept, and where
    text = (f"{name} is not shift-invariant: shifted by {largest} pixels, its features change by {_pct(change)}, "
            + (f"and it keeps only {_pct(last)} of its predictions" if worst == largest else
               f"and at {worst} pixels it keeps only {_pct(lowest)} of its predictions ({_pct(last)} at {largest})"))
    return text + (f" (at least {_pct(KEEPS_PREDICTION)} up to {reach} pixels)." if reach else ".")


# --- The lesson, steps 1-7
EXACT = 1e-5            # a relative difference below this is round-off: the maps moved "exactly"
CONTRAST_MARGIN = 0.1   # one rank correlation this far above the other: the ranking is "mostly" that factor
ONE_POINT = 0.01        # accuracies closer than this are "about the same"


def _times(h, w, c=1) -> str:
    return f"{h}\u00d7{w}" + (f"\u00d7{c}" if c > 1 else "")


def lesson_no_images(shape) -> str:
    return f"This model reads inputs of shape {shape}, not images, so this step does not apply."


def lesson_no_convolution(name=None) -> str:
    if name:
        return f"The model's first convolution, {name}, reads several layers at once, so this step does not apply."
    return "This model has no convolution layer, so this step does not apply; the steps about dense layers do."


def lesson_no_data(why) -> str:
    return f"Without the model's own images this part is left out: {why}" if why else \
        "Without the model's own images this part is left out."


def lesson_companion_missing(name) -> str:
    what = {"mlp": "an MLP trained on this model's data", "sharing": "the weight-sharing experiment",
            "gap": "a CNN with global average pooling", "untrained": "the untrained copy"}.get(name, name)
    return f"The comparison with {what} is not available for this model."


def lesson_vector(h, w, c, units, from_model, conv_params=None) -> str:
    """Step 1: the input as numbers and one dense layer's weights on it."""
    n = h * w * c
    width = "as wide as this model's first dense layer" if from_model else "a usual width"
    text = (f"To a multilayer perceptron this {_times(h, w, c)} image is a list of {n:,} numbers, one per pixel"
            f"{' and channel' if c > 1 else ''}. One dense layer of {units} units ({width}) needs {n:,} \u00d7 {units}"
            f" = {n * units:,} weights: every unit has its own weight for every pixel.")
    if conv_params is not None:
        text += f" This model's first convolution has {conv_params:,} weights and biases in all."
    return text


def lesson_mlp_templates(units, shift, change) -> str:
    """Step 1: the trained MLP's first-layer weights are templates tied to positions (``change``: relative)."""
    moved = (f"barely change ({_pct(change, 1)})" if change < SMALL_CHANGE else f"change by {_pct(change)}")
    return (f"Below, the weights of an MLP trained on the same data, each unit's drawn as a picture: a template of "
            f"the whole image, tied to positions. Move the input {shift} pixels right and down and the responses of "
            f"its {units} first-layer units {moved}.")


def lesson_neuron(layer, f, y, x, kernel_hw, channels, total, bias, value, model_value, has_bias, after) -> list:
    """Step 2: one unit of the first convolution, term by term, then what follows it."""
    n = kernel_hw[0] * kernel_hw[1] * channels
    b = f"plus the bias {bias:+.3f}" if has_bias else "with no bias (this layer has none)"
    text = (f"Filter {f} of {layer} answers this input most at row {y}, column {x}. It is one neuron with "
            f"{n} inputs: its {_times(*kernel_hw, channels)} kernel multiplies the {n} pixels under it one by one "
            f"(the products) and adds them up: {total:.3f}, {b}, gives {value:.3f}. The layer itself computed "
            f"{model_value:.3f} there.")
    if after == "ReLU":
        act = (f"The ReLU keeps it: max(0, {value:.3f}) = {max(0.0, value):.3f}." if value > 0 else
               f"The ReLU sets it to 0: max(0, {value:.3f}) = 0.")
    elif after == "BatchNorm":
        act = "A BatchNorm rescales it before the ReLU."
    elif after:
        act = f"The next layer is a {after}."
    else:
        act = "Several layers read it next."
    return [text, act + " An ordinary neuron, but it sees only a small patch."]


def lesson_convolution(layer, kernel_hw, channels, filters, strides, pads, dilation, input_hw, output_hw,
                       conv_params, dense_weights, window_weights) -> list:
    """Step 3: the formula with this layer's numbers, the output size, shared against dense weights."""
    (kh, kw), (sh, sw), (dh, dw), (h, w), (ho, wo) = kernel_hw, strides, dilation, input_hw, output_hw
    s = f"{sh}" if sh == sw else f"({sh}, {sw})"
    d = f"{dh}" if dh == dw else f"({dh}, {dw})"
    formula = (f"out[y, x, f] = b_f + \u03a3_c<{channels} \u03a3_i<{kh} \u03a3_j<{kw} k[i, j, c, f] \u00b7 "
               f"in_padded[y\u00b7{sh} + i\u00b7{dh}, x\u00b7{sw} + j\u00b7{dw}, c]")
    size = (f"With stride {s}, dilation {d} and padding {pads[0]}+{pads[1]} rows, {pads[2]}+{pads[3]} columns, a "
            f"{h}\u00d7{w} input gives a {ho}\u00d7{wo} map: ({h} + {pads[0] + pads[1]} \u2212 {dh * (kh - 1)} "
            f"\u2212 1) // {sh} + 1 = {ho}.")
    shared = (f"Its {filters} filters hold {conv_params:,} numbers. A dense layer computing the same {filters} maps "
              f"needs {dense_weights:,} weights; keeping only each window's connections, {window_weights:,}: "
              f"{window_weights / conv_params:,.0f} times as many. Sharing one kernel over all positions makes "
              "the layer small.")
    return [f"Slide the same neuron over every position and write each result into a map: that is a convolution, "
            f"and {layer} computes exactly this:",
            formula, size, shared]


def _agree(difference) -> str:
    return "exactly" if difference == 0 else f"to {difference:.0e}"


def lesson_map_size(layer, input_hw, output_hw) -> str:
    return (f"{_times(*output_hw)}: {layer} computed it from the {_times(*input_hw)} input with its own kernel size, "
            "stride, padding and dilation, as the formula says.")


def lesson_dice(peak_sum, peak_probability) -> str:
    """Step 4: the density of a sum of two dice, computed as a slide."""
    return ("Two dice: the chance that they sum to z is p_{X+Y}(z) = \u03a3_x p_X(x) p_Y(z \u2212 x): flip one "
            "distribution, slide it along the other, add the products at each shift. A triangle results, "
            f"highest at {peak_sum} ({peak_probability:.3f}); cnnlab's Conv2D computed it, given one die flipped, "
            "since a CNN slides its kernel unflipped (cross-correlation): as kernels are learned, it simply learns the "
            "flipped one.")


def lesson_jitter_and_stacking(jitter_difference, name, kernel_hw, composed_hw, stacked_difference, fields) -> list:
    """Step 4: blur = the input under random jitter; two linear convolutions = one; the model's receptive fields."""
    jitter = ("A non-negative kernel summing to 1 is the distribution of a random shift: blurring with it is the "
              f"input averaged over random jitter (they agree {_agree(jitter_difference)}).")
    first = name or "a 3\u00d73 blur"
    stack = (f"Two stacked linear convolutions are one, with their kernels convolved: "
             f"{first} then a 3\u00d73 blur is one {_times(*composed_hw)} kernel (they agree "
             f"{_agree(stacked_difference)}).")
    if fields:
        stack += (" So receptive fields grow: " + ", ".join(f"{n} sees {_times(h, w)}" for n, h, w in fields[:1])
                  + "".join(f", {n} {_times(h, w)}" for n, h, w in fields[1:]) + ".")
    return [jitter, stack]


def lesson_maps(layer, filters, map_hw, input_hw, strongest, strongest_max, active_fraction) -> list:
    """Step 5: every filter of the first layer gives one map."""
    same = "as large as the input" if tuple(map_hw) == tuple(input_hw) else f"from a {_times(*input_hw)} input"
    return [f"{layer} has {filters} filters, each slid over the whole input: {filters} feature maps of "
            f"{_times(*map_hw)} ({same}), one per filter, each large where its filter's pattern occurs. Filter "
            f"{strongest} answers most here ({strongest_max:.2f}); {_pct(active_fraction)} of all the outputs are "
            f"positive. The next layer reads the {filters} maps together, as {filters} channels."]


def lesson_equivariance(shift, map_shift, max_abs, relative, border) -> str:
    """Step 6: the maps move with the input (by ``map_shift`` = (rows, columns) of the map); ``relative`` below
    :data:`EXACT` is round-off."""
    my, mx = map_shift
    moved = (f"{shift} pixels" if my == mx == shift else
             f"{my} row{'s' if my != 1 else ''} and {mx} column{'s' if mx != 1 else ''} of the map")
    edge = f" ({border} pixels from the border left out, where the padding reaches)" if border else ""
    if relative < EXACT:
        return (f"Move the input {shift} pixels right and down and every map moves {moved} with it, unchanged: the "
                f"map of the moved input and the moved map agree {_agree(max_abs)}{edge}. The "
                "same kernel at every position cannot tell where a pattern is: the convolution is equivariant.")
    return (f"Move the input {shift} pixels right and down: the map of the moved input and the moved map differ by "
            f"up to {_pct(relative, 1)} of the map's largest value{edge}, so in this model the first maps do not "
            "simply move with the input.")


def lesson_equivariance_reveal(max_abs, relative) -> str:
    if relative < EXACT:
        return f"It moves with the drawing, unchanged: the two maps agree {_agree(max_abs)}."
    return f"Here it also changes: the difference reaches {_pct(relative, 1)} of the map's largest value."


def lesson_sharing_result(n_train, params, accuracy) -> str:
    """Step 6: the weight-sharing experiment (``params``, ``accuracy`` by ``conv``, ``local``, ``dense``)."""
    text = (f"Trained on only {n_train:,} images: the convolution ({params['conv']:,} parameters) reaches "
            f"{_pct(accuracy['conv'], 1)}, a locally connected layer (the same windows, untied, "
            f"{params['local']:,}) {_pct(accuracy['local'], 1)}, a dense network ({params['dense']:,}) "
            f"{_pct(accuracy['dense'], 1)}.")
    others = max(accuracy["local"], accuracy["dense"])
    if accuracy["conv"] >= others + ONE_POINT:
        return text + " Sharing wins: the same few weights learn from every position at once."
    if accuracy["conv"] > others - ONE_POINT:
        return text + " Here sharing gives about the same accuracy, with far fewer parameters."
    return text + " Here sharing did not win on accuracy; it still needs far fewer parameters."


def lesson_matched(f, response, kernel_norm, patch_norm, cosine, bias) -> str:
    """Step 7: response = |k| |p| cos on the input's best patch."""
    return ("A kernel's response to a patch is their dot product: |kernel| \u00d7 |patch| \u00d7 cos(angle) "
            f"(Cauchy\u2013Schwarz). Filter {f} on this input's best patch: {kernel_norm:.2f} \u00d7 "
            f"{patch_norm:.2f} \u00d7 {cosine:.2f} = {response:.3f}, then the bias ({bias:+.3f}). Among patches of "
            "equal contrast the response is largest where the patch looks like the kernel (cos = 1).")


def lesson_contrast_or_shape(f, images, source, rho_norm, rho_cosine, rho_norm_all, rho_cosine_all, top_cosine,
                             random_cosine, random_std) -> list:
    """Step 7: how much of the ranking by response is contrast (``|p|``) and how much shape (cosine), as rank
    correlations over the patches a filter answers; ``top_cosine`` of its top patches against random ones'."""
    text = (f"On {images} {source} images, the patches filter {f} answers rank by response with a rank correlation "
            f"of {rho_norm:.2f} with their contrast |p| and {rho_cosine:.2f} with their shape (cosine); over all "
            f"filters {rho_norm_all:.2f} and {rho_cosine_all:.2f}.")
    if rho_norm >= rho_cosine + CONTRAST_MARGIN:
        text += " So the ranking is mostly contrast: a strongly inked patch wins even when it only roughly matches."
    elif rho_cosine >= rho_norm + CONTRAST_MARGIN:
        text += " So the ranking is mostly shape, though the very top also needs contrast."
    else:
        text += " Contrast and shape count about equally."
    return [text, f"Its top patches by response have mean cosine {top_cosine:.2f}; all random patches "
                  f"{random_cosine:+.2f} \u00b1 {random_std:.2f}."]


def lesson_which_filter(f, peak, y, x) -> str:
    return f"Filter {f} answers most: {peak:.3f} at row {y}, column {x}."
# ---------------------------------------------------------------------------
# --- The lesson, steps 8-14
# ---------------------------------------------------------------------------
SAME_AS_LAYER = 1e-4     # the patch sum and the layer's gradient "agree" below this relative difference
PCA_ORIENTED = 0.5      # "most of the data's leading components are oriented" from this fraction up


def lesson_no_conv(what) -> str:
    """A model without a convolution, for a step that needs one (``what``: what the step would show)."""
    return f"This model has no convolution, so there are no {what} here: it reads the image as one vector, as an MLP does."


def lesson_gradient_identity(positions, difference) -> str:
    """The kernel's gradient as a sum of the input's patches, checked on this input (relative difference to the layer's)."""
    agree = (f"agreeing with the layer's own to {difference:.0e}" if difference < SAME_AS_LAYER
             else f"{_pct(difference, 2)} off the layer's own")
    return (f"Why edges? A kernel's gradient is a sum of input patches, each weighted by the error there "
            f"({positions} positions, {agree}): every training step adds data patches to the kernel.")


def lesson_components(count, shown, kh, kw) -> str:
    """How many of the data's leading ``kh x kw`` patch components are oriented (by the filters' own test)."""
    if count >= PCA_ORIENTED * shown:
        return (f"And the data's {kh}x{kw} patches vary most along edges: {count} of their {shown} leading "
                f"principal components (shown) are oriented.")
    return (f"Only {count} of the {shown} leading principal components of the data's {kh}x{kw} patches (shown) pass "
            f"the same test: the data's variance alone does not explain the filters.")


def lesson_random_filters(n_train, learned, random, chance) -> str:
    """The weight-sharing companion's conv model with learned against frozen random filters
    (:func:`random_filters_sentence`), introduced as the small model it is."""
    return f"Random filters? A one-convolution CNN on {n_train:,} of these images. " + \
        random_filters_sentence(learned, random, chance)


def lesson_no_second_conv(convs) -> str:
    """A model with fewer than two convolutions, for step 10."""
    if convs == 0:
        return lesson_no_conv("layers of parts")
    return ("This model has one convolution only, so no layer combines its features into larger parts; "
            "its dense layers read the maps directly.")


def lesson_parts(layer, channel, maps, kh, kw, field, first_kernel, honest, angles) -> str:
    """A second-layer unit: it sums over every first-layer map; "corners, line ends and crossings" only when
    ``honest`` (its two largest inputs are oriented filters at least 45 degrees apart, ``angles``)."""
    text = (f"Unit {channel} of {layer} adds up a {kh}x{kw} window of all {maps} first-layer maps "
            f"({kh * kw * maps} weights), so it sees {field[0]}x{field[1]} input pixels where a first-layer "
            f"filter saw {first_kernel[0]}x{first_kernel[1]}. ")
    if honest:
        return text + (f"Its two largest inputs are edges at {angles[0]:.0f}\u00b0 and {angles[1]:.0f}\u00b0: where "
                       f"they meet are corners, line ends and crossings, parts made of parts.")
    return text + ("It answers combinations of the first layer's features (combinations of edges where those are "
                   "oriented): parts made of parts. Its top patches show which.")


def lesson_subsampling(pool, map_hw, pooled_hw, area, own=True) -> str:
    """Sub-sampling by ``pool x pool`` windows: the map's size before and after; ``own``: whether the model
    has such a pooling layer (else the three are shown on its first map as what they would do)."""
    head = "" if own else f"This model has no pooling window of its own; here is what {pool}x{pool} sub-sampling does to its first map. "
    return head + (f"Each {pool}x{pool} window of the {map_hw[0]}x{map_hw[1]} map becomes one number, so the map becomes "
            f"{pooled_hw[0]}x{pooled_hw[1]}, {area} times fewer values. Keeping one pixel drops the rest; the "
            f"average keeps their mean; the maximum keeps the strongest answer wherever in the window it was.")


def lesson_head(first_type, first_kind, features, dense, from_maps) -> str:
    """The classifier's stages: how the maps become a vector, and the dense layers after it."""
    if not from_maps:
        start = f"The model reads the input as a vector of {features:,} numbers"
    elif first_type == "GlobalAvgPool2D":
        start = f"The last maps are averaged over all positions into {features:,} numbers, one per map"
    else:
        start = f"The last maps are flattened into one vector of {features:,} numbers"
    layers = f"{dense} dense layer{'s' if dense != 1 else ''}" if dense else "no dense layer"
    return (f"{start}; {layers} then compute{'s' if dense == 1 else ''} one score per class, the logits z: each is a weighted sum of "
            f"every number before it plus a bias.")


def lesson_softmax_head(name, probability, logit) -> str:
    """A softmax head's answer for this input."""
    return (f"Softmax turns the logits into probabilities, p_k = exp(z_k) / \u03a3_j exp(z_j): largest for "
            f"{name} (z = {logit:.2f}, p = {_pct(probability, 1)}).")


def lesson_svm_head(name, margin) -> str:
    """A multiclass SVM head's answer: the largest score wins, and the margin over the next."""
    return (f"This model has a multiclass SVM head: trained with the hinge loss, its scores are not probabilities; "
            f"the largest wins: {name}, {margin:.2f} above the next (training asks for a margin of 1).")


def lesson_kept_on_input() -> str:
    """Step 12 without test images: the agreement is the current input's alone (0 or 1 at each shift)."""
    return "Without the model's test images at hand, \u201ckeeps its predictions\u201d is measured on this one input."


SIMILAR_MAPS = 0.5      # a rank correlation above this with the randomised model's map: the map fails the sanity check
DIFFERENT_MAPS = 0.2    # below this: it passes


def lesson_saliency(name, cam) -> str:
    """What the maps are: the gradient of the class score with respect to each pixel, and Grad-CAM."""
    text = (f"Which pixels move the score of {name}? Gradient saliency is |dS/dx| at each pixel")
    if cam:
        text += ("; Grad-CAM weights the last convolution's maps by their average gradient and keeps the positive "
                 "part: where evidence for the class lies")
    return text + "."


def lesson_sanity_check(rho, same) -> str:
    """The sanity check (Adebayo et al. 2018): rank correlation between the trained and randomised models' maps."""
    if same:
        return ("This model is itself untrained (its weights are its random start), so its maps cannot show anything "
                "learned: train it and compare.")
    worst = max(rho, key=rho.get)
    shown = ", ".join(f"{'Grad-CAM' if k == 'grad_cam' else 'saliency'} {v:.2f}" for k, v in rho.items())
    head = f"Sanity check: the same maps with random weights correlate with these by rank as {shown}. "
    if rho[worst] > SIMILAR_MAPS:
        return head + (f"The {'Grad-CAM' if worst == 'grad_cam' else 'saliency'} map hardly depends on what was "
                       "learned: it shows the input's edges more than the model's reasons.")
    if rho[worst] < DIFFERENT_MAPS:
        return head + "Randomising the weights changes the maps: they show what this model learned, not just the input."
    return head + "The maps depend on the learned weights only in part: read them with care."


def lesson_try(input_hw, kernel_hw, output_hw) -> str:
    """Step 14's invitation, with the default's sizes."""
    return (f"Change the kernel, its size, the stride, the padding, the dilation and the pooling, and watch the "
            f"output on your own drawing. Here a {kernel_hw[0]}x{kernel_hw[1]} kernel on the "
            f"{input_hw[0]}x{input_hw[1]} input gives {output_hw[0]}x{output_hw[1]}: along each axis, "
            f"\u230a(H + padding \u2212 d(k \u2212 1) \u2212 1) / s\u230b + 1. Every number is computed by the "
            f"model's own layers on the server.")
