"""Headless Chromium over the DevTools protocol (needs websocket-client, in the test extra): open a
local page, collect its JavaScript errors, evaluate expressions, send mouse input, take screenshots.
tests/test_compare_browser.py drives `pqcodec compare` pages with it; as a script it makes the
README's screenshots of a page:

    python -m eval.headless report.html -o docs/images/shot.png [--width 1100] [--height 1000] [--colours 256]

Chromium is found as $PQCODEC_CHROMIUM, or `chromium` (Debian's package), `chromium-browser` or
`google-chrome` on the PATH. It runs with a throw-away profile and no network services, so it works
on a closed network and as root (--no-sandbox)."""
import argparse
import base64
import io
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
FLAGS = ("--headless", "--remote-debugging-port=0", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-default-apps",
         "--hide-scrollbars", "--mute-audio")


def find_chromium() -> str | None:
    given = os.environ.get("PQCODEC_CHROMIUM")
    if given:
        return given
    return next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)


class BrowserError(Exception):
    pass


class Browser:
    """One headless Chromium with one page (a context manager). `errors` collects the page's
    uncaught exceptions, console.error calls and error log entries, as text."""

    def __init__(self, executable: str, width: int = 1100, height: int = 900, timeout: float = 60):
        import websocket
        self.timeout = timeout
        self.errors: list[str] = []
        self._events: list[dict] = []
        self._id = 0
        self._profile = tempfile.mkdtemp(prefix="pqcodec-chromium-")
        self._proc = subprocess.Popen([executable, *FLAGS, f"--user-data-dir={self._profile}",
                                       f"--window-size={width},{height}", "about:blank"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            port = self._port()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=timeout) as r:
                page = next(t for t in json.load(r) if t["type"] == "page")
            self._ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=timeout, suppress_origin=True)
            for domain in ("Page", "Runtime", "Log"):
                self.send(f"{domain}.enable")
            self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                      mobile=False)
        except BaseException:
            self.close()
            raise

    def _port(self) -> int:
        """Chromium writes the port it chose to DevToolsActivePort in its profile."""
        path = Path(self._profile) / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise BrowserError(f"chromium exited with status {self._proc.returncode} before it listened")
            try:
                return int(path.read_text().split()[0])
            except (FileNotFoundError, IndexError, ValueError):
                time.sleep(0.05)
        raise BrowserError(f"chromium did not open its DevTools port in {self.timeout} s")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        ws = getattr(self, "_ws", None)
        if ws is not None:
            try:
                ws.close()
            except Exception:
                pass
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        shutil.rmtree(self._profile, ignore_errors=True)

    # -- the protocol -----------------------------------------------------------------------------
    def send(self, method: str, **params) -> dict:
        self._id += 1
        self._ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            message = json.loads(self._ws.recv())
            if message.get("id") == self._id:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                return message.get("result", {})
            self._event(message)

    def _event(self, message: dict):
        method, params = message.get("method"), message.get("params", {})
        if method == "Runtime.exceptionThrown":
            d = params["exceptionDetails"]
            self.errors.append(d.get("exception", {}).get("description") or d.get("text", "exception"))
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            self.errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            self.errors.append(params["entry"].get("text", ""))
        self._events.append(message)

    def _wait_for(self, method: str):
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if any(e.get("method") == method for e in self._events):
                self._events = [e for e in self._events if e.get("method") != method]
                return
            self._event(json.loads(self._ws.recv()))
        raise BrowserError(f"no {method} in {self.timeout} s")

    # -- what tests and scripts use ---------------------------------------------------------------
    def open(self, path: Path):
        """Loads a local file and waits for its load event (images included)."""
        self._events.clear()
        result = self.send("Page.navigate", url=Path(path).resolve().as_uri())
        if result.get("errorText"):
            raise BrowserError(f"{path}: {result['errorText']}")
        self._wait_for("Page.loadEventFired")

    def evaluate(self, expression: str):
        """The value of a JavaScript expression (a promise is awaited)."""
        r = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise BrowserError(f"{expression[:80]}: {r['exceptionDetails'].get('exception', {}).get('description')}")
        return r["result"].get("value")

    def drag(self, x0: float, y0: float, x1: float, y1: float, steps: int = 5):
        """A mouse drag (left button) from (x0, y0) to (x1, y1), in CSS pixels of the viewport."""
        self.send("Input.dispatchMouseEvent", type="mouseMoved", x=x0, y=y0)
        self.send("Input.dispatchMouseEvent", type="mousePressed", x=x0, y=y0, button="left", buttons=1, clickCount=1)
        for i in range(1, steps + 1):
            self.send("Input.dispatchMouseEvent", type="mouseMoved", x=x0 + (x1 - x0) * i / steps,
                      y=y0 + (y1 - y0) * i / steps, button="left", buttons=1)
        self.send("Input.dispatchMouseEvent", type="mouseReleased", x=x1, y=y1, button="left", buttons=0, clickCount=1)

    def screenshot(self, clip: dict | None = None, full_page: bool = False) -> bytes:
        """PNG bytes of the viewport, of `clip` ({x, y, width, height} in page CSS pixels), or of the
        whole page."""
        self.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(true))))")  # painted
        params = dict(format="png", captureBeyondViewport=bool(clip or full_page))
        if full_page and not clip:
            size = self.evaluate("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
            clip = dict(x=0, y=0, width=size[0], height=size[1])
        if clip:
            params["clip"] = {**clip, "scale": 1}
        return base64.b64decode(self.send("Page.captureScreenshot", **params)["data"])


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m eval.headless", description="Screenshot of a local HTML page in headless Chromium.")
    p.add_argument("page", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True, help="PNG file")
    p.add_argument("--width", type=int, default=1100)
    p.add_argument("--height", type=int, default=1000)
    p.add_argument("--selector", default="section.comparison", help="the element to capture (default: the first image's section)")
    p.add_argument("--setup", default="", help="JavaScript to run before the capture (e.g. choose a codec)")
    p.add_argument("--colours", type=int, default=0, help="reduce to a palette of this many colours (smaller files)")
    args = p.parse_args(argv)
    from PIL import Image
    executable = find_chromium()
    if not executable:
        raise SystemExit("no chromium found (apt-get install chromium, or set PQCODEC_CHROMIUM)")
    with Browser(executable, args.width, args.height) as b:
        b.open(args.page)
        if args.setup:
            b.evaluate(args.setup)
        rect = b.evaluate(f"(() => {{ const r = document.querySelector({json.dumps(args.selector)}).getBoundingClientRect();"
                          " return {x: r.x + scrollX, y: r.y + scrollY, width: r.width, height: r.height}; })()")
        png = b.screenshot(clip=rect)
        if b.errors:
            raise SystemExit(f"{args.page}: JavaScript errors: {b.errors}")
    img = Image.open(io.BytesIO(png)).convert("RGB")
    if args.colours:
        img = img.quantize(args.colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG)
    img.save(args.output, optimize=True)
    print(f"{args.output}: {img.width}x{img.height}, {args.output.stat().st_size} bytes")


if __name__ == "__main__":
    main()
