// What the views share: the store, the current input, and the actions the entry point (app.js) provides.
// Views import this module, never app.js, so the imports run one way: app.js -> views -> state.js.
import {query} from "./api.js";

// ``run`` is "" for the served model, else a run directory's name; ``activations`` maps a layer's
// name to its unpacked output (``__input_array__``: the input as the model received it).
// ``source`` says what the input is (drawing, upload or example: the server's notes name it so).
export const state = {run: "", source: "drawing", example: null, model: null, input: null, blob: null, prediction: null,
                      activations: {}, busy: false, dirty: false, version: 0};

// Filled by app.js at start: openView(name), openUnit(layer, channel, y, x), useRun(name).
export const actions = {};

// Every image route prepares the picture as the page's options say, and names it in its notes.
function preparation() {
  const on = id => { const box = document.getElementById(id); return !box || box.checked ? "auto" : "no"; };
  return {input: state.source, invert: on("prep-invert"), center: on("prep-center")};
}
export function withRun(params = {}) { return query({...params, run: state.run, ...preparation()}); }

// The bytes of the current input: the last one predicted, else the drawing canvas.
export async function currentBlob() {
  if (state.blob) return state.blob;
  if (state.input) return state.input;
  const canvas = document.getElementById("draw");
  return new Promise(resolve => canvas.toBlob(resolve, "image/png"));
}

export function layerInfo(name) { return state.model.layers.find(l => l.name === name); }
