// The stepping window: one output unit of a spatial layer and the input window it reads, stepped
// position by position. The unit details view uses it for every spatial layer, and the lesson's
// "the same neuron at every position" step reuses it.
//
//   input maps  (every channel the unit reads, zero padding drawn, the window outlined)
//   output map  (filling in cell by cell as the window steps; the current cell outlined)
//   terms       (drawn by the caller's ``terms(detail)``: products, sums, the formula)
//
// Every number comes from the server: ``fetchUnit(channel, y, x)`` answers /api/unit's detail
// ({rows, cols, pads, strides, channels, value, ...}); the output map's cells are the layer's
// output from the forward pass (``output``, an unpacked (H, W, C) array). Nothing is recomputed here.
import {el, fmt, colour, paintCanvas} from "./draw.js";

const SPEEDS = [800, 400, 200, 100, 50, 20];      // milliseconds per step, slow to fast

// The first position whose window lies inside the unpadded input: ceil(pad / stride) on each axis.
export function firstUnpadded(d) {
  if (!d.pads || !d.strides) return [0, 0];
  return [Math.ceil(d.pads[0] / d.strides[0]), Math.ceil(d.pads[2] / d.strides[1])];
}

/**
 * A stepper for unit (channel, y, x) of a layer whose output map is ``output`` (H, W, C).
 *   input:    the layer's input, unpacked (H, W, C), or null when it reads several layers
 *   inputName: what the input is ("input image", "output of relu")
 *   terms(d): elements explaining detail d (called after each step)
 *   onMove(channel, y, x, byPlay): told after each step (deep links); byPlay: the step was play's
 *   aside:    an element shown beside the maps (the unit details put the receptive field there)
 * Returns {element, go(channel, y, x), play(), stop(), detail()}.
 */
export function createStepper({fetchUnit, output, input, inputName, terms, onMove = () => {}, idPrefix = "unit", aside = null}) {
  const [H, W] = output.shape;
  let d = null, timer = null, speed = 3, pending = false;
  const pos = el("span", {class: "position", "aria-live": "polite"});
  const button = (label, title, onclick, id) => el("button", {title, "aria-label": title, onclick, ...(id ? {id} : {})}, label);
  const playButton = button("play", "play: step the window across the map", () => (timer ? stop() : play()), `${idPrefix}-play`);
  const speedInput = el("input", {type: "range", min: 0, max: SPEEDS.length - 1, step: 1, value: speed,
                                  id: `${idPrefix}-speed`, "aria-label": "speed of play"});
  const speedText = el("span", {class: "note"});
  const showSpeed = () => { speedText.textContent = `${SPEEDS[speed]} ms a step`; };
  speedInput.addEventListener("input", () => { speed = parseInt(speedInput.value, 10); showSpeed(); if (timer) { stop(); play(); } });
  showSpeed();
  const controls = el("div", {class: "controls"},
    button("◀", "previous position", () => step(0, -1), `${idPrefix}-prev`),
    button("▶", "next position", () => step(0, 1), `${idPrefix}-next`),
    button("▲", "one row up", () => step(-1, 0)), button("▼", "one row down", () => step(1, 0)),
    playButton, el("label", {}, " speed ", speedInput), " ", speedText, " ", pos);
  const inputs = el("div", {class: "stepper-inputs", tabindex: 0, "aria-label": "the channels the unit reads"});
  const outBox = el("div", {class: "stepper-output"});
  const termBox = el("div", {class: "stepper-terms"});
  const element = el("div", {class: "stepper", tabindex: -1},
    controls, el("div", {class: "stepper-figures"}, inputs, outBox, ...(aside ? [aside] : [])), termBox);
  element.addEventListener("keydown", e => {
    const moves = {ArrowLeft: [0, -1], ArrowRight: [0, 1], ArrowUp: [-1, 0], ArrowDown: [1, 0]};
    if (moves[e.key] && e.target.tagName !== "INPUT") { e.preventDefault(); step(...moves[e.key]); }
  });

  // Input channels: each drawn once (padding included), the window drawn over a copy at each step.
  let bases = null;
  function inputCanvases(det) {
    if (!input || input.shape.length !== 3) return [];
    const [h, w] = input.shape;
    const [t, b, l, r] = det.pads || [0, 0, 0, 0];
    const hp = h + t + b, wp = w + l + r;
    const cell = Math.max(2, Math.min(10, Math.floor(110 / Math.max(hp, wp))));
    const chans = det.channels || [det.channel];
    const key = `${chans.join(",")}|${det.pads}`;
    if (!bases || bases.key !== key) {
      bases = {key, cell, t, l, list: chans.map(ch => {
        const cv = paintCanvas(hp, wp, cell, (i, j) => {
          const ii = i - t, jj = j - l;
          if (ii < 0 || jj < 0 || ii >= h || jj >= w) return [253, 224, 197];       // zero padding
          return colour(input.values[(ii * w + jj) * input.shape[2] + ch], input.min, input.max);
        });
        return {ch, image: cv};
      })};
    }
    const rows = det.rows || [det.y], cols = det.cols || [det.x];
    return bases.list.map(({ch, image}) => {
      const cv = document.createElement("canvas");
      cv.width = image.width; cv.height = image.height;
      const ctx = cv.getContext("2d");
      ctx.drawImage(image, 0, 0);
      ctx.strokeStyle = "#d00"; ctx.lineWidth = 1;
      for (const rr of rows) for (const cc of cols) ctx.strokeRect((cc + bases.l) * bases.cell + 0.5, (rr + bases.t) * bases.cell + 0.5, bases.cell - 1, bases.cell - 1);
      cv.setAttribute("role", "img");
      cv.setAttribute("aria-label", `channel ${ch} of the ${inputName}; the window reads rows ${rows[0]} to ${rows[rows.length - 1]}, columns ${cols[0]} to ${cols[cols.length - 1]}`);
      return el("figure", {class: "stepper-channel"}, cv, el("figcaption", {}, `channel ${ch}`));
    });
  }

  // The output map: cells before the current one (row by row) filled with the forward pass's values.
  function outputCanvas(det) {
    const c = output.shape[2], cell = Math.max(3, Math.min(12, Math.floor(180 / Math.max(H, W))));
    const upTo = det.y * W + det.x;
    const cv = paintCanvas(H, W, cell, (i, j) => (i * W + j <= upTo
      ? colour(output.values[(i * W + j) * c + det.channel], output.min, output.max) : ((i + j) % 2 ? [214, 214, 226] : [246, 246, 250])));
    const ctx = cv.getContext("2d");
    ctx.strokeStyle = "#d00"; ctx.lineWidth = 2;
    ctx.strokeRect(det.x * cell + 1, det.y * cell + 1, cell - 2, cell - 2);
    cv.id = `${idPrefix}-output-map`;
    cv.dataset.filled = upTo + 1;
    cv.setAttribute("role", "img");
    cv.setAttribute("aria-label", `output map, channel ${det.channel}: ${upTo + 1} of ${H * W} cells computed; this one is ${fmt(det.value)}`);
    return el("div", {}, el("div", {class: "note"}, `output map ${H}×${W}, channel ${det.channel}: filled up to the window's position (checkered: not reached yet)`), cv);
  }

  function render() {
    pos.textContent = `position (y, x) = (${d.y}, ${d.x}) of ${H}×${W}`;
    const chans = inputCanvases(d);
    const label = el("div", {class: "note"}, input ? `the ${inputName}: ${chans.length} channel${chans.length > 1 ? "s" : ""} read, zero padding in orange, the window in red` : "this layer reads several layers; see the formula");
    inputs.replaceChildren(label, el("div", {class: "stepper-channels"}, ...chans));
    outBox.replaceChildren(outputCanvas(d));
    termBox.replaceChildren(...terms(d));
  }

  async function go(channel, y, x, byPlay = false) {
    try {
      d = await fetchUnit(channel, y, x);
    } catch (err) {
      stop();
      termBox.replaceChildren(el("p", {class: "error"}, err.message));
      return;
    }
    render();
    onMove(d.channel, d.y, d.x, byPlay);
  }

  function step(dy, dx, byPlay = false) {
    if (!d) return Promise.resolve();
    let y = d.y + dy, x = d.x + dx;
    if (x >= W) { x = 0; y += 1; } else if (x < 0) { x = W - 1; y -= 1; }
    if (y >= H || y < 0) { stop(); return Promise.resolve(); }
    return go(d.channel, y, x, byPlay);
  }

  function play() {
    if (!d) return;
    const [y0, x0] = firstUnpadded(d);
    const start = (d.y < y0 || (d.y === y0 && d.x < x0) || d.y * W + d.x === H * W - 1) ? go(d.channel, y0, x0, true) : Promise.resolve();
    playButton.textContent = "pause";
    pending = true;
    start.then(() => { pending = false; });
    timer = setInterval(async () => {
      if (pending) return;
      pending = true;
      await step(0, 1, true);
      pending = false;
    }, SPEEDS[speed]);
    return start;
  }

  function stop() {
    if (timer) clearInterval(timer);
    timer = null;
    playButton.textContent = "play";
  }

  return {element, go, play, stop, step, detail: () => d, playing: () => timer !== null};
}
