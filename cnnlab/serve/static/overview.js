// Overview as a flow: the input, every layer's maps left to right, lines from each map to the maps of
// the next layer that read it, a colour legend per layer, and the probabilities.
//
// Lines: a convolution's output map f reads every input map of its group (channels
// g*C/groups .. (g+1)*C/groups - 1, g = f // (F/groups)); Add joins map c of each input to map c;
// Concatenate places its inputs' maps one after the other; a flat layer (Flatten, Dense, global
// pooling) reads every map; other layers (BatchNorm, activations, pooling) map c to map c.
//
// Collapse rule, for large models: in a model with joins (Add, Concatenate), a block is the run of
// layers that ends at a join (and the activation right after it); when the model has more than
// COLLAPSE_LAYERS layers each block is one column showing its last layer's maps, and a click opens
// it. A layer with more than MAX_MAPS maps shows its first SHOW_MAPS and a "+N more" button.
import {at} from "./api.js";
import {el, fmt, mapCanvas, rgbCanvas, probBars, legend} from "./draw.js";
import {state, actions} from "./state.js";

const COLLAPSE_LAYERS = 16, MAX_MAPS = 10, SHOW_MAPS = 8, MAP_PX = 56;
const opened = new Set();       // blocks opened and layers with all maps shown, by name

const tooltip = () => document.getElementById("tooltip");
function tip(e, text) {
  const t = tooltip();
  t.hidden = false; t.textContent = text;
  t.style.left = `${e.clientX + 12}px`; t.style.top = `${e.clientY + 12}px`;
}
function untip() { tooltip().hidden = true; }

// The columns: [{id, layers: [names], last: name, block: bool}], after the collapse rule.
export function columns(layers) {
  const isJoin = l => l.inputs.length > 1;
  const blocks = [];
  let start = 0;
  layers.forEach((l, i) => {
    if (!isJoin(l)) return;
    let end = i;
    const next = layers[i + 1];
    if (next && next.kind === "activation" && next.inputs.length === 1 && next.inputs[0] === l.name) end = i + 1;
    blocks.push([start, end]);
    start = end + 1;
  });
  const collapse = layers.length > COLLAPSE_LAYERS && blocks.length > 0;
  const cols = [];
  let i = 0;
  for (const [s, e] of collapse ? blocks : []) {
    for (; i < s; i++) cols.push({id: layers[i].name, layers: [layers[i].name], last: layers[i].name, block: false});
    const names = layers.slice(s, e + 1).map(l => l.name);
    const id = `block:${names[0]}`;
    if (opened.has(id)) names.forEach(n => cols.push({id: n, layers: [n], last: n, block: false, openedFrom: id}));
    else cols.push({id, layers: names, last: names[names.length - 1], block: true});
    i = e + 1;
  }
  for (; i < layers.length; i++) cols.push({id: layers[i].name, layers: [layers[i].name], last: layers[i].name, block: false});
  return cols;
}

function mapsShown(name, c) { return c > MAX_MAPS && !opened.has(`maps:${name}`) ? SHOW_MAPS : c; }

function spatialMaps(col, info, a) {
  const [h, w, c] = a.shape;
  const shown = mapsShown(col.id, c);
  const box = el("div", {class: "maps"});
  const scale = MAP_PX / Math.max(h, w);
  for (let ch = 0; ch < shown; ch++) {
    const cv = mapCanvas(a, ch, a.min, a.max, scale);
    Object.assign(cv.dataset, {channel: ch, layer: col.last, node: `${col.id}#${ch}`});
    cv.tabIndex = -1;
    cv.setAttribute("role", "button");
    cv.setAttribute("aria-label", `${col.last} (${info.class}) channel ${ch}, ${h}×${w}, layer range ${fmt(a.min)} to ${fmt(a.max)}; Enter opens its centre unit`);
    const where = e => [Math.min(h - 1, Math.floor(e.offsetY / scale)), Math.min(w - 1, Math.floor(e.offsetX / scale))];
    cv.addEventListener("mousemove", e => {
      const [i, j] = where(e);
      tip(e, `${col.last} (${info.class}) output ${a.shape.join("×")} · channel ${ch} · (${i}, ${j}) = ${fmt(at(a, i, j, ch))}`);
    });
    cv.addEventListener("mouseenter", () => highlight(cv.dataset.node, true));
    cv.addEventListener("mouseleave", () => { untip(); highlight(cv.dataset.node, false); });
    cv.addEventListener("click", e => { const [i, j] = where(e); untip(); openWithTransition(cv, col.last, ch, i, j); });
    cv.addEventListener("keydown", e => {
      if (e.key === "Enter" || e.key === " ") { e.preventDefault(); openWithTransition(cv, col.last, ch, Math.floor(h / 2), Math.floor(w / 2)); }
    });
    box.append(cv);
  }
  if (shown < c) box.append(el("button", {class: "more", onclick: () => { opened.add(`maps:${col.id}`); renderOverview(); }}, `+${c - shown} more`));
  return box;
}

function flatUnits(col, info, a) {
  const n = a.shape[0], per = Math.min(n, n > 256 ? 32 : 8), cell = n > 256 ? 3 : 7;
  const grid = {shape: [Math.ceil(n / per), per, 1], values: new Float32Array(Math.ceil(n / per) * per).fill(NaN)};
  grid.values.set(a.values);
  const cv = mapCanvas(grid, 0, a.min, a.max, cell);
  Object.assign(cv.dataset, {channel: 0, layer: col.last, node: `${col.id}#0`});
  cv.tabIndex = -1;
  cv.setAttribute("role", "button");
  cv.setAttribute("aria-label", `${col.last} (${info.class}), ${n} units, range ${fmt(a.min)} to ${fmt(a.max)}; Enter opens unit 0`);
  const unit = e => Math.min(n - 1, Math.floor(e.offsetY / cell) * per + Math.floor(e.offsetX / cell));
  cv.addEventListener("mousemove", e => { const k = unit(e); tip(e, `${col.last} (${info.class}) unit ${k} = ${fmt(a.values[k])}`); });
  cv.addEventListener("mouseenter", () => highlight(cv.dataset.node, true));
  cv.addEventListener("mouseleave", () => { untip(); highlight(cv.dataset.node, false); });
  cv.addEventListener("click", e => { untip(); openWithTransition(cv, col.last, unit(e), 0, 0); });
  cv.addEventListener("keydown", e => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); openWithTransition(cv, col.last, 0, 0, 0); } });
  return el("div", {class: "maps"}, cv);
}

function column(col) {
  const info = state.model.layers.find(l => l.name === col.last);
  const a = state.activations[col.last];
  const title = col.block
    ? el("button", {class: "title block", title: "open this block", onclick: () => { opened.add(col.id); renderOverview(); }},
        el("b", {}, `block ▸ ${col.layers.length} layers`), `${col.layers[0]} … ${col.last}`, el("br"), `${a.shape.join("×")}`)
    : el("div", {class: "title"}, el("b", {}, col.last), `${info.class} ${a.shape.join("×")}`,
        ...(col.openedFrom ? [el("button", {class: "close-block", title: "close the block", onclick: () => { opened.delete(col.openedFrom); renderOverview(); }}, "◂")] : []));
  return el("div", {class: "layer" + (col.block ? " collapsed" : ""), "data-layer": col.last, "data-column": col.id},
    title, legend(a.min, a.max, 90), a.shape.length === 3 ? spatialMaps(col, info, a) : flatUnits(col, info, a));
}

// Which source map indices map ch of layer ``info`` reads from its input ``k`` (c_in maps), given the channel offset.
function reads(info, ch, k, cIn, offset) {
  if (info.kind === "conv") {
    const g = info.config.groups || 1, f = info.output_shape[2], cg = cIn / g, grp = Math.floor(ch / (f / g));
    return Array.from({length: cg}, (_, q) => grp * cg + q);
  }
  if (info.output_shape.length === 1) return Array.from({length: cIn}, (_, q) => q);
  if (info.class === "Concatenate") return ch - offset >= 0 && ch - offset < cIn ? [ch - offset] : [];
  return ch < cIn ? [ch] : [];
}

// The lines, drawn after layout in an SVG under the columns.
function drawLines(flow, cols) {
  const byLayer = {};
  cols.forEach(col => col.layers.forEach(n => { byLayer[n] = col; }));
  const origin = flow.getBoundingClientRect();
  const nodeRect = node => {
    const e = flow.querySelector(`[data-node="${CSS.escape(node)}"]`);
    if (!e) return null;
    const r = e.getBoundingClientRect();
    return {x0: r.left - origin.left + flow.scrollLeft, x1: r.right - origin.left + flow.scrollLeft, y: (r.top + r.bottom) / 2 - origin.top + flow.scrollTop};
  };
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.classList.add("flow-lines");
  svg.setAttribute("width", flow.scrollWidth); svg.setAttribute("height", flow.scrollHeight);
  svg.setAttribute("aria-hidden", "true");
  const line = (src, dst) => {
    const a = nodeRect(src), b = nodeRect(dst);
    if (!a || !b) return;
    const p = document.createElementNS(ns, "path");
    const mx = (a.x1 + b.x0) / 2;
    p.setAttribute("d", `M${a.x1},${a.y} C${mx},${a.y} ${mx},${b.y} ${b.x0},${b.y}`);
    p.dataset.src = src; p.dataset.dst = dst;
    svg.append(p);
  };
  for (const col of cols) {
    const first = state.model.layers.find(l => l.name === col.layers[0]);
    const last = state.model.layers.find(l => l.name === col.last);
    // a collapsed block reads its inputs like its first layer; its maps are its last layer's
    const info = col.block ? {...first, output_shape: last.output_shape, kind: "conv", config: {groups: 1}} : first;
    const inside = new Set(col.layers);
    const srcs = col.block ? [...new Set(col.layers.flatMap(n => state.model.layers.find(l => l.name === n).inputs).filter(n => !inside.has(n)))] : info.inputs;
    const outC = info.output_shape.length === 3 ? mapsShown(col.id, info.output_shape[2]) : 1;
    let offset = 0;
    for (const src of srcs) {
      const shape = src === "input" ? [1] : state.activations[src].shape;
      const cIn = shape.length === 3 ? shape[2] : 1;
      const from = src === "input" ? "input" : byLayer[src]?.id;
      if (!from) continue;
      for (let ch = 0; ch < outC; ch++) {
        const srcMaps = src === "input" ? [0] : reads(info, ch, src, cIn, offset);
        for (const q of new Set(srcMaps.map(q => (shape.length === 3 ? q : 0)))) line(`${from}#${src === "input" ? 0 : q}`, `${col.id}#${ch}`);
      }
      offset += cIn;
    }
  }
  flow.prepend(svg);
}

function highlight(node, on) {
  for (const p of document.querySelectorAll("#overview svg.flow-lines path")) {
    if (p.dataset.src === node || p.dataset.dst === node) p.classList.toggle("hot", on);
  }
}

// The clicked map grows into the detail view, then the unit opens.
function openWithTransition(canvas, layer, ch, y, x) {
  const from = canvas.getBoundingClientRect();
  const target = document.getElementById("views").getBoundingClientRect();
  const ghost = canvas.cloneNode(false);
  ghost.getContext("2d").drawImage(canvas, 0, 0);
  ghost.className = "ghost";
  Object.assign(ghost.style, {left: `${from.left}px`, top: `${from.top}px`, width: `${from.width}px`, height: `${from.height}px`});
  document.body.append(ghost);
  const size = Math.min(240, target.width);
  const anim = ghost.animate([
    {transform: "translate(0, 0) scale(1)", opacity: 1},
    {transform: `translate(${target.left + 20 - from.left}px, ${target.top + 60 - from.top}px) scale(${size / from.width})`, opacity: 0.2}],
    {duration: 350, easing: "ease-in", transformOrigin: "0 0"});
  ghost.style.transformOrigin = "0 0";
  anim.finished.then(() => ghost.remove(), () => ghost.remove());
  actions.openUnit(layer, ch, y, x);
}

// Keyboard: the flow is one Tab stop; arrows move between maps (up/down) and columns (left/right).
function keyboard(flow) {
  const maps = () => [...flow.querySelectorAll("[data-node]")];
  const first = maps()[0];
  if (first) first.tabIndex = 0;
  flow.onkeydown = e => {
    const cur = document.activeElement;
    if (!cur || !cur.dataset.node) return;
    const colOf = m => m.closest(".layer");
    let next = null;
    if (e.key === "ArrowDown") next = cur.nextElementSibling?.dataset?.node ? cur.nextElementSibling : null;
    else if (e.key === "ArrowUp") next = cur.previousElementSibling?.dataset?.node ? cur.previousElementSibling : null;
    else if (e.key === "ArrowRight" || e.key === "ArrowLeft") {
      let col = colOf(cur);
      do { col = e.key === "ArrowRight" ? col.nextElementSibling : col.previousElementSibling; } while (col && !col.querySelector("[data-node]"));
      if (col) {
        const list = [...col.querySelectorAll("[data-node]")];
        next = list[Math.min(list.length - 1, [...colOf(cur).querySelectorAll("[data-node]")].indexOf(cur))];
      }
    } else return;
    e.preventDefault();
    if (next) { cur.tabIndex = -1; next.tabIndex = 0; next.focus(); }
  };
}

export function renderOverview() {
  const box = document.getElementById("overview");
  const x = state.activations.__input_array__;
  const scale = MAP_PX / Math.max(x.shape[0], x.shape[1]);
  const img = x.shape[2] === 3 ? rgbCanvas(x, scale) : mapCanvas(x, 0, 0, 1, scale);
  img.dataset.node = "input#0";
  img.setAttribute("role", "img");
  img.setAttribute("aria-label", `the input as the model received it, ${x.shape.join("×")}`);
  const cols = columns(state.model.layers);
  const flow = el("div", {class: "flow", id: "flow"},
    el("div", {class: "layer", "data-layer": "input"}, el("div", {class: "title"}, el("b", {}, "input"), x.shape.join("×")), el("div", {class: "maps"}, img)),
    ...cols.map(column),
    el("div", {class: "layer probabilities"}, el("div", {class: "title"}, el("b", {}, "softmax"), "probabilities"),
      probBars(state.prediction.probabilities, state.model.class_names)));
  const focused = document.activeElement?.dataset?.node;
  box.replaceChildren(flow);
  keyboard(flow);
  requestAnimationFrame(() => drawLines(flow, cols));
  if (focused) flow.querySelector(`[data-node="${CSS.escape(focused)}"]`)?.focus();
}
