"""The build step of tuneforge-client: generate the gRPC stubs into `tuneforge_client._pb`.

They are never committed. `proto/generate.py` (next to the contract, reached through the `proto`
link here, or the copy in an sdist) writes them into the wheel being built, or into the source
tree for an editable install (`pip install -e clients/python`).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
PROTO = HERE / "proto"
PACKAGE = "tuneforge_client._pb"


class BuildWithStubs(build_py):
    def run(self) -> None:
        super().run()
        spec = importlib.util.spec_from_file_location("tuneforge_proto_generate",
                                                      PROTO / "generate.py")
        assert spec is not None and spec.loader is not None
        generator = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(generator)
        root = HERE if self.editable_mode else Path(self.build_lib)
        generator.generate(root / "tuneforge_client" / "_pb", PACKAGE, proto_root=PROTO)


setup(cmdclass={"build_py": BuildWithStubs})
