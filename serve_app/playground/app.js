// The playground: a form over the public API, nothing else.
//
// Every URL is relative to the page (new URL(path, document.baseURI)), so the page
// works under any route prefix. The API key, when the server asks for one (a 401),
// stays in sessionStorage for this tab. Streams are POSTs, which EventSource cannot
// send: fetch + a ReadableStream reader parse the server-sent events instead.

const $ = (id) => document.getElementById(id);
const KEY_STORAGE = "imagegen.apiKey";
const FREE_SIZE = "custom";
// Error params -> the field that shows the message (param roots without [i] or .x).
const PARAM_FIELDS = {
  num_inference_steps: "steps",
  guidance_scale: "guidance",
  "image[]": "image",
  image_loras: "loras",
  sampler_name: "sampler",
  api_key: "api_key",
};

const state = { models: new Map(), controller: null, editFile: null, painted: false };

// ---- HTTP ------------------------------------------------------------------

function authHeaders(extra = {}) {
  const key = sessionStorage.getItem(KEY_STORAGE);
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

async function apiFetch(path, init = {}) {
  const response = await fetch(new URL(path, document.baseURI), {
    ...init,
    headers: authHeaders(init.headers),
  });
  if (response.status === 401) {
    const err = await readError(response.clone());
    askForKey(sessionStorage.getItem(KEY_STORAGE) ? err.message : "");
  }
  return response;
}

async function readError(response) {
  try {
    const body = await response.json();
    if (body && body.error) return body.error;
    return { message: body.detail || `HTTP ${response.status}` };
  } catch {
    return { message: `The server answered HTTP ${response.status}.` };
  }
}

// ---- Errors and status -----------------------------------------------------

function setStatus(text) {
  $("status").textContent = text;
}

function clearErrors() {
  for (const slot of document.querySelectorAll(".field-error")) slot.textContent = "";
  for (const input of document.querySelectorAll("[aria-invalid]")) {
    input.removeAttribute("aria-invalid");
  }
}

function showError(err) {
  const message = err.message || "The request failed.";
  const root = String(err.param || "").split(/[[.]/)[0];
  const field = PARAM_FIELDS[root] || root;
  const slot = field ? $(`err-${field}`) : null;
  if (slot && !slot.closest("[hidden]")) {
    slot.textContent = message;
    const input = $(field);
    if (input) {
      input.setAttribute("aria-invalid", "true");
      input.setAttribute("aria-describedby", slot.id);
    }
  } else {
    $("form-error").textContent = err.param ? `${err.param}: ${message}` : message;
  }
  setStatus("The server refused the request; see the message in the form.");
}

// ---- API key ---------------------------------------------------------------

function askForKey(message) {
  $("key-section").hidden = false;
  $("err-api_key").textContent = message || "";
  setStatus("This server needs an API key.");
  $("api_key").focus();
}

async function saveKey() {
  const key = $("api_key").value.trim();
  if (!key) {
    $("err-api_key").textContent = "Enter a key first.";
    return;
  }
  sessionStorage.setItem(KEY_STORAGE, key);
  if (await loadModels()) {
    $("key-section").hidden = true;
    await loadLoras();
  }
}

// ---- Models, sizes, samplers, LoRAs ---------------------------------------

async function loadModels() {
  const response = await apiFetch("v1/models");
  if (response.status === 401) return false;
  if (!response.ok) {
    showError(await readError(response));
    return false;
  }
  const cards = (await response.json()).data;
  const select = $("model");
  select.replaceChildren();
  state.models.clear();
  const models = document.createElement("optgroup");
  models.label = "Models";
  const aliases = document.createElement("optgroup");
  aliases.label = "Aliases";
  for (const card of cards) {
    state.models.set(card.id, card);
    const option = new Option(card.root ? `${card.id} → ${card.root}` : card.id, card.id);
    (card.root ? aliases : models).append(option);
  }
  for (const card of cards.filter((c) => !c.root)) {
    const names = cards.filter((c) => c.root === card.id).map((c) => c.id);
    if (names.length) {
      const option = [...models.children].find((o) => o.value === card.id);
      option.textContent = `${card.id} (also: ${names.join(", ")})`;
    }
  }
  select.append(models);
  if (aliases.children.length) select.append(aliases);
  applyModel();
  setStatus(`Ready: ${models.children.length} model(s), ${aliases.children.length} alias(es).`);
  return true;
}

function applyModel() {
  const card = state.models.get($("model").value);
  const caps = card && card.capabilities;
  if (!caps) return;
  const steps = $("steps");
  steps.value = caps.default_steps;
  steps.max = caps.max_steps;
  steps.title = `1 to ${caps.max_steps}`;
  $("guidance").value = caps.default_guidance;
  $("n").max = caps.max_images;
  const size = $("size");
  const previous = size.value;
  size.replaceChildren(
    ...caps.sizes.map((s) => new Option(s === "auto" ? "auto (1024x1024)" : s, s)),
    new Option("width × height…", FREE_SIZE),
  );
  size.value = caps.sizes.includes(previous) || previous === FREE_SIZE ? previous : "1024x1024";
  for (const id of ["width", "height"]) {
    $(id).max = caps.free_size.max_side;
    $(id).step = caps.free_size.multiple;
  }
  const sampler = $("sampler");
  sampler.replaceChildren(
    new Option("model default", ""),
    ...caps.samplers.map((name) => new Option(name, name)),
  );
  $("sampler-field").hidden = caps.samplers.length === 0;
  applySize();
}

function applySize() {
  const free = $("size").value === FREE_SIZE;
  $("free-size").hidden = !free;
  // A free size on generations goes in the Together dialect, which has no sampler.
  const noSampler = free && mode() === "generate";
  $("sampler").disabled = noSampler;
  $("sampler-note").hidden = !noSampler;
}

async function loadLoras() {
  // The LoRA listing is optional: ask the open OpenAPI document whether it exists
  // instead of probing it, so a server without it logs no 404 in the console.
  const doc = await fetch(new URL("openapi.json", document.baseURI));
  if (!doc.ok || !(await doc.json()).paths["/v1/loras"]) return;
  const response = await apiFetch("v1/loras");
  if (!response.ok) return;
  const body = await response.json();
  const items = Array.isArray(body) ? body : body.data || [];
  const select = $("lora");
  select.replaceChildren(new Option("none", ""));
  const names = new Set(items.map((item) => item.name || item.id).filter(Boolean));
  for (const name of names) select.append(new Option(name, name));
  $("lora-section").hidden = items.length === 0;
}

// ---- Edit image and mask ---------------------------------------------------

function setEditFile(file) {
  if (!file) return;
  state.editFile = file;
  const url = URL.createObjectURL(file);
  const preview = $("edit-preview");
  preview.addEventListener(
    "load",
    () => {
      const canvas = $("mask-canvas");
      canvas.width = preview.naturalWidth;
      canvas.height = preview.naturalHeight;
      clearMask();
      $("mask-area").hidden = false;
    },
    { once: true },
  );
  preview.src = url;
}

function clearMask() {
  const canvas = $("mask-canvas");
  canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
  state.painted = false;
}

function setupMaskPainting() {
  const canvas = $("mask-canvas");
  const ctx = canvas.getContext("2d");
  let last = null;
  const point = (event) => {
    const box = canvas.getBoundingClientRect();
    return {
      x: ((event.clientX - box.left) / box.width) * canvas.width,
      y: ((event.clientY - box.top) / box.height) * canvas.height,
    };
  };
  const paint = (event) => {
    if (!last) return;
    const next = point(event);
    const scale = canvas.width / canvas.getBoundingClientRect().width;
    ctx.strokeStyle = "#ff2d55";
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.lineWidth = Number($("brush").value) * scale;
    ctx.beginPath();
    ctx.moveTo(last.x, last.y);
    ctx.lineTo(next.x + 0.01, next.y);
    ctx.stroke();
    last = next;
    state.painted = true;
  };
  canvas.addEventListener("pointerdown", (event) => {
    canvas.setPointerCapture(event.pointerId);
    last = point(event);
    paint(event);
  });
  canvas.addEventListener("pointermove", paint);
  for (const name of ["pointerup", "pointercancel"]) {
    canvas.addEventListener(name, () => {
      last = null;
    });
  }
}

// OpenAI's mask: opaque where the image stays, transparent (alpha 0) where it changes.
function maskBlob() {
  const painted = $("mask-canvas");
  const mask = document.createElement("canvas");
  mask.width = painted.width;
  mask.height = painted.height;
  const ctx = mask.getContext("2d");
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, mask.width, mask.height);
  ctx.globalCompositeOperation = "destination-out";
  ctx.drawImage(painted, 0, 0);
  return new Promise((resolve) => mask.toBlob(resolve, "image/png"));
}

function setupDrop() {
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    const file = event.dataTransfer.files[0];
    if (file) setEditFile(file);
  });
  $("image").addEventListener("change", () => setEditFile($("image").files[0]));
}

// ---- Requests --------------------------------------------------------------

function mode() {
  return document.querySelector("input[name=mode]:checked").value;
}

function number(id) {
  const text = $(id).value.trim();
  return text === "" ? undefined : Number(text);
}

function common() {
  const body = {
    model: $("model").value,
    prompt: $("prompt").value,
    n: number("n") ?? 1,
    output_format: $("output_format").value,
    priority: $("priority").value,
  };
  const negative = $("negative_prompt").value.trim();
  if (negative) body.negative_prompt = negative;
  if (!$("random-seed").checked) body.seed = number("seed");
  const lora = $("lora-section").hidden ? "" : $("lora").value;
  return { body, lora };
}

// -> { path, init, n, size }
async function buildRequest() {
  const { body, lora } = common();
  const steps = number("steps");
  const guidance = number("guidance");
  const free = $("size").value === FREE_SIZE;
  const size = free ? `${$("width").value}x${$("height").value}` : $("size").value;
  const sampler = $("sampler").value;
  const loraScale = number("lora_scale") ?? 1;
  if (mode() === "edit") {
    if (!state.editFile) throw { param: "image", message: "Choose or drop an image to edit." };
    const form = new FormData();
    form.append("image", state.editFile, state.editFile.name || "image.png");
    if (state.painted) form.append("mask", await maskBlob(), "mask.png");
    const fields = { ...body, size, stream: "true", partial_images: number("partial_images") };
    if (steps !== undefined) fields.num_inference_steps = steps;
    if (guidance !== undefined) fields.guidance_scale = guidance;
    if (sampler) fields.sampler = sampler;
    for (const [name, value] of Object.entries(fields)) {
      if (value !== undefined) form.append(name, String(value));
    }
    return { path: "v1/images/edits", init: { body: form }, n: body.n, size };
  }
  if (free) {
    // OpenAI's generations take only its listed sizes; a free width x height goes in
    // the Together dialect on the same route, which answers in one piece (no previews).
    const together = { ...body, width: number("width"), height: number("height") };
    together.response_format = "base64";
    if (steps !== undefined) together.steps = steps;
    if (guidance !== undefined) together.guidance_scale = guidance;
    if (lora) together.image_loras = [{ path: lora, scale: loraScale }];
    return { ...jsonRequest(together), size };
  }
  const openai = { ...body, size, stream: true, partial_images: number("partial_images") };
  if (steps !== undefined) openai.num_inference_steps = steps;
  if (guidance !== undefined) openai.guidance_scale = guidance;
  if (sampler) openai.sampler = sampler;
  if (lora) openai.loras = [{ name: lora, scale: loraScale }];
  return { ...jsonRequest(openai), size };
}

function jsonRequest(body) {
  return {
    path: "v1/images/generations",
    init: { body: JSON.stringify(body), headers: { "Content-Type": "application/json" } },
    n: body.n,
  };
}

// Server-sent events from a fetch body: yields { event, data } per frame.
async function* sseEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    buffer = buffer.replace(/\r\n/g, "\n");
    let cut = buffer.indexOf("\n\n");
    while (cut >= 0) {
      const frame = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let event = "message";
      const data = [];
      for (const line of frame.split("\n")) {
        if (line === "" || line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let text = colon < 0 ? "" : line.slice(colon + 1);
        if (text.startsWith(" ")) text = text.slice(1);
        if (field === "event") event = text;
        else if (field === "data") data.push(text);
      }
      if (data.length) yield { event, data: data.join("\n") };
      cut = buffer.indexOf("\n\n");
    }
  }
}

// ---- Results ---------------------------------------------------------------

function makeCard(index, n, ratio) {
  const figure = document.createElement("figure");
  figure.className = "card";
  figure.dataset.state = "waiting";
  const frame = document.createElement("div");
  frame.className = "frame";
  if (ratio) frame.style.aspectRatio = String(ratio); // CSSOM, allowed by the CSP
  const img = document.createElement("img");
  img.alt = `Image ${index + 1} of ${n}`;
  img.dataset.partials = "0";
  frame.append(img);
  const caption = document.createElement("figcaption");
  const info = document.createElement("span");
  info.className = "info";
  info.textContent = "waiting…";
  const reuse = document.createElement("button");
  reuse.type = "button";
  reuse.className = "reuse";
  reuse.textContent = "Reuse seed";
  reuse.hidden = true;
  const download = document.createElement("a");
  download.className = "download";
  download.textContent = "Download";
  download.hidden = true;
  caption.append(info, reuse, download);
  figure.append(frame, caption);
  return { figure, img, info, reuse, download };
}

function showPartial(card, b64, format, index) {
  card.img.src = `data:image/${format};base64,${b64}`;
  card.img.dataset.partials = String(Number(card.img.dataset.partials) + 1);
  card.figure.dataset.state = "preview";
  card.info.textContent = `preview ${index + 1}…`;
}

// The step scheduler's view of one image: its class and how long it was paused.
function schedulingText(priority, pausedMs) {
  if (!priority) return "";
  const paused = pausedMs ? ` · paused ${(pausedMs / 1000).toFixed(1)} s` : "";
  return `${priority}${paused}`;
}

function finish(card, b64, format, seed, started, scheduling = "") {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const url = URL.createObjectURL(new Blob([bytes], { type: `image/${format}` }));
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  card.img.src = url;
  card.figure.dataset.state = "done";
  card.figure.dataset.seed = seed ?? "";
  card.info.textContent = "";
  const seedText = document.createElement("span");
  seedText.className = "seed";
  seedText.textContent = `seed ${seed ?? "?"}`;
  const time = document.createElement("span");
  time.className = "time";
  time.textContent = `${seconds} s`;
  card.info.append(seedText, " · ", time);
  if (scheduling) {
    const sched = document.createElement("span");
    sched.className = "scheduling";
    sched.textContent = scheduling;
    card.info.append(" · ", sched);
  }
  if (seed !== undefined && seed !== null) {
    card.reuse.hidden = false;
    card.reuse.addEventListener("click", () => {
      $("random-seed").checked = false;
      $("seed").disabled = false;
      $("seed").value = seed;
      $("seed").focus();
    });
  }
  card.download.href = url;
  card.download.download = `imagegen-${seed ?? "image"}.${format === "jpeg" ? "jpg" : format}`;
  card.download.hidden = false;
}

async function readStream(response, cards, started) {
  for await (const { event, data } of sseEvents(response)) {
    const payload = JSON.parse(data);
    if (event === "error" || payload.type === "error") {
      showError(payload.error || payload);
      return;
    }
    const card = cards[payload.image_index ?? 0];
    if (!card) continue;
    if (payload.type.endsWith(".partial_image")) {
      showPartial(card, payload.b64_json, payload.output_format, payload.partial_image_index);
    } else if (payload.type.endsWith(".completed")) {
      const scheduling = schedulingText(payload.priority, payload.paused_ms);
      finish(card, payload.b64_json, payload.output_format, payload.seed, started, scheduling);
    }
  }
}

async function readWhole(response, cards, started, format) {
  const body = await response.json();
  const seeds = (response.headers.get("x-imagegen-seeds") || "").split(",").filter(Boolean);
  body.data.forEach((item, i) => {
    const seed = item.seed ?? (seeds[i] === undefined ? undefined : Number(seeds[i]));
    const scheduling = schedulingText(
      response.headers.get("x-imagegen-priority"),
      Number(response.headers.get("x-imagegen-paused-ms") || 0),
    );
    if (cards[i]) finish(cards[i], item.b64_json, format, seed, started, scheduling);
  });
}

function setBusy(busy) {
  $("generate").disabled = busy;
  $("cancel").disabled = !busy;
  document.body.classList.toggle("busy", busy);
}

async function submit(event) {
  event.preventDefault();
  if (state.controller) return;
  clearErrors();
  let request;
  try {
    request = await buildRequest();
  } catch (err) {
    showError(err);
    return;
  }
  const n = Math.max(1, Math.min(Number(request.n) || 1, 10));
  const run = document.createElement("section");
  run.className = "run";
  const title = document.createElement("h2");
  title.textContent = `${$("prompt").value.trim() || "(no prompt)"} · ${request.size}`;
  const [w, h] = String(request.size).split("x").map(Number);
  const ratio = w && h ? w / h : 1;
  const cards = Array.from({ length: n }, (_, i) => makeCard(i, n, ratio));
  const grid = document.createElement("div");
  grid.className = "run-grid";
  grid.append(...cards.map((c) => c.figure));
  run.append(title, grid);
  $("results").prepend(run);
  state.controller = new AbortController();
  setBusy(true);
  setStatus("Generating…");
  const started = performance.now();
  try {
    const response = await apiFetch(request.path, {
      method: "POST",
      ...request.init,
      signal: state.controller.signal,
    });
    if (!response.ok) {
      run.remove();
      if (response.status !== 401) showError(await readError(response));
      return;
    }
    const type = response.headers.get("content-type") || "";
    if (type.startsWith("text/event-stream")) await readStream(response, cards, started);
    else await readWhole(response, cards, started, $("output_format").value);
    const done = cards.filter((c) => c.figure.dataset.state === "done").length;
    if (done === n) setStatus(`Done: ${n} image(s) in ${((performance.now() - started) / 1000).toFixed(1)} s.`);
  } catch (err) {
    if (err.name === "AbortError") {
      setStatus("Cancelled.");
      for (const card of cards) {
        if (card.figure.dataset.state !== "done") {
          card.figure.dataset.state = "cancelled";
          card.info.textContent = "cancelled";
        }
      }
    } else {
      showError({ message: `The request failed: ${err.message || err}` });
    }
  } finally {
    state.controller = null;
    setBusy(false);
  }
}

// ---- Wiring ----------------------------------------------------------------

function setup() {
  $("form").addEventListener("submit", submit);
  $("cancel").addEventListener("click", () => state.controller && state.controller.abort());
  $("model").addEventListener("change", applyModel);
  $("size").addEventListener("change", applySize);
  $("save-key").addEventListener("click", saveKey);
  $("api_key").addEventListener("keydown", (event) => {
    if (event.key === "Enter") {
      event.preventDefault();
      saveKey();
    }
  });
  $("random-seed").addEventListener("change", () => {
    $("seed").disabled = $("random-seed").checked;
  });
  for (const radio of document.querySelectorAll("input[name=mode]")) {
    radio.addEventListener("change", () => {
      const edit = mode() === "edit";
      $("edit-section").hidden = !edit;
      $("generate").textContent = edit ? "Edit" : "Generate";
      applySize();
    });
  }
  $("clear-mask").addEventListener("click", clearMask);
  setupDrop();
  setupMaskPainting();
}

setup();
loadModels()
  .then((ok) => (ok ? loadLoras() : undefined))
  .catch((err) => setStatus(`Could not reach the server: ${err.message || err}`));
