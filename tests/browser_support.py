"""Headless Chromium for the report tests and the docs screenshots: Debian's ``chromium`` package (``make
browser`` installs it), driven through its command line (``--dump-dom``, ``--screenshot``), with a fresh
profile, no sandbox (containers run as root), no GPU and every background network feature off."""
from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

CHECK_JS = Path(__file__).resolve().parent / "browser" / "report_check.js"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--disable-default-apps", "--mute-audio", "--hide-scrollbars"]
# collects page errors before any of the report's own scripts run
ERROR_CATCHER = ("<script>window.__twErrors=[];window.addEventListener('error',function(e){"
                 "window.__twErrors.push(String(e.message||e))});(function(){var ce=console.error;"
                 "console.error=function(){window.__twErrors.push(Array.prototype.join.call(arguments,' '));"
                 "ce.apply(console,arguments)}})();</script>")


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _run(args: list[str], workdir: str, timeout: int) -> str:
    exe = chromium_path()
    if exe is None:
        raise RuntimeError("Chromium is not installed: run `make browser`")
    cmd = [exe, *FLAGS, f"--user-data-dir={os.path.join(workdir, 'profile')}", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=workdir)
    if r.returncode != 0:
        raise RuntimeError(f"chromium failed ({r.returncode}): {r.stderr[-2000:]}")
    return r.stdout


def check_report(report_html: str | Path, timeout: int = 90) -> dict:
    """Open a copy of the report *alone* in an empty directory (it must need no other file), with the error
    catcher first in <head> and tests/browser/report_check.js last in <body>; return what the check saw."""
    text = Path(report_html).read_text(encoding="utf-8")
    text = text.replace("<head>", "<head>" + ERROR_CATCHER, 1)
    text = text.replace("</body>", f"<script>{CHECK_JS.read_text(encoding='utf-8')}</script></body>", 1)
    with tempfile.TemporaryDirectory(prefix="tw-browser-") as d:
        page = os.path.join(d, "page", "report.html")
        os.makedirs(os.path.dirname(page))
        with open(page, "w", encoding="utf-8") as f:
            f.write(text)
        dom = _run(["--window-size=1200,900", "--virtual-time-budget=10000", "--dump-dom",
                    Path(page).as_uri()], d, timeout)
    found = re.findall(r'<pre id="tw-test-result">(\{.*?)</pre>', dom, re.S)  # the last: the script names it too
    if not found:
        raise AssertionError("the check did not finish: no #tw-test-result in the page\n" + dom[-3000:])
    return json.loads(html.unescape(found[-1]))


def screenshot(report_html: str | Path, png: str | Path, width: int = 1200, height: int = 2400,
               timeout: int = 90) -> None:
    """A PNG of the top ``height`` CSS pixels of the page at ``width``."""
    with tempfile.TemporaryDirectory(prefix="tw-browser-") as d:
        _run([f"--window-size={width},{height}", "--virtual-time-budget=5000", f"--screenshot={png}",
              Path(report_html).resolve().as_uri()], d, timeout)
