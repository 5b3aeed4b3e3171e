// Live training: start a run (in its own process on the server), or attach to any run directory; curves
// update per batch and per epoch, the first-layer filters and the current input's first maps with the weights.
import {getJSON, postJSON, postImage, query, unpack} from "./api.js";
import {el, fmt, mapCanvas, lineChart, legend} from "./draw.js";
import {currentBlob, actions} from "./state.js";

const box = () => document.getElementById("training");
let source = null, watched = null, curves = null;

const select = (id, options, value) => el("select", {id}, ...options.map(o => {
  const opt = el("option", {value: o}, o);
  if (o === value) opt.selected = true;
  return opt;
}));

export function initTraining() {
  const form = el("form", {class: "train", id: "train-form"},
    el("label", {}, "dataset ", select("train-dataset", ["shapes", "mnist", "fashion-mnist", "cifar10"], "shapes")),
    el("label", {}, "model ", select("train-model", ["tiny_cnn", "lenet5", "mnist_fast", "cifar_small"], "tiny_cnn")),
    el("label", {}, "epochs ", el("input", {type: "number", id: "train-epochs", min: 1, value: 3})),
    el("label", {}, "learning rate ", el("input", {type: "number", id: "train-lr", step: "any", min: 0, value: 0.05})),
    el("label", {}, "batch ", el("input", {type: "number", id: "train-batch", min: 1, value: 64})),
    el("label", {}, "augment ", select("train-augment", ["none", "mnist", "cifar", "hflip"], "none")),
    el("label", {}, "training images (0 = all) ", el("input", {type: "number", id: "train-limit", min: 0, value: 0})),
    el("button", {type: "submit", id: "train-start"}, "start training"));
  form.addEventListener("submit", e => { e.preventDefault(); startRun(); });
  box().replaceChildren(
    el("p", {class: "note"}, "A run started here trains in its own process and writes an ordinary run directory: `cnnlab train --resume` continues it, `cnnlab report` reports it. Runs that `cnnlab train` writes into the same folder can be watched too."),
    form, el("div", {id: "train-error", class: "error"}),
    el("h2", {}, "Runs ", el("button", {id: "runs-refresh", onclick: () => listRuns()}, "refresh")), el("div", {id: "runs"}),
    el("div", {id: "watch"}));
  listRuns();
}

async function listRuns() {
  const d = await getJSON("/api/runs");
  const t = el("table", {class: "runs"}, el("tr", {}, ...["run", "status", "epoch", "dataset", "model", ""].map(h => el("th", {}, h))));
  for (const r of d.runs) {
    t.append(el("tr", {}, el("td", {}, r.name), el("td", {}, r.job ? r.job.status : r.status ?? ""), el("td", {}, `${r.epoch ?? ""}/${r.epochs ?? ""}`),
      el("td", {}, r.dataset ?? ""), el("td", {}, r.model ?? ""),
      el("td", {}, el("button", {onclick: () => watch(r.name)}, "watch"), el("button", {onclick: () => actions.useRun(r.name)}, "use its weights"),
        el("button", {onclick: () => resume(r.name, (r.epoch || 0) + 2)}, "resume +2 epochs"))));
  }
  document.getElementById("runs").replaceChildren(d.runs.length ? t : el("p", {class: "note"}, `no runs in ${d.root} yet`));
}

async function startRun() {
  const v = id => document.getElementById(id).value;
  const body = {dataset: v("train-dataset"), model: v("train-model"), epochs: parseInt(v("train-epochs"), 10),
    lr: parseFloat(v("train-lr")), batch_size: parseInt(v("train-batch"), 10), augment: v("train-augment")};
  if (parseInt(v("train-limit"), 10) > 0) body.limit = parseInt(v("train-limit"), 10);
  if (body.dataset === "shapes") body.dataset_options = {n_train: 3000, n_test: 500};
  body.snapshot_filters = 20;              // the first layer's kernel every 20 steps: "what training added"
  await launch(body);
}

async function resume(name, epochs) { await launch({resume: name, epochs}); }

async function launch(body) {
  const err = document.getElementById("train-error");
  err.textContent = "";
  try {
    const job = await postJSON("/api/runs", body);
    await listRuns();
    watch(job.run);
  } catch (e) { err.textContent = e.message; }
}

function watch(name) {
  if (source) source.close();
  watched = name;
  curves = {batch: [], loss: [], accuracy: [], val_accuracy: [], steps: 0};
  const status = el("div", {id: "train-status"}, "connecting…");
  document.getElementById("watch").replaceChildren(
    el("h2", {}, `Run ${name}`), status,
    el("button", {id: "train-stop", hidden: "", onclick: () => postJSON(`/api/runs/${encodeURIComponent(name)}/stop`, {}).catch(e => { status.textContent = e.message; })}, "stop"),
    el("div", {class: "pair"}, el("div", {id: "curve-batches"}), el("div", {id: "curve-epochs"})),
    el("div", {class: "pair"}, el("div", {}, el("h3", {}, "first-layer filters"), el("div", {id: "train-filters", class: "kernels"})),
      el("div", {}, el("h3", {}, "first-layer maps of the current input, with these weights"), el("div", {id: "train-maps", class: "kernels"}))),
    el("div", {id: "train-added"}));
  drawCurves();
  // EventSource reconnects by itself and sends Last-Event-ID, so the stream resumes where it stopped.
  source = new EventSource(`/api/runs/${encodeURIComponent(name)}/events`);
  const stop = document.getElementById("train-stop");
  source.addEventListener("start", e => { const d = JSON.parse(e.data); stop.hidden = false; status.textContent = `training, ${d.epochs} epochs${d.resume ? " (resumed)" : ""}`; });
  source.addEventListener("batch", e => {
    const d = JSON.parse(e.data);
    curves.batch.push([d.step, d.loss]);
    stop.hidden = false;
    status.textContent = `epoch ${d.epoch}, step ${d.step}, loss ${fmt(d.loss)}`;
    drawCurves();
  });
  source.addEventListener("epoch", e => {
    const d = JSON.parse(e.data);
    for (const k of ["loss", "accuracy", "val_accuracy"]) if (d[k] !== null && d[k] !== undefined) curves[k].push([d.epoch, d[k]]);
    status.textContent = `epoch ${d.epoch}: loss ${fmt(d.loss)}, accuracy ${fmt(d.accuracy)}` + (d.val_accuracy != null ? `, validation ${fmt(d.val_accuracy)}` : "");
    drawCurves();
    refreshWeights(name);
  });
  source.addEventListener("end", e => {
    const d = JSON.parse(e.data);
    status.textContent = `${d.status}${d.message && d.message !== `training ${d.status}` ? ": " + d.message : ""}`;
    stop.hidden = true;
    source.close(); source = null;
    refreshWeights(name);
    listRuns();
  });
  refreshWeights(name);
}

function drawCurves() {
  document.getElementById("curve-batches").replaceChildren(lineChart([{name: "loss per batch", points: curves.batch, colour: "#555", cls: "batch-point"}], {xlabel: "step", ylabel: "loss"}));
  document.getElementById("curve-epochs").replaceChildren(lineChart([
    {name: "loss", points: curves.loss, colour: "#d0604a", cls: "epoch-point"},
    {name: "accuracy", points: curves.accuracy, colour: "#4a7bd0", cls: "epoch-point-acc"},
    {name: "validation accuracy", points: curves.val_accuracy, colour: "#3a9a5a", cls: "epoch-point-val"}], {xlabel: "epoch", ylabel: "per epoch"}));
}

async function refreshWeights(name) {
  if (name !== watched) return;
  try {
    const f = await getJSON("/api/filters" + query({run: name}));
    const k = unpack(f.kernel);
    const [kh, kw, cin, n] = k.shape;
    const lim = Math.max(Math.abs(k.min), Math.abs(k.max));
    const canvases = [];
    for (let j = 0; j < n; j++) {         // filter j, input channel 0
      const one = {shape: [kh, kw, 1], values: new Float32Array(kh * kw)};
      for (let p = 0; p < kh * kw; p++) one.values[p] = k.values[(p * cin) * n + j];
      const cv = mapCanvas(one, 0, -lim, lim, Math.max(6, Math.floor(48 / Math.max(kh, kw))));
      cv.setAttribute("role", "img");
      cv.setAttribute("aria-label", `filter ${j}, ${kh}×${kw}, input channel 0`);
      canvases.push(el("figure", {class: "filter-tile"}, cv, el("figcaption", {}, `${j}`)));
    }
    document.getElementById("train-filters").replaceChildren(...canvases, legend(-lim, lim, 96));
    added(name, kh, kw, cin, n);
    const p = await postImage("/api/predict" + query({run: name, activations: "base64"}), await currentBlob());
    const first = p.activations.find(a => a.shape.length === 3);
    if (first) {
      const a = unpack(first);
      document.getElementById("train-maps").replaceChildren(...Array.from({length: a.shape[2]}, (_, c) => mapCanvas(a, c, a.min, a.max, Math.max(2, Math.floor(64 / a.shape[0])))));
    }
  } catch (e) { /* the run has no weights yet */ }
}

// What training added to each filter (its kernel minus its first snapshot, from the server), and how much.
async function added(name, kh, kw, cin, n) {
  const box = document.getElementById("train-added");
  try {
    const d = await getJSON("/api/filters/added" + query({run: name}));
    const a = unpack(d.added);
    const lim = Math.max(Math.abs(a.min), Math.abs(a.max), 1e-12);
    const tiles = [];
    for (let j = 0; j < n; j++) {
      const one = {shape: [kh, kw, 1], values: new Float32Array(kh * kw)};
      for (let p = 0; p < kh * kw; p++) one.values[p] = a.values[(p * cin) * n + j];
      const cv = mapCanvas(one, 0, -lim, lim, Math.max(6, Math.floor(48 / Math.max(kh, kw))));
      cv.setAttribute("role", "img");
      cv.setAttribute("aria-label", `what training added to filter ${j}: it moved ${(100 * d.relative_change[j]).toFixed(0)}% of its initial size`);
      tiles.push(el("figure", {class: "filter-tile"}, cv, el("figcaption", {}, `${(100 * d.relative_change[j]).toFixed(0)}%`)));
    }
    box.replaceChildren(el("h3", {}, `what training added since step ${d.initial_step} (kernel minus its start; % = how far each filter moved)`),
      el("div", {class: "kernels"}, ...tiles, legend(-lim, lim, 96)));
  } catch (e) { box.replaceChildren(); }    // no snapshots (a run started elsewhere), or none yet
}
