"""The worker's bridge stands on the job protocol alone: importing it pulls in neither the
public service layer nor the serving plane (which the worker asks through the DB)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

FORBIDDEN = ("server.service", "serving")


@pytest.mark.parametrize("module", ["trainer.job_runner", "trainer.worker"])
def test_the_worker_imports_no_service_layer_and_no_serving(module: str) -> None:
    probe = (f"import json, sys; import {module}; "
             "print(json.dumps(sorted(sys.modules)))")
    loaded = json.loads(subprocess.run([sys.executable, "-c", probe], cwd=REPO, check=True,
                                       capture_output=True, text=True).stdout)
    assert "server.job_protocol" in loaded  # the probe sees the worker's own imports
    pulled = [name for name in loaded
              if any(name == f or name.startswith(f + ".") for f in FORBIDDEN)]
    assert pulled == [], f"{module} imports {pulled}"
