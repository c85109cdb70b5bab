"""The website and `make lab` as a reader sees them: a real, headless Chromium.

The built book (the session fixture ``built_book``, shared with tests/test_book.py) is served
from a local HTTP server; the browser may reach nothing else (every other request is aborted
and Chromium resolves no other host), so these pages are what a reader gets offline.
Every page is loaded once at 1280 px and once at a 390 px phone width; the checks below read
what that crawl saw:

* every page loads with no console error, page error, failed request or other host asked;
* maths is typeset by MathJax: no raw ``\\(``, ``\\[`` or ``$$`` left outside code, every
  ``.math`` element holds a MathJax container, no TeX error;
* every image loads (``naturalWidth > 0``) and has alt text that is not a file path;
* every internal link resolves: the file exists and so does its ``#anchor``;
* the search page finds "factorization";
* at 390 px the page itself never scrolls sideways (wide code, tables and maths scroll
  inside their own boxes);
* screenshots of the landing page and a chapter, desktop and phone, are kept in
  ``_build/screenshots/`` (git-ignored);
* `make lab`: jupyterlab-myst is installed and enabled, `make lab` adds ``--allow-root``
  as root, and JupyterLab renders a chapter's MyST (maths, exercises, collapsed solutions,
  no raw roles or directives).

The browser is Debian's Chromium (``apt-get install -y chromium``), driven by Playwright's
Python package (in requirements.txt) -- no browser is ever downloaded. Without either the
browser tests skip and say how to enable them; with ``CTR_REQUIRE_BROWSER=1`` (set by
``.ci/run``) they fail instead. ``CTR_CHROMIUM`` names another Chromium binary.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "_build" / "screenshots"
CHAPTER = "chapters/03_factorization_machines.html"  # the chapter in the screenshots
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
ENABLE = ("to run them: `apt-get install -y chromium` (Debian/Ubuntu; or set CTR_CHROMIUM to a "
          "Chromium/Chrome binary) and `pip install -r requirements.txt` (Playwright's Python "
          "package; never `playwright install`)")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-quic", "--disable-extensions", "--disable-default-apps",
    # a second lock besides the request filter below: no host but this one resolves
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
]
REFRESH = re.compile(r'<meta http-equiv="refresh" content="0; url=([^"]+)"', re.I)
IMAGE_PATH = re.compile(r"(^|/)[^ ]*\.(png|jpe?g|svg|gif|webp)$|^_?build/|^\.\./|^/", re.I)

pytestmark = pytest.mark.slow


# ----------------------------------------------------------------------------- the browser

def find_chromium() -> str | None:
    named = os.environ.get("CTR_CHROMIUM")
    if named:
        return named if Path(named).exists() else shutil.which(named)
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def browser_problem() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        return f"Playwright's Python package is not installed ({exc})"
    if not find_chromium():
        return "no Chromium on PATH (chromium, chromium-browser, google-chrome; CTR_CHROMIUM)"
    return None


def required() -> bool:
    return os.environ.get("CTR_REQUIRE_BROWSER", "") not in ("", "0")


@pytest.fixture(scope="module")
def browser():
    problem = browser_problem()
    if problem:
        message = f"browser tests: {problem}; {ENABLE}"
        if required():
            pytest.fail(message + " (CTR_REQUIRE_BROWSER is set: they must run here)")
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=find_chromium(), headless=True,
                                     args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class Guard:
    """Everything a page did wrong: console errors, page errors, failed or foreign requests."""

    def __init__(self, context, origin: str):
        self.origin = origin
        self.problems: list[str] = []
        context.route("**/*", self._route)

    def _route(self, route):
        url = route.request.url
        if url.startswith(self.origin) or url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            self.problems.append(f"request to another host (blocked): {url}")
            route.abort("blockedbyclient")

    def watch(self, page):
        page.on("console", lambda m: m.type == "error" and self.problems.append(
            f"console error: {m.text[:300]}"))
        page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        # ERR_ABORTED: the request was cancelled because the crawl went on to the next page
        # (a late, lazily loaded font), not refused: a missing file is an HTTP 404 (below)
        # and a request to another host is recorded where it is blocked (above)
        page.on("requestfailed", lambda r: r.url.startswith(self.origin)
                and "ERR_ABORTED" not in (r.failure or "") and self.problems.append(
                    f"failed request: {r.url} ({r.failure})"))
        page.on("response", lambda r: r.status >= 400 and self.problems.append(
            f"HTTP {r.status}: {r.url}"))
        return page

    def take(self) -> list[str]:
        out, self.problems = self.problems, []
        return out


# ----------------------------------------------------------------------------- the site

class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class _Server(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        """A page closed before its last (large) file arrived: not a failure."""
        import sys

        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


@pytest.fixture(scope="module")
def site(built_book):
    html = built_book.html
    if not (html / "index.html").exists():
        pytest.fail("the book build wrote no index.html (see test_book):\n" + built_book.log[-4000:])
    server = _Server(("127.0.0.1", 0),
                     functools.partial(_Quiet, directory=str(html)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield html, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def page_files(html: Path) -> list[str]:
    return sorted(p.relative_to(html).as_posix() for p in html.rglob("*.html")
                  if not p.relative_to(html).parts[0].startswith("_"))


SETTLE = """async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await MathJax.startup.promise;
  }
  const images = [...document.images];
  images.forEach(i => { i.loading = 'eager'; });
  await Promise.all(images.map(i => i.complete ? null : new Promise(done => {
    i.addEventListener('load', done); i.addEventListener('error', done);
    setTimeout(done, 15000);
  })));
  // MathJax loads its web fonts lazily, after typesetting: let them arrive before the
  // crawl moves on (leaving earlier cancels them, net::ERR_ABORTED)
  await document.fonts.ready;
}"""

READ = r"""() => {
  const outside = n => !n.parentElement.closest(
      'pre, code, script, style, textarea, mjx-container, .highlight');
  const raw = [];
  const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walk.nextNode()) {
    const t = walk.currentNode.nodeValue;
    if (/\\\(|\\\[|\$\$/.test(t) && outside(walk.currentNode)) raw.push(t.trim().slice(0, 80));
  }
  const math = [...document.querySelectorAll('span.math, div.math')];
  return {
    url: location.href,
    raw: raw,
    math: math.length,
    untypeset: math.filter(m => !m.querySelector('mjx-container'))
                   .map(m => m.textContent.trim().slice(0, 80)),
    texErrors: [...document.querySelectorAll('mjx-merror')]
                   .map(e => (e.getAttribute('data-mjx-error') || e.textContent).slice(0, 80)),
    containers: document.querySelectorAll('mjx-container').length,
    images: [...document.images].map(i => ({src: i.getAttribute('src'), alt: i.getAttribute('alt'),
                                            ok: i.complete && i.naturalWidth > 0})),
    links: [...document.querySelectorAll('a[href]')].map(a => a.href),
    ids: [...document.querySelectorAll('[id]')].map(e => e.id)
           .concat([...document.querySelectorAll('a[name]')].map(a => a.name)),
  };
}"""

OVERFLOW = r"""() => {
  const doc = document.scrollingElement || document.documentElement;
  const width = doc.clientWidth;
  const over = doc.scrollWidth - width;
  const culprits = [];
  if (over > 1) {
    for (const el of document.body.querySelectorAll('*')) {
      const r = el.getBoundingClientRect();
      if (r.width === 0 || r.right <= width + 1) continue;
      let a = el.parentElement, contained = false;
      while (a && a !== document.body) {
        if (getComputedStyle(a).overflowX !== 'visible') { contained = true; break; }
        a = a.parentElement;
      }
      if (!contained && getComputedStyle(el).position !== 'fixed') {
        culprits.push(el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') +
          (el.className && typeof el.className === 'string'
            ? '.' + el.className.trim().split(/\s+/).join('.') : '') +
          ' right=' + Math.round(r.right) + ': ' + (el.textContent || '').trim().slice(0, 60));
      }
    }
  }
  return {over: over, culprits: culprits.slice(0, 8)};
}"""


@pytest.fixture(scope="module")
def crawl(browser, site):
    """Every page, desktop then phone: what each showed, and what went wrong."""
    html, origin = site
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    seen = {"desktop": {}, "phone": {}}
    problems: dict[str, list[str]] = {}
    for kind, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        context = browser.new_context(viewport=viewport, is_mobile=kind == "phone",
                                      has_touch=kind == "phone", service_workers="block")
        guard = Guard(context, origin)
        page = guard.watch(context.new_page())
        for name in page_files(html):
            page.goto(origin + name, wait_until="load", timeout=60_000)
            redirect = REFRESH.search((html / name).read_text(encoding="utf-8"))
            if redirect:  # Jupyter Book writes index.html as a redirect to the first page
                page.wait_for_url(urllib.parse.urljoin(origin + name, redirect.group(1)),
                                  wait_until="load", timeout=60_000)
            page.evaluate(SETTLE)
            info = page.evaluate(READ)
            if kind == "phone":
                info["overflow"] = page.evaluate(OVERFLOW)
            seen[kind][name] = info
            if name in ("index.html", CHAPTER):
                shot = "landing" if name == "index.html" else "chapter"
                page.screenshot(path=str(SCREENSHOTS / f"{shot}-{kind}.png"))
            for problem in guard.take():
                problems.setdefault(name, []).append(f"[{kind}] {problem}")
        context.close()
    return {"html": html, "origin": origin, "seen": seen, "problems": problems}


# ----------------------------------------------------------------------------- the checks

def test_every_page_loads_cleanly_with_the_network_off(crawl):
    assert len(crawl["seen"]["desktop"]) >= 10, sorted(crawl["seen"]["desktop"])
    assert not crawl["problems"], "\n".join(
        f"{page}: {p}" for page, ps in sorted(crawl["problems"].items()) for p in ps[:10])


def test_maths_is_typeset(crawl):
    bad = {}
    total = 0
    for name, info in crawl["seen"]["desktop"].items():
        total += info["math"]
        if info["raw"] or info["untypeset"] or info["texErrors"] or info["containers"] < info["math"]:
            bad[name] = {k: info[k] for k in ("raw", "untypeset", "texErrors") if info[k]}
    assert not bad, bad
    assert total > 500, f"only {total} maths elements in the book"  # it has ~800
    chapter = crawl["seen"]["desktop"][CHAPTER]
    assert chapter["containers"] > 0


def test_every_image_loads(crawl):
    broken = {name: [i["src"] for i in info["images"] if not i["ok"]]
              for name, info in crawl["seen"]["desktop"].items()}
    broken = {k: v for k, v in broken.items() if v}
    assert not broken, broken
    assert sum(len(info["images"]) for info in crawl["seen"]["desktop"].values()) >= 10


def test_every_image_has_alt_text(crawl):
    bad = {}
    for name, info in crawl["seen"]["desktop"].items():
        for image in info["images"]:
            alt = (image["alt"] or "").strip()
            src = image["src"] or ""
            if not alt or IMAGE_PATH.search(alt) or alt == src or alt == Path(src).name:
                bad.setdefault(name, []).append(f"{src}: alt={image['alt']!r}")
    assert not bad, "\n".join(f"{k}: {len(v)} images, e.g. {v[:2]}" for k, v in sorted(bad.items()))


def test_every_internal_link_resolves(crawl):
    html, origin = crawl["html"], crawl["origin"]
    ids = {urllib.parse.urlsplit(info["url"]).path.lstrip("/") or "index.html": set(info["ids"])
           for info in crawl["seen"]["desktop"].values()}
    broken = set()
    checked = 0
    for name, info in crawl["seen"]["desktop"].items():
        for href in info["links"]:
            if not href.startswith(origin):
                continue
            checked += 1
            parts = urllib.parse.urlsplit(href)
            path = urllib.parse.unquote(parts.path).lstrip("/")
            if path == "" or path.endswith("/"):
                path += "index.html"
            if not (html / path).is_file():
                broken.add(f"{name}: {href} (no file {path})")
            elif parts.fragment and path in ids and urllib.parse.unquote(parts.fragment) not in ids[path]:
                broken.add(f"{name}: {href} (no anchor #{parts.fragment} in {path})")
    assert checked > 100
    assert not broken, "\n".join(sorted(broken)[:30])


def test_search_finds_factorization(browser, site):
    html, origin = site
    context = browser.new_context(viewport=DESKTOP, service_workers="block")
    guard = Guard(context, origin)
    page = guard.watch(context.new_page())
    try:
        page.goto(origin + "search.html?q=factorization", wait_until="load")
        page.wait_for_selector("#search-results ul.search li", timeout=30_000)
        hits = page.eval_on_selector_all("#search-results ul.search li a",
                                         "links => links.map(a => a.getAttribute('href'))")
        assert any("03_factorization_machines" in h for h in hits), hits
        assert not guard.take()
    finally:
        context.close()


def test_phone_layout_does_not_scroll_sideways(crawl):
    bad = {name: info["overflow"] for name, info in crawl["seen"]["phone"].items()
           if info["overflow"]["over"] > 1}
    assert not bad, "\n".join(f"{name}: page {o['over']} px wider than the phone; outside any "
                              f"scroll box: {o['culprits']}" for name, o in sorted(bad.items()))


def test_the_sideways_check_sees_a_wide_page(browser):
    """The phone check itself: a too-wide block makes the page scroll and is named; the
    same block inside a scrolling box (as code, tables and maths are) does not."""
    context = browser.new_context(viewport=PHONE, is_mobile=True)
    page = context.new_page()
    try:
        head = '<head><meta name="viewport" content="width=device-width, initial-scale=1"></head>'
        wide = '<div class="wide" style="width: 800px">x</div>'
        page.set_content(f"<html>{head}<body>{wide}</body></html>")
        got = page.evaluate(OVERFLOW)
        assert got["over"] > 300 and any("div.wide" in c for c in got["culprits"]), got
        page.set_content(f'<html>{head}<body><pre style="overflow-x: auto">{wide}</pre></body></html>')
        assert page.evaluate(OVERFLOW)["over"] <= 1
    finally:
        context.close()


def test_screenshots_are_kept(crawl):
    for shot in ("landing", "chapter"):
        for kind in ("desktop", "phone"):
            path = SCREENSHOTS / f"{shot}-{kind}.png"
            assert path.exists() and path.stat().st_size > 5_000, path
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ignored = subprocess.run(["git", "check-ignore", "-q", str(SCREENSHOTS / "landing-phone.png")],
                             cwd=ROOT)
    assert ignored.returncode in (0, 128), "_build/screenshots/ must be git-ignored"


# ----------------------------------------------------------------------------- make lab

def _jupyter() -> str:
    exe = Path(sys.executable).parent / "jupyter"
    return str(exe) if exe.exists() else (shutil.which("jupyter") or "jupyter")


def test_jupyterlab_myst_is_installed_and_enabled():
    done = subprocess.run([_jupyter(), "labextension", "list"], capture_output=True, text=True,
                          timeout=120)
    listing = re.sub(r"\x1b\[[0-9;]*m", "", done.stdout + done.stderr)
    line = next((ln for ln in listing.splitlines() if "jupyterlab-myst" in ln), "")
    assert "enabled" in line, listing


def test_make_lab_starts_jupyterlab_and_allows_root():
    if not shutil.which("make"):
        pytest.skip("make is not installed")
    done = subprocess.run(["make", "-n", "-s", "lab"], capture_output=True, text=True, cwd=ROOT,
                          timeout=60)
    lab = [ln for ln in done.stdout.splitlines() if "jupyter lab" in ln or "jupyter-lab" in ln]
    assert lab, done.stdout + done.stderr
    assert ("--allow-root" in lab[-1]) == (os.geteuid() == 0), lab[-1]
    assert "chapters" in lab[-1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_jupyterlab_renders_the_chapters_myst(browser, tmp_path):
    """A chapter opened in JupyterLab (as `make lab` starts it) shows rendered MyST: maths
    typeset, exercises as boxes, solutions collapsed, no raw ``:label:``, ``{eq}``, ``{cite}``
    or directive fences."""
    work = tmp_path / "chapters"
    work.mkdir()
    shutil.copy(ROOT / "chapters" / "02_logistic_regression.ipynb", work)  # lab never saves ours
    settings = tmp_path / "settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    (settings / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    port = _free_port()
    env = dict(os.environ, JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"))
    cmd = [_jupyter(), "lab", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
           "--IdentityProvider.token=", "--ServerApp.password=", f"--ServerApp.root_dir={work}"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    log = tmp_path / "lab.log"
    with open(log, "w") as out:
        lab = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    context = None
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert lab.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.5)
        origin = f"http://127.0.0.1:{port}/"
        context = browser.new_context(viewport=DESKTOP, service_workers="block")
        Guard(context, origin)  # no other host, as for the book
        page = context.new_page()
        page.goto(origin + "lab/tree/02_logistic_regression.ipynb", wait_until="load", timeout=90_000)
        page.wait_for_function("() => document.querySelectorAll('.jp-MarkdownCell .myst').length"
                               " >= 10 && document.querySelector('.jp-MarkdownCell .katex')",
                               timeout=90_000)
        page.screenshot(path=str(SCREENSHOTS / "lab-chapter.png"))
        got = page.evaluate(r"""() => {
          const cells = [...document.querySelectorAll('.jp-MarkdownCell')];
          const text = cells.map(c => c.innerText).join('\n');
          return {cells: cells.length,
                  myst: document.querySelectorAll('.jp-MarkdownCell .myst').length,
                  display: document.querySelectorAll('.jp-MarkdownCell .katex-display').length,
                  exercises: document.querySelectorAll('.jp-MarkdownCell .myst-exercise').length,
                  solutions: [...document.querySelectorAll('.jp-MarkdownCell details')]
                               .map(d => d.open),
                  raw: (text.match(/:label:|\{eq\}|\{cite|```|\{exercise\}|\{solution\}/g) || [])};
        }""")
    finally:
        if context is not None:
            context.close()
        lab.terminate()
        try:
            lab.wait(timeout=30)
        except subprocess.TimeoutExpired:
            lab.kill()
            lab.wait()
    assert got["myst"] >= 0.9 * got["cells"], got
    assert got["display"] >= 3 and got["exercises"] >= 2, got
    assert len(got["solutions"]) >= 2 and not any(got["solutions"]), got  # collapsed
    assert got["raw"] == [], got
