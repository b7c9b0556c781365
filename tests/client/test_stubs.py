"""The gRPC stubs are generated where their owner builds (proto/generate.py), never committed:
generation is deterministic, what this checkout imports is current, the client's build makes
them, and each side imports its own stubs without the other."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GENERATOR = REPO / "proto" / "generate.py"
CLIENT = REPO / "clients" / "python"
IN_TREE = {"server.grpc.pb": REPO / "server" / "grpc" / "pb",
           "tuneforge_client._pb": CLIENT / "tuneforge_client" / "_pb"}


def files_under(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}


def generate(package: str, out: Path) -> dict[str, bytes]:
    subprocess.run([sys.executable, str(GENERATOR), "--package", package, "--out", str(out)],
                   check=True, capture_output=True, cwd=out.parent)
    return files_under(out)


def test_generation_is_deterministic_and_self_contained(tmp_path: Path) -> None:
    first = generate("some_pkg._pb", tmp_path / "a")
    assert first == generate("some_pkg._pb", tmp_path / "b")
    assert {"jsonmap.py", "tuneforge/v1/fine_tuning_pb2.py", "tuneforge/v1/fine_tuning_pb2.pyi",
            "tuneforge/v1/files_pb2_grpc.py", "tuneforge/v1/models_pb2_grpc.pyi"} <= set(first)
    generated = b"".join(first.values())
    assert b"some_pkg._pb.tuneforge.v1" in generated
    # Every import of a sibling module goes through the output package, never `tuneforge.v1`.
    assert b"from tuneforge.v1" not in generated and b"import tuneforge.v1" not in generated


def test_regeneration_rewrites_only_what_changed(tmp_path: Path) -> None:
    out = tmp_path / "pb"
    generate("pkg", out)
    stale = out / "tuneforge" / "v1" / "gone_pb2.py"
    kept = out / "tuneforge" / "v1" / "files_pb2.py"
    stale.write_text("old")
    before = kept.stat().st_mtime_ns
    generate("pkg", out)
    assert not stale.exists() and kept.stat().st_mtime_ns == before


@pytest.mark.parametrize("package", sorted(IN_TREE))
def test_the_stubs_this_checkout_imports_are_current(tmp_path: Path, package: str) -> None:
    fresh = generate(package, tmp_path / "pb")
    stale = sorted(name for name, text in fresh.items()
                   if files_under(IN_TREE[package]).get(name) != text)
    assert not stale, f"stale stubs in {IN_TREE[package]}: run bash scripts/setup.sh ({stale})"


def test_the_client_build_generates_its_stubs(tmp_path: Path) -> None:
    """A wheel built from the client's folder alone (as from its sdist: proto/ inside)."""
    source = tmp_path / "client"
    shutil.copytree(CLIENT, source, symlinks=False, ignore=shutil.ignore_patterns(
        "_pb", "build", "*.egg-info", "__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--no-index", "-q", "-w", str(tmp_path / "dist"), str(source)],
                   check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("tuneforge_client-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"tuneforge_client/_pb/jsonmap.py",
            "tuneforge_client/_pb/tuneforge/v1/fine_tuning_pb2_grpc.py",
            "tuneforge_client/_pb/tuneforge/v1/fine_tuning_pb2.pyi"} <= names
    assert not any(name.startswith("proto/") for name in names)


def _imports(code: str) -> None:
    subprocess.run([sys.executable, "-c", code], check=True, cwd="/")


def test_the_client_imports_its_stubs_without_the_server() -> None:
    """The SDK, its stubs and its CLI never import the server's packages (or torch)."""
    _imports("import sys; import tuneforge_client._pb.tuneforge.v1.fine_tuning_pb2_grpc; "
             "import tuneforge_client, tuneforge_client.cli; "
             "bad = sorted(m for m in sys.modules "
             "if m.split('.')[0] in ('tuneforge', 'server', 'torch', 'trainer')); "
             "assert not bad, bad")


def test_the_server_imports_its_own_stubs() -> None:
    """The gRPC server uses the stubs generated for it, not the client distribution's."""
    _imports("import sys; import server.grpc.server; "
             "assert server.grpc.server.fine_tuning_pb2.__name__.startswith('server.grpc.pb.'); "
             "bad = sorted(m for m in sys.modules if m.startswith('tuneforge_client')); "
             "assert not bad, bad")
