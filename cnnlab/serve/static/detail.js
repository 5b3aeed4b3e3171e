// Unit details: the numbers behind one output of a layer (conv, pooling, activation, BatchNorm, dense, softmax).
// Spatial units step with the stepping window (stepper.js); every number is the server's (/api/unit).
import {postImage, unpack} from "./api.js";
import {el, fmt, numberGrid, colour, paintCanvas, mapCanvas, rgbCanvas, legend} from "./draw.js";
import {state, withRun, currentBlob, layerInfo} from "./state.js";
import {createStepper} from "./stepper.js";

const box = () => document.getElementById("details");
let stepper = null, stepperKey = null;

export async function fetchUnit(layer, channel, y, x) {
  return postImage("/api/unit" + withRun({layer, channel, y, x}), await currentBlob());
}

// Tell the page (deep links) which unit is shown.
function moved(layer, channel, y, x, byPlay = false) {
  document.dispatchEvent(new CustomEvent("unit", {detail: {layer, channel, y, x, byPlay}}));
}

// A new input while a unit is shown: the same unit, recomputed on it.
document.addEventListener("prediction", () => {
  const d = stepper?.detail();
  if (d && document.getElementById("view-details").classList.contains("active")) showUnit(d.layer, d.channel, d.y, d.x);
});

export async function showUnit(layer, channel, y, x) {
  const info = layerInfo(layer);
  if (!info) { box().replaceChildren(el("p", {class: "error"}, `the model has no layer ${layer}`)); return; }
  if (info.output_shape.length === 3) return spatialUnit(info, channel, y, x);
  let d;
  try { d = await fetchUnit(layer, channel, 0, 0); } catch (err) { box().replaceChildren(el("p", {class: "error"}, err.message)); return; }
  if (stepper) { stepper.stop(); stepper = null; stepperKey = null; }
  const n = info.output_shape[0];
  const nav = el("div", {class: "controls"},
    el("button", {id: "unit-prev", "aria-label": "previous unit", onclick: () => showUnit(layer, Math.max(0, channel - 1), 0, 0)}, "◀"),
    el("button", {id: "unit-next", "aria-label": "next unit", onclick: () => showUnit(layer, Math.min(n - 1, channel + 1), 0, 0)}, "▶"),
    ` unit ${channel} of ${n}`);
  box().replaceChildren(heading(info, d), nav, ...terms(d), lookFor(layer, () => ({channel: d.channel})));
  moved(layer, d.channel, 0, 0);
}

function heading(info, d) {
  return el("h2", {id: "unit-heading", tabindex: -1}, `${info.name} (${info.class}) · ${info.output_shape.length === 3 ? `channel ${d.channel}` : `unit ${d.channel}`}`);
}

// A spatial unit: the receptive field on the model's input, and the stepper over the layer's maps.
async function spatialUnit(info, channel, y, x) {
  const key = `${info.name}|${channel}|${state.version}|${state.run}`;
  if (stepper && stepperKey === key) { await stepper.go(channel, y, x); return; }
  if (stepper) stepper.stop();
  const src = info.inputs.length === 1 ? info.inputs[0] : null;
  const input = src === null ? null : src === "input" ? state.activations.__input_array__ : state.activations[src];
  const field = el("div", {class: "field"});
  const head = el("div");
  stepper = createStepper({
    fetchUnit: (c, yy, xx) => fetchUnit(info.name, c, yy, xx),
    output: state.activations[info.name], input,
    inputName: src === "input" ? "input image" : `layer's input (the output of ${src})`,
    terms: d => { head.replaceChildren(heading(info, d)); field.replaceChildren(...receptiveField(d)); return terms(d); },
    onMove: (c, yy, xx, byPlay) => moved(info.name, c, yy, xx, byPlay), aside: field,
  });
  stepperKey = key;
  const chan = el("input", {type: "number", min: 0, max: info.output_shape[2] - 1, value: channel, id: "unit-channel", "aria-label": "output channel"});
  chan.addEventListener("change", () => showUnit(info.name, parseInt(chan.value, 10) || 0, stepper.detail()?.y ?? 0, stepper.detail()?.x ?? 0));
  const current = stepper;
  box().replaceChildren(head, el("label", {class: "controls"}, "output channel ", chan), stepper.element,
    lookFor(info.name, () => { const u = current.detail(); return {channel: u.channel, y: u.y, x: u.x}; }));
  await stepper.go(channel, y, x);
  window.explorer.stepper = stepper;
}

// What does this unit look for: on request (it takes the server about a second), an input of the current input's
// size (L2 norm) optimised to excite the unit shown (/api/unit/optimum), the unit's value on it, on the current
// input and on random inputs of that size, and the server's sentence about those numbers.
function lookFor(layer, unitNow) {
  const out = el("div", {class: "optimum-result", "aria-live": "polite"});
  const button = el("button", {id: "unit-optimum-button", onclick: async () => {
    const u = unitNow();
    button.disabled = true;
    out.replaceChildren(el("p", {class: "note"}, "optimising an input for this unit …"));
    try { out.replaceChildren(...optimum(await postImage("/api/unit/optimum" + withRun({layer, ...u}), await currentBlob()))); }
    catch (err) { out.replaceChildren(el("p", {class: "error"}, err.message)); }
    finally { button.disabled = false; }
  }}, "What does this unit look for?");
  return el("section", {id: "unit-optimum"}, el("h3", {}, "What does this unit look for?"), button, out);
}

function optimum(d) {
  const a = unpack(d.image);
  const [h, w, c] = a.shape;
  const cell = Math.max(2, Math.floor(140 / Math.max(h, w)));
  const m = Math.max(Math.abs(a.min), Math.abs(a.max), 1e-12);
  const cv = c === 3 ? rgbCanvas(a, cell) : mapCanvas(a, 0, -m, m, cell);
  const unitName = d.position ? `channel ${d.channel} at (${d.position.join(", ")})` : `unit ${d.channel}`;
  cv.id = "unit-optimum-image";
  cv.setAttribute("role", "img");
  cv.setAttribute("aria-label", `the input optimised for ${d.layer} ${unitName}: ${h}×${w}, L2 norm ${fmt(d.radius)}; the unit gives ${fmt(d.value)} on it`);
  const noise = d.random_values, mean = noise.reduce((s, v) => s + v, 0) / noise.length;
  const t = el("table", {class: "grid", id: "unit-optimum-table", "data-value": d.value, "data-input-value": d.input_value,
                         "data-random-max": Math.max(...noise), "data-radius": d.radius},
    ...[["the optimised input", d.value], ["your input", d.input_value], [`${noise.length} random inputs: mean`, mean],
        [`${noise.length} random inputs: largest`, Math.max(...noise)]]
      .map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, fmt(v)))));
  return [el("div", {class: "pair"}, el("figure", {}, cv, c === 3 ? "" : legend(-m, m),
            el("figcaption", {}, `${d.layer} ${unitName}: ${d.trace.length} steps of gradient ascent from the best random input`)),
          el("div", {}, el("p", {class: "note"}, `the unit's value on inputs of L2 norm ${fmt(d.radius)}:`), t)),
          el("p", {id: "unit-optimum-sentence"}, d.sentence)];
}

// The receptive field on the input the model received (after centring, inversion, resizing), and the
// picture before that preparation when the server says it changed it.
function receptiveField(d) {
  const r = d.receptive_field;
  if (!r) return [];
  const a = state.activations.__input_array__;
  const [h, w] = a.shape;
  const cell = Math.max(2, Math.floor(168 / Math.max(h, w)));
  const base = a.shape[2] === 3 ? rgbCanvas(a, 1) : paintCanvas(h, w, 1, (i, j) => colour(a.values[i * w + j], 0, 1));
  const cv = document.createElement("canvas");
  cv.width = w * cell; cv.height = h * cell;
  const ctx = cv.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(base, 0, 0, cv.width, cv.height);
  const top = Math.max(0, r.top), bottom = Math.min(h - 1, r.bottom), left = Math.max(0, r.left), right = Math.min(w - 1, r.right);
  ctx.strokeStyle = "#f03"; ctx.lineWidth = 2;
  ctx.strokeRect(left * cell + 1, top * cell + 1, (right - left + 1) * cell - 2, (bottom - top + 1) * cell - 2);
  Object.assign(cv.dataset, {top, bottom, left, right, cell});
  cv.id = "receptive-field";
  cv.setAttribute("role", "img");
  cv.setAttribute("aria-label", `the model's input, ${h}×${w}, with the unit's receptive field: rows ${r.top} to ${r.bottom}, columns ${r.left} to ${r.right}`);
  const out = [el("p", {class: "note field-text"}, `Receptive field: rows ${r.top}…${r.bottom}, columns ${r.left}…${r.right} of the model's input ` +
    `(${r.bottom - r.top + 1}×${r.right - r.left + 1} pixels; negative or beyond the edge is padding).`)];
  const figs = el("div", {class: "pair"}, el("figure", {}, cv, el("figcaption", {}, "what the model received")));
  const notes = state.prediction?.notes || [];
  if ((notes.length || state.input instanceof File) && state.blob) {       // prepared (centred, inverted) or resized
    const raw = document.createElement("canvas");
    raw.width = cv.width; raw.height = cv.height; raw.id = "raw-input";
    createImageBitmap(state.blob).then(bmp => { const c = raw.getContext("2d"); c.imageSmoothingEnabled = false; c.drawImage(bmp, 0, 0, raw.width, raw.height); });
    figs.append(el("figure", {}, raw, el("figcaption", {title: notes.join(" ")}, `${{drawing: "your drawing", upload: "your picture", example: "the example"}[state.source] ?? "the picture"} before it was prepared (how: the note under the prediction)`)));
  }
  out.push(figs);
  return out;
}

// The equation line, with the numbers as data attributes (tests read them).
function equation(d, prefix, ...lines) {
  const diff = Math.abs(d.value - d.model_value);
  const e = el("div", {class: "equation", id: `${prefix}-equation`, "data-value": d.value, "data-model-value": d.model_value,
                       "data-sum": d.sum ?? "", "data-bias": d.bias ?? "", "data-layer": d.layer, "data-channel": d.channel,
                       "data-y": d.y, "data-x": d.x});
  for (const line of lines) e.append(el("div", {}, line));
  e.append(el("div", {class: "note"}, `the model's forward pass gave ${fmt(d.model_value)} at this unit (difference ${diff.toExponential(1)})`));
  return e;
}

// The unit view's tables keep their plain ids; another view's are prefixed.
const tableId = (prefix, name) => (prefix === "unit" ? name : `${prefix}-${name}`);

// The numbers behind unit d; ``prefix`` names the elements' ids (the lesson shows a unit too).
export function terms(d, prefix = "unit") {
  if (d.kind === "conv") return conv(d, prefix);
  if (d.kind === "pool") return pool(d, prefix);
  if (d.kind === "dense") return dense(d, prefix);
  if (d.kind === "norm") return norm(d, prefix);
  if (d.kind === "activation") return [equation(d, prefix, `${d.function}: ${d.formula} at x = ${fmt(d.input)} gives ${fmt(d.value)}`)];
  return [equation(d, prefix, `${d.layer_class} combines or moves values without weights: this unit is ${fmt(d.value)}`)];
}

function conv(d, prefix) {
  const patch = unpack(d.patch), kernel = unpack(d.kernel), prods = unpack(d.products);
  const [kh, kw, cg] = kernel.shape;
  const get = (a, ch) => (i, j) => a.values[(i * kw + j) * cg + ch];
  const klim = Math.max(Math.abs(kernel.min), Math.abs(kernel.max), 1e-12);
  const plim = Math.max(Math.abs(prods.min), Math.abs(prods.max), 1e-12);
  const chans = el("div", {class: "channels", tabindex: 0, "aria-label": `${cg} channels of products`});
  for (let ch = 0; ch < cg; ch++) {
    chans.append(el("div", {class: "channel"}, el("div", {}, `input channel ${d.channels[ch]}`),
      el("div", {class: "triple"},
        el("div", {}, el("div", {class: "note"}, "patch"), numberGrid(kh, kw, get(patch, ch), Math.min(0, patch.min), Math.max(patch.max, 1e-12))),
        "×", el("div", {}, el("div", {class: "note"}, "kernel"), numberGrid(kh, kw, get(kernel, ch), -klim, klim)),
        "=", el("div", {}, el("div", {class: "note"}, "products"), numberGrid(kh, kw, get(prods, ch), -plim, plim))),
      el("div", {}, `sum = ${fmt(d.channel_sums[ch])}`)));
  }
  const [sh, sw] = d.strides, [dh, dw] = d.dilation;
  const general = `out[y, x, f] = b_f + Σ_c Σ_i Σ_j k[i, j, c, f] · in_padded[y·${sh} + i·${dh}, x·${sw} + j·${dw}, c]`;
  const here = `out[${d.y}, ${d.x}, ${d.channel}] = ${fmt(d.bias)} + Σ over ${cg} channel${cg > 1 ? "s" : ""} × ${kh}×${kw} taps, rows ${d.rows[0]}…${d.rows[d.rows.length - 1]}, columns ${d.cols[0]}…${d.cols[d.cols.length - 1]}`;
  let sumLine;
  if (cg === 1) sumLine = `Σ of the ${kh * kw} products = ${fmt(d.sum)};  ${fmt(d.sum)} + bias ${fmt(d.bias)} = ${fmt(d.value)}`;
  else {
    const sums = d.channel_sums.map(fmt);
    const shown = sums.length > 12 ? `${sums.slice(0, 12).join(" + ")} + … (${sums.length} channel sums)` : sums.join(" + ");
    sumLine = `channel sums ${shown} = ${fmt(d.sum)};  ${fmt(d.sum)} + bias ${fmt(d.bias)} = ${fmt(d.value)}`;
  }
  return [el("p", {class: "note"}, `kernel ${kh}×${kw} over ${cg} input channel${cg > 1 ? "s" : ""}` +
    (d.groups > 1 ? ` (channels ${d.channels[0]}…${d.channels[d.channels.length - 1]}: group ${Math.floor(d.channels[0] / cg) + 1} of ${d.groups})` : "") +
    `, stride ${d.strides.join("×")}, dilation ${d.dilation.join("×")}, padding top ${d.pads[0]} bottom ${d.pads[1]} left ${d.pads[2]} right ${d.pads[3]}.`),
    equation(d, prefix, general, here, sumLine), chans];
}

function pool(d, prefix) {
  const win = unpack(d.window);
  const [kh, kw] = win.shape;
  const mark = d.argmax ? (i, j) => i === d.argmax[0] && j === d.argmax[1] : () => false;
  const muted = d.padded ? (i, j) => d.padded[i][j] : () => false;
  const out = [el("p", {}, `window rows ${d.rows[0]}…${d.rows[d.rows.length - 1]}, columns ${d.cols[0]}…${d.cols[d.cols.length - 1]} of input channel ${d.channel}`)];
  if (kh * kw <= 400) out.push(numberGrid(kh, kw, (i, j) => win.values[i * kw + j], Math.min(0, win.min), Math.max(win.max, 1e-12), {mark, muted}));
  const text = d.op === "max" ? `max of the window = ${fmt(d.value)}: the input at window row ${d.argmax[0]}, column ${d.argmax[1]} won (outlined)`
    : d.op === "mean" ? `average of the ${kh * kw} values = ${fmt(d.value)}` : `kept pixel = ${fmt(d.value)}`;
  out.unshift(equation(d, prefix, text));
  return out;
}

function norm(d, prefix) {
  const t = el("table", {class: "grid", id: tableId(prefix, "norm-table")},
    ...[["input x", d.input], ["mean used (running mean)", d.mean], ["variance used (running variance)", d.var], ["ε", d.eps],
        ["x̂ = (x − mean) / √(variance + ε)", d.x_hat], ["scale γ", d.gamma], ["shift β", d.beta], ["output γ·x̂ + β", d.value]]
      .map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, fmt(v)))));
  return [equation(d, prefix, `(${fmt(d.input)} − ${fmt(d.mean)}) / √(${fmt(d.var)} + ${d.eps}) = ${fmt(d.x_hat)};  ${fmt(d.gamma)} × ${fmt(d.x_hat)} + ${fmt(d.beta)} = ${fmt(d.value)}`), t];
}

function dense(d, prefix) {
  const v = unpack(d.inputs), w = unpack(d.weights), p = unpack(d.products);
  const t = el("table", {class: "grid", id: tableId(prefix, "dense-table")});
  t.append(el("tr", {}, el("th", {}, "input"), el("th", {}, "value"), el("th", {}, "weight"), el("th", {}, "weight × value")));
  for (const k of d.top) t.append(el("tr", {}, el("td", {}, k), el("td", {}, fmt(v.values[k])), el("td", {}, fmt(w.values[k])), el("td", {}, fmt(p.values[k]))));
  if (d.rest_count) t.append(el("tr", {class: "rest"}, el("td", {colspan: 3}, `the other ${d.rest_count} products`), el("td", {}, fmt(d.rest_sum))));
  t.append(el("tr", {}, el("td", {colspan: 3}, "bias"), el("td", {}, fmt(d.bias))));
  return [el("p", {}, `${v.values.length} inputs, each times its weight; the ${d.top.length} largest products by size:`), t,
    equation(d, prefix, `Σ products = ${fmt(d.sum)};  ${fmt(d.sum)} + bias ${fmt(d.bias)} = ${fmt(d.value)}`)];
}

export function showSoftmax(p, names) {
  if (stepper) { stepper.stop(); stepper = null; stepperKey = null; }
  const s = p.softmax;
  const t = el("table", {class: "grid", id: "softmax-table"});
  t.append(el("tr", {}, el("th", {}, "class"), el("th", {}, "logit z"), el("th", {}, "exp(z − max z)"), el("th", {}, "probability")));
  s.logits.forEach((z, k) => t.append(el("tr", {}, el("td", {}, names[k]), el("td", {}, fmt(z)), el("td", {}, fmt(s.exp[k])), el("td", {}, fmt(p.probabilities[k])))));
  t.append(el("tr", {}, el("th", {}, "sum"), el("td", {}), el("td", {}, fmt(s.sum)), el("td", {}, "1")));
  box().replaceChildren(el("h2", {}, "softmax"), el("p", {}, `probability = exp(z − max z) / Σ exp(z − max z); the exponentials sum to ${fmt(s.sum)}.`), t);
}
