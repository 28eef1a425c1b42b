"""Headless Chromium for browser tests, driven over the DevTools protocol on a pipe (stdlib only).

Chromium is started with ``--remote-debugging-pipe``: it reads protocol messages from its fd 3 and
writes to its fd 4, each a JSON object ended by a NUL byte. That needs no port, no websocket client
and no extra package. One page is opened in flat session mode; its console errors (``console.error``,
uncaught exceptions, and browser log errors such as "Failed to load resource") are collected on every
message read, so a test can assert there are none.

Usage::

    with Browser() as browser:
        browser.open(url)
        assert browser.console_errors == []
        browser.screenshot(path)
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from procs import stop

CHROMIUM = "/usr/bin/chromium"
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
IMAGES_JS = """Array.from(document.images).map(i => ({
    src: i.currentSrc.slice(0, 60), complete: i.complete,
    naturalWidth: i.naturalWidth, naturalHeight: i.naturalHeight}))"""


def require_chromium() -> str:
    """Returns Chromium's path, or skips the test when Debian's ``chromium`` is not installed."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)")
    return CHROMIUM


class BrowserError(RuntimeError):
    """Chromium failed, exited, or answered a command with an error."""


class Browser:
    """One headless Chromium with one page; a context manager that always stops the browser.

    Args:
        width, height: The page's viewport in CSS pixels (device scale factor 1).
        timeout_s: The default deadline of each command and wait.
    """

    def __init__(self, width: int = 1280, height: int = 2000, timeout_s: float = 30.0) -> None:
        executable = require_chromium()
        self.timeout_s = timeout_s
        self.console_errors: list[str] = []
        self._buffer = b""
        self._next_id = 0
        self._events: list[dict] = []
        self._profile = tempfile.mkdtemp(prefix="chromium-profile-")
        self._log = open(os.path.join(self._profile, "chromium.log"), "wb")  # noqa: SIM115
        to_chromium, self._write_fd = os.pipe()
        self._read_fd, from_chromium = os.pipe()
        # High copies so that the dup2 below cannot overwrite one of them when moving it to 3 or 4.
        child_in = fcntl.fcntl(to_chromium, fcntl.F_DUPFD_CLOEXEC, 10)
        child_out = fcntl.fcntl(from_chromium, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(to_chromium)
        os.close(from_chromium)

        def protocol_fds() -> None:  # in the child: Chromium expects the pipe on fds 3 and 4
            os.dup2(child_in, 3)
            os.dup2(child_out, 4)

        try:
            self._process = subprocess.Popen(
                [executable, *FLAGS, "--remote-debugging-pipe", f"--user-data-dir={self._profile}",
                 f"--window-size={width},{height}", "about:blank"],
                stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                pass_fds=(3, 4), preexec_fn=protocol_fds, start_new_session=True)
        finally:
            os.close(child_in)
            os.close(child_out)
        try:
            target = self._call("Target.createTarget", {"url": "about:blank"})["targetId"]
            self._session = self._call("Target.attachToTarget", {"targetId": target, "flatten": True})[
                "sessionId"]
            for domain in ("Page", "Runtime", "Log"):
                self.call(f"{domain}.enable")
            self.call("Emulation.setDeviceMetricsOverride",
                      {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
            self.call("Emulation.setScrollbarsHidden", {"hidden": True})  # content is `width` wide
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stops Chromium and removes its temporary profile."""
        process = getattr(self, "_process", None)
        if process is not None and process.poll() is None:
            try:
                self._send({"id": -1, "method": "Browser.close"})
                process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                process.kill()
                process.wait(timeout=10)
        for fd in (self._read_fd, self._write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._read_fd = self._write_fd = -1
        self._log.close()
        shutil.rmtree(self._profile, ignore_errors=True)

    def call(self, method: str, params: dict | None = None, timeout_s: float | None = None) -> dict:
        """Sends a command to the page and returns its result."""
        return self._call(method, params, timeout_s, session=self._session)

    def open(self, url: str, timeout_s: float | None = None) -> None:
        """Navigates to ``url`` and waits for its load event (every image loaded or failed)."""
        self._events.clear()
        result = self.call("Page.navigate", {"url": url}, timeout_s)
        if result.get("errorText"):
            raise BrowserError(f"cannot open {url}: {result['errorText']}")
        self._wait_event("Page.loadEventFired", timeout_s)

    def evaluate(self, expression: str, timeout_s: float | None = None) -> Any:
        """Evaluates JavaScript in the page (promises awaited) and returns its JSON value."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True}, timeout_s)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression!r} threw: {_exception_text(result['exceptionDetails'])}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout_s: float | None = None, poll_s: float = 0.25) -> Any:
        """Polls a JavaScript expression until it is truthy; returns that value."""
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{expression!r} still falsy after {timeout_s or self.timeout_s} s")
            self._pump(min(poll_s, max(0.0, deadline - time.monotonic())))

    def images(self) -> list[dict]:
        """Every ``<img>``: ``src`` (first 60 characters), ``complete``, ``naturalWidth/Height``."""
        return self.evaluate(IMAGES_JS)

    def screenshot(self, path: str | os.PathLike, full_page: bool = True) -> Path:
        """Saves a PNG of the viewport, or of the whole page; returns its path."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            size = self.call("Page.getLayoutMetrics")["cssContentSize"]
            params.update(captureBeyondViewport=True, clip={
                "x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1})
        data = base64.b64decode(self.call("Page.captureScreenshot", params)["data"])
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    # -- the protocol ---------------------------------------------------------------------------

    def _call(self, method: str, params: dict | None = None, timeout_s: float | None = None,
              session: str | None = None) -> dict:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self._send(message)
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        while True:
            reply = self._receive(deadline, f"the reply to {method}")
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply["result"]

    def _wait_event(self, method: str, timeout_s: float | None = None) -> dict:
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        while True:
            for event in self._events:
                if event["method"] == method:
                    return event["params"]
            self._receive(deadline, method)

    def _pump(self, seconds: float) -> None:
        """Reads (and records) whatever arrives within ``seconds``."""
        deadline = time.monotonic() + seconds
        try:
            while True:
                self._receive(deadline, "events")
        except TimeoutError:
            pass

    def _send(self, message: dict) -> None:
        data = json.dumps(message).encode() + b"\0"
        while data:
            data = data[os.write(self._write_fd, data):]

    def _receive(self, deadline: float, what: str) -> dict:
        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {what} from Chromium in time")
            ready, _, _ = select.select([self._read_fd], [], [], remaining)
            if ready:
                chunk = os.read(self._read_fd, 1 << 20)
                if not chunk:
                    raise BrowserError(f"Chromium exited (status {self._process.poll()}): {self._log_tail()}")
                self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        message = json.loads(raw)
        if "method" in message:
            self._events.append(message)
            error = _console_error(message)
            if error:
                self.console_errors.append(error)
        return message

    def _log_tail(self) -> str:
        self._log.flush()
        return Path(self._log.name).read_text(errors="replace")[-2000:]


def _console_error(event: dict) -> str | None:
    """The text of an event that the DevTools console shows as an error, else None."""
    method, params = event["method"], event.get("params", {})
    if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
        args = params.get("args", [])
        return "console.error: " + " ".join(str(a.get("value", a.get("description", ""))) for a in args)
    if method == "Runtime.exceptionThrown":
        return "uncaught: " + _exception_text(params["exceptionDetails"])
    if method == "Log.entryAdded" and params["entry"].get("level") == "error":
        entry = params["entry"]
        return f"{entry.get('source', 'log')}: {entry.get('text', '')} {entry.get('url', '')}".rstrip()
    return None


def _exception_text(details: dict) -> str:
    exception = details.get("exception") or {}
    return exception.get("description") or details.get("text", "exception")


@contextlib.contextmanager
def optuna_dashboard(study_dir: str | Path) -> Iterator[str]:
    """Runs ``python -m transcenter.dashboards.optuna_ui <study_dir> --port 0`` (as
    ``make dashboard`` does); yields its 127.0.0.1 base URL; stops it."""
    process = subprocess.Popen(
        [sys.executable, "-m", "transcenter.dashboards.optuna_ui", str(study_dir), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        ready, _, _ = select.select([process.stdout], [], [], 30)
        line = process.stdout.readline() if ready else ""
        url = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert url, f"the dashboard did not start on 127.0.0.1: {line!r}"
        yield url.group(0)
    finally:
        stop(process)
        process.stdout.close()


def get_json(url: str) -> Any:
    """Returns the JSON document at ``url``."""
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)
