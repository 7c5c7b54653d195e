"""The dashboard end to end: a real server with two workers under a small
load, Debian's Chromium driven by Playwright. The tests read what the page
shows (model names, states, a failed model's reason, plots whose data moves,
numbers summed over both workers, recent errors as text) in read-only and
in management mode, and keep screenshots in tests/artifacts/dashboard/."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import joblib
import pytest
import requests
from servers import ROOT, ServerProcess
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

playwright = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
TOKEN = "dashboard-token"
ARTIFACTS = ROOT / "tests" / "artifacts" / "dashboard"
WAIT_SECONDS = 20.0  # the longest a page is waited for before a test fails
ROW = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2]}]}
# a model name that is HTML: the page must show it as text, never run it
HOSTILE = '<img src=x onerror="window.pwned=1">'


def write_settings(folder: Path, settings: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model-settings.json").write_text(json.dumps(settings))


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """iris in two versions, a one-version ``setosa`` and a model that cannot load."""
    root = tmp_path_factory.mktemp("dashboard-models")
    X, y = load_iris(return_X_y=True)
    for version, c in (("1", 0.05), ("2", 1.0)):
        folder = root / "iris" / version
        folder.mkdir(parents=True)
        joblib.dump(LogisticRegression(C=c, max_iter=500).fit(X, y), folder / "model.joblib")
        write_settings(folder, {"name": "iris", "parameters": {"uri": "model.joblib", "version": version}})
    (root / "setosa").mkdir()
    joblib.dump(LogisticRegression(max_iter=500).fit(X, y == 0), root / "setosa" / "model.joblib")
    write_settings(root / "setosa", {"name": "setosa", "parameters": {"uri": "model.joblib", "version": "1"}})
    (root / "broken").mkdir()
    (root / "broken" / "model.joblib").write_bytes(b"this is not a pickle")
    write_settings(root / "broken", {"name": "broken", "parameters": {"uri": "model.joblib"}})
    return root


@pytest.fixture(scope="module")
def server(repository: Path) -> Iterator[ServerProcess]:
    with ServerProcess(["serve", str(repository)], workers=2) as proc:
        yield proc


@pytest.fixture(scope="module")
def managed(repository: Path) -> Iterator[ServerProcess]:
    with ServerProcess(["serve", str(repository)], workers=2,
                       env={"SERVEKIT_MANAGEMENT_TOKEN": TOKEN}) as proc:
        yield proc


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-background-networking", "--disable-component-update"],
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    opened = context.new_page()
    problems: list[str] = []
    opened.on("pageerror", lambda error: problems.append(str(error)))
    # the page loads nothing but this server's files: any other request fails the test
    opened.on("request", lambda request: problems.append(request.url)
              if not request.url.startswith("http://127.0.0.1:") else None)
    yield opened
    context.close()
    assert problems == [], f"script errors or foreign requests: {problems}"


def screenshot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"dashboard screenshot: {path}")


def wait_until(check: Callable[[], Any], what: str) -> Any:
    """``check()``'s first true answer, read again every 0.1 s (the page's
    Content-Security-Policy forbids evaluating strings, so Playwright's
    wait_for_function cannot run on it: the test reads and waits instead)."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"the page did not show {what} within {WAIT_SECONDS:g} s")
        time.sleep(0.1)


def updates(page: Any) -> int:
    return int(page.get_attribute("body", "data-updates") or 0)


def open_dashboard(page: Any, url: str) -> None:
    page.goto(url + "/")
    wait_until(lambda: updates(page) >= 2, "two updates")


class Load:
    """A thread posting to iris, each request on a new connection (so the
    kernel spreads them over both workers); counts what it sent."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sent = 0
        self.answered: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            status = requests.post(f"{self.url}/v2/models/iris/infer", json=ROW, timeout=30).status_code
            self.sent += 1
            self.answered[status] = self.answered.get(status, 0) + 1
            self._stop.wait(0.01)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def requests_shown(page: Any, model: str) -> str:
    """The total in a model's Requests cell (without the per-worker line)."""
    text = str(page.locator(f'tr.first[data-model="{model}"] td.requests').inner_text())
    return text.split("\n")[0].strip()


def cell(page: Any, model: str, column: str, version: str | None = None) -> str:
    row = f'tr[data-model="{model}"]' + (f'[data-version="{version}"]' if version is not None else ".first")
    return str(page.locator(f"{row} td.{column}").inner_text()).strip()


# -- the address: a page for browsers, JSON for API clients --------------------------
def test_root_serves_the_page_to_browsers_and_json_to_api_clients(server: ServerProcess) -> None:
    plain = requests.get(server.url + "/", timeout=10)
    assert plain.status_code == 200 and plain.json() == {"status": "alive"}
    as_json = requests.get(server.url + "/", headers={"Accept": "application/json"}, timeout=10)
    assert as_json.json() == {"status": "alive"}
    for path in ("/", "/ui", "/ui/"):
        html = requests.get(server.url + path, headers={"Accept": "text/html,application/xhtml+xml"}, timeout=10)
        assert html.status_code == 200
        assert html.headers["content-type"].startswith("text/html")
        assert '<script src="/ui/app.js" defer></script>' in html.text
        assert "script-src 'self'" in html.headers["content-security-policy"]
    script = requests.get(server.url + "/ui/app.js", timeout=10)
    assert script.headers["content-type"].startswith("text/javascript") and "/ui/api/state" in script.text
    # nothing on the page names another site
    for name in ("/ui", "/ui/app.js", "/ui/app.css"):
        text = requests.get(server.url + name, timeout=10).text
        assert "https://" not in text and "//cdn" not in text


def test_state_sums_every_worker_and_lists_the_models(server: ServerProcess) -> None:
    state = requests.get(server.url + "/ui/api/state", timeout=10).json()
    assert state["server"]["workers"] == 2 and state["server"]["answered"] == [0, 1]
    assert state["server"]["missing"] == [] and len(set(state["server"]["pids"].values())) == 2
    models = {m["name"]: m for m in state["models"]}
    assert sorted(models) == ["broken", "iris", "setosa"]
    assert [v["version"] for v in models["iris"]["versions"]] == ["2", "1"]
    assert models["iris"]["versions"][0]["workers"] == {"READY": 2}
    broken = models["broken"]["versions"][0]
    assert broken["state"] == "UNAVAILABLE" and "not a readable joblib/pickle file" in broken["reason"]
    assert broken["workers"] == {"UNAVAILABLE": 2}


def test_read_only_refuses_changes(server: ServerProcess) -> None:
    refused = requests.post(server.url + "/ui/api/models/iris/default", json={"version": "1"},
                            headers={"Authorization": "Bearer anything"}, timeout=10)
    assert refused.status_code == 403 and "read-only" in refused.json()["error"]


# -- read-only mode --------------------------------------------------------------------
def test_page_shows_models_states_and_reasons(server: ServerProcess, page: Any) -> None:
    open_dashboard(page, server.url)
    assert cell(page, "iris", "state", "2").startswith("READY")
    assert "on 2/2 workers" in cell(page, "iris", "state", "2")
    assert cell(page, "iris", "runtime", "1") == "SKLearnRuntime"
    assert cell(page, "iris", "load", "1").endswith(" s")
    assert cell(page, "iris", "default") == "newest (2)"
    assert cell(page, "setosa", "state", "1").startswith("READY")
    assert cell(page, "broken", "state", "").startswith("UNAVAILABLE")
    assert "not a readable joblib/pickle file" in cell(page, "broken", "reason", "")
    assert page.inner_text("#workers").startswith("2 (pids w0: ")
    assert f"http://127.0.0.1:{server.http_port}" in page.inner_text("#listeners")
    assert "kserve-v1" in page.inner_text("#skins")
    assert page.inner_text("#management").startswith("off")
    assert page.locator("#manage").is_hidden()
    assert page.locator("button").count() == 0  # read-only: nothing to press
    screenshot(page, "read-only")


def test_plots_move_and_numbers_are_summed_over_both_workers(server: ServerProcess, page: Any) -> None:
    open_dashboard(page, server.url)
    rps = '[data-model="iris"] [data-metric="rps"]'
    with Load(server.url) as load:
        wait_until(lambda: float(page.get_attribute(rps, "data-last") or 0) > 0, "a request rate")
        first = page.get_attribute(rps, "data-values")
        first_points = page.get_attribute(f"{rps} polyline.s0", "points")
        wait_until(lambda: page.get_attribute(rps, "data-values") != first, "the rate plot move")
        assert page.get_attribute(f"{rps} polyline.s0", "points") != first_points
        assert all(v is not None and v > 0 for v in json.loads(page.get_attribute(rps, "data-values"))[-2:])
        wait_until(lambda: page.get_attribute('[data-model="iris"] [data-metric="latency"]', "data-last"),
                   "a latency")
        assert cell(page, "iris", "p50").endswith("ms") and cell(page, "iris", "p99").endswith("ms")
        assert json.loads(page.get_attribute('[data-model="iris"] [data-metric="batches"]', "data-values"))
        screenshot(page, "under-load")
    assert load.answered == {200: load.sent}
    # once the load stops, the page settles on exactly what was sent, from both workers
    wait_until(lambda: requests_shown(page, "iris") == str(load.sent), f"{load.sent} requests")
    by_worker = page.inner_text('tr.first[data-model="iris"] td.requests .by-worker')
    counts = dict(part.split(": ") for part in by_worker.split(" · "))
    assert set(counts) == {"w0", "w1"}, by_worker
    assert all(int(n) > 0 for n in counts.values()) and sum(int(n) for n in counts.values()) == load.sent


def test_recent_errors_show_request_data_as_text(server: ServerProcess, page: Any) -> None:
    assert requests.post(f"{server.url}/v2/models/broken/infer", json=ROW, timeout=10).status_code == 503
    unknown = requests.post(f"{server.url}/v2/models/{quote(HOSTILE, safe='')}/infer", json=ROW, timeout=10)
    assert unknown.status_code == 404
    open_dashboard(page, server.url)
    wait_until(lambda: page.locator("#errors tr").count() >= 2, "two recent errors")
    rows = page.locator("#errors tr")
    texts = [rows.nth(i).inner_text() for i in range(rows.count())]
    assert any("broken" in t and "503" in t and "UNAVAILABLE" in t for t in texts), texts
    assert any(HOSTILE in t and "404" in t for t in texts), texts
    assert page.locator("#errors img").count() == 0
    assert page.evaluate("window.pwned") is None
    assert "503: 1" in page.inner_text('.card[data-model="broken"] .statuses')
    screenshot(page, "errors")


# -- management mode ---------------------------------------------------------------------
def test_management_buttons_use_the_typed_token(managed: ServerProcess, page: Any) -> None:
    open_dashboard(page, managed.url)
    assert page.inner_text("#management").startswith("on")
    assert page.locator("#manage").is_visible()
    result = page.locator("#action-result")
    make_default = 'tr[data-model="iris"][data-version="1"] button[data-action="set-default"]'

    page.click(make_default)  # no token typed: nothing is sent
    assert result.inner_text() == "Type the management token first."
    page.fill("#token", "wrong")
    page.click(make_default)
    wait_until(lambda: "refused" in result.inner_text(), "the refusal")
    assert "(401)" in result.inner_text() and "Bearer" in result.inner_text()
    assert cell(page, "iris", "default") == "newest (2)"

    page.fill("#token", TOKEN)
    page.click(make_default)
    wait_until(lambda: cell(page, "iris", "default") == "1", "the new default")
    # every worker applied it: calls without a version, on new connections, get version 1
    versions = {requests.post(f"{managed.url}/v2/models/iris/infer", json=ROW, timeout=10).json()["model_version"]
                for _ in range(20)}
    assert versions == {"1"}
    screenshot(page, "management-default")

    page.click('tr.first[data-model="setosa"] button[data-action="unload"]')
    wait_until(lambda: cell(page, "setosa", "state").startswith("UNLOADED"), "setosa unloaded")
    assert requests.get(f"{managed.url}/v2/models/setosa/ready", timeout=10).status_code == 404
    screenshot(page, "management-unloaded")
    page.click('tr.first[data-model="setosa"] button[data-action="load"]')
    wait_until(lambda: cell(page, "setosa", "state").startswith("READY"), "setosa loaded again")
    assert requests.get(f"{managed.url}/v2/models/setosa/ready", timeout=10).json()["ready"] is True


def test_set_default_checks_its_input(managed: ServerProcess) -> None:
    url = managed.url + "/ui/api/models/{}/default"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    no_token = requests.post(url.format("iris"), json={"version": "1"}, timeout=10)
    assert no_token.status_code == 401
    unknown = requests.post(url.format("iris"), json={"version": "7"}, headers=auth, timeout=10)
    assert unknown.status_code == 404 and "versions: 1, 2" in unknown.json()["error"]
    missing = requests.post(url.format("nope"), json={"version": "1"}, headers=auth, timeout=10)
    assert missing.status_code == 404 and "not found" in missing.json()["error"]
    for body in (b"[1]", b"{", b"{}", b'{"version": 3}', b"x" * 5000):
        bad = requests.post(url.format("iris"), data=body, headers=auth, timeout=10)
        assert bad.status_code == 400, body[:20]
        assert "version" in bad.json()["error"]
    reset = requests.post(url.format("iris"), json={"version": None}, headers=auth, timeout=10)
    assert reset.json() == {"name": "iris", "default_version": None}
    versions = {requests.post(f"{managed.url}/v2/models/iris/infer", json=ROW, timeout=10).json()["model_version"]
                for _ in range(10)}
    assert versions == {"2"}


# -- last: a worker dies ------------------------------------------------------------------
def test_a_dead_worker_is_replaced_and_reported_again(server: ServerProcess) -> None:
    import signal

    before = requests.get(server.url + "/ui/api/state", timeout=10).json()["server"]["pids"]
    os.kill(int(before["1"]), signal.SIGKILL)

    def replaced() -> dict[str, Any] | None:
        try:
            state = requests.get(server.url + "/ui/api/state", timeout=10)
        except requests.ConnectionError:  # a connection the killed worker's socket had queued
            return None
        assert state.status_code == 200  # the worker still alive answers, alone or not
        server_part: dict[str, Any] = state.json()["server"]
        pids = server_part["pids"]
        done = server_part["missing"] == [] and "1" in pids and pids["1"] != before["1"]
        return server_part if done else None

    now = wait_until(replaced, "a replacement for worker 1")
    assert now["answered"] == [0, 1] and now["pids"]["0"] == before["0"]


def test_the_dashboard_can_be_switched_off(repository: Path) -> None:
    with ServerProcess(["serve", str(repository), "--no-enable-dashboard"]) as proc:
        assert requests.get(proc.url + "/ui", timeout=10).status_code == 404
        browser_root = requests.get(proc.url + "/", headers={"Accept": "text/html"}, timeout=10)
        assert browser_root.json() == {"status": "alive"}  # KServe V1's answer, for everyone
