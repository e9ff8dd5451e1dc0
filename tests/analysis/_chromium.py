"""Headless Chromium for the report's tests: a page driven over the DevTools protocol
(``--remote-debugging-pipe``), run with the network off (``unshare -n``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--enable-unsafe-swiftshader", "--hide-scrollbars", "--no-first-run",
         "--disable-extensions", "--mute-audio"]


def require_chromium() -> None:
    """Skips without Chromium, except in CI (which installs it): there it fails."""
    if Path(CHROMIUM).exists():
        return
    message = f"{CHROMIUM} is not installed (apt-get install chromium); the report's browser tests need it"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def offline_prefix() -> list[str]:
    """``unshare -n``: a network namespace with no interface, so no URL can be fetched."""
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-n", "true"], capture_output=True, check=False).returncode == 0:
        return [unshare, "-n"]
    message = "unshare -n is not permitted here (needs root or user namespaces): cannot run the browser offline"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def screenshot(url: str, out: Path, size=(1400, 2300), budget_ms: int = 8000) -> None:
    subprocess.run(
        [*offline_prefix(), CHROMIUM, *FLAGS, f"--window-size={size[0]},{size[1]}", f"--virtual-time-budget={budget_ms}",
         f"--screenshot={out}", url],
        capture_output=True, timeout=120, check=True, cwd=tempfile.gettempdir(),
    )


class Page:
    """One Chromium tab over the DevTools pipe: ``evaluate`` runs JavaScript and returns its value."""

    def __init__(self, url: str, size=(1400, 1000)):
        require_chromium()
        cmd_r, cmd_w = os.pipe()  # we write commands, Chromium reads fd 3
        res_r, res_w = os.pipe()  # Chromium writes fd 4, we read

        def child_fds():
            a, b = os.dup(cmd_r), os.dup(res_w)  # out of the way of 3 and 4 first
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.profile = tempfile.mkdtemp(prefix="raynas-chromium-")
        self.proc = subprocess.Popen(
            [*offline_prefix(), CHROMIUM, *FLAGS, "--remote-debugging-pipe", f"--user-data-dir={self.profile}",
             f"--window-size={size[0]},{size[1]}", "about:blank"],
            # close_fds would close 3 and 4 after preexec_fn; dup2's copies are inheritable.
            close_fds=False, preexec_fn=child_fds,  # noqa: PLW1509 - it only calls dup and dup2, no lock
            stdout=subprocess.DEVNULL, stderr=None if os.environ.get("RAYNAS_CHROMIUM_LOG") else subprocess.DEVNULL,
        )
        os.close(cmd_r)
        os.close(res_w)
        self._w, self._r = os.fdopen(cmd_w, "wb", buffering=0), os.fdopen(res_r, "rb", buffering=0)
        self._buf = b""
        self._id = 0
        target = self.call("Target.createTarget", url=url)["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    def call(self, method: str, session: str | None = None, timeout: float = 60, **params):
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        self._w.write(json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            while b"\0" not in self._buf:
                chunk = self._r.read(1 << 16)
                if not chunk:
                    raise RuntimeError("Chromium closed the DevTools pipe")
                self._buf += chunk
            line, self._buf = self._buf.split(b"\0", 1)
            reply = json.loads(line)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
        raise TimeoutError(method)

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", session=self.session, expression=expression,
                           returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.1)
        raise TimeoutError(f"not true within {timeout} s: {expression}")

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=10)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._w.close()
        self._r.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
