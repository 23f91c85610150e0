// vaekit explorer: the page's behaviour. Everything it shows comes from the JSON API (see /docs).
"use strict";

const $ = (id) => document.getElementById(id);
const SHOWN_DIMS = 12;
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                 "#bcbd22", "#17becf"];
const state = { info: null, z: [], map: null, ends: { a: null, b: null }, itemCache: new Map() };

async function api(path, body) {
  const options = body === undefined ? {} : body instanceof FormData ? { method: "POST", body } :
    { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  let response, data;
  try {
    response = await fetch(path, options);
    data = await response.json();
  } catch (e) {  // the server is gone, or answered something that is not JSON
    const message = response ? `${path}: HTTP ${response.status}` : `${path}: no answer from the explorer`;
    showError(message);
    throw new Error(message);
  }
  if (!response.ok) {
    showError(data.error || `${path}: HTTP ${response.status}`);
    throw new Error(data.error);
  }
  return data;
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
  clearTimeout(showError.timer);
  showError.timer = setTimeout(() => { box.hidden = true; }, 6000);
}

// A decoded item: a picture, a table row in the user's units, or numbers.
function show(container, result, title) {
  container.replaceChildren(render(result, title));
}

function render(result, title) {
  if (result.image) {
    const img = document.createElement("img");
    img.src = result.image;
    img.alt = title || "decoded";
    return img;
  }
  const table = document.createElement("table");
  const entries = result.row ? Object.entries(result.row) : result.values.map((v, i) => [`x${i}`, v]);
  for (const [name, value] of entries.slice(0, 40)) {
    const tr = table.insertRow();
    tr.insertCell().textContent = name;
    tr.insertCell().textContent = typeof value === "number" ? value.toPrecision(4) : value;
  }
  return table;
}

// Keeps one request of a kind in flight and sends only the latest of those asked for meanwhile, so a dragged
// slider shows the newest code as fast as the server answers without queueing hundreds of stale ones.
function latest(fn) {
  let running = false, pending = null;
  return async function run(...args) {
    if (running) { pending = args; return; }
    running = true;
    try { await fn(...args); } catch (e) { /* shown by api() */ }
    running = false;
    if (pending) { const next = pending; pending = null; run(...next); }
  };
}

// The label a label-conditioned model decodes with: the one chosen on the page. An item given by index is encoded
// and decoded with its own label by the server, so requests naming items leave it out (labelFor).
function labelValue() {
  return state.info.conditioned ? $("label").value : null;
}

function labelFor(end) {
  return end && end.item !== undefined ? null : labelValue();
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
  $("decoded").dataset.version = String(Number($("decoded").dataset.version || 0) + 1);
});

function buildSliders(all) {
  const box = $("sliders");
  box.replaceChildren();
  const dims = all ? state.info.dimensions : state.info.dimensions.slice(0, SHOWN_DIMS);
  for (const d of dims) {
    const label = document.createElement("label");
    const name = document.createElement("span");
    name.textContent = `z${d.index}`;
    name.title = `mean KL (or code variance) ${d.score.toPrecision(3)}`;
    const input = document.createElement("input");
    Object.assign(input, { type: "range", min: d.low, max: d.high, step: (d.high - d.low) / 200 });
    input.dataset.dim = d.index;
    input.value = state.z[d.index];
    const out = document.createElement("output");
    out.textContent = Number(input.value).toFixed(2);
    input.addEventListener("input", () => {
      state.z[d.index] = Number(input.value);
      out.textContent = Number(input.value).toFixed(2);
      decodeNow();
    });
    label.append(name, input, out);
    box.append(label);
  }
  $("more-dims").hidden = all || state.info.dimensions.length <= SHOWN_DIMS;
}

function setCode(z) {
  state.z = z.slice();
  for (const input of $("sliders").querySelectorAll("input")) {
    input.value = state.z[input.dataset.dim];
    input.nextSibling.textContent = Number(input.value).toFixed(2);
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
  if (!state.itemCache.has(i)) state.itemCache.set(i, api(`/api/item/${i}`));
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
  c.addEventListener("click", async (event) => {
    const [x, y] = pointer(event);
    drawMap([x, y]);
    const point = fromCanvas(x, y), current = ticket("map");
    const result = await api("/api/map/decode", { point, label: labelValue() });
    if (!current()) return;
    c.dataset.point = JSON.stringify(point);
    show($("map-decoded"), result, "decoded map point");
    setCode(result.z);
  });
  c.addEventListener("mousemove", async (event) => {
    const [x, y] = pointer(event);
    const i = nearest(x, y);
    if (i < 0) { tip.hidden = true; tip.dataset.item = ""; return; }
    tip.dataset.item = i;
    const item = await itemView(i);
    if (String(i) !== tip.dataset.item) return;  // the pointer moved on meanwhile
    const caption = document.createElement("div");
    caption.textContent = `item ${i}` + (item.label !== null ? ` (${item.label})` : "");
    tip.replaceChildren(render(item, `item ${i}`), caption);
    tip.style.left = `${x + 12}px`;
    tip.style.top = `${y + 12}px`;
    tip.hidden = false;
  });
  c.addEventListener("mouseleave", () => { tip.hidden = true; tip.dataset.item = ""; });
}

// ---- interpolation ----------------------------------------------------------------------------------------
async function setEnd(which) {
  const item = Number($(`item-${which}`).value), current = ticket(`end-${which}`);
  const result = await api("/api/encode", { item });
  if (!current()) return;
  state.ends[which] = { item };
  show($(`view-${which}`), result.item_view, `item ${which.toUpperCase()}`);
  if (which === "a") show($("attr-original"), result.item_view, "item A");
}

async function uploadEnd(which, file) {
  const form = new FormData();
  form.append("file", file);
  const label = labelValue(), current = ticket(`end-${which}`);
  const result = await api("/api/encode-image" + (label !== null ? `?label=${encodeURIComponent(label)}` : ""), form);
  if (!current()) return;
  state.ends[which] = { z: result.z };
  show($(`view-${which}`), result.reconstruction, `picture ${which.toUpperCase()}`);
  if (which === "a") show($("attr-original"), result.reconstruction, "item A");
}

const interpolateNow = latest(async () => {
  if (!state.ends.a || !state.ends.b) return;
  const t = $("interp-t").value;
  const result = await api("/api/interpolate", { a: state.ends.a, b: state.ends.b, t: Number(t),
                                                  method: $("interp-method").value, label: labelFor(state.ends.a) });
  show($("interp-image"), result, "interpolated");
  $("interp-image").dataset.t = t;  // the t this picture shows (a newer one may already be asked for)
});

async function interpolateStrip() {
  if (!state.ends.a || !state.ends.b) return;
  const current = ticket("strip");
  const result = await api("/api/interpolate", { a: state.ends.a, b: state.ends.b, steps: 8,
                                                  method: $("interp-method").value, label: labelFor(state.ends.a) });
  if (!current()) return;
  const strip = $("interp-strip");
  strip.replaceChildren(...result.frames.map((f, k) => {
    const el = render(f, `step ${k}`);
    el.addEventListener("click", () => setCode(result.z[k]));
    return el;
  }));
}

// ---- attributes -------------------------------------------------------------------------------------------
const attributeNow = latest(async () => {
  const attribute = $("attr").value;
  if (!attribute || !state.ends.a) return;
  const strength = Number($("attr-strength").value);
  const result = await api("/api/attribute", { ...state.ends.a, attribute, strength, method: $("attr-method").value,
                                                label: labelFor(state.ends.a) });
  show($("attr-image"), result, "edited");
  $("attr-image").dataset.strength = String(strength);
  showScore(result.score, attribute, $("attr-method").value);
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
    showScore.timer = setTimeout(async () => {
      if ($("attr").value !== attribute || $("attr-method").value !== method) return;
      const next = await api(`/api/score?attribute=${encodeURIComponent(attribute)}&method=${method}`);
      showScore(next, attribute, method);
    }, 1500);
  } else {
    box.textContent = `no score: ${score.reason || score.status}`;
    box.dataset.status = score.status;
  }
}

// ---- prior samples ----------------------------------------------------------------------------------------
async function drawSamples() {
  const result = await api("/api/sample", { n: 16, label: labelValue() });
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

async function start() {
  const info = state.info = await api("/api/info");
  if (info.slider_range === "codes") {  // an AE or VQ-VAE: no prior of its own to range the sliders by
    $("slider-hint").textContent = "Each slider is one latent dimension, the most used first; the range is the " +
      "served codes' mean \u00b1 3 standard deviations (this model has no prior of its own to range them by).";
    $("centre").textContent = "codes' mean";
  }
  $("about").textContent = `${info.run || "a run"}: ${info.family} on ${info.data}, a code of ${info.code_size} ` +
    `number${info.code_size === 1 ? "" : "s"}; items from the ${info.split} split (${info.items}).`;
  for (const id of ["from-item", "item-a", "item-b"]) $(id).max = info.items - 1;
  if (info.kind !== "image") for (const el of document.querySelectorAll(".upload")) el.hidden = true;
  if (info.conditioned) {
    $("label-box").hidden = false;
    info.labels.forEach((name) => option($("label"), name));
    $("label").addEventListener("change", () => { decodeNow(); interpolateNow(); interpolateStrip(); attributeNow(); });
  }
  state.z = info.dimensions.slice().sort((a, b) => a.index - b.index).map((d) => d.mean);
  buildSliders(false);
  decodeNow();
  $("more-dims").addEventListener("click", () => buildSliders(true));
  $("centre").addEventListener("click", () => setCode(info.dimensions.slice().sort((a, b) => a.index - b.index).map((d) => d.mean)));
  $("draw-one").addEventListener("click", async () => {
    const result = await api("/api/sample", { n: 1, label: labelValue() });
    if (result.z) setCode(result.z[0]); else show($("decoded"), result.samples[0]);
  });
  $("load-item").addEventListener("click", async () => {
    const result = await api("/api/encode", { item: Number($("from-item").value) });
    setCode(result.z);
  });

  info.colourings.forEach((name) => option($("colour"), name));
  if (!info.colourings.length) option($("colour"), "", "nothing");
  $("colour").addEventListener("change", loadMap);
  mapEvents();
  await loadMap();

  for (const which of ["a", "b"]) {
    $(`item-${which}`).addEventListener("change", async () => { await setEnd(which); interpolateNow(); interpolateStrip(); attributeNow(); });
    $(`upload-${which}`).addEventListener("change", async (event) => {
      if (!event.target.files.length) return;
      const file = event.target.files[0];
      event.target.value = "";  // so that choosing the same file again is a change too
      await uploadEnd(which, file);
      interpolateNow(); interpolateStrip(); attributeNow();
    });
    await setEnd(which);
  }
  $("interp-t").addEventListener("input", interpolateNow);
  $("interp-method").addEventListener("change", () => { interpolateNow(); interpolateStrip(); });
  interpolateNow();
  interpolateStrip();

  if (info.attributes.length) {
    info.attributes.forEach((name) => option($("attr"), name));
  } else {
    option($("attr"), "", "none (no attributes or labels)");
  }
  info.edit_methods.forEach((name) => option($("attr-method"), name));
  $("attr-method").value = info.edit_method;  // the run's own (config edits.method)
  for (const id of ["attr", "attr-method"]) $(id).addEventListener("change", attributeNow);
  $("attr-strength").addEventListener("input", () => {
    $("attr-strength-value").textContent = Number($("attr-strength").value).toFixed(1);
    attributeNow();
  });
  attributeNow();
  $("sample").addEventListener("click", drawSamples);
  document.body.dataset.ready = "true";
}

start();
