// vaekit explorer: the page's behaviour. Everything it shows comes from the JSON API (see /docs).
"use strict";

const $ = (id) => document.getElementById(id);
const SHOWN_DIMS = 12;
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                 "#bcbd22", "#17becf"];
const TABLE_TIP_ROWS = 6;  // a table row's columns a map tooltip shows (the rest: "... more")
const state = { info: null, z: [], map: null, ends: { a: null, b: null }, itemCache: new Map(), dims: new Map(),
                vectors: new Set(), fromItem: "0" };

// An error the page has shown already (api() shows every refused request): handlers let it end quietly.
class Shown extends Error {}

// Requests in flight; a note shows while any has waited longer than BUSY_MS (a slow decode, a vector computed).
const BUSY_MS = 300;
let inFlight = 0, busyTimer = null;
function busy(delta) {
  inFlight += delta;
  if (inFlight > 0 && busyTimer === null) {
    busyTimer = setTimeout(() => { $("busy").hidden = false; }, BUSY_MS);
  } else if (inFlight === 0) {
    clearTimeout(busyTimer);
    busyTimer = null;
    $("busy").hidden = true;
  }
}

async function api(path, body) {
  const options = body === undefined ? {} : body instanceof FormData ? { method: "POST", body } :
    { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  let response, data;
  busy(+1);
  try {
    response = await fetch(path, options);
  } catch (e) {  // the server is gone
    throw fail(`${path}: no answer from the explorer (was it stopped?)`);
  } finally {
    busy(-1);
  }
  checkModel(response);
  try {
    data = await response.json();
  } catch (e) {  // an answer that is not JSON
    throw fail(`${path}: HTTP ${response.status}`);
  }
  if (!response.ok) throw fail(data.error || `${path}: HTTP ${response.status}`);
  return data;
}

function fail(message) {
  showError(message);
  return new Shown(message);
}

// Every answer names the model served (x-vaekit-model); another than the page was built for means that the server
// was restarted on another run: the page's sliders, map and items no longer fit it.
function checkModel(response) {
  const served = response.headers.get("x-vaekit-model");
  if (!state.info || !served || served === state.info.identity || !$("stale").hidden) return;
  $("stale-text").textContent = "The explorer now serves another model than this page was loaded for: " +
    "reload the page to explore it.";
  $("stale").hidden = false;
  fetch("/api/info").then((r) => r.json()).then((info) => {
    $("stale-text").textContent = `The explorer now serves ${info.run || "another run"} (${info.family} on ` +
      `${info.data}, a code of ${info.code_size}), not the model this page was loaded for: reload the page.`;
  }).catch(() => {});
}

function showError(message) {
  $("error-text").textContent = message;
  $("error").hidden = false;
  clearTimeout(showError.timer);
  showError.timer = setTimeout(() => { $("error").hidden = true; }, 10000);
}

// An event handler that ends quietly after an error the page has shown, and shows any other: no uncaught promise
// rejections.
function handler(fn) {
  return (...args) => Promise.resolve().then(() => fn(...args)).catch((e) => {
    if (!(e instanceof Shown)) showError(String(e && e.message || e));
  });
}

// An item number typed into `field`: a whole number (the server checks that it exists), else an error shown and
// the field back at `current`, the value in use.
function itemNumber(field, what, current) {
  const text = field.value.trim();
  if (!/^[0-9]+$/.test(text)) {
    field.value = current;
    throw fail(`${what}: give an item number, a whole number from 0 to ${state.info.items - 1}` +
               (text ? `, not ${text}` : ""));
  }
  return Number(text);
}

// A decoded item: a picture, a table row in the user's units, or numbers.
function show(container, result, title) {
  container.replaceChildren(render(result, title));
}

// The label a picture was decoded with (label-conditioned models), under it in the element `${id}-label`.
function noteLabel(id, result) {
  const note = $(`${id}-label`);
  if (!note) return;
  note.textContent = result.decoded_with != null ? `decoded with label ${result.decoded_with}` : "";
  note.dataset.label = result.decoded_with != null ? result.decoded_with : "";
}

function entries(result) {
  return result.row ? Object.entries(result.row) : result.values.map((v, i) => [`x${i}`, v]);
}

// A table cell: whole numbers as they are (a column of whole numbers comes back in them), others to 4 significant
// digits, large ones without an exponent.
function cellText(value) {
  if (typeof value !== "number") return String(value);
  if (Number.isInteger(value)) return String(value);
  return Math.abs(value) >= 1e4 && Math.abs(value) < 1e15 ? value.toFixed(0) : value.toPrecision(4);
}

function render(result, title, rows = 40) {
  if (result.image) {
    const img = document.createElement("img");
    img.src = result.image;
    img.alt = title || "decoded";
    return img;
  }
  const table = document.createElement("table");
  const all = entries(result);
  for (const [name, value] of all.slice(0, rows)) {
    const tr = table.insertRow();
    tr.insertCell().textContent = name;
    tr.insertCell().textContent = cellText(value);
  }
  if (all.length > rows) {
    const cell = table.insertRow().insertCell();
    cell.colSpan = 2;
    cell.className = "more";
    cell.textContent = `\u2026 ${all.length - rows} more column${all.length - rows === 1 ? "" : "s"}`;
  }
  return table;
}

// Table models: decoded rows side by side, one column per step (headers: `heads`), each column a click target.
function stepsTable(results, heads, onClick) {
  const table = document.createElement("table");
  table.className = "steps";
  const head = table.createTHead().insertRow();
  head.append(document.createElement("th"));
  heads.forEach((text, k) => {
    const th = document.createElement("th");
    th.textContent = text;
    if (onClick) {
      th.title = "click to load this code into the sliders";
      th.addEventListener("click", () => onClick(k));
    }
    head.append(th);
  });
  const columns = results.map(entries);
  const body = table.createTBody();
  columns[0].forEach(([name], r) => {
    const tr = body.insertRow();
    tr.insertCell().textContent = name;
    for (const column of columns) tr.insertCell().textContent = cellText(column[r][1]);
  });
  return table;
}

// A table model's edit beside the reconstruction it starts from, the changed values marked.
function diffTable(reconstruction, edited) {
  const table = stepsTable([reconstruction, edited], ["reconstruction", "edited"]);
  table.classList.add("diff");
  const before = entries(reconstruction), after = entries(edited);
  table.tBodies[0].querySelectorAll("tr").forEach((tr, r) => {
    const [a, b] = [before[r][1], after[r][1]];
    const changed = typeof a === "number" ? Math.abs(a - b) > 1e-3 * Math.max(1, Math.abs(a)) : a !== b;
    if (changed) tr.cells[2].classList.add("changed");
  });
  return table;
}

// Keeps one request of a kind in flight and sends only the latest of those asked for meanwhile, so a dragged
// slider shows the newest code as fast as the server answers without queueing hundreds of stale ones.
function latest(fn) {
  let running = false, pending = null;
  return async function run(...args) {
    if (running) { pending = args; return; }
    running = true;
    try { await fn(...args); } catch (e) { if (!(e instanceof Shown)) showError(String(e && e.message || e)); }
    running = false;
    if (pending) { const next = pending; pending = null; run(...next); }
  };
}

// The label a label-conditioned model decodes with: the one chosen on the page, for every picture it decodes (an
// item is encoded with its own label; loading one sets the picker to it: adoptLabel).
function labelValue() {
  return state.info.conditioned ? $("label").value : null;
}

function adoptLabel(name) {
  if (!state.info.conditioned || name == null || $("label").value === name) return;
  $("label").value = name;
  labelChanged();
}

// Every picture of a label-conditioned model is decoded with the page's label: a new one redraws them all.
function labelChanged() {
  decodeNow(); interpolateNow(); interpolateStrip(); attributeNow();
}

// A counter per kind of request, so that an answer overtaken by a newer request of its kind is dropped.
const counters = {};
function ticket(kind) {
  counters[kind] = (counters[kind] || 0) + 1;
  const mine = counters[kind];
  return () => counters[kind] === mine;
}

// ---- decode panel -----------------------------------------------------------------------------------------
const decodeNow = latest(async () => {
  const result = await api("/api/decode", { z: state.z, label: labelValue() });
  show($("decoded"), result);
  noteLabel("decoded", result);
  $("decoded").dataset.version = String(Number($("decoded").dataset.version || 0) + 1);
});

// Where a number of a code laid out as a grid (channels x rows x columns, a VQ-VAE's) sits in it, for its name.
function gridPlace(index) {
  const shape = state.info.code_shape;
  if (!shape || shape.length < 2) return "";
  const place = [];
  for (let axis = shape.length - 1, rest = index; axis >= 0; axis--) {
    place.unshift(rest % shape[axis]);
    rest = Math.floor(rest / shape[axis]);
  }
  const names = shape.length === 3 ? ["channel", "row", "column"] : shape.map((_, i) => `axis ${i}`);
  return `${names.map((n, i) => `${n} ${place[i]}`).join(", ")} of the ${shape.join("×")} code; `;
}

function buildSliders(all) {
  const box = $("sliders");
  box.replaceChildren();
  const dims = all ? state.info.dimensions : state.info.dimensions.slice(0, SHOWN_DIMS);
  for (const d of dims) {
    const label = document.createElement("label");
    const name = document.createElement("span");
    name.textContent = `z${d.index}`;
    name.title = `${gridPlace(d.index)}mean KL (or code variance) ${d.score.toPrecision(3)}`;
    const input = document.createElement("input");
    Object.assign(input, { type: "range", min: d.low, max: d.high, step: (d.high - d.low) / 200 });
    input.dataset.dim = d.index;
    input.value = state.z[d.index];
    const out = document.createElement("output");
    readout(out, d, state.z[d.index]);
    input.addEventListener("input", () => {
      state.z[d.index] = Number(input.value);
      readout(out, d, state.z[d.index]);
      decodeNow();
    });
    label.append(name, input, out);
    box.append(label);
  }
  $("more-dims").hidden = all || state.info.dimensions.length <= SHOWN_DIMS;
}

function fmt(v) {
  return Math.abs(v) >= 1000 ? v.toPrecision(6) : v.toFixed(3);
}

// A slider's readout: the code's own value (not the slider's, which stops at its ends and moves in steps), marked
// where it lies outside the slider's range.
function readout(out, d, v) {
  const below = v < d.low, above = v > d.high;
  out.textContent = (below ? "\u25c2" : "") + fmt(v) + (above ? "\u25b8" : "");
  out.dataset.value = String(v);
  out.classList.toggle("outside", below || above);
  out.title = below || above ? `${fmt(v)} lies outside the slider's range ${fmt(d.low)} .. ${fmt(d.high)}` : "";
}

function setCode(z) {
  state.z = z.slice();
  for (const input of $("sliders").querySelectorAll("input")) {
    const index = Number(input.dataset.dim);
    input.value = state.z[index];
    readout(input.nextSibling, state.dims.get(index), state.z[index]);
  }
  decodeNow();
}

// ---- latent map -------------------------------------------------------------------------------------------
function colourOf(i) {
  const map = state.map;
  if (!map.values) return "#1f77b4";
  const v = map.values[i];
  if (map.names) return PALETTE[v % PALETTE.length];
  const t = (v - map.low) / ((map.high - map.low) || 1);  // a continuous attribute: blue (low) to red (high)
  return `rgb(${Math.round(40 + 200 * t)},60,${Math.round(240 - 200 * t)})`;
}

function toCanvas(p) {
  const c = $("map"), b = state.map.bounds;
  return [(p[0] - b.x0) / (b.x1 - b.x0) * (c.width - 20) + 10, c.height - 10 - (p[1] - b.y0) / (b.y1 - b.y0) * (c.height - 20)];
}

function fromCanvas(x, y) {
  const c = $("map"), b = state.map.bounds;
  return [b.x0 + (x - 10) / (c.width - 20) * (b.x1 - b.x0), b.y0 + (c.height - 10 - y) / (c.height - 20) * (b.y1 - b.y0)];
}

async function loadMap() {
  const colour = $("colour").value || undefined;
  const map = await api("/api/map" + (colour ? `?colour=${encodeURIComponent(colour)}` : ""));
  const range = (values) => values.reduce(([lo, hi], v) => [Math.min(lo, v), Math.max(hi, v)], [Infinity, -Infinity]);
  const [xl, xh] = range(map.points.map((p) => p[0])), [yl, yh] = range(map.points.map((p) => p[1]));
  // one scale for both axes, so distances on the plane look like distances between codes
  const half = Math.max(xh - xl, yh - yl, 1e-6) * 0.55, xm = (xl + xh) / 2, ym = (yl + yh) / 2;
  map.bounds = { x0: xm - half, x1: xm + half, y0: ym - half, y1: ym + half };
  if (map.values && !map.names) [map.low, map.high] = range(map.values);
  state.map = map;
  drawMap();
  $("map-about").textContent = map.projection === "latent" ? "The codes themselves (a 2-D latent)." :
    `The codes' two leading principal components (${(100 * map.explained_variance[0]).toFixed(0)}% and ` +
    `${(100 * map.explained_variance[1]).toFixed(0)}% of their variance); a click decodes the point on that plane.`;
  const legend = $("legend");
  legend.replaceChildren();
  if (map.names) {
    map.names.forEach((name, k) => {
      const span = document.createElement("span");
      const swatch = document.createElement("i");
      swatch.style.background = PALETTE[k % PALETTE.length];
      span.append(swatch, name);
      legend.append(span);
    });
  } else if (map.values) {
    legend.textContent = `${map.colour}: blue ${map.low.toPrecision(3)} to red ${map.high.toPrecision(3)}`;
  }
}

function drawMap(marker) {
  const c = $("map"), ctx = c.getContext("2d");
  ctx.clearRect(0, 0, c.width, c.height);
  state.map.points.forEach((p, i) => {
    const [x, y] = toCanvas(p);
    ctx.fillStyle = colourOf(i);
    ctx.globalAlpha = 0.7;
    ctx.fillRect(x - 1.5, y - 1.5, 3, 3);
  });
  ctx.globalAlpha = 1;
  if (marker) {
    ctx.strokeStyle = "#000";
    ctx.lineWidth = 2;
    ctx.beginPath();
    ctx.arc(marker[0], marker[1], 6, 0, 2 * Math.PI);
    ctx.stroke();
  }
}

function nearest(x, y) {
  let best = -1, bestD = 64;  // within 8 pixels
  state.map.points.forEach((p, i) => {
    const [px, py] = toCanvas(p);
    const d = (px - x) ** 2 + (py - y) ** 2;
    if (d < bestD) { best = i; bestD = d; }
  });
  return best;
}

async function itemView(i) {
  if (!state.itemCache.has(i)) {
    const asked = api(`/api/item/${i}`);
    state.itemCache.set(i, asked);
    asked.catch(() => state.itemCache.delete(i));  // a failed look-up is asked again next time
  }
  return state.itemCache.get(i);
}

// The pointer in the canvas's own pixels: inside its border, scaled if CSS resized it.
function pointer(event) {
  const c = $("map"), rect = c.getBoundingClientRect();
  return [(event.clientX - rect.left - c.clientLeft) * c.width / c.clientWidth,
          (event.clientY - rect.top - c.clientTop) * c.height / c.clientHeight];
}

function mapEvents() {
  const c = $("map"), tip = $("tip");
  c.addEventListener("click", handler(async (event) => {
    const [x, y] = pointer(event);
    drawMap([x, y]);
    const point = fromCanvas(x, y), current = ticket("map");
    const result = await api("/api/map/decode", { point, label: labelValue() });
    if (!current()) return;
    c.dataset.point = JSON.stringify(point);
    show($("map-decoded"), result, "decoded map point");
    noteLabel("map-decoded", result);
    setCode(result.z);
  }));
  c.addEventListener("mousemove", handler(async (event) => {
    const [x, y] = pointer(event);
    const i = nearest(x, y);
    if (i < 0) { tip.hidden = true; tip.dataset.item = ""; return; }
    tip.dataset.item = i;
    let item;
    try {
      item = await itemView(i);
    } catch (e) {  // no picture of item i: no tooltip, rather than another item's
      if (String(i) === tip.dataset.item) { tip.hidden = true; tip.dataset.item = ""; }
      throw e;
    }
    if (String(i) !== tip.dataset.item) return;  // the pointer moved on meanwhile
    const caption = document.createElement("div");
    caption.textContent = `item ${i}` + (item.label !== null ? ` (${item.label})` : "");
    tip.replaceChildren(render(item, `item ${i}`, TABLE_TIP_ROWS), caption);
    tip.style.left = `${x + 12}px`;
    tip.style.top = `${y + 12}px`;
    tip.hidden = false;
  }));
  c.addEventListener("mouseleave", () => { tip.hidden = true; tip.dataset.item = ""; });
}

// ---- interpolation ----------------------------------------------------------------------------------------
// The value an end's item field shows: its item, or nothing where the end is an uploaded picture.
function endField(which) {
  const end = state.ends[which];
  return end && end.item !== undefined ? String(end.item) : "";
}

function figure(result, caption) {
  const box = document.createElement("figure");
  const text = document.createElement("figcaption");
  text.textContent = caption;
  box.append(render(result, caption), text);
  return box;
}

// An item of the split at end `which` (its number from the field). adopt: set the label picker to its label.
async function setEnd(which, adopt = true) {
  const field = $(`item-${which}`), name = `item ${which.toUpperCase()}`;
  const item = itemNumber(field, name, endField(which)), current = ticket(`end-${which}`);
  let result;
  try {
    result = await api("/api/encode", { item });
  } catch (e) {
    if (current()) field.value = endField(which);  // refused: back to the end in use
    throw e;
  }
  if (!current()) return;
  state.ends[which] = { item };
  field.value = String(item);
  $(`source-${which}`).textContent = "";
  show($(`view-${which}`), result.item_view, name);
  if (adopt) adoptLabel(result.label);
}

async function uploadEnd(which, file) {
  const form = new FormData();
  form.append("file", file);
  const label = labelValue(), current = ticket(`end-${which}`);
  const result = await api("/api/encode-image" + (label !== null ? `?label=${encodeURIComponent(label)}` : ""), form);
  if (!current()) return;
  state.ends[which] = { z: result.z };
  $(`item-${which}`).value = "";
  $(`source-${which}`).textContent = `${which.toUpperCase()}: the picture ${file.name}` +
    (result.note ? ` (note: ${result.note})` : "");
  // the picture as the model read it (grey or RGB, cropped, resized) beside the model's reconstruction of it
  $(`view-${which}`).replaceChildren(figure(result.item_view, "as read"),
                                     figure(result.reconstruction, "reconstructed"));
}

const interpolateNow = latest(async () => {
  if (!state.ends.a || !state.ends.b) return;
  const t = $("interp-t").value;
  const result = await api("/api/interpolate", { a: state.ends.a, b: state.ends.b, t: Number(t),
                                                  method: $("interp-method").value, label: labelValue() });
  show($("interp-image"), result, "interpolated");
  noteLabel("interp-image", result);
  $("interp-image").dataset.t = t;  // the t this picture shows (a newer one may already be asked for)
});

// Wrapped by handler: called without waiting from many places, it reports its own errors.
const interpolateStrip = handler(async () => {
  if (!state.ends.a || !state.ends.b) return;
  const current = ticket("strip");
  const result = await api("/api/interpolate", { a: state.ends.a, b: state.ends.b, steps: 8,
                                                  method: $("interp-method").value, label: labelValue() });
  if (!current()) return;
  const strip = $("interp-strip");
  noteLabel("interp-strip", result);
  if (state.info.kind !== "image") {  // one table, a column per step
    const last = result.frames.length - 1;
    const heads = result.frames.map((f, k) => (k === 0 ? "A" : k === last ? "B" : `step ${k}`));
    strip.replaceChildren(stepsTable(result.frames, heads, (k) => setCode(result.z[k])));
    return;
  }
  strip.replaceChildren(...result.frames.map((f, k) => {
    const el = render(f, `step ${k}`);
    el.addEventListener("click", () => setCode(result.z[k]));
    return el;
  }));
});

// ---- attributes -------------------------------------------------------------------------------------------
const attributeNow = latest(async () => {
  const attribute = $("attr").value, method = $("attr-method").value;
  if (!attribute || !state.ends.a) return;
  const strength = Number($("attr-strength").value), key = `${attribute}\n${method}`;
  if (!state.vectors.has(key)) {  // its first use encodes the training split: seconds on a large one
    const box = $("attr-score");
    box.textContent = `computing the ${attribute} attribute vector (${method}) from the training items' codes ` +
      "(once per attribute)\u2026";
    box.dataset.status = "vector";
  }
  const { item, z } = state.ends.a;
  const result = await api("/api/attribute", { item, z, attribute, strength, method, label: labelValue() });
  state.vectors.add(key);
  if (state.info.kind === "image") {
    show($("attr-image"), result, "edited");
    show($("attr-original"), result.reconstruction, "item A, reconstructed");
  } else {  // a table: the edit against the reconstruction, the changed columns marked
    $("attr-image").replaceChildren(diffTable(result.reconstruction, result));
  }
  noteLabel("attr-image", result);
  $("attr-image").dataset.strength = String(strength);
  showScore(result.score, attribute, method);
});

function showScore(score, attribute, method) {
  const box = $("attr-score");
  if (score.status === "ready") {
    box.textContent = score.summary;
    box.dataset.status = "ready";
  } else if (score.status === "computing") {
    box.textContent = `measuring the ${attribute} edit on the test items (an independent judge reads every edited ` +
      "item; this runs once per attribute)...";
    box.dataset.status = "computing";
    clearTimeout(showScore.timer);
    showScore.timer = setTimeout(handler(async () => {
      if ($("attr").value !== attribute || $("attr-method").value !== method) return;
      const next = await api(`/api/score?attribute=${encodeURIComponent(attribute)}&method=${method}`);
      showScore(next, attribute, method);
    }), 1500);
  } else {
    box.textContent = `no score: ${score.reason || score.status}`;
    box.dataset.status = score.status;
  }
}

// ---- prior samples ----------------------------------------------------------------------------------------
async function drawSamples() {
  const result = await api("/api/sample", { n: 16, label: labelValue() });
  noteLabel("samples", result);
  $("samples").replaceChildren(...result.samples.map((s, k) => {
    const el = render(s, `sample ${k}`);
    if (result.z) el.addEventListener("click", () => setCode(result.z[k]));
    return el;
  }));
}

// ---- start ------------------------------------------------------------------------------------------------
function option(select, value, text) {
  const o = document.createElement("option");
  o.value = value;
  o.textContent = text === undefined ? value : text;
  select.append(o);
}

const SLIDER_HINTS = {
  prior: "Each slider is one latent dimension, the most used first (mean KL to the prior); the range is the prior's " +
    "mean \u00b1 3 standard deviations.",
  nominal: "Each slider is one latent dimension, the most used first (the codes' variance); the range is the served " +
    "codes' mean \u00b1 3 standard deviations: an autoencoder has no prior of its own to range them by.",
  learned: "Each slider is one latent dimension, the most used first (the codes' variance); the range is the served " +
    "codes' mean \u00b1 3 standard deviations (this model's learned prior is over its codebook's entries, not over " +
    "these numbers).",
  untrained: "Each slider is one latent dimension, the most used first (the codes' variance); the range is the " +
    "served codes' mean \u00b1 3 standard deviations.",
};
const PRIOR_HINTS = {
  nominal: "An autoencoder has no prior: these are draws from N(0, I), which is not where its codes lie (compare " +
    "the sliders' ranges), so expect pictures unlike its items.",
  learned: "Draws from the model's learned prior over its codes.",
  untrained: "This model's prior over its codes is not trained, so it cannot be sampled: train it with " +
    "vaekit train-prior RUN.",
};

async function start() {
  const info = state.info = await api("/api/info");
  $("slider-hint").textContent = SLIDER_HINTS[info.prior] || SLIDER_HINTS.prior;
  $("prior-hint").textContent = PRIOR_HINTS[info.prior] || "";
  if (info.slider_range === "codes") $("centre").textContent = "codes' mean";
  if (info.prior === "nominal") {
    $("draw-one").textContent = "random N(0, I) draw";
    $("draw-one").title = PRIOR_HINTS.nominal;
    $("sample").textContent = "draw 16 from N(0, I)";
  }
  $("about").textContent = `${info.run || "a run"}: ${info.family} on ${info.data}, a code of ${info.code_size} ` +
    `number${info.code_size === 1 ? "" : "s"}; items from the ${info.split} split (${info.items}).`;
  for (const id of ["from-item", "item-a", "item-b"]) $(id).max = info.items - 1;
  if (info.kind !== "image") for (const el of document.querySelectorAll(".upload")) el.hidden = true;
  if (info.kind === "table") $("attr-original-box").hidden = true;  // the edit's table has the reconstruction
  for (const d of info.dimensions) state.dims.set(d.index, d);
  $("error-close").addEventListener("click", () => { $("error").hidden = true; });
  $("reload").addEventListener("click", () => location.reload());
  if (info.conditioned) {
    $("label-box").hidden = false;
    const untrained = new Set(info.untrained_labels);  // classes the run had no training items of
    info.labels.forEach((name) => option($("label"), name, untrained.has(name) ? `${name} (no training items)` : name));
    $("label").addEventListener("change", labelChanged);
  }
  state.z = info.dimensions.slice().sort((a, b) => a.index - b.index).map((d) => d.mean);
  buildSliders(false);
  decodeNow();
  $("more-dims").addEventListener("click", () => buildSliders(true));
  // "prior mean": the mean of the prior of the page's label where the prior takes it, else of the prior
  $("centre").addEventListener("click", () => setCode(info.label_centres && labelValue() in info.label_centres
    ? info.label_centres[labelValue()].slice()
    : info.dimensions.slice().sort((a, b) => a.index - b.index).map((d) => d.mean)));
  $("draw-one").addEventListener("click", handler(async () => {
    const result = await api("/api/sample", { n: 1, label: labelValue() });
    if (result.z) setCode(result.z[0]); else { show($("decoded"), result.samples[0]); noteLabel("decoded", result); }
  }));
  $("load-item").addEventListener("click", handler(async () => {
    const field = $("from-item");
    const item = itemNumber(field, "from item", state.fromItem);
    let result;
    try {
      result = await api("/api/encode", { item });
    } catch (e) {
      field.value = state.fromItem;  // refused: back to the item last loaded
      throw e;
    }
    state.fromItem = String(item);
    adoptLabel(result.label);  // the item's code means that item with its own label
    setCode(result.z);
  }));

  info.colourings.forEach((name) => option($("colour"), name));
  if (!info.colourings.length) option($("colour"), "", "nothing");
  $("colour").addEventListener("change", handler(loadMap));
  mapEvents();
  await loadMap();

  for (const which of ["a", "b"]) {
    $(`item-${which}`).addEventListener("change", handler(async () => {
      await setEnd(which);
      interpolateNow(); interpolateStrip(); attributeNow();
    }));
    $(`upload-${which}`).addEventListener("change", handler(async (event) => {
      if (!event.target.files.length) return;
      const file = event.target.files[0];
      event.target.value = "";  // so that choosing the same file again is a change too
      await uploadEnd(which, file);
      interpolateNow(); interpolateStrip(); attributeNow();
    }));
    await setEnd(which, which === "a");  // at first the picker takes item A's label
  }
  $("interp-t").addEventListener("input", interpolateNow);
  $("interp-method").addEventListener("change", () => { interpolateNow(); interpolateStrip(); });
  interpolateNow();
  interpolateStrip();

  if (info.attributes.length) {
    info.attributes.forEach((name) => option($("attr"), name));
  } else {
    option($("attr"), "", info.conditioned ? "none (the classes are this model's condition: choose the label above)"
                                           : "none (no attributes or labels)");
    $("attr-score").textContent = "no attribute to edit";
  }
  info.edit_methods.forEach((name) => option($("attr-method"), name));
  $("attr-method").value = info.edit_method;  // the run's own (config edits.method)
  for (const id of ["attr", "attr-method"]) $(id).addEventListener("change", attributeNow);
  $("attr-strength").addEventListener("input", () => {
    $("attr-strength-value").textContent = Number($("attr-strength").value).toFixed(1);
    attributeNow();
  });
  attributeNow();
  $("sample").addEventListener("click", handler(drawSamples));
  document.body.dataset.ready = "true";
}

handler(start)();
