"""A TCP proxy in front of a server (the tests' S3) that can fail for a while, as an object store
does: answer every request with HTTP 503 "SlowDown", reset every connection, or add seconds of
latency to each one.

:class:`FaultProxy` runs an asyncio server in a thread of the test process. ``mode`` applies to
each new connection; switching it aborts the connections already open (clients keep HTTP
connections alive, and an outage ends those too). :meth:`FaultProxy.outage` runs the three faults
in turn for a given time, then passes traffic again; :meth:`FaultProxy.script` gives the next
connections one mode each, whatever the time they take; ``served`` counts the connections each
mode handled.
"""
from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterator

MODES = ("pass", "503", "reset", "slow")
SLOW_DOWN = (b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nConnection: close\r\n"
             b"Content-Length: 120\r\n\r\n"
             + b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message>"
               b"</Error>".ljust(120))


class FaultProxy:
    """Forwards ``host:<port>`` (a free port, :attr:`port` once started) to ``upstream``
    (``host:port``) in :attr:`mode`; ``latency_s``: the delay of each connection in ``slow``."""

    def __init__(self, host: str, upstream: str, latency_s: float = 2.0) -> None:
        self.host, self.upstream, self.latency_s = host, upstream, latency_s
        self.mode = "pass"
        self.served: Counter = Counter()
        self._script: list[str] = []
        self._open: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server = None
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, self.host, 0), self._loop).result(timeout=10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        """Closes the server and every connection, and ends the thread."""
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    async def _close(self) -> None:
        self._server.close()
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                task.cancel()

    def set_mode(self, mode: str) -> None:
        """Applies ``mode`` to new connections and aborts the open ones."""
        assert mode in MODES, mode
        self.mode = mode
        self._loop.call_soon_threadsafe(self._abort_open)

    def script(self, modes: list[str]) -> None:
        """The next ``len(modes)`` connections get these modes in turn; later ones get :attr:`mode`."""
        assert set(modes) <= set(MODES), modes
        self._script = list(modes)

    def outage(self, seconds: float) -> None:
        """503s, then resets, then latency, a third of ``seconds`` each; then traffic passes."""
        for mode in ("503", "reset", "slow"):
            self.set_mode(mode)
            time.sleep(seconds / 3)
        self.set_mode("pass")

    def _abort_open(self) -> None:
        for writer in list(self._open):
            _reset(writer)
        self._open.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        mode = self._script.pop(0) if self._script else self.mode
        self.served[mode] += 1
        if mode == "reset":
            _reset(writer)
            return
        if mode == "503":
            with contextlib.suppress(Exception):
                await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
                writer.write(SLOW_DOWN)
                await writer.drain()
            writer.close()
            return
        if mode == "slow":
            await asyncio.sleep(self.latency_s)
        host, port = self.upstream.rsplit(":", 1)
        try:
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            _reset(writer)
            return
        self._open.update((writer, up_writer))
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        self._open.difference_update((writer, up_writer))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(Exception):
        writer.close()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Closes the connection with a TCP reset (SO_LINGER 0), as a crashed server or balancer does."""
    sock = writer.get_extra_info("socket")
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@contextlib.contextmanager
def fault_proxy(host: str, upstream: str, latency_s: float = 2.0) -> Iterator[FaultProxy]:
    """A started :class:`FaultProxy` on ``host`` in front of ``upstream`` (``host:port``),
    passing traffic until told otherwise; stopped on exit."""
    proxy = FaultProxy(host, upstream, latency_s).start()
    try:
        yield proxy
    finally:
        proxy.stop()
