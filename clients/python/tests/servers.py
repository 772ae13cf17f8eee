"""KeyMesh server processes of a test's own (server/dist/main.js, the embedded database in a temporary
directory): started on port 0, killed with SIGKILL, started again on the same port and data."""

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
MAIN = REPO / "server" / "dist" / "main.js"
START_TIMEOUT_S = 60.0


def require_server_build() -> str:
    node = shutil.which("node")
    if node is None or not MAIN.exists():
        pytest.skip("node or server/dist/main.js is missing (npm run build): no KeyMesh server to start")
    return node


class Server:
    """One KeyMesh process on the embedded database in `data_dir`."""

    def __init__(self, data_dir: Path, master_key: str) -> None:
        self._node = require_server_build()
        self.data_dir = data_dir
        self.master_key = master_key
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
            "DATABASE_URL": "",
            "KEYMESH_LOG_LEVEL": "info",
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

    def kill(self) -> None:
        """SIGKILL: no final snapshot, no goodbye to its streams."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGKILL)
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
