"""A minimal Chrome DevTools Protocol client: headless Chromium driven over --remote-debugging-pipe.

Chromium reads NUL-terminated JSON commands on its file descriptor 3 and writes replies and events on
4, so no websocket library and no browser download is needed: only the system's `chromium` binary.
Every host but 127.0.0.1 resolves to nothing, so the page cannot reach the internet.
"""
from __future__ import annotations

import base64
import fcntl
import json
import os
import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Optional

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


class BrowserError(RuntimeError):
    """Chromium could not start, or a command failed or timed out."""


def _above_nine(fd: int) -> int:
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return moved


def find_chromium() -> Optional[str]:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


class Chromium:
    """One headless browser with one page (the first tab), controlled through `call`."""

    def __init__(self, binary: str, profile_dir: Path, timeout: float = 20.0) -> None:
        self.timeout = timeout
        commands_read, self._commands = os.pipe()
        self._replies, replies_write = os.pipe()
        # The child's ends move above 9 first, so that putting them on 3 and 4 cannot clobber each other.
        commands_read, replies_write = (_above_nine(fd) for fd in (commands_read, replies_write))
        args = [
            binary, "--headless", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
            "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-extensions", "--window-size=1280,1600", f"--user-data-dir={profile_dir}",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "about:blank",
        ]
        self.log_path = Path(profile_dir) / "chromium.log"
        Path(profile_dir).mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")
        # bash (dash takes single-digit descriptors only) puts them on the 3 and 4 that Chromium expects.
        self.process = subprocess.Popen(
            ["bash", "-c", f'exec "$@" 3<&{commands_read} 4>&{replies_write}', "bash", *args],
            pass_fds=(commands_read, replies_write), stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        os.close(commands_read)
        os.close(replies_write)
        self._next_id = 0
        self._pending: dict[int, queue.Queue] = {}
        self._lock = threading.Lock()
        self.events: list[dict] = []
        self._reader = threading.Thread(target=self._read_replies, daemon=True)
        self._reader.start()
        try:
            targets = self.call("Target.getTargets")["targetInfos"]
            page = next(t for t in targets if t["type"] == "page")
            self.session = self.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]
            for domain in ("Page", "Runtime", "DOM"):
                self.call(f"{domain}.enable", session=True)
        except BaseException:
            self.close()
            raise

    def _read_replies(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = os.read(self._replies, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                for waiting in list(self._pending.values()):
                    waiting.put({"error": {"message": "browser closed"}})
                return
            buffer += chunk
            while b"\0" in buffer:
                message, buffer = buffer.split(b"\0", 1)
                reply = json.loads(message)
                if "id" in reply and reply["id"] in self._pending:
                    self._pending[reply["id"]].put(reply)
                else:
                    self.events.append(reply)

    def call(self, method: str, session: bool = False, **params: Any) -> dict:
        """Send one command (to the page's session if `session`) and wait for its result."""
        with self._lock:
            self._next_id += 1
            message_id = self._next_id
            waiting: queue.Queue = queue.Queue()
            self._pending[message_id] = waiting
            message = {"id": message_id, "method": method, "params": params}
            if session:
                message["sessionId"] = self.session
            try:
                os.write(self._commands, json.dumps(message).encode() + b"\0")
            except OSError as e:
                raise BrowserError(f"{method}: browser not reachable ({e})") from None
        try:
            reply = waiting.get(timeout=self.timeout)
        except queue.Empty:
            raise BrowserError(f"{method}: no reply within {self.timeout} s") from None
        finally:
            self._pending.pop(message_id, None)
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error'].get('message')}")
        return reply.get("result", {})

    # ------------------------------------------------------------------ page helpers

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises are awaited)."""
        result = self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"JavaScript error in {expression[:80]!r}: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30.0, interval: float = 0.1) -> Any:
        """Poll `expression` until it is truthy in JavaScript; its value (a DOM element comes back as {})."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value is not None and value is not False and value != 0 and value != "":
                return value
            if time.monotonic() > deadline:
                page = self.evaluate("document.body ? document.body.innerText : ''") or ""
                raise BrowserError(f"timed out after {timeout} s waiting for {expression[:120]!r}; the page "
                                   f"shows: {' | '.join(page.split())[:1500]}")
            time.sleep(interval)

    def navigate(self, url: str) -> None:
        self.call("Page.navigate", session=True, url=url)

    def set_files(self, selector: str, paths: list[str]) -> None:
        """Choose files in an <input type=file>, as a user does in the file dialog."""
        root = self.call("DOM.getDocument", session=True, depth=-1, pierce=True)["root"]["nodeId"]
        node = self.call("DOM.querySelector", session=True, nodeId=root, selector=selector)["nodeId"]
        if not node:
            raise BrowserError(f"no element matches {selector!r}")
        self.call("DOM.setFileInputFiles", session=True, nodeId=node, files=[str(p) for p in paths])

    def click(self, selector: str) -> None:
        """A real mouse click (press and release) at the centre of the element.

        The position is taken once the element has stopped moving (uploads and text fields resize the
        page) and the element is the one under that point.
        """
        locate = (
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); if (!e) return null;"
            " e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
            " if (r.width == 0) return null; const x = r.x + r.width / 2, y = r.y + r.height / 2;"
            " return e.contains(document.elementFromPoint(x, y)) ? [x, y] : null; })()"
        )
        deadline, previous = time.monotonic() + self.timeout, None
        while True:
            position = self.evaluate(locate)
            if position is not None and position == previous:
                break
            if time.monotonic() > deadline:
                raise BrowserError(f"{selector!r} is not visible and still, so it cannot be clicked")
            previous = position
            time.sleep(0.2)
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", session=True, type=kind, x=position[0], y=position[1],
                      button="left", clickCount=1)

    def type_text(self, selector: str, text: str) -> None:
        """Focus a text field, select what it holds and type `text` over it."""
        self.evaluate(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); e.focus(); e.select(); }})()")
        self.call("Input.insertText", session=True, text=text)

    def fetch_bytes(self, url_expression: str) -> bytes:
        """The bytes behind a URL the page computes (fetched by the page itself)."""
        data = self.evaluate(
            f"fetch({url_expression}).then(r => r.arrayBuffer()).then(b => {{ let s = '';"
            " const a = new Uint8Array(b); for (let i = 0; i < a.length; i++) s += String.fromCharCode(a[i]);"
            " return btoa(s); })"
        )
        return base64.b64decode(data)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(timeout=5)  # it sees the end of the pipe once the browser is gone
        for fd in (self._commands, self._replies):
            try:
                os.close(fd)
            except OSError:
                pass
        self._log.close()
