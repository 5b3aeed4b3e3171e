// The lesson: short steps from one neuron to why convolution works, each computed by the server for the
// served model and the current input (POST /api/lesson/N). Back/Next and the arrow keys move; every
// step has its link (#view=lesson&step=N).
import {getJSON, postImage} from "./api.js";
import {el} from "./draw.js";
import {figure} from "./figures.js";
import {state, withRun, currentBlob} from "./state.js";

const $ = id => document.getElementById(id);
let outline = [], current = 1, shown = 0, onMove = () => {};

export async function initLesson(moved) {
  onMove = moved;
  outline = (await getJSON("/api/lesson")).steps;
  const nav = el("nav", {class: "lesson-nav", "aria-label": "lesson steps"},
    el("button", {id: "lesson-back", onclick: () => go(current - 1)}, "← Back"),
    el("ol", {id: "lesson-steps"}, ...outline.map(s => el("li", {}, el("a", {href: `#view=lesson&step=${s.step}`, "data-step": s.step}, s.title)))),
    el("button", {id: "lesson-next", onclick: () => go(current + 1)}, "Next →"));
  $("lesson").append(nav, el("article", {id: "lesson-step", "aria-live": "polite"}));
  document.addEventListener("keydown", e => {
    if (!$("view-lesson").classList.contains("active") || e.target.closest("input, select, textarea, canvas")) return;
    if (e.key === "ArrowRight") { e.preventDefault(); go(current + 1); }
    if (e.key === "ArrowLeft") { e.preventDefault(); go(current - 1); }
  });
  document.addEventListener("prediction", () => { if ($("view-lesson").classList.contains("active")) show(current); });
}

export function lessonSteps() { return outline.length; }

function go(n) {
  if (n < 1 || n > outline.length) return;
  onMove(n);
  show(n);
}

// Step n for the current input.
export async function show(n) {
  current = Math.min(Math.max(1, n || 1), outline.length || 1);
  const token = ++shown;
  for (const a of document.querySelectorAll("#lesson-steps a")) a.classList.toggle("active", +a.dataset.step === current);
  $("lesson-back").disabled = current === 1;
  $("lesson-next").disabled = current === outline.length;
  const box = $("lesson-step");
  box.setAttribute("aria-busy", "true");
  try {
    const s = await postImage(`/api/lesson/${current}` + withRun(), await currentBlob());
    if (token !== shown) return;
    render(box, s);
  } catch (err) {
    if (token === shown) box.replaceChildren(el("p", {class: "error", role: "alert"}, err.message));
  } finally { box.removeAttribute("aria-busy"); }
}

function render(box, s) {
  const figs = el("div", {class: "lesson-figures"}, ...s.figures.map(f => figure(f)));
  box.replaceChildren(el("h2", {}, `${s.step}. ${s.title}`),
                      el("p", {class: "note"}, `step ${s.step} of ${s.count} · answers ${s.questions.join(", ")}`),
                      ...s.paragraphs.map(p => el("p", {}, p)));
  box.dataset.step = s.step;
  box.dataset.numbers = JSON.stringify(s.numbers || {});
  if (s.predict) {
    const reveal = el("div", {class: "reveal", hidden: ""}, el("p", {}, s.predict.reveal), figs);
    const choices = s.predict.choices.map((c, k) => el("button", {class: "choice", onclick: () => {
      choices.forEach((b, j) => b.classList.toggle(j === s.predict.answer ? "right" : "wrong", j === k || j === s.predict.answer));
      reveal.hidden = false;
    }}, c));
    box.append(el("div", {class: "predict"}, el("p", {class: "question"}, s.predict.question), ...choices), reveal);
  } else box.append(figs);
  if (s.link) box.append(el("p", {}, el("a", {href: "#" + new URLSearchParams(s.link).toString(), class: "more"}, "the detailed view of this step →")));
}
