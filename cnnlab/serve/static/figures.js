// The lesson's figures: each kind of figure a step may return (cnnlab/analysis/lesson/__init__.py lists
// them), drawn from the server's numbers. Nothing is computed here but colours and positions.
import {unpack} from "./api.js";
import {el, fmt, mapCanvas, rgbCanvas, numberGrid, lineChart, probBars} from "./draw.js";

const COLOURS = ["#c0392b", "#2c6fbb", "#27ae60", "#8e44ad", "#d35400", "#16a085"];

function maps(f) {
  const box = el("div", {class: "fig-maps"});
  const items = f.items.map(it => ({...it, a: unpack(it.map)}));
  const lo = f.signed ? -Math.max(...items.map(i => Math.max(Math.abs(i.a.min), Math.abs(i.a.max))), 1e-9)
                      : Math.min(...items.map(i => i.a.min));
  const hi = f.signed ? -lo : Math.max(...items.map(i => i.a.max));
  for (const it of items) {
    const [h, w] = it.a.shape;
    const cell = Math.max(1, Math.min(8, Math.floor((f.size || 84) / Math.max(h, w))));
    const canvas = it.a.shape.length === 3 && it.a.shape[2] === 3 ? rgbCanvas(it.a, cell)
      : mapCanvas(it.a, 0, f.shared === false ? it.a.min : lo, f.shared === false ? it.a.max : hi, cell);
    box.append(el("figure", {}, canvas, el("figcaption", {}, it.label ?? "")));
  }
  return box;
}

function curve(f) {
  return lineChart(f.series.map((s, k) => ({name: s.name, colour: s.colour || COLOURS[k % COLOURS.length],
                                            points: f.x.map((x, i) => [x, s.y[i]]), cls: "pt"})),
                   {width: f.width || 420, height: f.height || 200, xlabel: f.xlabel || "", ylabel: f.ylabel || ""});
}

function table(f) {
  const t = el("table", {class: "lesson-table"});
  if (f.header) t.append(el("tr", {}, ...f.header.map(h => el("th", {}, h))));
  for (const row of f.rows) t.append(el("tr", {}, ...row.map(v => el("td", {}, typeof v === "number" ? fmt(v) : v))));
  return t;
}

function grid(f) {
  const a = unpack(f.values);
  const [h, w] = a.shape;
  const m = Math.max(Math.abs(a.min), Math.abs(a.max), 1e-9);
  return el("div", {}, numberGrid(h, w, (i, j) => a.values[i * w + j], -m, m), el("div", {class: "note"}, f.label || ""));
}

export const FIGURES = {maps, curve, table, grid, bars: f => probBars(f.values, f.labels)};

// One figure: its drawing and its text alternative (the key numbers) under it.
export function figure(f, extra = {}) {
  const draw = extra[f.kind] || FIGURES[f.kind];
  const body = draw ? draw(f) : el("p", {class: "note"}, `(a figure of kind ${f.kind})`);
  const box = el("figure", {class: `lesson-figure fig-${f.kind}`, role: "group", "aria-label": f.alt || f.kind});
  if (f.title) box.append(el("figcaption", {class: "fig-title"}, f.title));
  box.append(body);
  if (f.alt) box.append(el("p", {class: "alt note"}, f.alt));
  return box;
}
