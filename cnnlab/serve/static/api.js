// Talking to the server: every route answers JSON ({"error": message} on failure).

export class ApiError extends Error {}

async function answer(response) {
  let body;
  try { body = await response.json(); } catch (e) { throw new ApiError(`the server answered ${response.status} without JSON`); }
  if (!response.ok) throw new ApiError(body.error || `error ${response.status}`);
  return body;
}

export async function getJSON(url) {
  return answer(await fetch(url));
}

export async function postJSON(url, obj) {
  return answer(await fetch(url, {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(obj)}));
}

// POST the bytes of an image (a Blob) to a route such as /api/predict.
export async function postImage(url, blob) {
  return answer(await fetch(url, {method: "POST", headers: {"Content-Type": blob.type || "application/octet-stream"}, body: blob}));
}

// A query string from an object, skipping null/undefined values.
export function query(params) {
  const parts = Object.entries(params).filter(([, v]) => v !== null && v !== undefined && v !== "")
    .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`);
  return parts.length ? "?" + parts.join("&") : "";
}

// A packed array ({shape, data}) as {shape, values: Float32Array}; data is base64 float32 or nested lists.
export function unpack(p) {
  let values;
  if (typeof p.data === "string") {
    const bin = atob(p.data);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    values = new Float32Array(bytes.buffer);
  } else {
    values = Float32Array.from(p.data.flat(Infinity));
  }
  return {shape: p.shape, values, min: p.min, max: p.max};
}

// Value at index (i, j, c) of an unpacked (H, W, C) array, or (c) of a flat one.
export function at(a, i, j, c) {
  if (a.shape.length === 1) return a.values[c];
  const [, w, ch] = a.shape;
  return a.values[(i * w + j) * ch + c];
}
