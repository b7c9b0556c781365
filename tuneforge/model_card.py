"""What a registered base model supports, read from its small files only: `config.json`,
`generation_config.json`, `tokenizer_config.json` and `chat_template.jinja` (never the
weights, never a model hub). `GET /v1/models/{id}` shows it on base models.

Where the files are read:

- a base model registered by local directory: that directory;
- an `s3://bucket/prefix` base model: its download in the model cache when a worker or vLLM
  launcher already made one, else only those small objects from S3 (TuneForge's S3
  credentials, short timeouts, one try);
- the embedded default: its converted directory in the model cache (made before the stack
  starts); before that, only what needs no file is known.

The card's fields (each None when it cannot be known):

- `architecture` (`config.json` `architectures[0]`) and `family` (its `model_type`, e.g.
  "llama", "qwen2", "gemma3_text");
- `max_position_embeddings`: the longest context the model was built for (a multimodal
  config's `text_config` counts);
- `context_length`: what a request can actually use, the smaller of that and the
  `max_model_len` of the inference servers configured for the model (a prompt plus its
  completion longer than `max_model_len` is refused by vLLM whatever the model could do);
  without inference servers, `max_position_embeddings`;
- `chat_template`: whether the tokenizer has one. Training data is chat, so `methods`
  (supervised, dpo) is left out without one;
- `tunings`: the tuning types a job may ask for;
- `supports_tools`: whether the chat template renders `tools` and `tool_calls` itself (the
  rule the trainer applies; otherwise tool calls are trained as `<tool_call>` JSON text);
- `stop_tokens`: the tokens generation stops on, as vLLM takes them: the ids of
  `generation_config.json` `eos_token_id` (named through `tokenizer_config.json`'s
  `added_tokens_decoder`, else `tokenizer.json`) plus the tokenizer's
  `eos_token`. An id no file names is left out.

Torch-free; `minio` is imported only for an S3 base model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.base_models import COMPLETE_MARKER
from tuneforge.domain import MethodType, TuningType
from tuneforge.layout import S3Url
from tuneforge.settings import S3Settings, Settings
from tuneforge.token_counts import chat_template_source

CARD_FILES = ("config.json", "generation_config.json", "tokenizer_config.json",
              "chat_template.jinja")
# A small JSON file is at most this big (a tokenizer_config.json with a long template and
# many added tokens is well under it); anything larger is not read.
MAX_CARD_FILE_BYTES = 8 * 1024 * 1024
# tokenizer.json (Llama 3: 9 MB, Gemma: 33 MB) is read only to name stop ids no other file
# names, and not beyond this.
MAX_TOKENIZER_BYTES = 40 * 1024 * 1024
S3_TIMEOUT_SECONDS = 5.0
# Config keys that hold the longest context, by the families that use them.
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length",
                 "seq_length")
METHODS = tuple(m.value for m in MethodType)
TUNINGS = tuple(t.value for t in TuningType if t != TuningType.AUTO)


@dataclass(frozen=True)
class ModelCard:
    architecture: str | None = None
    family: str | None = None
    max_position_embeddings: int | None = None
    context_length: int | None = None
    chat_template: bool | None = None
    methods: tuple[str, ...] = METHODS
    tunings: tuple[str, ...] = TUNINGS
    supports_tools: bool | None = None
    stop_tokens: tuple[str, ...] | None = None
    # Every file that could be read was (False: the files were not reachable; read again
    # later).
    complete: bool = True

    def fields(self) -> dict[str, Any]:
        """The card as the model object's extension fields."""
        return {
            "architecture": self.architecture, "family": self.family,
            "max_position_embeddings": self.max_position_embeddings,
            "context_length": self.context_length, "chat_template": self.chat_template,
            # Empty lists are left out (gRPC cannot tell an empty list from none).
            "methods": list(self.methods) or None, "tunings": list(self.tunings) or None,
            "supports_tools": self.supports_tools,
            "stop_tokens": None if self.stop_tokens is None else list(self.stop_tokens),
        }


@dataclass
class CardFiles:
    """The small files of a model: name → text; `absent` lists those known not to exist."""

    texts: dict[str, str] = field(default_factory=dict)
    absent: set[str] = field(default_factory=set)
    # Stop token ids named by `tokenizer.json`, read only for ids `tokenizer_config.json`
    # does not name (it does for every model transformers saved since 2023).
    token_names: dict[int, str] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return all(name in self.texts or name in self.absent for name in CARD_FILES)

    def json(self, name: str) -> dict[str, Any]:
        try:
            value = json.loads(self.texts[name])
        except (KeyError, ValueError):
            return {}
        return value if isinstance(value, dict) else {}


# ---- reading ----------------------------------------------------------------------------


def local_directory(settings: Settings, name: str) -> Path | None:
    """The base model's directory on this machine when its files are here: a configured
    local path, else its download or conversion in the model cache."""
    entry = settings.base_model(name)
    if entry is None:
        return None
    if entry.path and not S3Url.matches(entry.path):
        local = Path(entry.path).expanduser()
        return local if local.is_dir() else None
    cached = settings.effective_model_cache_dir / name
    if S3Url.matches(entry.path) and not (cached / COMPLETE_MARKER).is_file():
        return None  # a download still under way is renamed into place when done
    return cached if (cached / "config.json").is_file() else None


def read_local(directory: Path) -> CardFiles:
    files = CardFiles()
    for name in CARD_FILES:
        path = directory / name
        try:
            if path.stat().st_size <= MAX_CARD_FILE_BYTES:
                files.texts[name] = path.read_text()
            else:
                files.absent.add(name)
        except FileNotFoundError:
            files.absent.add(name)
        except (OSError, UnicodeDecodeError):
            pass
    missing = unnamed_stop_ids(files)
    if missing and (directory / "tokenizer.json").is_file():
        try:
            files.token_names = _names_in_tokenizer_json(
                (directory / "tokenizer.json").read_text(), missing)
        except (OSError, UnicodeDecodeError):
            pass
    return files


def read_s3(url: S3Url, s3: S3Settings, timeout: float = S3_TIMEOUT_SECONDS) -> CardFiles:
    """Only the card's small objects under `url`, one try each (an unreachable store leaves
    the card incomplete, to be read again later)."""
    import urllib3
    from minio import Minio
    from minio.error import S3Error

    http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=timeout, read=timeout),
                               retries=False)
    client = Minio(s3.endpoint, access_key=s3.access_key,
                   secret_key=s3.secret_key.get_secret_value(), secure=s3.secure,
                   region=s3.region, http_client=http)
    files = CardFiles()
    try:
        for name in CARD_FILES:
            key = f"{url.prefix}/{name}"
            try:
                if client.stat_object(url.bucket, key).size > MAX_CARD_FILE_BYTES:
                    files.absent.add(name)
                    continue
                response = client.get_object(url.bucket, key)
            except S3Error as exc:
                if exc.code in ("NoSuchKey", "NoSuchObject", "NotFound"):
                    files.absent.add(name)
                    continue
                raise
            files.texts[name] = _read(response)
        missing = unnamed_stop_ids(files)
        key = f"{url.prefix}/tokenizer.json"
        if missing and client.stat_object(url.bucket, key).size <= MAX_TOKENIZER_BYTES:
            files.token_names = _names_in_tokenizer_json(
                _read(client.get_object(url.bucket, key)), missing)
    except Exception:  # unreachable, refused, garbled: what was read is what is known
        pass
    finally:
        http.clear()
    return files


def _read(response: Any) -> str:
    try:
        return str(response.read().decode())
    finally:
        response.close()
        response.release_conn()


def read_card_files(settings: Settings, name: str) -> CardFiles:
    local = local_directory(settings, name)
    if local is not None:
        return read_local(local)
    entry = settings.base_model(name)
    if entry is not None and S3Url.matches(entry.path):
        try:
            url = S3Url.parse(entry.path)
        except ValueError:
            return CardFiles()
        return read_s3(url, settings.s3)
    return CardFiles()


# ---- the card ---------------------------------------------------------------------------


def _context(config: dict[str, Any]) -> int | None:
    for section in (config, config.get("text_config")):
        if not isinstance(section, dict):
            continue
        for key in _CONTEXT_KEYS:
            value = section.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


def _family(config: dict[str, Any]) -> str | None:
    model_type = config.get("model_type")
    text = config.get("text_config")
    if isinstance(text, dict) and isinstance(text.get("model_type"), str) \
            and not isinstance(model_type, str):
        model_type = text["model_type"]
    return model_type if isinstance(model_type, str) else None


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):  # a serialized AddedToken
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def chat_template_text(files: CardFiles) -> str | None:
    return chat_template_source(files.texts.get("chat_template.jinja"),
                                files.json("tokenizer_config.json"))


def _stop_ids(files: CardFiles) -> list[int]:
    raw = files.json("generation_config.json").get("eos_token_id")
    if isinstance(raw, int):
        return [raw]
    if isinstance(raw, list):
        return [i for i in raw if isinstance(i, int)]
    return []


def _decoder_names(files: CardFiles) -> dict[int, str]:
    decoder = files.json("tokenizer_config.json").get("added_tokens_decoder")
    named: dict[int, str] = {}
    for key, token in decoder.items() if isinstance(decoder, dict) else ():
        content = _token_text(token)
        if content is not None and str(key).isdigit():
            named[int(key)] = content
    return named


def unnamed_stop_ids(files: CardFiles) -> set[int]:
    """Stop ids `tokenizer_config.json` does not name."""
    return set(_stop_ids(files)) - set(_decoder_names(files))


def _names_in_tokenizer_json(text: str, ids: set[int]) -> dict[int, str]:
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    names = {t["id"]: t["content"] for t in data.get("added_tokens") or []
             if isinstance(t, dict) and t.get("id") in ids
             and isinstance(t.get("content"), str)}
    vocab = (data.get("model") or {}).get("vocab")
    if isinstance(vocab, dict):
        names.update({i: token for token, i in vocab.items()
                      if i in ids and i not in names})
    return names


def _stop_tokens(files: CardFiles) -> tuple[str, ...] | None:
    named = {**files.token_names, **_decoder_names(files)}
    tokens = [named[i] for i in _stop_ids(files) if i in named]
    eos = _token_text(files.json("tokenizer_config.json").get("eos_token"))
    if eos is not None:
        tokens.append(eos)
    return tuple(dict.fromkeys(tokens)) or None


def supports_tools(template: str) -> bool:
    """As `trainer.chat_template.supports_tools` decides it (and `tuneforge.token_counts`)."""
    return "tools" in template and "tool_calls" in template


def build_card(files: CardFiles, serving_max_model_len: int | None) -> ModelCard:
    config = files.json("config.json")
    architectures = config.get("architectures")
    architecture = architectures[0] if isinstance(architectures, list) and architectures \
        and isinstance(architectures[0], str) else None
    positions = _context(config)
    context = min((n for n in (positions, serving_max_model_len) if n is not None),
                  default=None)
    tokenizer_known = "tokenizer_config.json" in files.texts or (
        "tokenizer_config.json" in files.absent and "chat_template.jinja" in files.absent)
    template = chat_template_text(files)
    has_template = template is not None if tokenizer_known or template is not None else None
    return ModelCard(
        architecture=architecture, family=_family(config),
        max_position_embeddings=positions, context_length=context,
        chat_template=has_template,
        methods=() if has_template is False else METHODS,
        supports_tools=has_template and supports_tools(template or ""),
        stop_tokens=_stop_tokens(files), complete=files.complete)


def serving_max_model_len(settings: Settings, name: str) -> int | None:
    """The smallest `max_model_len` of the inference servers for `name` (None: none)."""
    return min((s.max_model_len for s in settings.inference_servers() if s.base_model == name),
               default=None)


def model_card(settings: Settings, name: str) -> ModelCard:
    """The card of registered base model `name` (blocking: files, maybe S3)."""
    return build_card(read_card_files(settings, name), serving_max_model_len(settings, name))
