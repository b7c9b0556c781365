"""Regenerate the gRPC stubs of `tuneforge_client._pb` from `proto/`.

    python clients/python/generate.py            # rewrite tuneforge_client/_pb in place
    python clients/python/generate.py --out DIR  # write the package into DIR instead

Needs grpcio-tools and mypy-protobuf (the `dev` extra). protoc emits imports of the form
`from tuneforge.v1 import files_pb2`, which would resolve to the server's `tuneforge` package;
they are rewritten to `tuneforge_client._pb.tuneforge.v1`, so the output is a self-contained
subpackage. The result is deterministic: `tests/client/test_stubs.py` regenerates into a
temporary directory and requires it to equal the committed files.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
PROTO_ROOT = REPO / "proto"
PACKAGE = "tuneforge_client._pb"
DEFAULT_OUT = HERE / "tuneforge_client" / "_pb"
HEADER = '"""Generated from proto/ by clients/python/generate.py: do not edit."""\n'

_IMPORT = re.compile(r"^(\s*)(from|import) tuneforge\.v1(\b)", re.MULTILINE)
_QUALIFIED = re.compile(r"(?<![\w.])tuneforge\.v1\.(\w+_pb2)\b")


def _plugin(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    found = str(candidate) if candidate.exists() else shutil.which(name)
    if not found:
        raise SystemExit(f"{name} not found: install mypy-protobuf")
    return found


def _rewrite(text: str) -> str:
    text = _IMPORT.sub(lambda m: f"{m.group(1)}{m.group(2)} {PACKAGE}.tuneforge.v1{m.group(3)}",
                       text)
    return _QUALIFIED.sub(lambda m: f"{PACKAGE}.tuneforge.v1.{m.group(1)}", text)


def generate(out: Path) -> list[Path]:
    import grpc_tools
    from grpc_tools import protoc  # type: ignore[import-untyped]

    protos = sorted(p.relative_to(PROTO_ROOT).as_posix()
                    for p in (PROTO_ROOT / "tuneforge" / "v1").glob("*.proto"))
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "grpc_tools.protoc", f"-I{PROTO_ROOT}", f"-I{well_known}",
            f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
            f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
            f"--python_out={tmp}", f"--grpc_python_out={tmp}",
            f"--mypy_out={tmp}", f"--mypy_grpc_out={tmp}", *protos,
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        if out.exists():
            shutil.rmtree(out)
        written = []
        for source in sorted(Path(tmp).rglob("*")):
            if source.is_file():
                target = out / source.relative_to(tmp)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(_rewrite(source.read_text()))
                written.append(target)
    for package in (out, out / "tuneforge", out / "tuneforge" / "v1"):
        (package / "__init__.py").write_text(HEADER)
        written.append(package / "__init__.py")
    return sorted(written)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="where to write the _pb package (default: in place)")
    args = parser.parse_args()
    for path in generate(args.out):
        print(path)


if __name__ == "__main__":
    main()
