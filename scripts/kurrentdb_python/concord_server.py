"""Starts `concord serve` for the tests: the binary in $CONCORD_BIN (scripts/kurrentdb-python
builds it), an ephemeral port on loopback, a fresh embedded store in a temporary directory,
no built-in projections. KurrentDB's gRPC protocol is served on the HTTP port (requests with
`content-type: application/grpc` go to it), so the client's URI names that port.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import threading

# The line `concord serve` prints once it listens.
_LISTENING = re.compile(r" on http://(\S+) ")
# How long a server may take to start (a debug build on a busy 2-core machine).
START_TIMEOUT = 60.0


class ConcordServer:
    """One `concord serve` process over its own temporary store; `stop()` kills it and
    removes the store. Its log is kept in memory and shown when a test fails to start it."""

    def __init__(self) -> None:
        binary = os.environ.get("CONCORD_BIN")
        if not binary:
            raise RuntimeError(
                "CONCORD_BIN is not set: run these tests through scripts/kurrentdb-python"
            )
        self._dir = tempfile.mkdtemp(prefix="concord-kdb-")
        self._log: list[str] = []
        self._listening = threading.Event()
        self.addr = ""
        self._process = subprocess.Popen(
            [
                binary,
                "--store",
                os.path.join(self._dir, "store"),
                "serve",
                "--addr",
                "127.0.0.1:0",
                "--no-projections",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()
        if not self._listening.wait(START_TIMEOUT) or not self.addr:
            self.stop()
            raise RuntimeError(
                "concord serve did not start; its log:\n" + "".join(self._log)
            )

    def _read_log(self) -> None:
        assert self._process.stderr is not None
        for line in self._process.stderr:
            self._log.append(line)
            match = _LISTENING.search(line)
            if match and not self.addr:
                self.addr = match.group(1)
                self._listening.set()
        # The process ended (or closed stderr): wake a waiting constructor.
        self._listening.set()

    @property
    def uri(self) -> str:
        """The connection string an application written for KurrentDB would use."""
        return f"kurrentdb://{self.addr}?Tls=false"

    def log(self) -> str:
        return "".join(self._log)

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()
        self._reader.join(timeout=10)
        if self._process.stderr is not None:
            self._process.stderr.close()
        shutil.rmtree(self._dir, ignore_errors=True)
