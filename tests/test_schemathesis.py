"""Schemathesis against the portal as production serves it (gunicorn, gevent workers, the
lean /v1/ stack: tests/servehelpers.py): generated requests to every /v1/ operation, valid and
invalid, never get a 5xx and never an answer that breaks the published schema.

The run is bounded (examples per operation, one worker) and seeded, so CI is reproducible;
set SCHEMATHESIS_SEED to explore other inputs and SCHEMATHESIS_MAX_EXAMPLES to go further.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.routersim import RouterSim
from tests.servehelpers import Gunicorn, provision

pytestmark = pytest.mark.slow

ST = Path(sys.executable).with_name("st")


@pytest.fixture
def served():
    sim = RouterSim("--sessions", "1,2")
    database_url, key = provision(sim, email="schemathesis@example.com")
    server = Gunicorn(database_url=database_url)
    yield server, key
    server.stop()
    sim.stop()


def test_schemathesis_finds_no_server_error_and_no_schema_break(served, tmp_path):
    if not ST.exists():
        pytest.fail(f"schemathesis is not installed in this environment ({ST})")
    live_server, raw = served
    report = tmp_path / "junit.xml"
    command = [
        str(ST),
        "run",
        f"{live_server.url}/openapi.json?format=json",
        "--url",
        live_server.url,
        "--header",
        f"Authorization: Bearer {raw}",
        "--include-path-regex",
        "^/v1/",
        "--checks",
        "not_a_server_error,response_schema_conformance",
        "--max-examples",
        os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "30"),
        "--seed",
        os.environ.get("SCHEMATHESIS_SEED", "20260901"),
        "--phases",
        "examples,coverage,fuzzing",
        "--workers",
        "1",
        "--request-timeout",
        "20",
        "--suppress-health-check",
        "all",
        "--report",
        "junit",
        "--report-junit-path",
        str(report),
    ]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "NO_COLOR": "1"},
    )

    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    # It really ran: every /v1/ operation was exercised.
    for operation in (
        "GET /v1/models",
        "GET /v1/models/{model_id}",
        "POST /v1/chat/completions",
        "POST /v1/completions",
        "GET /v1/usage",
        "POST /v1/messages",
        "POST /v1/messages/count_tokens",
    ):
        assert operation in report.read_text(), output[-3000:]
