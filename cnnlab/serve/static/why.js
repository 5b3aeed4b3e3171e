// Why it works: matched filters (top-activating patches), weight sharing, shifting the input, saliency and Grad-CAM.
import {getJSON, postImage, unpack} from "./api.js";
import {el, fmt, mapCanvas, overlayCanvas, probBars} from "./draw.js";
import {state, withRun, currentBlob, actions} from "./state.js";

const box = () => document.getElementById("why");
let shown = -1, filtersFor = null;

export function initWhy() {
  box().replaceChildren(
    el("section", {id: "why-filters"}, el("h2", {}, "Each first-layer filter and what it responds to"),
      el("p", {class: "note"}, "A convolution is template matching: the output is largest where the input patch looks like the kernel. Beside each filter, the patches of test images that activate it most, with their cosine similarity to the kernel (random patches for comparison)."),
      el("div", {id: "why-filters-body"}, "…")),
    el("section", {}, el("h2", {}, "Weight sharing: one neuron at every position"),
      el("p", {class: "note"}, "A feature map is one small neuron — the same kernel and bias — applied at every position of the input. Play it across the image: the numbers change, the weights never do."),
      el("button", {id: "why-share", onclick: () => shareDemo()}, "play the first filter across the image")),
    el("section", {id: "why-shift"}, el("h2", {}, "Shift the input"),
      el("p", {class: "note"}, "Feature maps move with the input (equivariance). How much the features before the classifier and the prediction change (invariance) is measured on this model below."),
      el("label", {}, "dx ", el("input", {type: "range", id: "shift-dx", min: -6, max: 6, value: 0, step: 1})),
      el("label", {}, " dy ", el("input", {type: "range", id: "shift-dy", min: -6, max: 6, value: 0, step: 1})),
      el("div", {id: "why-shift-body"})),
    el("section", {id: "why-saliency"}, el("h2", {}, "Which pixels matter: saliency and Grad-CAM"),
      el("p", {class: "note"}, "Gradient saliency: how strongly each pixel moves the class score. Grad-CAM: the last convolution's maps weighted by the score's gradient, placed over the image."),
      el("div", {id: "why-saliency-body"})));
  for (const id of ["shift-dx", "shift-dy"]) document.getElementById(id).addEventListener("input", () => shift());
  document.addEventListener("prediction", () => { if (document.getElementById("view-why").classList.contains("active")) refreshWhy(); });
}

export async function refreshWhy() {
  if (shown === state.version) return;
  shown = state.version;
  if (filtersFor !== state.run) { filtersFor = state.run; filters(); }
  shift();
  saliency();
}

async function filters() {
  const body = document.getElementById("why-filters-body");
  body.textContent = "finding the most activating patches…";
  try {
    const d = await getJSON("/api/why/filters" + withRun({k: 5}));
    const list = el("div", {class: "filters"});
    for (const f of d.filters) {
      const k = unpack(f.kernel);
      const lim = Math.max(Math.abs(k.min), Math.abs(k.max));
      const patches = el("div", {class: "patches"});
      for (const t of f.top) {
        const p = unpack(t.patch);
        patches.append(el("figure", {}, mapCanvas(p, 0, p.min, p.max, 8), el("figcaption", {}, `cos ${fmt(t.cosine)}`)));
      }
      list.append(el("div", {class: "filter"}, el("div", {}, `filter ${f.index}`), mapCanvas(k, 0, -lim, lim, 10), patches,
        el("div", {}, `mean cosine ${fmt(f.mean_top_cosine)} (random patches ${fmt(f.random_cosine_mean)})`)));
    }
    body.replaceChildren(el("p", {class: "note"}, `layer ${d.layer}, over ${d.examples} test images; channel 0 of each patch and kernel drawn`), list);
  } catch (err) { body.textContent = err.message; }
}

async function shareDemo() {
  const conv = state.model.layers.find(l => l.kind === "conv");
  if (!conv) return;
  await actions.openUnit(conv.name, 0, 0, 0);
  document.getElementById("unit-play")?.click();
}

async function shift() {
  const body = document.getElementById("why-shift-body");
  const dx = document.getElementById("shift-dx").value, dy = document.getElementById("shift-dy").value;
  try {
    const d = await postImage("/api/why/shift" + withRun({dx, dy}), await currentBlob());
    const img = unpack(d.image);
    const a = unpack(d.shifted.conv), b = unpack(d.original.conv);
    const lo = Math.min(a.min, b.min), hi = Math.max(a.max, b.max);
    const maps = (x) => el("div", {class: "kernels"}, ...[0, 1, 2, 3].filter(c => c < x.shape[2]).map(c => mapCanvas(x, c, lo, hi, 3)));
    body.replaceChildren(el("div", {class: "pair"},
      el("div", {}, el("div", {class: "note"}, `shifted input (dy ${dy}, dx ${dx})`), mapCanvas(img, 0, 0, 1, 4)),
      el("div", {}, el("div", {class: "note"}, `${d.conv_layer}, original input`), maps(b), el("div", {class: "note"}, "shifted input"), maps(a)),
      el("div", {}, el("div", {class: "note"}, "prediction, shifted"), probBars(d.shifted.probabilities, state.model.class_names))),
      el("p", {id: "shift-change"}, `the features of ${d.features_layer} changed by ${(100 * d.features_change).toFixed(1)}% (relative L2 distance)`),
      el("p", {id: "shift-sentence"}, d.sentence));
  } catch (err) { body.textContent = err.message; }
}

async function saliency() {
  const body = document.getElementById("why-saliency-body");
  try {
    const d = await postImage("/api/why/saliency" + withRun(), await currentBlob());
    const img = state.activations.__input_array__;
    const parts = [el("div", {}, el("div", {class: "note"}, `gradient saliency, class ${state.model.class_names[d.class_index]}`), overlayCanvas(img, unpack(d.saliency), 5))];
    if (d.grad_cam) parts.push(el("div", {}, el("div", {class: "note"}, `Grad-CAM at ${d.grad_cam_layer}`), overlayCanvas(img, unpack(d.grad_cam), 5)));
    else parts.push(el("p", {class: "note"}, d.grad_cam_error));
    body.replaceChildren(el("div", {class: "pair"}, ...parts));
  } catch (err) { body.textContent = err.message; }
}
