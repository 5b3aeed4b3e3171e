// The explorer page: the input panel, the prediction, the overview of every layer; other views in modules.
import {getJSON, postImage, unpack} from "./api.js";
import {el, probBars} from "./draw.js";
import {renderOverview} from "./overview.js";
import {parseLink, writeLink, parseExample} from "./links.js";
import {showUnit, showSoftmax} from "./detail.js";
import {initWhy, refreshWhy} from "./why.js";
import {initTraining} from "./train.js";
import {initLesson, show as showLesson} from "./lesson.js";
import {state, actions, withRun} from "./state.js";

window.explorer = {state, showUnit: (...a) => showUnit(...a)};       // for scripts and tests

const $ = id => document.getElementById(id);
const canvas = $("draw"), ctx = canvas.getContext("2d");

function setStatus(text) { $("status").textContent = text; }
function showError(msg) { $("input-error").textContent = msg || ""; }

// ---------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------
async function loadModel() {
  state.model = await getJSON("/api/model" + withRun());
  const m = state.model;
  $("model-name").textContent = `${m.name}: input ${m.input_shape.join("×")}, ${m.layers.length} layers, ${m.num_params.toLocaleString()} parameters`;
  // drawing canvas: a whole number of screen pixels per model pixel
  const [h, w] = m.input_shape;
  const k = Math.max(1, Math.floor(280 / Math.max(h, w)));
  if (canvas.width !== w * k || canvas.height !== h * k) {
    canvas.width = w * k; canvas.height = h * k;
    clearCanvas();
  }
  state.scale = k;
}

// ---------------------------------------------------------------------------
// Input: drawing, upload, examples
// ---------------------------------------------------------------------------
function clearCanvas() {
  ctx.fillStyle = "#000"; ctx.fillRect(0, 0, canvas.width, canvas.height);
}

function canvasBlob() {
  return new Promise(resolve => canvas.toBlob(resolve, "image/png"));
}

let drawing = false, last = null;
function point(e) {
  const r = canvas.getBoundingClientRect();
  return [(e.clientX - r.left) * canvas.width / r.width, (e.clientY - r.top) * canvas.height / r.height];
}
function stroke(p) {
  ctx.strokeStyle = "#fff"; ctx.fillStyle = "#fff"; ctx.lineCap = "round"; ctx.lineJoin = "round";
  ctx.lineWidth = parseFloat($("brush").value) * state.scale;
  ctx.beginPath(); ctx.moveTo(...(last || p)); ctx.lineTo(...p); ctx.stroke();
  last = p;
}
canvas.addEventListener("pointerdown", e => { drawing = true; last = null; canvas.setPointerCapture(e.pointerId); stroke(point(e)); useCanvas(); });
canvas.addEventListener("pointermove", e => { if (drawing) { stroke(point(e)); useCanvas(); } });
canvas.addEventListener("pointerup", () => { drawing = false; last = null; useCanvas(); });
$("clear").addEventListener("click", () => { clearCanvas(); useCanvas(); });

function useCanvas() { state.input = null; state.source = "drawing"; state.example = null; schedule(); }

// The input as image bytes: the uploaded file or example as it is, else the canvas.
async function inputBlob() { return state.input || canvasBlob(); }

async function showOnCanvas(blob) {
  const img = await createImageBitmap(blob);
  clearCanvas();
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
}

$("upload").addEventListener("change", async e => {
  const file = e.target.files[0];
  if (!file) return;
  state.input = file;
  state.source = "upload";
  state.example = null;
  await schedule();
  if (!state.lastError) { try { await showOnCanvas(file); } catch (err) { /* shown by the server's answer */ } }
});

// Examples from the model's own test set when the server finds it (else shapes, and the page says so).
async function loadExamples(n = 16) {
  const box = $("examples");
  box.textContent = "";
  const asked = $("example-source").value;
  try {
    const d = await getJSON("/api/examples" + withRun({source: asked, n: Math.min(64, n)}));
    $("example-note").textContent = d.note || `(${d.source})`;     // the server says why when not the model's own
    d.examples.forEach((ex, k) => {
      const img = el("img", {src: `data:image/png;base64,${ex.png}`, alt: `example ${k}: ${ex.class_name}`, title: `${ex.class_name} (${d.source})`,
                             class: "example", tabindex: 0, role: "button", "data-example": `${asked}:${k}`});
      const use = async () => {
        const blob = await (await fetch(img.src)).blob();
        state.input = blob;
        state.source = "example";
        state.example = img.dataset.example;
        await showOnCanvas(blob);
        await schedule();
        link();
      };
      img.addEventListener("click", use);
      img.addEventListener("keydown", e => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); use(); } });
      box.append(img);
    });
  } catch (err) { box.textContent = err.message; }
}
$("example-source").addEventListener("change", () => loadExamples());
for (const id of ["prep-invert", "prep-center"]) $(id).addEventListener("change", () => schedule());

// ---------------------------------------------------------------------------
// Prediction: one request at a time; changes made meanwhile are sent when it returns
// ---------------------------------------------------------------------------
async function schedule() {
  state.dirty = true;
  if (state.busy) return;
  state.busy = true;
  while (state.dirty) {
    state.dirty = false;
    await predict();
  }
  state.busy = false;
}

async function predict() {
  const blob = await inputBlob();
  try {
    const t0 = performance.now();
    const p = await postImage("/api/predict" + withRun({activations: "base64"}), blob);
    state.lastError = null;
    showError("");
    state.blob = blob;
    state.prediction = p;
    state.activations = {};
    for (const a of p.activations) state.activations[a.name] = unpack(a);
    state.activations.__input_array__ = unpack(p.input);
    state.version += 1;
    renderPrediction();
    renderOverview();
    setStatus(`predicted in ${Math.round(performance.now() - t0)} ms`);
    document.dispatchEvent(new CustomEvent("prediction"));
  } catch (err) {
    state.lastError = err.message;
    showError(err.message);
  }
}

function renderPrediction() {
  const p = state.prediction, names = state.model.class_names;
  const box = $("prediction");
  box.textContent = "";
  box.append(el("div", {id: "top-class"}, `${names[p.predicted]} (${(100 * p.probabilities[p.predicted]).toFixed(1)}%)`));
  box.append(probBars(p.probabilities, names));
  // What was done to the picture before the model saw it (background rule, MNIST's normalization).
  if (p.notes && p.notes.length) box.append(el("p", {class: "note", id: "input-notes"}, p.notes.join(" ")));
  if (p.novelty && p.novelty.far) box.append(el("p", {class: "error", id: "input-novelty", role: "status"}, p.novelty.message));
  box.append(el("button", {onclick: () => { showSoftmax(p, names); openView("details", false); }}, "softmax details"));
}


// ---------------------------------------------------------------------------
// Views
// ---------------------------------------------------------------------------
// Views by their link names; the tab buttons carry the element names (details = unit).
const VIEW_OF = {lesson: "lesson", overview: "overview", unit: "details", why: "why", training: "training"};
let current = {view: "overview"}, applying = false;

function link(replace = false) {
  if (applying) return;
  writeLink({...current, example: state.example}, replace);
  lastHash = location.hash;
}

function openView(name, record = true) {
  const id = VIEW_OF[name] ? VIEW_OF[name] : name;
  for (const b of document.querySelectorAll("#tabs button")) {
    b.classList.toggle("active", b.dataset.view === id);
    b.setAttribute("aria-selected", b.dataset.view === id);
  }
  for (const v of document.querySelectorAll(".view")) v.classList.toggle("active", v.id === `view-${id}`);
  if (id === "why") refreshWhy();
  const view = Object.keys(VIEW_OF).find(k => VIEW_OF[k] === id) || "overview";
  if (view === "lesson") {
    localStorage.setItem("cnnlab-lesson-seen", "1");
    const step = current.view === "lesson" && current.step ? current.step : 1;
    current = {view, step};
    showLesson(step);
    if (record) link();
    return;
  }
  if (record && view !== "unit") { current = {view}; link(); }
}
for (const b of document.querySelectorAll("#tabs button")) b.addEventListener("click", () => openView(b.dataset.view));

async function openUnit(layer, channel, y, x) {
  openView("details", false);
  await showUnit(layer, channel, y, x);
}

// The unit view reports each unit it shows; a play makes one entry of its own, which the link then
// follows without new entries (a step already asked when the learner pauses included).
let playEntry = false;
document.addEventListener("unit", e => {
  const {layer, channel, y, x, byPlay} = e.detail;
  const playing = current.view === "unit" && current.layer === layer && !!byPlay;
  current = {view: "unit", layer, c: channel, y, x};
  link(playing && playEntry);
  playEntry = playing && !applying;
});

// Open what a link names: its example first (so the unit is computed on it), then its view.
async function applyLink(hash) {
  const l = parseLink(hash);
  applying = true;
  try {
    const ex = parseExample(l.example);
    if (ex && ex.source !== undefined && l.example !== state.example) {
      $("example-source").value = ex.source;
      await loadExamples(Math.max(16, ex.index + 1));
      const img = document.querySelector(`#examples img[data-example="${l.example}"]`);
      if (img) { state.input = await (await fetch(img.src)).blob(); state.source = "example"; state.example = l.example; await showOnCanvas(state.input); await schedule(); }
    }
    if (l.view === "unit" && l.layer && state.model.layers.some(k => k.name === l.layer)) {
      current = {view: "unit", layer: l.layer, c: l.c ?? 0, y: l.y ?? 0, x: l.x ?? 0};
      await openUnit(l.layer, l.c ?? 0, l.y ?? 0, l.x ?? 0);
    } else if (l.view === "lesson") {
      current = {view: "lesson", step: l.step || 1};
      openView("lesson", false);
    } else if (VIEW_OF[l.view]) {
      current = {view: l.view};
      openView(l.view, false);
    } else if (!l.view && !localStorage.getItem("cnnlab-lesson-seen")) {
      current = {view: "lesson", step: 1};            // a first visit opens the lesson
      openView("lesson", false);
    } else {
      current = {view: "overview"};
      openView("overview", false);
    }
  } finally { applying = false; }
}
// Back/Forward (popstate) and a typed or set hash (hashchange), once each, one after the other.
let lastHash = null, chain = Promise.resolve();
function navigated() {
  if (location.hash === lastHash) return;
  lastHash = location.hash;
  const hash = location.hash;
  chain = chain.then(() => applyLink(hash));
}
window.addEventListener("popstate", navigated);
window.addEventListener("hashchange", navigated);

// Switch between the served model and a run's latest weights.
async function useRun(name) {
  state.run = name || "";
  const sel = $("model-source");
  if (name && ![...sel.options].some(o => o.value === name)) sel.append(el("option", {value: name}, name));
  sel.value = state.run;
  await loadModel();
  await loadExamples();
  await schedule();
}
$("model-source").addEventListener("change", e => useRun(e.target.value));

Object.assign(actions, {openView, openUnit, useRun});

async function start() {
  try {
    await loadModel();
  } catch (err) { showError(err.message); return; }
  initWhy();
  initTraining();
  await initLesson(step => { current = {view: "lesson", step}; link(); });
  const l = parseLink(location.hash);
  if (!parseExample(l.example)) {
    await loadExamples();
    const first = document.querySelector("#examples img");
    if (first) {
      state.input = await (await fetch(first.src)).blob();
      state.source = "example";
      state.example = first.dataset.example;
      await showOnCanvas(state.input);
    }
    await schedule();
  }
  navigated();              // the link the page opened with, unless a hash set meanwhile is applied already
  await chain;
}
start();
