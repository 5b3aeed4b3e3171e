// Drawing numbers: maps as canvases, grids of numbers as tables, curves as SVG.

// Colour of v in [lo, hi]: grey (black to white) for non-negative data; blue-white-orange when the
// range spans zero, symmetric about 0 (blue and orange stay apart in the common colour-vision
// deficiencies, unlike red and green).
const NEG = [33, 102, 172], POS = [200, 90, 0];
export function colour(v, lo, hi) {
  if (lo < 0 && hi > 0) {
    const m = Math.max(-lo, hi);
    const t = Math.max(-1, Math.min(1, v / m));
    const end = t >= 0 ? POS : NEG, a = Math.abs(t);
    return end.map(e => Math.round(255 + (e - 255) * a));
  }
  const t = hi > lo ? Math.max(0, Math.min(1, (v - lo) / (hi - lo))) : 0;
  const g = Math.round(255 * t);
  return [g, g, g];
}

// A legend for the colour scale of [lo, hi]: the gradient with its numbers at the ends (and 0).
export function legend(lo, hi, width = 96) {
  const n = 32;
  const cv = paintCanvas(1, n, 1, (i, j) => colour(lo + (hi - lo) * j / (n - 1), lo, hi));
  cv.style.width = `${width}px`; cv.style.height = "8px";
  const signed = lo < 0 && hi > 0, m = Math.max(-lo, hi);
  const ends = signed ? [-m, m] : [lo, hi];
  const box = el("div", {class: "legend", role: "img",
    "aria-label": signed ? `colour scale: blue ${fmt(-m)}, white 0, orange ${fmt(m)}` : `colour scale: black ${fmt(lo)} to white ${fmt(hi)}`}, cv,
    el("div", {class: "legend-numbers"}, el("span", {}, fmt(ends[0])), signed ? el("span", {}, "0") : "", el("span", {}, fmt(ends[1]))));
  return box;
}

// A canvas of (h * cell) x (w * cell) pixels, each cell painted with rgb(i, j) = [r, g, b].
export function paintCanvas(h, w, cell, rgb) {
  const canvas = document.createElement("canvas");
  canvas.width = w * cell; canvas.height = h * cell;
  const ctx = canvas.getContext("2d");
  for (let i = 0; i < h; i++) for (let j = 0; j < w; j++) {
    const [r, g, b] = rgb(i, j);
    ctx.fillStyle = `rgb(${r},${g},${b})`;
    ctx.fillRect(j * cell, i * cell, cell, cell);
  }
  return canvas;
}

// A canvas of w x h pixels shown cell-sized; pixel(p) returns the [r, g, b] of pixel p = i * w + j.
function pixelCanvas(h, w, cell, pixel) {
  const canvas = document.createElement("canvas");
  canvas.width = w; canvas.height = h;
  canvas.style.width = `${w * cell}px`; canvas.style.height = `${h * cell}px`;
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(w, h);
  for (let p = 0; p < h * w; p++) {
    const [r, g, b] = pixel(p);
    img.data[4 * p] = r; img.data[4 * p + 1] = g; img.data[4 * p + 2] = b; img.data[4 * p + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
  return canvas;
}

// Channel c of an unpacked (H, W, C) array as a canvas of cell-sized pixels.
export function mapCanvas(a, c, lo, hi, cell = 2) {
  const [h, w, ch] = a.shape.length === 3 ? a.shape : [a.shape[0], a.shape[1], 1];
  return pixelCanvas(h, w, cell, p => colour(a.values[p * ch + c], lo, hi));
}

// An (H, W, 3) image (values in [0, 1] after min-max scaling) as a colour canvas.
export function rgbCanvas(a, cell = 2) {
  const [h, w] = a.shape;
  const lo = a.min, span = (a.max - a.min) || 1;
  return pixelCanvas(h, w, cell, p => [0, 1, 2].map(k => Math.round(255 * (a.values[3 * p + k] - lo) / span)));
}

// A heat map (H, W) over a grey image: both unpacked; alpha-blended, hot colours for large values.
export function overlayCanvas(image, heat, cell = 4) {
  const [h, w] = heat.shape;
  const ch = image.shape[2] || 1;
  const hm = heat.max > heat.min ? heat.max - heat.min : 1;
  return pixelCanvas(h, w, cell, p => {
    let g = 0;
    for (let k = 0; k < ch; k++) g += image.values[p * ch + k] / ch;
    const t = (heat.values[p] - heat.min) / hm;
    return [Math.round(255 * (0.45 * g + 0.55 * Math.min(1, 2 * t))),
            Math.round(255 * (0.45 * g + 0.55 * Math.max(0, 2 * t - 1))),
            Math.round(255 * 0.45 * g)];
  });
}

export function fmt(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e4)) return v.toExponential(2);
  return v.toFixed(a < 10 ? 3 : 1);
}

// A grid of numbers (rows x cols, read by get(i, j)) as a table with coloured cells.
export function numberGrid(rows, cols, get, lo, hi, opts = {}) {
  const table = document.createElement("table");
  table.className = "grid";
  for (let i = 0; i < rows; i++) {
    const tr = table.insertRow();
    for (let j = 0; j < cols; j++) {
      const td = tr.insertCell();
      const v = get(i, j);
      const [r, g, b] = colour(v, lo, hi);
      td.style.background = `rgb(${r},${g},${b})`;
      td.style.color = (0.299 * r + 0.587 * g + 0.114 * b) > 140 ? "#111" : "#fff";
      td.textContent = fmt(v);
      if (opts.mark && opts.mark(i, j)) td.classList.add("mark");
      if (opts.muted && opts.muted(i, j)) td.classList.add("muted");
    }
  }
  return table;
}

// Bars of class probabilities, the largest marked.
export function probBars(probs, names) {
  const best = probs.indexOf(Math.max(...probs));
  const order = probs.map((v, k) => [v, k]).sort((a, b) => b[0] - a[0]).slice(0, 3);
  const box = el("div", {class: "probs", role: "img", "aria-label": `probabilities: ${order.map(([v, k]) => `${names[k]} ${(100 * v).toFixed(1)}%`).join(", ")}${probs.length > 3 ? ", the others less" : ""}`});
  probs.forEach((v, k) => {
    box.append(el("div", {class: "bar" + (k === best ? " top" : "")}, el("span", {class: "name"}, names[k]),
      el("span", {class: "fill", style: `width:${Math.max(1, 120 * v)}px`}), el("span", {}, `${(100 * v).toFixed(1)}%`)));
  });
  return box;
}

export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

// Line chart in SVG: series = [{name, points: [[x, y]], colour, cls}]; points get class cls.
// The legend sits in its own row under the x axis, so it never covers a line.
export function lineChart(series, {width = 420, height = 200, xlabel = "", ylabel = ""} = {}) {
  // the legend's entries one after another, wrapped into rows under the axis label (about 5.6 px a character)
  const legend = [];
  let lx = 4, row = 0;
  for (const s of series) {
    const w = 24 + 5.6 * String(s.name).length;
    if (lx > 4 && lx + w > width) { lx = 4; row += 1; }
    legend.push([lx, row]);
    lx += w;
  }
  height += 30 + 14 * row;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", width); svg.setAttribute("height", height);
  svg.setAttribute("class", "chart");
  const all = series.flatMap(s => s.points);
  const m = {l: 48, r: 10, t: 10, b: 60 + 14 * row};
  const xs = all.map(p => p[0]), ys = all.map(p => p[1]).filter(Number.isFinite);
  const x0 = Math.min(0, ...xs), x1 = Math.max(1, ...xs);
  const y0 = Math.min(0, ...ys), y1 = Math.max(1e-9, ...ys);
  const X = x => m.l + (x - x0) / (x1 - x0 || 1) * (width - m.l - m.r);
  const Y = y => height - m.b - (y - y0) / (y1 - y0 || 1) * (height - m.t - m.b);
  const add = (tag, attrs, text) => {
    const e = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    svg.append(e); return e;
  };
  add("line", {x1: m.l, y1: height - m.b, x2: width - m.r, y2: height - m.b, stroke: "#999"});
  add("line", {x1: m.l, y1: m.t, x2: m.l, y2: height - m.b, stroke: "#999"});
  add("text", {x: m.l - 4, y: m.t + 8, "text-anchor": "end", "font-size": 10}, fmt(y1));
  add("text", {x: m.l - 4, y: height - m.b, "text-anchor": "end", "font-size": 10}, fmt(y0));
  const tick = v => (Number.isInteger(v) ? String(v) : fmt(v));
  add("text", {x: m.l, y: height - m.b + 14, "text-anchor": "start", "font-size": 10}, tick(x0));
  add("text", {x: width - m.r, y: height - m.b + 14, "text-anchor": "end", "font-size": 10}, tick(x1));
  add("text", {x: (m.l + width - m.r) / 2, y: height - m.b + 28, "text-anchor": "middle", "font-size": 10, fill: "#333"}, xlabel);
  if (x0 < 0 && x1 > 0) {                                // x = 0 marked when the axis spans it
    add("line", {x1: X(0), y1: m.t, x2: X(0), y2: height - m.b, stroke: "#ccc", "stroke-dasharray": "3 3"});
    add("text", {x: X(0), y: height - m.b + 14, "text-anchor": "middle", "font-size": 10}, "0");
  }
  add("text", {x: m.l + 4, y: m.t + 8, "font-size": 10, fill: "#666"}, ylabel);
  series.forEach((s, k) => {
    const pts = s.points.filter(p => Number.isFinite(p[1]));
    if (pts.length > 1) add("polyline", {points: pts.map(p => `${X(p[0])},${Y(p[1])}`).join(" "), fill: "none", stroke: s.colour, "stroke-width": 1.5});
    if (s.cls) pts.forEach(p => add("circle", {cx: X(p[0]), cy: Y(p[1]), r: 3, fill: s.colour, class: s.cls}));
    const [lx, r] = legend[k], ly = height - m.b + 44 + 14 * r;
    add("rect", {x: lx, y: ly - 5, width: 10, height: 4, fill: s.colour});
    add("text", {x: lx + 14, y: ly, "font-size": 10, fill: "#333"}, s.name);
  });
  return svg;
}
