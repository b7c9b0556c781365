"""The committed stubs are exactly what clients/python/generate.py makes from proto/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "clients" / "python" / "tuneforge_client" / "_pb"


def files_under(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}


def test_regenerating_from_proto_changes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "_pb"
    subprocess.run([sys.executable, str(REPO / "clients" / "python" / "generate.py"),
                    "--out", str(out)], check=True, capture_output=True, cwd=tmp_path)
    fresh, committed = files_under(out), files_under(COMMITTED)
    assert sorted(fresh) == sorted(committed)
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stale stubs (run python clients/python/generate.py): {stale}"
    assert any(name.endswith("fine_tuning_pb2.pyi") for name in fresh)  # typed stubs too


def test_stubs_import_without_the_server() -> None:
    """The SDK, its stubs and its CLI never import the server's packages (or torch)."""
    code = ("import sys; import tuneforge_client._pb.tuneforge.v1.fine_tuning_pb2_grpc; "
            "import tuneforge_client, tuneforge_client.cli; "
            "bad = sorted(m for m in sys.modules "
            "if m.split('.')[0] in ('tuneforge', 'server', 'torch', 'trainer')); "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd="/")
