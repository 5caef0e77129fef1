"""Run the simulator on real sockets, in a background thread, for tests and rehearsals.

::

    with SimulatorServer(SimulatorConfig(run_seconds=0.1), ports=3) as server:
        api, foreign, cdn = server.urls      # three origins, one shared queue
        ...
        assert server.counters()["submits"] == 1

The server binds its sockets before the thread starts and :meth:`SimulatorServer.start` returns
only once uvicorn reports it is serving, so the first request never races the startup. The
config is read on every request, so a test that needs one port's origin in another's answers
sets it once the ports are known: ``server.config.public_origin = server.urls[1]``.
"""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Any

import uvicorn

from .app import create_app
from .config import SimulatorConfig
from .state import Simulator

STARTUP_TIMEOUT = 30.0  # seconds; generous for a loaded CI machine
SHUTDOWN_GRACE = 2  # seconds uvicorn waits for open connections before cancelling them


class SimulatorServer:
    """A context manager serving :func:`create_app` with uvicorn on one or more ports."""

    def __init__(
        self,
        config: SimulatorConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ports: int = 1,
        ssl_certfile: str | None = None,
        ssl_keyfile: str | None = None,
        log_level: str = "warning",
    ):
        if ports < 1:
            raise ValueError(f"ports must be 1 or more, got {ports}")
        if (ssl_certfile is None) != (ssl_keyfile is None):
            raise ValueError("ssl_certfile and ssl_keyfile go together")
        self.config = config or SimulatorConfig()
        self.host = host
        self.port = port
        self.ports = ports
        self.ssl_certfile = ssl_certfile
        self.ssl_keyfile = ssl_keyfile
        self.log_level = log_level
        self.app = create_app(self.config)
        self.urls: list[str] = []
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sockets: list[socket.socket] = []

    @property
    def sim(self) -> Simulator:
        sim: Simulator = self.app.state.sim
        return sim

    @property
    def url(self) -> str:
        """The first origin, like ``http://127.0.0.1:53211``."""
        if not self.urls:
            raise RuntimeError("the simulator is not running")
        return self.urls[0]

    def counters(self) -> dict[str, Any]:
        """The same dict as ``GET /_sim/counters``, read directly."""
        return self.sim.counters()

    def start(self) -> SimulatorServer:
        if self._thread is not None:
            raise RuntimeError("the simulator is already running")
        if self.sim.closing:
            raise RuntimeError("a stopped SimulatorServer cannot restart; create a new one")
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        scheme = "https" if self.ssl_certfile else "http"
        for index in range(self.ports):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            # accepted connections inherit it: without it, a response written in two parts
            # (headers, body) waits for the client's delayed ACK, 40 ms a request
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                sock.bind((self.host, self.port if index == 0 else 0))
            except OSError:
                sock.close()
                self._close_sockets()
                raise
            self._sockets.append(sock)
            bound_port = sock.getsockname()[1]
            netloc = f"[{self.host}]" if family == socket.AF_INET6 else self.host
            self.urls.append(f"{scheme}://{netloc}:{bound_port}")
        config = uvicorn.Config(
            self.app,
            log_level=self.log_level,
            log_config=None,  # leave the host program's logging alone
            access_log=False,
            lifespan="off",
            loop="asyncio",
            http="h11",
            ws="none",
            ssl_certfile=self.ssl_certfile,
            ssl_keyfile=self.ssl_keyfile,
            timeout_graceful_shutdown=SHUTDOWN_GRACE,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": self._sockets},
            name="batchrunner-simulator",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not self._server.started:
            if not self._thread.is_alive():
                self._cleanup()
                raise RuntimeError("the simulator failed to start (see the log above)")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the simulator did not start within {STARTUP_TIMEOUT:g} s")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        """End open status streams, ask uvicorn to exit, wait for it, close the state file."""
        self.sim.closing = True
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=SHUTDOWN_GRACE + 10)
        self.sim.close()
        self._cleanup()

    def _cleanup(self) -> None:
        self._close_sockets()
        self._thread = None
        self._server = None
        self.urls = []

    def _close_sockets(self) -> None:
        for sock in self._sockets:
            sock.close()
        self._sockets = []

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
