"""Screenshots of the reviewer pages for the README: queue, case, model and what-if pages.

    python -m serving.review.screenshots --data-dir /tmp/small --out docs

Starts ``bentoml serve`` on a free loopback port over a scored data directory, signs in with
a short-lived token (revoked afterwards; it may record dispositions, so the form shows,
but the script never submits one), and photographs each
page with Debian's headless chromium through Playwright (never a downloaded browser). The
case shown is the highest-ranked case among the first 50 whose linked records include one to
check, so the picture shows what the page is for; its what-if shows the case's largest-effect
fact changed (set to 0, or to 1 where it was 0).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from serving.api.auth import TokenStore
from serving.api.server_process import running_server
from triage.paths import PROJECT_ROOT, Paths

__all__ = ["CHROMIUM_ARGS", "main", "serve", "take_screenshots"]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT = {"width": 1440, "height": 900}
MAX_HEIGHT = {
    "queue": 1500,
    "case": 2300,
    "model": 2300,
    "whatif": 1800,
}  # px: the top of long pages


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(paths: Paths, token: str, timeout_s: float = 300) -> Iterator[str]:
    """``bentoml serve`` over ``paths`` until the pages are ready; yields its base URL."""
    import requests

    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="triage-shots-") as home:
        env = {
            **os.environ,
            "TRIAGE_DATA_DIR": str(paths.data_dir),
            "TRIAGE_MLRUNS_DIR": str(paths.mlruns_dir),
            "BENTOML_HOME": home,  # its metrics directory is wiped at start: never share it
            "BENTOML_DO_NOT_TRACK": "True",
        }
        bentoml = Path(sys.executable).with_name("bentoml")
        cmd = [str(bentoml), "serve", "serving.api.service:TriageService"]
        url = f"http://127.0.0.1:{port}"

        def pages_ready() -> bool:  # the model page says when the case pages' files are loaded
            r = requests.get(
                f"{url}/ui/model", headers={"Authorization": f"Bearer {token}"}, timeout=2
            )
            return r.status_code == 200 and 'id="importance-plot"' in r.text

        with running_server(
            [*cmd, "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            log_path=Path(home) / "server.log",
            ready=pages_ready,
            timeout_s=timeout_s,
            poll_s=0.5,
            grace_s=30,
        ):
            yield url


def _shoot(page, path: Path, name: str) -> None:
    page.wait_for_load_state("networkidle")
    height = min(page.evaluate("document.documentElement.scrollHeight"), MAX_HEIGHT[name])
    page.set_viewport_size({"width": VIEWPORT["width"], "height": height})
    page.screenshot(path=str(path))
    page.set_viewport_size(VIEWPORT)


def take_screenshots(url: str, token: str, out: Path, case_id: str | None = None) -> list[Path]:
    """Sign in at ``url`` and write queue.png, case.png, model.png and whatif.png
    (``docs/ui-*.png``)."""
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    written = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(base_url=url, viewport=VIEWPORT)
        page.goto("/ui/login")
        page.fill("input[name=token]", token)
        page.click("button[type=submit]")
        page.wait_for_load_state()
        page.goto("/ui/?tier=1&size=25")
        if case_id is None:
            ids = page.locator("#queue tbody a.case-link").all_inner_texts()
            case_id = ids[0]
            for candidate in ids:
                html = page.request.get(f"/ui/case/{candidate}").text()
                if re.search(r"\d+ to check</strong>", html):
                    case_id = candidate
                    break
        for name, target in (
            ("queue", "/ui/?tier=1&size=25"),
            ("case", f"/ui/case/{case_id}"),
            ("model", "/ui/model"),
        ):
            page.goto(target)
            path = out / f"ui-{name}.png"
            _shoot(page, path, name)
            written.append(path)
        _what_if(page, case_id)
        path = out / "ui-whatif.png"
        _shoot(page, path, "whatif")
        written.append(path)
        browser.close()
    return written


def _what_if(page, case_id: str, timeout_s: float = 120) -> None:
    """The case's what-if with its largest-effect fact changed (waits for the model to load)."""
    import time

    deadline = time.monotonic() + timeout_s
    while page.goto(f"/ui/case/{case_id}/whatif").status == 503:
        if time.monotonic() > deadline:
            raise RuntimeError("the service's model did not load: no what-if to show")
        time.sleep(1)
    first = page.locator("#whatif-form input[inputmode=decimal]").first
    first.fill("1" if first.input_value() in ("0", "") else "0")
    page.click("#whatif-submit")
    page.wait_for_load_state()
    if page.locator("#whatif-error").count():  # 0 outside the fact's domain: show it as it is
        page.goto(f"/ui/case/{case_id}/whatif")


def main(argv: list[str] | None = None) -> None:
    """Command line: ``--data-dir`` (a scored world), ``--out`` (default docs/), ``--case``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "docs")
    parser.add_argument("--case", default=None, help="case to show (default: see module doc)")
    args = parser.parse_args(argv)
    paths = Paths.resolve(args.data_dir)
    store = TokenStore.in_dir(paths.service_dir)
    new = store.create("screenshots", ["queue:read", "score:read", "explain:read", "review:write"])
    try:
        with serve(paths, new.value) as url:
            for path in take_screenshots(url, new.value, args.out, args.case):
                print(path)
    finally:
        store.revoke(new.info.token_id)
        store.close()


if __name__ == "__main__":
    main()
