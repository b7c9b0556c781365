"""The inference plane: vLLM process control, the adapter cache and registry, the reconciler
and the OpenAI-compatible request router.

It talks to vLLM over HTTP only (vLLM always runs as a separate process), so importing this
package never imports torch or vllm.

- `serving.process`: start, health-check, restart and stop vLLM servers (`Supervisor`).
- `serving.adapters`: fetch adapters from S3 into the local cache, atomically.
- `serving.vllm`: the HTTP client for one vLLM server (load/unload adapters, list, probe).
- `serving.registry`: what each replica has loaded, LRU and in-flight accounting.
- `serving.router`: pick a replica for a model (loading it on demand) and proxy the request.
- `serving.limits`: per-request caps, per-organization concurrency and token/request rates.
- `serving.nulls`: drop the nulls OpenAI's spec does not allow from vLLM's JSON (bytes only).
- `serving.keys`, `serving.vllm_guard`: vLLM's API key, and the middleware that makes a started
  server ask for it on every path but `/health`.
- `serving.reconciler`: make every replica's loaded set equal the wanted set.
- `serving.requests`: answers workers' serving requests (rows in the database): loads a
  just-trained model on every replica before its job reports succeeded.
- `serving.full_models`: full-weight models (full / Spectrum jobs), each on a vLLM server of
  its own, started on demand, at most `serving.max_full_model_servers` at once (LRU).
- `serving.plane`: everything above wired together for the API process, the only
  writer of every replica's adapter set.
"""
