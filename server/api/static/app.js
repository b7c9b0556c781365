// The TuneForge dashboard: Preact + htm, no build step. Pages are hash routes:
// #/files, #/jobs, #/jobs/<id>, #/models, #/playground?job=<id>.
import { h, render } from "preact";
import { useCallback, useEffect, useMemo, useRef, useState } from "preact/hooks";
import htm from "htm";
import * as API from "./api.js";
import { Chart } from "./chart.js";

const html = htm.bind(h);
const TERMINAL = ["succeeded", "failed", "cancelled"];
const STATUSES = ["validating_files", "queued", "running", "paused", "succeeded", "failed", "cancelled"];

// ---- small helpers -----------------------------------------------------------------------

const when = (ts) => (ts ? new Date(ts * 1000).toLocaleString() : "—");
const size = (n) => (n < 1024 ? `${n} B` : n < 1024 ** 2 ? `${(n / 1024).toFixed(1)} KiB`
  : `${(n / 1024 ** 2).toFixed(1)} MiB`);
const Status = ({ value }) => html`<span class=${`status ${value}`}>${value}</span>`;

function useRoute() {
  const [hash, setHash] = useState(location.hash || "#/jobs");
  useEffect(() => {
    const on = () => setHash(location.hash || "#/jobs");
    window.addEventListener("hashchange", on);
    return () => window.removeEventListener("hashchange", on);
  }, []);
  const [path, query] = hash.slice(1).split("?");
  return { parts: path.split("/").filter(Boolean).map(decodeURIComponent), query: new URLSearchParams(query || "") };
}

// Loads `load()` now and whenever `deps` change; `reload()` loads again.
function useLoad(load, deps) {
  const [state, setState] = useState({ data: null, error: null, loading: true });
  const run = useCallback(() => {
    let live = true;
    load().then((data) => live && setState({ data, error: null, loading: false }),
      (error) => live && setState((s) => ({ ...s, error, loading: false })));
    return () => { live = false; };
  }, deps);
  useEffect(run, [run]);
  return { ...state, reload: run };
}

const ErrorNote = ({ error }) => (error ? html`<div class="notice" role="alert">${error.message}</div>` : null);

// ---- sign in -----------------------------------------------------------------------------

function SignIn({ onSignedIn }) {
  const [key, setKey] = useState("");
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await API.tryKey(key.trim());
      API.setKey(key.trim());
      onSignedIn();
    } catch (err) {
      setError(err.status === 401 ? new Error("That API key was not accepted.") : err);
    } finally {
      setBusy(false);
    }
  };
  return html`<div class="card signin">
    <h1>Sign in to TuneForge</h1>
    <p class="muted">Paste an API key (<span class="mono">tf-…</span>). It is kept in this browser tab's
      session storage only and sent to this server's API with each request.</p>
    <${ErrorNote} error=${error} />
    <form onSubmit=${submit}>
      <label>API key<input id="api-key" type="password" autocomplete="off" value=${key}
        onInput=${(e) => setKey(e.target.value)} /></label>
      <p><button id="sign-in" class="primary" disabled=${busy || !key.trim()}>Sign in</button></p>
    </form>
  </div>`;
}

// ---- files -------------------------------------------------------------------------------

function Report({ file }) {
  const report = file.report || file.data_report;
  if (!report && !file.status_details) return null;
  return html`<details class="report"><summary>${report ? "Data report" : "Details"}</summary>
    ${file.status_details ? html`<p>${file.status_details}</p>` : null}
    ${report ? html`<pre class="mono">${JSON.stringify(report, null, 2)}</pre>` : null}
  </details>`;
}

function Upload({ onUploaded }) {
  const [file, setFile] = useState(null);
  const [purpose, setPurpose] = useState("fine-tune");
  const [progress, setProgress] = useState(null);
  const [error, setError] = useState(null);
  const [lastPercent, setLastPercent] = useState(null); // the last progress seen (tests read it)
  const input = useRef(null);
  const submit = async (e) => {
    e.preventDefault();
    setError(null);
    setProgress({ loaded: 0, total: file.size });
    try {
      const created = await API.uploadFile(file, purpose, (loaded, total) => {
        setProgress({ loaded, total });
        setLastPercent(Math.round((100 * loaded) / (total || 1)));
      });
      setFile(null);
      input.current.value = "";
      onUploaded(created);
    } catch (err) {
      setError(err);
    } finally {
      setProgress(null);
    }
  };
  return html`<form class="card" id="upload-form" data-progress=${lastPercent ?? ""} onSubmit=${submit}>
    <h2>Upload a file</h2>
    <${ErrorNote} error=${error} />
    <div class="row">
      <label>JSONL file<input id="upload-file" ref=${input} type="file" accept=".jsonl,.json,application/jsonl"
        onChange=${(e) => setFile(e.target.files[0] || null)} /></label>
      <label>Purpose<select id="upload-purpose" value=${purpose} onChange=${(e) => setPurpose(e.target.value)}>
        <option value="fine-tune">fine-tune</option><option value="batch">batch</option>
        <option value="user_data">user_data</option></select></label>
      <button id="upload-submit" class="primary" disabled=${!file || progress}>Upload</button>
      ${progress ? html`<span><progress id="upload-progress" max=${progress.total || 1} value=${progress.loaded}></progress>
        ${" "}${Math.round((100 * progress.loaded) / (progress.total || 1))}%</span>` : null}
    </div>
  </form>`;
}

function FilesPage() {
  const files = useLoad(() => API.listAll("/files", 100, 1000), []);
  const [error, setError] = useState(null);
  const remove = async (id) => {
    if (!confirm(`Delete ${id}?`)) return;
    try { await API.del(`/files/${id}`); files.reload(); } catch (err) { setError(err); }
  };
  return html`<div>
    <h1>Files</h1>
    <${Upload} onUploaded=${() => files.reload()} />
    <div class="card">
      <${ErrorNote} error=${files.error || error} />
      ${files.loading && !files.data ? html`<p class="muted">Loading…</p>` : null}
      ${files.data && !files.data.length ? html`<p class="muted">No files yet.</p>` : null}
      ${files.data && files.data.length ? html`<table id="files-table">
        <thead><tr><th>ID</th><th>Name</th><th>Purpose</th><th>Size</th><th>Status</th><th>Created</th><th></th></tr></thead>
        <tbody>${files.data.map((f) => html`<tr key=${f.id} data-id=${f.id}>
          <td class="mono">${f.id}</td><td>${f.filename}<${Report} file=${f} /></td><td>${f.purpose}</td>
          <td>${size(f.bytes)}</td><td><${Status} value=${f.status} /></td><td>${when(f.created_at)}</td>
          <td><button class="danger" onClick=${() => remove(f.id)}>Delete</button></td></tr>`)}</tbody>
      </table>` : null}
    </div>
  </div>`;
}

// ---- jobs --------------------------------------------------------------------------------

function CreateJob({ onCreated }) {
  const data = useLoad(async () => {
    const [files, models] = await Promise.all([API.listAll("/files", 100, 1000), API.get("/models")]);
    return { files: files.filter((f) => f.purpose === "fine-tune"), models: models.data };
  }, []);
  const [form, setForm] = useState({ training_file: "", validation_file: "", model: "", method: "supervised", suffix: "", n_epochs: "auto" });
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const set = (k) => (e) => setForm({ ...form, [k]: e.target.value });
  const files = data.data ? data.data.files : [];
  const bases = data.data ? data.data.models.filter((m) => !m.id.startsWith("ft:")) : [];
  const model = form.model || (bases[0] && bases[0].id) || "";
  const training = form.training_file || (files[0] && files[0].id) || "";
  const submit = async (e) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const epochs = form.n_epochs.trim() === "" || form.n_epochs === "auto" ? "auto" : Number(form.n_epochs);
      const body = { model, training_file: training,
        method: { type: form.method, [form.method]: { hyperparameters: { n_epochs: epochs } } } };
      if (form.validation_file) body.validation_file = form.validation_file;
      if (form.suffix.trim()) body.suffix = form.suffix.trim();
      const job = await API.post("/fine_tuning/jobs", body);
      onCreated(job);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  return html`<form class="card" id="create-job" onSubmit=${submit}>
    <h2>Create a fine-tuning job</h2>
    <${ErrorNote} error=${data.error || error} />
    <div class="row">
      <label>Training file<select id="job-training-file" value=${training} onChange=${set("training_file")}>
        ${files.map((f) => html`<option value=${f.id}>${f.filename} (${f.id})</option>`)}</select></label>
      <label>Validation file<select id="job-validation-file" value=${form.validation_file} onChange=${set("validation_file")}>
        <option value="">none</option>
        ${files.map((f) => html`<option value=${f.id}>${f.filename} (${f.id})</option>`)}</select></label>
      <label>Base model<select id="job-model" value=${model} onChange=${set("model")}>
        ${bases.map((m) => html`<option value=${m.id}>${m.id}</option>`)}</select></label>
      <label>Method<select id="job-method" value=${form.method} onChange=${set("method")}>
        <option value="supervised">supervised (SFT)</option><option value="dpo">dpo</option></select></label>
      <label>Suffix<input id="job-suffix" value=${form.suffix} maxlength="64" onInput=${set("suffix")} placeholder="optional" /></label>
      <label>Epochs<input id="job-epochs" value=${form.n_epochs} size="6" onInput=${set("n_epochs")} /></label>
      <button id="job-create" class="primary" disabled=${busy || !training || !model}>Create job</button>
    </div>
  </form>`;
}

function JobsPage() {
  const [status, setStatus] = useState("");
  const [text, setText] = useState("");
  const jobs = useLoad(() => API.listAll("/fine_tuning/jobs", 100, 1000), []);
  useEffect(() => {
    const timer = setInterval(() => jobs.reload(), 3000);
    return () => clearInterval(timer);
  }, [jobs.reload]);
  const shown = (jobs.data || []).filter((j) => (!status || j.status === status)
    && (!text || [j.id, j.model, j.suffix, j.fine_tuned_model].some((v) => v && v.includes(text))));
  return html`<div>
    <h1>Fine-tuning jobs</h1>
    <${CreateJob} onCreated=${(job) => { location.hash = `#/jobs/${job.id}`; }} />
    <div class="card">
      <div class="row" style="margin-bottom:10px">
        <label>Status<select id="jobs-status-filter" value=${status} onChange=${(e) => setStatus(e.target.value)}>
          <option value="">all</option>${STATUSES.map((s) => html`<option value=${s}>${s}</option>`)}</select></label>
        <label>Search<input id="jobs-search" value=${text} onInput=${(e) => setText(e.target.value)} placeholder="id, model, suffix" /></label>
      </div>
      <${ErrorNote} error=${jobs.error} />
      ${jobs.data && !shown.length ? html`<p class="muted">No jobs${status || text ? " match" : " yet"}.</p>` : null}
      ${shown.length ? html`<table id="jobs-table">
        <thead><tr><th>ID</th><th>Status</th><th>Base model</th><th>Method</th><th>Suffix</th><th>Fine-tuned model</th><th>Created</th></tr></thead>
        <tbody>${shown.map((j) => html`<tr key=${j.id} data-id=${j.id}>
          <td class="mono"><a href=${`#/jobs/${j.id}`}>${j.id}</a></td><td><${Status} value=${j.status} /></td>
          <td>${j.model}</td><td>${j.method && j.method.type}</td><td>${j.suffix || ""}</td>
          <td class="mono">${j.fine_tuned_model || ""}</td><td>${when(j.created_at)}</td></tr>`)}</tbody>
      </table>` : null}
    </div>
  </div>`;
}

const LOSS = [{ key: "train_loss", label: "train loss" }, { key: "valid_loss", label: "valid loss" },
  { key: "full_valid_loss", label: "full valid loss" }];
const ACCURACY = [{ key: "train_mean_token_accuracy", label: "train accuracy" },
  { key: "valid_mean_token_accuracy", label: "valid accuracy" },
  { key: "full_valid_mean_token_accuracy", label: "full valid accuracy" }];
const REWARD = [{ key: "train_reward_margin", label: "reward margin" },
  { key: "train_reward_accuracy", label: "reward accuracy" }];

function Hyperparameters({ job }) {
  const method = job.method && job.method[job.method.type];
  const hp = { ...(job.hyperparameters || {}), ...((method && method.hyperparameters) || {}) };
  const rows = [["method", job.method && job.method.type], ...Object.entries(hp),
    ...Object.entries(job.lora || {}).map(([k, v]) => [`lora.${k}`, Array.isArray(v) ? v.join(", ") : v]),
    ["seed", job.seed]];
  return html`<dl class="kv" id="hyperparameters">${rows.map(([k, v]) => html`<dt>${k}</dt><dd class="mono">${String(v)}</dd>`)}</dl>`;
}

function JobPage({ id }) {
  const [job, setJob] = useState(null);
  const [events, setEvents] = useState([]);
  const [mode, setMode] = useState("");
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const checkpoints = useLoad(() => API.listAll(`/fine_tuning/jobs/${id}/checkpoints`, 100), [id]);

  useEffect(() => {
    setJob(null);
    setEvents([]);
    API.get(`/fine_tuning/jobs/${id}`).then(setJob, setError);
    return API.followJob(id, {
      onJob: setJob,
      onEvents: (added) => setEvents((old) => old.concat(added)),
      onMode: setMode,
    });
  }, [id]);
  // Checkpoints change at most every few steps: refresh them with the job.
  const status = job && job.status;
  useEffect(() => {
    if (!status || TERMINAL.includes(status)) return undefined;
    const timer = setInterval(() => checkpoints.reload(), 5000);
    return () => clearInterval(timer);
  }, [status, checkpoints.reload]);
  useEffect(() => { if (status) checkpoints.reload(); }, [status]);

  const points = useMemo(() => {
    const byStep = new Map();
    for (const e of events) {
      if (e.type === "metrics" && e.data && typeof e.data.step === "number") {
        byStep.set(e.data.step, { ...(byStep.get(e.data.step) || {}), ...e.data });
      }
    }
    return [...byStep.values()].sort((a, b) => a.step - b.step);
  }, [events]);

  const act = async (action) => {
    setBusy(true);
    setError(null);
    try { setJob(await API.post(`/fine_tuning/jobs/${id}/${action}`)); } catch (err) { setError(err); }
    finally { setBusy(false); }
  };

  if (!job) return html`<div><${ErrorNote} error=${error} />${error ? null : html`<p class="muted">Loading…</p>`}</div>`;
  const last = points[points.length - 1];
  const isDpo = job.method && job.method.type === "dpo";
  return html`<div>
    <h1><a href="#/jobs">Jobs</a> / <span class="mono">${job.id}</span> <${Status} value=${job.status} /></h1>
    <${ErrorNote} error=${error} />
    ${job.error ? html`<div class="notice">${job.error.code}: ${job.error.message}</div>` : null}
    <div class="card row">
      <button id="job-pause" disabled=${busy || !["running", "queued", "validating_files"].includes(job.status)} onClick=${() => act("pause")}>Pause</button>
      <button id="job-resume" disabled=${busy || job.status !== "paused"} onClick=${() => act("resume")}>Resume</button>
      <button id="job-cancel" class="danger" disabled=${busy || TERMINAL.includes(job.status)} onClick=${() => { if (confirm("Cancel this job?")) act("cancel"); }}>Cancel</button>
      ${job.fine_tuned_model ? html`<a href=${`#/playground?job=${encodeURIComponent(job.id)}`}>Try it in the playground</a>` : null}
      <span class="muted">${last ? `step ${last.step}${last.total_steps ? ` / ${last.total_steps}` : ""}` : ""}
        ${mode ? ` · live (${mode === "stream" ? "event stream" : "polling"})` : ""}</span>
    </div>
    <div class="grid2">
      <div class="card"><${Chart} id="loss-chart" title="Loss" points=${points} series=${LOSS} /></div>
      <div class="card"><${Chart} id="accuracy-chart" title="Token accuracy" points=${points} series=${ACCURACY} /></div>
      ${isDpo || points.some((p) => typeof p.train_reward_margin === "number")
        ? html`<div class="card"><${Chart} id="reward-chart" title="Rewards" points=${points} series=${REWARD} /></div>` : null}
    </div>
    <div class="grid2">
      <div class="card"><h2>Job</h2><dl class="kv">
        <dt>base model</dt><dd class="mono">${job.model}</dd>
        <dt>fine-tuned model</dt><dd class="mono" id="fine-tuned-model">${job.fine_tuned_model || "—"}</dd>
        <dt>training file</dt><dd class="mono">${job.training_file}</dd>
        <dt>validation file</dt><dd class="mono">${job.validation_file || "—"}</dd>
        <dt>suffix</dt><dd>${job.suffix || "—"}</dd>
        <dt>trained tokens</dt><dd>${job.trained_tokens ?? "—"}</dd>
        <dt>created</dt><dd>${when(job.created_at)}</dd>
        <dt>estimated finish</dt><dd>${when(job.estimated_finish)}</dd>
        <dt>finished</dt><dd>${when(job.finished_at)}</dd>
      </dl></div>
      <div class="card"><h2>Hyperparameters</h2><${Hyperparameters} job=${job} /></div>
    </div>
    <div class="card"><h2>Checkpoints</h2>
      ${checkpoints.data && checkpoints.data.length ? html`<table id="checkpoints-table">
        <thead><tr><th>Step</th><th>Model</th><th>train loss</th><th>valid loss</th><th></th></tr></thead>
        <tbody>${checkpoints.data.map((c) => html`<tr key=${c.id}><td>${c.step_number}</td>
          <td class="mono">${c.fine_tuned_model_checkpoint}</td>
          <td>${c.metrics.train_loss?.toFixed(4) ?? ""}</td><td>${c.metrics.valid_loss?.toFixed(4) ?? ""}</td>
          <td><a href=${`#/playground?job=${encodeURIComponent(job.id)}&model=${encodeURIComponent(c.fine_tuned_model_checkpoint)}`}>playground</a></td></tr>`)}</tbody>
      </table>` : html`<p class="muted">No checkpoints yet.</p>`}
    </div>
    <div class="card"><h2>Events</h2>
      <table class="events" id="events-table"><tbody>
        ${events.slice().reverse().map((e) => html`<tr key=${e.id} class=${e.level}><td class="muted">${when(e.created_at)}</td>
          <td>${e.level}</td><td>${e.message}</td></tr>`)}
      </tbody></table>
    </div>
  </div>`;
}

// ---- models ------------------------------------------------------------------------------

function ModelsPage() {
  const models = useLoad(() => API.get("/models").then((r) => r.data), []);
  const [error, setError] = useState(null);
  const remove = async (id) => {
    if (!confirm(`Delete ${id}? It stops being served.`)) return;
    try { await API.del(`/models/${encodeURIComponent(id)}`); models.reload(); } catch (err) { setError(err); }
  };
  return html`<div><h1>Models</h1><div class="card">
    <${ErrorNote} error=${models.error || error} />
    ${models.data ? html`<table id="models-table"><thead><tr><th>Model</th><th>Owner</th><th>Created</th><th></th></tr></thead>
      <tbody>${models.data.map((m) => html`<tr key=${m.id} data-id=${m.id}><td class="mono">${m.id}</td><td>${m.owned_by}</td>
        <td>${when(m.created)}</td><td>${m.id.startsWith("ft:")
          ? html`<button class="danger" onClick=${() => remove(m.id)}>Delete</button>` : null}</td></tr>`)}</tbody>
    </table>` : html`<p class="muted">Loading…</p>`}
  </div></div>`;
}

// ---- playground --------------------------------------------------------------------------

function Answer({ model, run }) {
  const [text, setText] = useState("");
  const [chunks, setChunks] = useState(0);
  const [state, setState] = useState("idle");
  const [error, setError] = useState(null);
  useEffect(() => {
    if (!run) return undefined;
    const controller = new AbortController();
    setText("");
    setChunks(0);
    setError(null);
    setState("streaming");
    API.streamChat(model, run.messages, { maxTokens: run.maxTokens, temperature: run.temperature,
      signal: controller.signal, onDelta: (d) => { setText((t) => t + d); setChunks((n) => n + 1); } })
      .then(() => setState("done"), (err) => { if (err.name !== "AbortError") { setError(err); setState("error"); } });
    return () => controller.abort();
  }, [run]);
  return html`<div class="card answer" data-model=${model} data-state=${state} data-chunks=${chunks}>
    <h3>${model}</h3>
    ${error ? html`<div class="error">${error.message}</div>` : null}
    <pre>${text}${state === "streaming" ? "▍" : ""}</pre>
  </div>`;
}

function PlaygroundPage({ query }) {
  const jobId = query.get("job");
  const choices = useLoad(async () => {
    const models = (await API.get("/models")).data.map((m) => m.id);
    let job = null;
    let checkpoints = [];
    if (jobId) {
      [job, checkpoints] = await Promise.all([API.get(`/fine_tuning/jobs/${jobId}`),
        API.listAll(`/fine_tuning/jobs/${jobId}/checkpoints`, 100)]);
    }
    return { models, job, checkpoints: checkpoints.map((c) => c.fine_tuned_model_checkpoint) };
  }, [jobId]);
  const [chosen, setChosen] = useState(null);
  const [prompt, setPrompt] = useState("");
  const [system, setSystem] = useState("");
  const [maxTokens, setMaxTokens] = useState(64);
  const [temperature, setTemperature] = useState(0);
  const [run, setRun] = useState(null);
  const data = choices.data;
  const defaults = useMemo(() => {
    if (!data) return [];
    const picked = new Set();
    if (data.job) {
      picked.add(data.job.model);
      if (data.job.fine_tuned_model) picked.add(data.job.fine_tuned_model);
    } else if (data.models.length) picked.add(data.models[0]);
    if (query.get("model")) picked.add(query.get("model"));
    return [...picked];
  }, [data]);
  const selected = chosen || defaults;
  const options = data ? [...new Set([...data.models, ...data.checkpoints, ...defaults])] : [];
  const toggle = (m) => setChosen(selected.includes(m) ? selected.filter((x) => x !== m) : [...selected, m]);
  const send = (e) => {
    e.preventDefault();
    const messages = [...(system.trim() ? [{ role: "system", content: system }] : []), { role: "user", content: prompt }];
    setRun({ messages, maxTokens: Number(maxTokens) || 64, temperature: Number(temperature) || 0, models: selected.slice() });
  };
  return html`<div><h1>Playground</h1>
    <${ErrorNote} error=${choices.error} />
    <form class="card" onSubmit=${send}>
      <p class="muted">One prompt to several models side by side${data && data.job ? html` — job <span class="mono">${data.job.id}</span>: its base model, fine-tuned model and checkpoints` : ""}.</p>
      <div class="row" id="playground-models">${options.map((m) => html`<label style="flex-direction:row;align-items:center;gap:6px">
        <input type="checkbox" value=${m} checked=${selected.includes(m)} onChange=${() => toggle(m)} /><span class="mono">${m}</span></label>`)}</div>
      <p><label>System prompt (optional)<textarea id="playground-system" value=${system} onInput=${(e) => setSystem(e.target.value)} rows="2"></textarea></label></p>
      <p><label>Prompt<textarea id="playground-prompt" value=${prompt} onInput=${(e) => setPrompt(e.target.value)}></textarea></label></p>
      <div class="row">
        <label>Max tokens<input id="playground-max-tokens" type="number" min="1" value=${maxTokens} onInput=${(e) => setMaxTokens(e.target.value)} /></label>
        <label>Temperature<input id="playground-temperature" type="number" min="0" max="2" step="0.1" value=${temperature} onInput=${(e) => setTemperature(e.target.value)} /></label>
        <button id="playground-send" class="primary" disabled=${!prompt.trim() || !selected.length}>Send</button>
      </div>
    </form>
    <div class="answers" id="playground-answers">
      ${run ? run.models.map((m) => html`<${Answer} key=${m} model=${m} run=${run} />`) : null}
    </div>
  </div>`;
}

// ---- the shell ---------------------------------------------------------------------------

function App() {
  const [signedIn, setSignedIn] = useState(Boolean(API.getKey()));
  const route = useRoute();
  useEffect(() => API.onUnauthorized(() => { API.clearKey(); setSignedIn(false); }), []);
  if (!signedIn) return html`<${SignIn} onSignedIn=${() => setSignedIn(true)} />`;
  const [page, id] = route.parts;
  const nav = [["jobs", "Jobs"], ["files", "Files"], ["models", "Models"], ["playground", "Playground"]];
  let body;
  if (page === "files") body = html`<${FilesPage} />`;
  else if (page === "models") body = html`<${ModelsPage} />`;
  else if (page === "playground") body = html`<${PlaygroundPage} query=${route.query} />`;
  else if (page === "jobs" && id) body = html`<${JobPage} key=${id} id=${id} />`;
  else body = html`<${JobsPage} />`;
  return html`<div>
    <header><span class="brand">TuneForge</span>
      <nav>${nav.map(([p, label]) => html`<a href=${`#/${p}`} id=${`nav-${p}`} class=${(page || "jobs") === p ? "active" : ""}>${label}</a>`)}</nav>
      <span class="spacer"></span><a href="/schema/swagger" style="color:#dbe4f0">API docs</a>
      <button id="sign-out" onClick=${() => { API.clearKey(); setSignedIn(false); }}>Sign out</button>
    </header>
    <main>${body}</main>
  </div>`;
}

const root = document.getElementById("app");
root.textContent = "";
render(html`<${App} />`, root);
