// The dashboard's only way to the server: the authenticated /v1 API with the key the user
// signed in with, kept in sessionStorage (gone when the browser session ends).

const KEY = "tuneforge.apiKey";

export const getKey = () => sessionStorage.getItem(KEY);
export const setKey = (key) => sessionStorage.setItem(KEY, key);
export const clearKey = () => sessionStorage.removeItem(KEY);

export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code;
    this.param = error.param;
  }
}

const listeners = new Set();
// Called with no argument when the server refuses the key (401): the app signs out.
export const onUnauthorized = (fn) => listeners.add(fn);

function headers(extra = {}) {
  return { Authorization: `Bearer ${getKey()}`, ...extra };
}

async function check(response) {
  if (response.ok) return response;
  let body = null;
  try { body = await response.json(); } catch { /* not JSON */ }
  if (response.status === 401) listeners.forEach((fn) => fn());
  throw new ApiError(response.status, body);
}

export async function api(method, path, body, { signal } = {}) {
  const init = { method, headers: headers(), signal };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await check(await fetch(`/v1${path}`, init));
  return response.json();
}

export const get = (path, opts) => api("GET", path, undefined, opts);
export const post = (path, body, opts) => api("POST", path, body ?? {}, opts);
export const del = (path, opts) => api("DELETE", path, undefined, opts);

// Checks a key without keeping it.
export async function tryKey(key) {
  const response = await fetch("/v1/models", { headers: { Authorization: `Bearer ${key}` } });
  if (!response.ok) {
    let body = null;
    try { body = await response.json(); } catch { /* not JSON */ }
    throw new ApiError(response.status, body);
  }
}

// POST /v1/files with XHR: fetch cannot report upload progress. `onProgress(loaded, total)`.
export function uploadFile(file, purpose, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/v1/files");
    xhr.setRequestHeader("Authorization", `Bearer ${getKey()}`);
    xhr.upload.onprogress = (e) => onProgress(e.loaded, e.lengthComputable ? e.total : file.size);
    xhr.onload = () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
      if (xhr.status >= 200 && xhr.status < 300) resolve(body);
      else {
        if (xhr.status === 401) listeners.forEach((fn) => fn());
        reject(new ApiError(xhr.status, body));
      }
    };
    xhr.onerror = () => reject(new ApiError(0, { error: { message: "The upload failed (network error)." } }));
    const form = new FormData();
    form.append("purpose", purpose);
    form.append("file", file, file.name);
    xhr.send(form);
  });
}

// Every page of a list endpoint that pages with `after` (newest first).
export async function listAll(path, limit = 100, max = 100000) {
  const items = [];
  let after = null;
  for (;;) {
    const sep = path.includes("?") ? "&" : "?";
    const page = await get(`${path}${sep}limit=${limit}${after ? `&after=${encodeURIComponent(after)}` : ""}`);
    items.push(...page.data);
    if (!page.has_more || !page.data.length || items.length >= max) return items;
    after = page.data[page.data.length - 1].id;
  }
}

// Reads a text/event-stream body: calls onMessage({event, id, data}) per message.
async function readSse(response, onMessage) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const message = { event: "message", id: null, data: [] };
      for (const line of block.split("\n")) {
        if (!line || line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const val = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "data") message.data.push(val);
        else if (field === "event") message.event = val;
        else if (field === "id") message.id = val;
      }
      if (message.data.length || message.event !== "message") {
        onMessage({ ...message, data: message.data.join("\n") });
      }
    }
  }
}

// A job's live events. Uses Server-Sent Events (`…/events?stream=true`, read with fetch so
// the Authorization header goes along, resumed with Last-Event-ID) when the server offers
// them, else polls `…/events` every second. onJob(job) and onEvents([events]) are called as
// updates arrive; returns a function that stops following.
export function followJob(jobId, { onJob, onEvents, onMode }) {
  const controller = new AbortController();
  const base = `/fine_tuning/jobs/${encodeURIComponent(jobId)}`; // under /v1
  const seen = new Set();
  let lastId = null;
  let stopped = false;
  let streamed = false; // a stream ever delivered a message
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const fresh = (events) => events.filter((e) => !seen.has(e.id) && seen.add(e.id));

  async function stream() {
    const h = headers({ Accept: "text/event-stream" });
    if (lastId) h["Last-Event-ID"] = lastId;
    const response = await check(await fetch(`/v1${base}/events?stream=true`, { headers: h, signal: controller.signal }));
    if (!(response.headers.get("content-type") || "").startsWith("text/event-stream")) {
      return "unsupported";
    }
    onMode && onMode("stream");
    let ended = false;
    await readSse(response, (m) => {
      streamed = true;
      if (m.event === "job") onJob(JSON.parse(m.data));
      else if (m.event === "end") ended = true;
      else if (m.event === "message") {
        const event = JSON.parse(m.data);
        lastId = m.id || event.id;
        const added = fresh([event]);
        if (added.length) onEvents(added);
      }
    });
    return ended ? "ended" : "dropped";
  }

  async function poll() {
    onMode && onMode("poll");
    // History first (every page), then the newest page every second.
    onEvents(fresh((await listAll(`${base}/events`, 1000)).reverse()));
    while (!stopped) {
      const [job, page] = await Promise.all([get(base), get(`${base}/events?limit=100`)]);
      onJob(job);
      const added = fresh(page.data.slice().reverse());
      if (added.length) onEvents(added);
      if (["succeeded", "failed", "cancelled"].includes(job.status)) {
        await sleep(5000); // an ended job changes rarely (a deleted checkpoint, a late event)
      } else {
        await sleep(1000);
      }
    }
  }

  (async () => {
    let failures = 0;
    while (!stopped) {
      try {
        const result = await stream();
        if (result === "unsupported") return await poll();
        if (result === "ended") return;
        failures = 0;
      } catch (error) {
        if (stopped || error.name === "AbortError") return;
        if (error instanceof ApiError && error.status !== 0 && error.status < 500) return;
        failures += 1;
        // A stream that never got through (a proxy that buffers or drops it): poll instead.
        if (failures >= 2 && !streamed) return await poll();
      }
      await sleep(Math.min(500 * 2 ** failures, 10000));
    }
  })().catch(() => {});

  return () => { stopped = true; controller.abort(); };
}

// POST /v1/chat/completions with stream=true: calls onDelta(text) per chunk.
export async function streamChat(model, messages, { maxTokens, temperature, signal, onDelta }) {
  const response = await check(await fetch("/v1/chat/completions", {
    method: "POST",
    headers: headers({ "Content-Type": "application/json", Accept: "text/event-stream" }),
    body: JSON.stringify({ model, messages, stream: true, max_tokens: maxTokens, temperature }),
    signal,
  }));
  await readSse(response, (m) => {
    if (m.data === "[DONE]") return;
    const chunk = JSON.parse(m.data);
    if (chunk.error) throw new ApiError(500, chunk);
    const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
    if (delta && delta.content) onDelta(delta.content);
  });
}
