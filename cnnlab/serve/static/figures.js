// The lesson's figures: each kind of figure a step may return (cnnlab/analysis/lesson/__init__.py lists
// them), drawn from the server's numbers. Nothing is computed here but colours, sizes and positions.
//
//   maps     labelled maps on one colour scale (or each its own), with the scale's legend
//   curve    lines over x (SVG)            bars    labelled values, scaled to the largest
//   table    header and rows               grid    a small array of numbers, each cell coloured
//   stepper  the stepping window of the unit details view (stepper.js) on a layer of the served model
//   slide    the 1-D convolution of two densities: one flipped and slid over the other, step by step
//   tryit    kernel, size, stride, padding, dilation and pooling on the current input (POST /api/lesson/try)
import {unpack, postImage} from "./api.js";
import {el, fmt, mapCanvas, rgbCanvas, numberGrid, lineChart, legend} from "./draw.js";
import {createStepper} from "./stepper.js";
import {fetchUnit, terms} from "./detail.js";
import {state, withRun, currentBlob, layerInfo} from "./state.js";

const COLOURS = ["#c0392b", "#2c6fbb", "#27ae60", "#8e44ad", "#d35400", "#16a085", "#7f8c8d", "#b8860b", "#e84393", "#34495e"];

// A list of numbers from a plain list or a packed array.
const vec = v => (v === null || v === undefined ? [] : Array.isArray(v) ? v.flat(Infinity) : Array.from(unpack(v).values));
// Whole numbers as they are (156, 9,800), others with the page's usual digits.
const num = v => (Number.isInteger(v) ? v.toLocaleString("en") : fmt(v));
const isPacked = v => v && typeof v === "object" && Array.isArray(v.shape) && "data" in v;

// ---------------------------------------------------------------------------
// maps, curve, table, grid, bars
// ---------------------------------------------------------------------------
function maps(f) {
  const items = (f.items || []).map(it => ({...it, a: unpack(it.map)}));
  const box = el("div", {class: "fig-maps-row"});
  if (!items.length) return box;
  const own = f.shared === false;
  const lo = f.signed ? -Math.max(...items.map(i => Math.max(Math.abs(i.a.min), Math.abs(i.a.max))), 1e-9)
                      : Math.min(...items.map(i => i.a.min));
  const hi = f.signed ? -lo : Math.max(...items.map(i => i.a.max));
  // legible sizes: a map is about 112 px when there are few, 64 px when there are many
  const target = f.size || (items.length > 12 ? 64 : items.length > 4 ? 88 : 112);
  for (const it of items) {
    const [h, w] = it.a.shape;
    const cell = Math.max(1, Math.min(Math.max(h, w) <= 7 ? 20 : 12, Math.round(target / Math.max(h, w))));
    const rgb = it.a.shape.length === 3 && it.a.shape[2] === 3;
    const canvas = rgb ? rgbCanvas(it.a, cell) : mapCanvas(it.a, 0, own ? it.a.min : lo, own ? it.a.max : hi, cell);
    canvas.setAttribute("role", "img");
    canvas.setAttribute("aria-label", `${it.label ?? "map"}: ${h}×${w}, from ${fmt(it.a.min)} to ${fmt(it.a.max)}`);
    box.append(el("figure", {class: "fig-map"}, canvas, el("figcaption", {}, it.label ?? "")));
  }
  const rgbOnly = items.every(i => i.a.shape.length === 3 && i.a.shape[2] === 3);
  return el("div", {}, box, own || rgbOnly ? "" : legend(lo, hi, 120));
}

function curve(f) {
  const xs = vec(f.x);
  return lineChart((f.series || []).map((s, k) => ({name: s.name, colour: s.colour || COLOURS[k % COLOURS.length],
                                                    points: xs.map((x, i) => [x, vec(s.y)[i]]), cls: "pt"})),
                   {width: f.width || 460, height: f.height || 200, xlabel: f.xlabel || "", ylabel: f.ylabel || ""});
}

function table(f) {
  const t = el("table", {class: "lesson-table"});
  if (f.header) t.append(el("tr", {}, ...f.header.map(h => el("th", {scope: "col"}, h))));
  for (const row of f.rows || []) t.append(el("tr", {}, ...row.map(v => el("td", {class: typeof v === "number" ? "num" : ""}, typeof v === "number" ? num(v) : v ?? ""))));
  return el("div", {class: "scroll"}, t);
}

function grid(f) {
  const a = unpack(f.values);
  const [h, w] = a.shape.length === 1 ? [1, a.shape[0]] : a.shape;
  const m = Math.max(Math.abs(a.min), Math.abs(a.max), 1e-9);
  const lo = a.min < 0 ? -m : 0;
  return el("div", {class: "fig-grid"}, f.label ? el("div", {class: "grid-label"}, f.label) : "",
            el("div", {class: "scroll"}, numberGrid(h, w, (i, j) => a.values[i * w + j], lo, m)));
}

// Bars scaled to the largest magnitude, each with its number (as a percentage when the values are
// probabilities: non-negative and summing to 1).
function bars(f) {
  const values = vec(f.values), labels = f.labels || values.map((_, k) => String(k));
  const m = Math.max(...values.map(Math.abs), 1e-12);
  const probs = values.every(v => v >= 0) && Math.abs(values.reduce((a, b) => a + b, 0) - 1) < 1e-3;
  const best = values.indexOf(Math.max(...values));
  // signed values take the maps' colours: orange positive, blue negative
  const box = el("div", {class: "lesson-bars" + (values.some(v => v < 0) ? " signed" : "")});
  values.forEach((v, k) => box.append(el("div", {class: "bar" + (k === best ? " top" : "")},
    el("span", {class: "name", title: labels[k]}, labels[k]),
    el("span", {class: "fill" + (v < 0 ? " neg" : ""), style: `width:${Math.max(1, Math.round(160 * Math.abs(v) / m))}px`}),
    el("span", {class: "value"}, probs ? `${(100 * v).toFixed(1)}%` : num(v)))));
  return box;
}

// ---------------------------------------------------------------------------
// stepper: the unit details view's stepping window, on the served model's layer
// ---------------------------------------------------------------------------
function stepper(f) {
  const info = layerInfo(f.layer);
  const output = state.activations[f.layer];
  if (!info || !output) return el("p", {class: "error"}, `the model has no spatial layer ${f.layer}`);
  const src = info.inputs.length === 1 ? info.inputs[0] : null;
  const input = src === null ? null : src === "input" ? state.activations.__input_array__ : state.activations[src];
  const s = createStepper({
    fetchUnit: (c, y, x) => fetchUnit(f.layer, c, y, x), output, input,
    inputName: src === "input" ? "input image" : `layer's input (the output of ${src})`,
    terms: d => terms(d, "lesson-unit"), idPrefix: "lesson-unit",
  });
  const [y, x] = f.position || [f.y ?? 0, f.x ?? 0];
  s.go(f.channel ?? 0, y, x);
  const box = el("div", {class: "fig-stepper"}, s.element);
  box.stop = () => s.stop();               // the lesson stops a playing window when it draws the step again
  return box;
}

// ---------------------------------------------------------------------------
// slide: p_{X+Y}(z) = Σ_x p_X(x) p_Y(z − x), one density flipped and slid over the other
// ---------------------------------------------------------------------------
// Schema (the lesson package's docstring): x (n,) p's support, p (n,), q (its values at the same
// support's steps), z (S,), products (S, n): p(x_k)·q(z_s − x_k), result (S,); p_label, q_label, result_label.
function slide(f) {
  const p = vec(f.p), q = vec(f.q), r = vec(f.result);
  const n = p.length, m = q.length, S = r.length;
  const xs = f.x ? vec(f.x) : p.map((_, k) => k);
  const zs = f.z ? vec(f.z) : r.map((_, k) => k);
  const prods = f.products ? unpack(isPacked(f.products) ? f.products : {shape: [S, n], data: f.products}) : null;
  const names = {p: f.p_label || "p", q: f.q_label || "q", result: f.result_label || "p ∗ q"};
  const top = Math.max(...p, ...q, 1e-12), rtop = Math.max(...r, 1e-12);
  const W = 40, H = 54, R = H + 58, L = 8, cols = n + 2 * (m - 1);   // p in the middle; q slides across it
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  const width = 2 * L + cols * W;
  svg.setAttribute("width", width); svg.setAttribute("height", 4 * R + 6);
  svg.setAttribute("class", "slide-svg");
  const slider = el("input", {type: "range", min: 0, max: S - 1, step: 1, value: Math.floor(S / 2), class: "slide-shift", "aria-label": "the shift z"});
  const text = el("p", {class: "slide-sum", "aria-live": "polite"});
  let timer = null;
  const play = el("button", {class: "slide-play", "aria-label": "play the slide", onclick: () => (timer ? stop() : start())}, "▶ play");
  function stop() { clearInterval(timer); timer = null; play.textContent = "▶ play"; }
  function start() {
    play.textContent = "❚❚ pause";
    if (+slider.value >= S - 1) slider.value = 0;
    draw();
    timer = setInterval(() => { if (+slider.value >= S - 1) { stop(); return; } slider.value = +slider.value + 1; draw(); }, 700);
  }
  const add = (tag, attrs, txt) => {
    const e = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (txt !== undefined) e.textContent = txt;
    svg.append(e); return e;
  };
  // row k: its name above, bars standing on its base line, the value above each bar, the support under it
  const row = (k, label) => {
    const base = k * R + 32 + H;
    add("text", {x: L, y: k * R + 13, "font-size": 12, "font-weight": 600, fill: "#333"}, label);
    add("line", {x1: L, x2: width - L, y1: base, y2: base, stroke: "#ccc"});
    return base;
  };
  function bar(col, base, v, scale, colour, at, cls) {
    const h = Math.max(0, H * v / scale), cx = L + col * W + W / 2;
    add("rect", {x: cx - W / 2 + 5, y: base - h, width: W - 10, height: h, fill: colour, class: cls || ""});
    add("text", {x: cx, y: base - h - 3, "font-size": 10, "text-anchor": "middle", fill: "#222"}, v.toFixed(3));
    if (at !== undefined) add("text", {x: cx, y: base + 12, "font-size": 10, "text-anchor": "middle", fill: "#777"}, num(at));
  }
  function draw() {
    const s = +slider.value;
    while (svg.firstChild) svg.firstChild.remove();
    // p at columns m−1 … m+n−2; q flipped, shifted by s: column m−1+k holds q[s − k], under p[k]
    let base = row(0, names.p);
    p.forEach((v, k) => bar(m - 1 + k, base, v, top, "#2c6fbb", xs[k]));
    base = row(1, names.q);
    for (let j = 0; j < m; j++) bar(m - 1 + s - j, base, q[j], top, "#d35400");
    base = row(2, "products where they overlap");    // the server's numbers
    if (prods) for (let k = 0; k < n; k++) { const v = prods.values[s * n + k]; if (v !== 0) bar(m - 1 + k, base, v, top * top, "#8e44ad"); }
    base = row(3, names.result);                      // each sum under the middle of the window that made it
    r.forEach((v, k) => { if (k <= s) bar(k + (m - 1) / 2, base, v, rtop, k === s ? "#c0392b" : "#aaa", zs[k], k === s ? "current" : ""); });
    const terms = prods ? Array.from({length: n}, (_, k) => prods.values[s * n + k]).filter(v => v !== 0) : [];
    text.textContent = `(p ∗ q)(${num(zs[s])}) = Σₓ p(x)·q(${num(zs[s])} − x)` +
      (terms.length ? ` = ${terms.map(fmt).join(" + ")}` : "") + ` = ${fmt(r[s])}`;
    text.dataset.shift = s; text.dataset.value = r[s];
  }
  slider.addEventListener("input", () => { stop(); draw(); });
  draw();
  const box = el("div", {class: "fig-slide"}, el("div", {class: "controls"}, play, el("label", {}, " shift ", slider)), text, el("div", {class: "scroll"}, svg));
  box.stop = stop;
  return box;
}

// ---------------------------------------------------------------------------
// tryit: a kernel and a layer's settings on the current input, computed by the server
// ---------------------------------------------------------------------------
// Schema (step 14's module): kernels [names; "trained:K" stands for each trained filter], limits {name:
// [lo, hi]}, options {kernel, size, stride, padding, dilation, pool} (the current ones), the arrays input,
// kernel, output, pooled (or null) and sizes {input, output, pooled}, route (POST, body: the input).
// The route answers the same keys; they are drawn as they come.
let tried = null;           // the learner's last settings: kept when the step is drawn again for a new input

function tryit(f) {
  const o = {kernel: "edge", size: 3, stride: 1, padding: "valid", dilation: 1, pool: 0, values: "", ...(f.options || f.defaults || {}), ...(tried || {})};
  const limits = {size: [1, 9], stride: [1, 4], dilation: [1, 4], pool: [0, 4], ...(f.limits || {})};
  const first = state.model.layers.find(l => l.class === "Conv2D");
  const trained = first ? first.output_shape[2] : 0;
  const kernel = el("select", {class: "try-kernel", "aria-label": "kernel"});
  for (const k of f.kernels || ["edge", "blur", "sharpen", "custom", "trained:K"]) {
    if (k === "trained:K") for (let j = 0; j < trained; j++) kernel.append(el("option", {value: `trained:${j}`}, `trained filter ${j}`));
    else kernel.append(el("option", {value: k}, k === "custom" ? "typed numbers" : k));
  }
  kernel.value = o.kernel;
  if (!kernel.value) kernel.selectedIndex = 0;           // a trained filter the model does not have
  const number = name => el("input", {type: "number", class: `try-${name}`, min: limits[name][0], max: limits[name][1], value: o[name], "aria-label": name});
  const padding = el("select", {class: "try-padding", "aria-label": "padding"},
    ...["valid", "same", ...Array.from({length: 4}, (_, k) => String(k + 1))].map(v => el("option", {value: v}, v === "valid" ? "valid (none)" : v)));
  if (![...padding.options].some(op => op.value === String(o.padding))) padding.append(el("option", {value: o.padding}, o.padding));
  padding.value = String(o.padding);
  const inputs = {size: number("size"), stride: number("stride"), padding, dilation: number("dilation"), pool: number("pool")};
  const values = el("input", {type: "text", class: "try-values", value: o.values, placeholder: "e.g. -1 0 1 -2 0 2 -1 0 1",
                              "aria-label": "kernel numbers, row by row"});
  const out = el("div", {class: "try-output", "aria-live": "polite"});
  const form = el("form", {class: "tryit-form", onsubmit: e => { e.preventDefault(); run(); }},
    el("label", {}, "kernel ", kernel), ...Object.entries(inputs).map(([k, i]) => el("label", {}, `${k === "pool" ? "max pool (0: none)" : k} `, i)),
    el("label", {class: "try-values-label"}, "numbers ", values), el("button", {type: "submit", class: "try-run"}, "compute"));
  const showValues = () => { values.parentElement.hidden = kernel.value !== "custom"; };
  kernel.addEventListener("change", () => { showValues(); if (kernel.value !== "custom" || values.value.trim()) run(); });
  for (const i of Object.values(inputs)) i.addEventListener("change", () => run());
  let asked = 0;
  async function run() {
    const params = {kernel: kernel.value, ...Object.fromEntries(Object.entries(inputs).map(([k, i]) => [k, i.value]))};
    if (kernel.value === "custom") params.values = values.value.trim().split(/[\s,;]+/).join(",");
    tried = {...params, values: values.value};
    const token = ++asked;
    out.setAttribute("aria-busy", "true");
    try {
      const a = await postImage((f.route || "/api/lesson/try") + withRun(params), await currentBlob());
      if (token === asked) {
        out.replaceChildren(...tryAnswer(a));
        const alt = out.closest("figure")?.querySelector("p.alt");      // the text alternative follows the answer
        if (alt && a.alt) alt.textContent = a.alt;
      }
    } catch (err) {
      if (token === asked) out.replaceChildren(el("p", {class: "error", role: "alert"}, err.message));
    } finally { out.removeAttribute("aria-busy"); }
  }
  showValues();
  if (f.output && !tried) out.replaceChildren(...tryAnswer(f)); else run();
  return el("div", {class: "fig-tryit"}, form, out);
}

// The try route's answer (or the figure itself): the sizes, the maps input → kernel → output → pooled,
// then any sentences and figures it adds.
function tryAnswer(a) {
  const sizes = a.sizes || {};
  const shape = k => (sizes[k] || (isPacked(a[k]) ? a[k].shape.slice(0, 2) : null));
  const chain = ["input", "output", "pooled"].filter(k => shape(k)).map(k => `${k} ${shape(k).join("×")}`);
  const parts = [el("p", {class: "try-sizes", "data-sizes": JSON.stringify(Object.fromEntries(["input", "output", "pooled"].map(k => [k, shape(k)])))},
                    chain.join(" → "))];
  const items = ["input", "kernel", "output", "pooled"].filter(k => isPacked(a[k]) && a[k].shape.length >= 2)
    .map(k => ({label: `${k} ${a[k].shape.slice(0, 2).join("×")}`, map: a[k].shape.length === 3 && a[k].shape[2] !== 3 ? firstChannel(a[k]) : a[k]}));
  if (items.length) parts.push(maps({items, shared: false, size: 112}));
  for (const p of a.paragraphs || []) parts.push(el("p", {}, p));
  for (const f of a.figures || []) parts.push(figure(f));
  return parts;
}

// Channel 0 of a packed (H, W, C) array, packed (a trained kernel over several input channels).
function firstChannel(p) {
  const a = unpack(p), [h, w, c] = a.shape;
  const data = Array.from({length: h}, (_, i) => Array.from({length: w}, (_, j) => a.values[(i * w + j) * c]));
  const flat = data.flat();
  return {shape: [h, w], min: Math.min(...flat), max: Math.max(...flat), data};
}

export const FIGURES = {maps, curve, table, grid, bars, stepper, slide, tryit};

// One figure: its drawing and its text alternative (the key numbers) under it.
export function figure(f) {
  const draw = FIGURES[f.kind];
  let body;
  try { body = draw ? draw(f) : el("p", {class: "note"}, `(a figure of kind ${f.kind})`); }
  catch (err) { body = el("p", {class: "error"}, `this ${f.kind} figure could not be drawn: ${err.message}`); }
  const box = el("figure", {class: `lesson-figure fig-${f.kind}`, role: "group", "aria-label": f.title || f.label || f.alt || f.kind});
  const title = f.title || (f.kind !== "grid" && f.label);        // any figure may carry a title ("label")
  if (title) box.append(el("figcaption", {class: "fig-title"}, title));
  box.append(body);
  if (f.alt) box.append(el("p", {class: "alt note"}, f.alt));
  return box;
}
