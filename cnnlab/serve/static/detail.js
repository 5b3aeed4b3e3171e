// Unit details: the numbers behind one output of a layer (conv, pooling, activation, BatchNorm, dense, softmax).
import {postImage, unpack, at} from "./api.js";
import {el, fmt, numberGrid, colour} from "./draw.js";
import {state, withRun, currentBlob, layerInfo} from "./state.js";

const MAX_CHANNELS = 8;
const box = () => document.getElementById("details");
let current = null, timer = null;

export async function showUnit(layer, channel, y, x) {
  const blob = await currentBlob();
  let d;
  try {
    d = await postImage("/api/unit" + withRun({layer, channel, y, x}), blob);
  } catch (err) {
    box().replaceChildren(el("p", {class: "error"}, err.message));
    return;
  }
  current = d;
  render(d);
}


function controls(d) {
  const info = layerInfo(d.layer);
  const shape = info.output_shape;
  const spatial = shape.length === 3;
  const go = (c, y, x) => showUnit(d.layer, c, y, x);
  const step = (dy, dx) => {
    let y = d.y + dy, x = d.x + dx;
    if (spatial) {
      if (x >= shape[1]) { x = 0; y += 1; } else if (x < 0) { x = shape[1] - 1; y -= 1; }
      y = (y + shape[0]) % shape[0];
    }
    return go(d.channel, y, x);
  };
  const ch = el("input", {type: "number", min: 0, max: shape[shape.length - 1] - 1, value: d.channel, id: "unit-channel"});
  ch.addEventListener("change", () => go(parseInt(ch.value, 10), d.y, d.x));
  const bar = el("div", {class: "controls"}, `${spatial ? "channel" : "unit"} `, ch, " ");
  if (spatial) {
    bar.append(el("button", {onclick: () => step(0, -1), title: "previous position"}, "◀"),
      el("button", {onclick: () => step(0, 1), id: "unit-next", title: "next position"}, "▶"),
      el("button", {onclick: () => step(-1, 0)}, "▲"), el("button", {onclick: () => step(1, 0)}, "▼"),
      el("button", {id: "unit-play", onclick: () => togglePlay(step)}, timer ? "pause" : "play"),
      ` position (y, x) = (${d.y}, ${d.x}) of ${shape[0]}×${shape[1]}`);
  } else {
    bar.append(el("button", {onclick: () => go(Math.max(0, d.channel - 1), 0, 0)}, "◀"),
      el("button", {onclick: () => go(Math.min(shape[0] - 1, d.channel + 1), 0, 0)}, "▶"));
  }
  return bar;
}

function togglePlay(step) {
  if (timer) { clearInterval(timer); timer = null; }
  else {
    let pending = false;
    timer = setInterval(async () => { if (!pending) { pending = true; await step(0, 1); pending = false; } }, 350);
  }
  const b = document.getElementById("unit-play");
  if (b) b.textContent = timer ? "pause" : "play";
}

// The equation line, with the numbers as data attributes (tests read them).
function equation(d, text) {
  const diff = Math.abs(d.value - d.model_value);
  return el("div", {class: "equation", id: "unit-equation", "data-value": d.value, "data-model-value": d.model_value,
                    "data-sum": d.sum ?? "", "data-bias": d.bias ?? "", "data-layer": d.layer, "data-channel": d.channel,
                    "data-y": d.y, "data-x": d.x},
    text, el("br"), `the model's forward pass gave ${fmt(d.model_value)} at this unit (difference ${diff.toExponential(1)})`);
}

function render(d) {
  const info = layerInfo(d.layer);
  const head = el("h2", {}, `${d.layer} (${d.layer_class}) · ${info.output_shape.length === 3 ? `channel ${d.channel}, position (${d.y}, ${d.x})` : `unit ${d.channel}`}`);
  const parts = [head, controls(d)];
  if (d.kind === "conv") parts.push(...conv(d));
  else if (d.kind === "pool") parts.push(...pool(d));
  else if (d.kind === "dense") parts.push(...dense(d));
  else if (d.kind === "activation") parts.push(equation(d, `${d.function}: ${d.formula} at x = ${fmt(d.input)} gives ${fmt(d.value)}`));
  else if (d.kind === "norm") parts.push(el("p", {}, "BatchNorm at inference: x̂ = (x − running mean) / √(running var + ε), then γ·x̂ + β."),
    equation(d, `(${fmt(d.input)} − ${fmt(d.mean)}) / √(${fmt(d.var)} + ${d.eps}) = ${fmt(d.x_hat)};  ${fmt(d.gamma)} × ${fmt(d.x_hat)} + ${fmt(d.beta)} = ${fmt(d.value)}`));
  else parts.push(equation(d, `${d.layer_class} moves values without computing: this unit is ${fmt(d.value)}`));
  if (d.receptive_field) {
    const r = d.receptive_field;
    parts.push(el("p", {class: "note"}, `Receptive field in the input image: rows ${r.top}…${r.bottom}, columns ${r.left}…${r.right} (${r.bottom - r.top + 1}×${r.right - r.left + 1} pixels, negative or beyond the edge = padding).`));
    parts.push(receptiveField(r));
  }
  box().replaceChildren(...parts);
}

// The input image with the unit's receptive field outlined.
function receptiveField(r) {
  const cv = document.createElement("canvas");
  const [h, w] = state.model.input_shape;
  const cell = Math.max(2, Math.floor(168 / Math.max(h, w)));
  cv.width = w * cell; cv.height = h * cell;
  const ctx = cv.getContext("2d");
  createImageBitmap(state.blob).then(bmp => {
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(bmp, 0, 0, cv.width, cv.height);
    ctx.strokeStyle = "#f33"; ctx.lineWidth = 2;
    ctx.strokeRect(r.left * cell, r.top * cell, (r.right - r.left + 1) * cell, (r.bottom - r.top + 1) * cell);
  });
  return cv;
}

function conv(d) {
  const patch = unpack(d.patch), kernel = unpack(d.kernel), prods = unpack(d.products);
  const [kh, kw, cg] = kernel.shape;
  const get = (a, ch) => (i, j) => a.values[(i * kw + j) * cg + ch];
  const out = [];
  out.push(el("p", {}, `kernel ${kh}×${kw} over ${cg} input channel${cg > 1 ? "s" : ""}` +
    ` (channels ${d.channels[0]}…${d.channels[d.channels.length - 1]}${d.groups > 1 ? `, group of ${d.groups}` : ""}),` +
    ` stride ${d.strides.join("×")}, dilation ${d.dilation.join("×")}, padding top ${d.pads[0]} bottom ${d.pads[1]} left ${d.pads[2]} right ${d.pads[3]}.` +
    ` The window's taps read rows ${d.rows.join(", ")} and columns ${d.cols.join(", ")} of the layer's input (outside it: zero padding).`));
  out.push(layerInputView(d));
  const plim = Math.max(1e-12, ...Array.from(prods.values, Math.abs));
  const chans = el("div", {class: "channels"});
  for (let ch = 0; ch < Math.min(cg, MAX_CHANNELS); ch++) {
    chans.append(el("div", {class: "channel"}, el("div", {}, `input channel ${d.channels[ch]}`),
      el("div", {class: "triple"},
        el("div", {}, el("div", {class: "note"}, "patch"), numberGrid(kh, kw, get(patch, ch), Math.min(0, patch.min), Math.max(patch.max, 1e-12))),
        "×", el("div", {}, el("div", {class: "note"}, "kernel"), numberGrid(kh, kw, get(kernel, ch), -Math.max(Math.abs(kernel.min), Math.abs(kernel.max)), Math.max(Math.abs(kernel.min), Math.abs(kernel.max)))),
        "=", el("div", {}, el("div", {class: "note"}, "products"), numberGrid(kh, kw, get(prods, ch), -plim, plim))),
      el("div", {}, `sum = ${fmt(d.channel_sums[ch])}`)));
  }
  out.push(chans);
  if (cg > MAX_CHANNELS) out.push(el("p", {class: "note"}, `(${cg - MAX_CHANNELS} more channels not drawn; their sums are included below)`));
  const sums = d.channel_sums.map(fmt);
  const shown = sums.length > 12 ? `${sums.slice(0, 12).join(" + ")} + … (${sums.length} channel sums)` : sums.join(" + ");
  out.push(equation(d, `${shown} = ${fmt(d.sum)};  ${fmt(d.sum)} + bias ${fmt(d.bias)} = ${fmt(d.value)}`));
  return out;
}

// The layer's input (first channel of the group) with zero padding drawn and the kernel's taps outlined.
function layerInputView(d) {
  const src = state.model.layers.find(l => l.name === d.layer).inputs[0];      // the layer it reads
  const a = src === "input" ? state.activations.__input_array__ : state.activations[src];
  if (!a || a.shape.length !== 3) return el("span");
  const [h, w] = a.shape;
  const [t, b, l, r] = d.pads;
  const hp = h + t + b, wp = w + l + r;
  const cell = Math.max(3, Math.min(14, Math.floor(220 / Math.max(hp, wp))));
  const cv = document.createElement("canvas");
  cv.width = wp * cell; cv.height = hp * cell;
  const ctx = cv.getContext("2d");
  const ch = d.channels[0];
  for (let i = 0; i < hp; i++) for (let j = 0; j < wp; j++) {
    const ii = i - t, jj = j - l;
    if (ii < 0 || jj < 0 || ii >= h || jj >= w) ctx.fillStyle = "#fde0c5";
    else { const [R, G, B] = colour(at(a, ii, jj, ch), a.min, a.max); ctx.fillStyle = `rgb(${R},${G},${B})`; }
    ctx.fillRect(j * cell, i * cell, cell, cell);
  }
  ctx.strokeStyle = "#e00"; ctx.lineWidth = 2;
  for (const rr of d.rows) for (const cc of d.cols) ctx.strokeRect((cc + l) * cell + 1, (rr + t) * cell + 1, cell - 2, cell - 2);
  return el("div", {}, el("div", {class: "note"}, `${src === "input" ? "input image" : `input (output of ${src})`}, channel ${ch}, zero padding in orange, the taps outlined in red`), cv);
}

function pool(d) {
  const win = unpack(d.window);
  const [kh, kw] = win.shape;
  const mark = d.argmax ? (i, j) => i === d.argmax[0] && j === d.argmax[1] : () => false;
  const muted = d.padded ? (i, j) => d.padded[i][j] : () => false;
  const out = [el("p", {}, `window rows ${d.rows[0]}…${d.rows[d.rows.length - 1]}, columns ${d.cols[0]}…${d.cols[d.cols.length - 1]} of the input channel ${d.channel}`)];
  if (kh * kw <= 400) out.push(numberGrid(kh, kw, (i, j) => win.values[i * kw + j], Math.min(0, win.min), Math.max(win.max, 1e-12), {mark, muted}));
  const text = d.op === "max" ? `max of the window = ${fmt(d.value)} (at window row ${d.argmax[0]}, column ${d.argmax[1]}, outlined)`
    : d.op === "mean" ? `mean of the ${kh * kw} values = ${fmt(d.value)}` : `kept pixel = ${fmt(d.value)}`;
  out.push(equation(d, text));
  return out;
}

function dense(d) {
  const v = unpack(d.inputs), w = unpack(d.weights), p = unpack(d.products);
  const order = Array.from(p.values.keys()).sort((a, b) => Math.abs(p.values[b]) - Math.abs(p.values[a])).slice(0, 12);
  const t = el("table", {class: "grid"});
  t.append(el("tr", {}, el("th", {}, "input"), el("th", {}, "value"), el("th", {}, "weight"), el("th", {}, "product")));
  for (const k of order) t.append(el("tr", {}, el("td", {}, k), el("td", {}, fmt(v.values[k])), el("td", {}, fmt(w.values[k])), el("td", {}, fmt(p.values[k]))));
  return [el("p", {}, `${v.values.length} inputs × ${v.values.length} weights; the 12 largest products (by size):`), t,
    equation(d, `Σ products = ${fmt(d.sum)};  ${fmt(d.sum)} + bias ${fmt(d.bias)} = ${fmt(d.value)}`)];
}

export function showSoftmax(p, names) {
  const s = p.softmax;
  const t = el("table", {class: "grid", id: "softmax-table"});
  t.append(el("tr", {}, el("th", {}, "class"), el("th", {}, "logit z"), el("th", {}, "exp(z − max z)"), el("th", {}, "probability")));
  s.logits.forEach((z, k) => t.append(el("tr", {}, el("td", {}, names[k]), el("td", {}, fmt(z)), el("td", {}, fmt(s.exp[k])), el("td", {}, fmt(p.probabilities[k])))));
  box().replaceChildren(el("h2", {}, "softmax"), el("p", {}, `probability = exp(z − max z) / Σ exp(z − max z); the sum is ${fmt(s.sum)}.`), t);
}
