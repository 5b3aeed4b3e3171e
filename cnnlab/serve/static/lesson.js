// The lesson: short steps from one neuron to why convolution works, each computed by the server for the
// served model and the current input (POST /api/lesson/N). The steps' list is the table of contents;
// Back/Next and the arrow keys move; every step has its link (#view=lesson&step=N), so Back/Forward walk
// the steps. A step that asks a question shows its figures once the learner has answered.
// The companion models (an MLP, a global-average-pooling CNN, ...) train in the server's background:
// their progress is polled from GET /api/lesson while any trains, and the step is shown again when one
// becomes ready.
import {getJSON, postImage} from "./api.js";
import {el} from "./draw.js";
import {figure} from "./figures.js";
import {withRun, currentBlob} from "./state.js";

const $ = id => document.getElementById(id);
const VIEWS = {unit: "the numbers of this unit, step by step (unit details)", overview: "every layer on this input (overview)",
               why: "the Why it works view", training: "the Training view"};
// The learner's four questions (issue 24), named by each step's "questions".
const QUESTIONS = {Q1: "how does the convolution step work?", Q2: "why does it work so well?",
                   Q3: "why does the first layer find edges, and what finds corners?",
                   Q4: "what has it to do with the convolution of probability theory?"};
const COMPANIONS = {mlp: "an MLP of similar size", gap: "a CNN with global average pooling", untrained: "the untrained copy",
                    sharing: "the weight-sharing experiment"};
let outline = [], current = 1, onMove = () => {}, companions = {}, polling = null;
const answered = {};                          // step id -> the choice the learner made (kept while the page lives)

const active = () => $("view-lesson").classList.contains("active");

export async function initLesson(moved) {
  onMove = moved;
  const o = await getJSON("/api/lesson" + withRun());
  outline = o.steps;
  const bar = where => el("div", {class: "lesson-bar"},
    el("button", {id: `lesson-back${where}`, class: "lesson-back", onclick: () => go(current - 1)}, "← Back"),
    el("span", {class: "lesson-where note"}),
    el("button", {id: `lesson-next${where}`, class: "lesson-next", onclick: () => go(current + 1)}, "Next →"));
  const toc = el("nav", {class: "lesson-toc", "aria-label": "the lesson's steps"},
    el("h2", {}, "Steps"),
    el("ol", {id: "lesson-steps"}, ...outline.map(s => el("li", {},
      el("a", {href: `#view=lesson&step=${s.step}`, "data-step": s.step, title: `${s.title} (${s.questions.join(", ")})`},
        el("span", {class: "toc-num"}, s.step), el("span", {class: "toc-title"}, s.title))))),
    el("div", {id: "lesson-companions", "aria-live": "polite"}));
  $("lesson").replaceChildren(el("div", {class: "lesson-layout"}, toc,
    el("div", {class: "lesson-main"}, bar(""), el("article", {id: "lesson-step", tabindex: -1, "aria-live": "polite"}), bar("-bottom"))));
  document.addEventListener("keydown", e => {
    if (!active() || e.defaultPrevented || e.altKey || e.ctrlKey || e.metaKey) return;
    if (e.target.closest("input, select, textarea, canvas, .stepper")) return;
    if (e.key === "ArrowRight") { e.preventDefault(); go(current + 1); }
    if (e.key === "ArrowLeft") { e.preventDefault(); go(current - 1); }
  });
  document.addEventListener("prediction", () => { if (active()) show(current); });
  showCompanions(o.companions);
}

export function lessonSteps() { return outline.length; }

function go(n) {
  if (n < 1 || n > outline.length) return;
  onMove(n);
  show(n);
}

// ---------------------------------------------------------------------------
// The companion models' progress
// ---------------------------------------------------------------------------
function showCompanions(c) {
  const before = companions;
  companions = c || {};
  const names = Object.keys(companions);
  const box = $("lesson-companions");
  box.replaceChildren(...(names.length ? [el("h3", {}, "Models for comparison")] : []), ...names.map(name => {
    const s = companions[name];
    const pct = typeof s.progress === "number" ? Math.round(100 * Math.min(1, Math.max(0, s.progress))) : null;
    return el("div", {class: `companion ${s.status}`, "data-name": name, "data-status": s.status},
      el("span", {class: "companion-name"}, COMPANIONS[name] || name), " ",
      s.status === "training" && pct !== null ? el("progress", {max: 100, value: pct, "aria-label": `${name}: ${pct}% trained`}) : "",
      el("span", {class: "note"}, ` ${s.status === "training" && pct !== null ? `${pct}% · ` : ""}${s.message || s.status}`));
  }));
  const training = names.some(k => companions[k].status === "training");
  if (training && !polling) polling = setInterval(poll, 2000);
  if (!training && polling) { clearInterval(polling); polling = null; }
  // a companion became ready (or gave up): the current step may read it
  const changed = names.some(k => before[k] && before[k].status !== companions[k].status);
  if (changed && active()) show(current);
}

async function poll() {
  try { showCompanions((await getJSON("/api/lesson" + withRun())).companions); } catch (err) { /* the next poll tries again */ }
}

// ---------------------------------------------------------------------------
// One step
// ---------------------------------------------------------------------------
// Step n for the current input. One request at a time: a step or an input asked meanwhile is asked
// once more when it returns (drawing sends many inputs; the server computes only the last).
let asking = false, again = false;
export async function show(n) {
  current = Math.min(Math.max(1, n || 1), outline.length || 1);
  for (const a of document.querySelectorAll("#lesson-steps a")) {
    const here = +a.dataset.step === current;
    a.classList.toggle("active", here);
    if (here) a.setAttribute("aria-current", "step"); else a.removeAttribute("aria-current");
  }
  for (const b of document.querySelectorAll(".lesson-back")) b.disabled = current === 1;
  for (const b of document.querySelectorAll(".lesson-next")) b.disabled = current === outline.length;
  for (const w of document.querySelectorAll(".lesson-where")) w.textContent = `step ${current} of ${outline.length}`;
  if (asking) { again = true; return; }
  asking = true;
  const box = $("lesson-step");
  box.setAttribute("aria-busy", "true");
  try {
    do {
      again = false;
      const asked = current;
      try {
        const s = await postImage(`/api/lesson/${asked}` + withRun(), await currentBlob());
        if (!again) render(box, s);
      } catch (err) {
        if (!again) {
          box.replaceChildren(el("h2", {id: "lesson-heading", tabindex: -1}, outline[asked - 1] ? `${asked}. ${outline[asked - 1].title}` : `step ${asked}`),
                              el("p", {class: "error", role: "alert"}, err.message));
          box.dataset.step = asked;
        }
      }
    } while (again);
  } finally {
    asking = false;
    box.removeAttribute("aria-busy");
  }
  if (document.activeElement?.disabled) $("lesson-heading")?.focus({preventScroll: true});   // Next at the end: keep the keys' place
}

function render(box, s) {
  for (const e of box.querySelectorAll(".fig-stepper, .fig-slide")) e.stop?.();     // no timer outlives its figure
  const figs = el("div", {class: "lesson-figures"}, ...(s.figures || []).map(f => figure(f)));
  box.replaceChildren(el("h2", {id: "lesson-heading", tabindex: -1}, `${s.step}. ${s.title}`),
                      el("p", {class: "note lesson-questions"}, s.questions.map(q => `${q}: ${QUESTIONS[q] || ""}`).join(" · ")),
                      ...(s.paragraphs || []).map(p => el("p", {class: s.applies === false ? "not-applicable" : ""}, p)));
  Object.assign(box.dataset, {step: s.step, id: s.id, applies: s.applies !== false, numbers: JSON.stringify(s.numbers || {})});
  if (s.predict && s.applies !== false) box.append(...predict(s, figs));
  else box.append(figs);
  if (s.link && s.link.view) {
    const href = "#" + new URLSearchParams(Object.entries(s.link).filter(([, v]) => v !== null && v !== undefined)).toString();
    box.append(el("p", {class: "lesson-link"}, el("a", {href, class: "more"}, `More: ${VIEWS[s.link.view] || s.link.view} →`)));
  }
}

// Predict before the reveal: the figures stay hidden until the learner picks an answer.
function predict(s, figs) {
  const q = s.predict;
  const reveal = el("div", {class: "reveal", hidden: ""}, el("p", {class: "reveal-text"}), q.reveal ? el("p", {}, q.reveal) : "", figs);
  const choices = q.choices.map((c, k) => el("button", {class: "choice", "data-choice": k, onclick: () => pick(k)}, c));
  function pick(k) {
    answered[s.id] = k;
    choices.forEach((b, j) => {
      b.classList.toggle("right", j === q.answer);
      b.classList.toggle("wrong", j === k && j !== q.answer);
      b.setAttribute("aria-pressed", j === k);
    });
    reveal.querySelector(".reveal-text").textContent = k === q.answer ? "Right." : `Not quite: the answer is “${q.choices[q.answer]}”.`;
    reveal.hidden = false;
  }
  const box = el("div", {class: "predict", role: "group", "aria-label": "predict before you look"},
    el("p", {class: "question"}, el("b", {}, "Predict first: "), q.question), el("div", {class: "choices"}, ...choices));
  if (answered[s.id] !== undefined && answered[s.id] < choices.length) pick(answered[s.id]);
  return [box, reveal];
}
