"""KeyMesh server processes of a test's own (server/dist/main.js; the embedded database in a temporary
directory, or a Postgres database shared by replicas): started on port 0, killed with SIGKILL or
stopped with SIGTERM, started again on the same port and data."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Optional

import pytest
from google.protobuf.duration_pb2 import Duration

from keymesh_client import Client
from keymesh_client.v1 import admin_pb2

REPO = Path(__file__).resolve().parents[3]
# Another build can be named, e.g. a branch's, to try these tests against it.
MAIN = Path(os.environ.get("KEYMESH_TEST_SERVER_MAIN") or REPO / "server" / "dist" / "main.js")
START_TIMEOUT_S = 60.0


def require_server_build() -> str:
    node = shutil.which("node")
    if node is None or not MAIN.exists():
        pytest.skip("node or server/dist/main.js is missing (npm run build): no KeyMesh server to start")
    return node


class Server:
    """One KeyMesh process: on the embedded database in `data_dir`, or on `database_url` (replicas share one)."""

    def __init__(self, data_dir: Path, master_key: str, database_url: str = "", env: Optional[dict[str, str]] = None) -> None:
        self._node = require_server_build()
        self.data_dir = data_dir
        self.master_key = master_key
        self.database_url = database_url
        self.env = env or {}
        self.port = 0
        self._proc: Optional[subprocess.Popen[bytes]] = None
        self._log = data_dir.parent / f"{data_dir.name}.log"

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "Server":
        """Starts the server (on its last port, after a kill) and waits until it listens."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "KEYMESH_GRPC_PORT": str(self.port),
            "KEYMESH_HTTP_PORT": "0",
            "KEYMESH_MASTER_KEY": self.master_key,
            "KEYMESH_DATA_DIR": str(self.data_dir),
            "DATABASE_URL": self.database_url,
            "KEYMESH_LOG_LEVEL": "info",
            **self.env,
        }
        log = self._log.open("ab")
        self._proc = subprocess.Popen([self._node, str(MAIN)], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                pytest.fail(f"the KeyMesh server exited: {self._log.read_text()[-2000:]}")
            for line in self._log.read_text().splitlines():
                if '"msg":"listening"' in line:
                    port = json.loads(line)["grpcPort"]
                    if self.port in (0, port):
                        self.port = port
                        return self
            time.sleep(0.05)
        pytest.fail("the KeyMesh server did not start listening")

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """SIGKILL (no final snapshot, no goodbye to its streams), or the signal given, and waits for the exit."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(sig)
            self._proc.wait(timeout=30)
        self._proc = None
        # The next start's "listening" line is the only one to read.
        self._log.write_text("")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=15)
        self._proc = None


def scratch_database(base_url: str, name: str) -> str:
    """A fresh, empty database beside the one `base_url` names (psql, as the test harness's Postgres has it)."""
    psql = shutil.which("psql")
    if psql is None:
        pytest.skip("psql is missing: no scratch database")
    admin_url = base_url.rsplit("/", 1)[0] + "/postgres"
    for sql in (f'drop database if exists "{name}" with (force)', f'create database "{name}"'):
        subprocess.run([psql, admin_url, "-qc", sql], check=True, capture_output=True)
    return base_url.rsplit("/", 1)[0] + f"/{name}"


def master_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def create_pool(addr: str, name: str, keys: int = 1, max_concurrency: int = 0) -> None:
    """The pool on that server: keys k0..k{n-1} with secrets sk-<pool>-<i>, the same on every server."""
    with Client(addr) as admin:
        admin.admin.CreatePool(admin_pb2.CreatePoolRequest(pool=admin_pb2.Pool(name=name, min_ttl=Duration(seconds=1))))
        for i in range(keys):
            admin.admin.AddKey(
                admin_pb2.AddKeyRequest(pool=name, key=admin_pb2.Key(id=f"k{i}", max_concurrency=max_concurrency), secret=f"sk-{name}-{i}")
            )


def pool_name() -> str:
    return f"py-failover-{uuid.uuid4().hex[:10]}"
