"""The runnable examples, against the real server (and the fake provider)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run(script: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_quickstart_leases_a_key_and_prints_its_label(addr: str, make_pool) -> None:
    pool = make_pool()
    done = run("quickstart.py", pool, KEYMESH_ADDR=addr)
    assert (done.returncode, done.stdout) == (0, "leased key 0\n"), done.stderr


def test_quickstart_fails_cleanly_for_a_missing_pool(addr: str) -> None:
    done = run("quickstart.py", f"py-missing-{uuid.uuid4().hex[:8]}", KEYMESH_ADDR=addr)
    assert done.returncode == 1
    assert "POOL_NOT_FOUND" in done.stderr and "Traceback" not in done.stderr


def test_openai_style_example_answers_every_request(addr: str, fake_provider_url: str) -> None:
    done = run("openai_style.py", KEYMESH_ADDR=addr, KEYMESH_FAKE_PROVIDER_URL=fake_provider_url)
    assert done.returncode == 0, done.stderr
    answers = [line for line in done.stdout.splitlines() if line.startswith("echo: ")]
    assert sorted(answers) == sorted(f"echo: question {n}" for n in range(12))
