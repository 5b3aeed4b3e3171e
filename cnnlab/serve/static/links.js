// Deep links: the URL's hash names the view, the unit and the example, so a link opens what it names
// and Back/Forward walk the views a learner opened.
//
//   #view=overview&example=test:17
//   #view=unit&layer=conv2d_1&c=3&y=4&x=5&example=test:17
//   #view=why | #view=training
//   #view=lesson&step=N          (the lesson's step N, from 1)
const KEYS = ["view", "layer", "c", "y", "x", "step", "example"];
const INTS = new Set(["c", "y", "x", "step"]);

// The hash as {view, layer, c, y, x, step, example}: integers parsed, unknown keys dropped.
export function parseLink(hash) {
  const out = {};
  for (const [k, v] of new URLSearchParams(hash.replace(/^#/, ""))) {
    if (!KEYS.includes(k)) continue;
    if (INTS.has(k)) { const n = parseInt(v, 10); if (Number.isInteger(n) && n >= 0) out[k] = n; }
    else out[k] = v;
  }
  return out;
}

export function formatLink(link) {
  const parts = KEYS.filter(k => link[k] !== undefined && link[k] !== null && link[k] !== "")
    .map(k => `${k}=${encodeURIComponent(link[k]).replace(/%3A/g, ":")}`);
  return "#" + parts.join("&");
}

// Record a link: a new history entry, or (replace: true, e.g. while a unit plays) the current one.
export function writeLink(link, replace = false) {
  const hash = formatLink(link);
  if (hash === location.hash) return;
  if (replace) history.replaceState(null, "", hash);
  else history.pushState(null, "", hash);
}

// "test:17" -> {source: "test", index: 17}; null when malformed.
export function parseExample(text) {
  const m = /^(shapes|test):(\d+)$/.exec(text || "");
  return m ? {source: m[1], index: parseInt(m[2], 10)} : null;
}
