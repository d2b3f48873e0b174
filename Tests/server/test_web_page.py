"""The web page of `GET /` (Sources/TLLMServer/WebPage/index.html) in headless Chromium, driven by
Selenium, against a real tllm.server: the chat streams the same text as the API, keeps the
conversation, shows usage and errors, stops on request; the cluster panel follows /ws/monitor.

Contract: shared/spec/tllm-protocol.md section 4 (`GET /`, `WS /ws/monitor`), docs/server.md.
Needs Debian's `chromium` and `chromium-driver` (scripts/install-system-deps.sh) and the PyPI
package `selenium` (Tests/requirements.txt). Selenium is pointed at /usr/bin/chromedriver and
/usr/bin/chromium, so Selenium Manager never downloads anything.

Env: TLLM_TEST_ARTIFACTS  where screenshots, page sources and browser logs go
                          (default <repo>/Tests/artifacts)
     TLLM_CHROMIUM, TLLM_CHROMEDRIVER  other browser / driver paths
plus conftest.py's (TLLM_SERVER_BIN, TLLM_DEFAULT_MODEL).

The page's DOM contract (what this test relies on, see index.html):
  #prompt #send #stop #clear #system #temperature #top_p #top_k #max_tokens #seed #api_key #model
  #messages > .message.user / .message.assistant, each with a .content (the text); an assistant
  message has data-state = streaming | done | stopped | error, data-finish-reason from the last
  chunk ("abort" when stopped), a .stats line after the answer and an .error box on failure; a
  thinking model's reasoning (`reasoning_content`) goes into a .reasoning box before .content.
  #cluster-connection (connected | disconnected), #cluster-model, #cluster-layers,
  #cluster-status (complete | incomplete), #cluster-clients, #cluster-mode,
  #cluster-bar > .segment[data-start][data-end][data-count], #cluster-workers > tr[data-client-id].
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import time
from pathlib import Path

import aiohttp
import httpx
import pytest

from tllm_server_helpers import (
    LONG_PROMPT,
    REQUEST_TIMEOUT,
    STARTUP_TIMEOUT,
    THINKING_TEMPLATE,
    Node,
    free_port,
    logs,
    user,
)

try:
    from selenium import webdriver
    from selenium.common.exceptions import TimeoutException, WebDriverException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError as error:  # a clear failure in the fixture, never a silent skip
    webdriver = None
    SELENIUM_IMPORT_ERROR = error

REPO_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("TLLM_CHROMIUM") or "/usr/bin/chromium")
CHROMEDRIVER = Path(os.environ.get("TLLM_CHROMEDRIVER") or "/usr/bin/chromedriver")
ARTIFACTS = Path(os.environ.get("TLLM_TEST_ARTIFACTS") or REPO_ROOT / "Tests" / "artifacts")

PAGE_TIMEOUT = 30.0  # the page loads, the monitor connects and sends its first state
MAX_TOKENS = 24
FIRST_PROMPT = "What is the capital of France?"
# Typed with Shift+Enter between the lines, sent with Enter.
SECOND_PROMPT_LINES = ["Thank you!", "And of Italy?"]


def expected_layers(model_id: str) -> int | None:
    """The default model's decoder depth; None for another model (then any positive count)."""
    return 30 if model_id.startswith("SmolLM2-135M") else None


# --------------------------------------------------------------------------
# The browser


@pytest.fixture(scope="module")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="module")
def browser(artifacts):
    """One headless Chromium for the module (each test opens the page afresh)."""
    if webdriver is None:
        pytest.fail(
            f"selenium is not installed ({SELENIUM_IMPORT_ERROR}): pip install -r Tests/requirements.txt")
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not (path.is_file() and os.access(path, os.X_OK)):
            pytest.fail(
                f"{path} is missing: apt-get install chromium chromium-driver (scripts/install-system-deps.sh "
                f"installs {package})")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900", "--no-proxy-server", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(artifacts / "chromedriver.log"))
    try:
        driver = webdriver.Chrome(service=service, options=options)
    except WebDriverException as error:
        pytest.fail(f"could not start headless Chromium ({CHROMIUM}) with {CHROMEDRIVER}: {error}")
    driver.set_page_load_timeout(PAGE_TIMEOUT)
    yield driver
    driver.quit()


class Page:
    """The page in the browser. `snapshot` saves a screenshot to the artifacts directory; a wait
    that times out, and a failing test, also save the DOM and the browser's console log."""

    def __init__(self, driver, artifacts: Path, name: str):
        self.driver = driver
        self.artifacts = artifacts
        self.name = name
        self.shots = 0
        self.console: list[dict] = []

    def open(self, base_url: str):
        self.driver.get(base_url + "/")
        self.console = []  # the log of the previous page is read away with it
        self.driver.get_log("browser")
        if not self.js("return !!document.getElementById('prompt') && !!document.getElementById('cluster')"):
            stem = self.snapshot("not-the-page", dump=True)
            body = self.js("return document.body ? document.body.innerText : ''")[:500]
            pytest.fail(f"GET {base_url}/ is not the chat page (saved as {stem}.*): {body!r}")

    def by_id(self, element_id: str):
        return self.driver.find_element(By.ID, element_id)

    def text(self, element_id: str) -> str:
        return self.by_id(element_id).text.strip()

    def js(self, script: str, *args):
        return self.driver.execute_script(script, *args)

    def snapshot(self, step: str, dump: bool = False) -> Path:
        """<artifacts>/web_page-<test>-<n>-<step>.png, and with `dump` .html (the DOM) and
        .console.txt (the browser's console so far)."""
        self.shots += 1
        stem = self.artifacts / f"web_page-{self.name}-{self.shots:02d}-{step}"
        self.driver.save_screenshot(str(stem.with_suffix(".png")))
        if dump:
            stem.with_suffix(".html").write_text(self.driver.page_source)
            self.console += self.driver.get_log("browser")
            stem.with_suffix(".console.txt").write_text(
                "\n".join(f"{e.get('level')} {e.get('message')}" for e in self.console))
        return stem

    def wait(self, predicate, what: str, timeout: float = PAGE_TIMEOUT):
        """Until predicate() is truthy; on timeout, artifacts and a failure naming `what`."""
        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.1).until(lambda _: predicate())
        except TimeoutException:
            pass  # failed below, without Selenium's stack trace
        stem = self.snapshot("timeout", dump=True)
        pytest.fail(f"timed out after {timeout}s waiting for {what}; page saved as {stem}.*")

    # -- the chat

    def set_field(self, element_id: str, value):
        field = self.by_id(element_id)
        field.clear()
        if value != "":
            field.send_keys(str(value))
        assert field.get_attribute("value") == str(value), f"#{element_id} did not take {value!r}"

    def type_prompt(self, *lines: str):
        """Types the lines into #prompt with Shift+Enter between them (a newline, not a send)."""
        prompt = self.by_id("prompt")
        prompt.clear()
        for i, line in enumerate(lines):
            if i:
                prompt.send_keys(Keys.SHIFT, Keys.ENTER, Keys.SHIFT)
            prompt.send_keys(line)

    def messages(self) -> list[dict]:
        """Every message of #messages: role, text (.content's textContent), reasoning (.reasoning's),
        state, finish reason, stats and error text."""
        return self.js("""
            return Array.from(document.querySelectorAll('#messages > .message')).map(m => ({
                role: m.classList.contains('user') ? 'user' : m.classList.contains('assistant') ? 'assistant' : '?',
                text: m.querySelector('.content') ? m.querySelector('.content').textContent : null,
                reasoning: m.querySelector('.reasoning') ? m.querySelector('.reasoning').textContent : null,
                state: m.getAttribute('data-state'),
                finish: m.getAttribute('data-finish-reason'),
                stats: m.querySelector('.stats') ? m.querySelector('.stats').textContent : null,
                error: m.querySelector('.error') && !m.querySelector('.error').hidden
                    ? m.querySelector('.error').textContent : null,
            }));""")

    def wait_answer(self, count: int, timeout: float = REQUEST_TIMEOUT) -> dict:
        """Waits until the page holds `count` messages and the last (an assistant's) is no longer
        streaming; returns it."""
        def settled():
            ms = self.messages()
            if len(ms) == count and ms[-1]["role"] == "assistant" and ms[-1]["state"] not in (None, "streaming"):
                return ms[-1]
            return None

        return self.wait(settled, f"answer #{count} (data-state leaving 'streaming')", timeout)

    def severe_console_entries(self) -> list[str]:
        self.console += self.driver.get_log("browser")
        return [e["message"] for e in self.console if e.get("level") == "SEVERE"]


@pytest.fixture
def page(browser, artifacts, request):
    p = Page(browser, artifacts, re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name))
    failed_before = request.session.testsfailed
    yield p
    if request.session.testsfailed > failed_before:  # this test's call failed
        with contextlib.suppress(WebDriverException):
            p.snapshot("failed", dump=True)


def wait_cluster_ready(page: Page, model_id: str):
    """The monitor connected and reported the local, complete model."""
    page.wait(lambda: page.text("cluster-connection") == "connected", "#cluster-connection = connected")
    page.wait(lambda: page.text("cluster-status") == "complete", "#cluster-status = complete")
    page.wait(lambda: page.text("cluster-model") == model_id, f"#cluster-model = {model_id}")
    layers = expected_layers(model_id)
    if layers is not None:
        page.wait(lambda: page.text("cluster-layers") == str(layers), f"#cluster-layers = {layers}")
    page.wait(lambda: page.text("model") == model_id, f"#model = {model_id} (from GET /v1/models)")


def api_chat(http: httpx.Client, model_id: str, messages: list[dict], **fields) -> dict:
    """The reference: the same request through the API directly, not streamed."""
    r = http.post("/v1/chat/completions", json={"model": model_id, "messages": messages, **fields})
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]


# --------------------------------------------------------------------------
# Serving the page


def test_page_is_served_as_self_contained_html(http):
    r = http.get("/")
    assert r.status_code == 200, r.text[:500]
    assert r.headers["content-type"].startswith("text/html"), r.headers
    html = r.text
    assert html.lstrip().lower().startswith("<!doctype html>"), html[:200]
    for element_id in ("prompt", "send", "stop", "messages", "cluster", "cluster-status", "cluster-bar"):
        assert f'id="{element_id}"' in html, f"no #{element_id} in the page"
    # Offline: no script, style, image or font from anywhere else.
    external = re.findall(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//[^"'\s>]+|@import|url\(\s*["']?(?:https?:)?//""", html)
    assert not external, f"the page loads external resources: {external}"


def test_monitor_websocket_sends_the_local_state(server, model_id):
    """WS /ws/monitor: the state of tllm-protocol.md section 4 on connect (local mode)."""

    async def first_message() -> dict:
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"{server.base_url}/ws/monitor") as ws:
                msg = await ws.receive(timeout=10)
                assert msg.type == aiohttp.WSMsgType.TEXT, msg
                return json.loads(msg.data)

    state = asyncio.run(first_message())
    for key in ("model_name", "total_layers", "client_info", "has_full_model", "connected_clients"):
        assert key in state, f"no {key!r} in {state}"
    assert state["model_name"] == model_id, state
    total = state["total_layers"]
    assert isinstance(total, int) and total > 0, state
    if expected_layers(model_id) is not None:
        assert total == expected_layers(model_id), state
    assert state["client_info"] == [[0, total, 1]], state
    assert state["has_full_model"] is True, state
    assert state.get("mode", "local") == "local", state
    assert state.get("workers", []) == [], state


# --------------------------------------------------------------------------
# The chat


def test_chat_streams_the_api_answer_and_keeps_the_conversation(server, http, model_id, page):
    page.open(server.base_url)
    wait_cluster_ready(page, model_id)
    assert page.text("cluster-mode") == "local"
    segments = page.js("""return Array.from(document.querySelectorAll('#cluster-bar .segment')).map(s =>
        [s.getAttribute('data-start'), s.getAttribute('data-end'), s.getAttribute('data-count')]);""")
    total = page.text("cluster-layers")
    assert segments == [["0", total, "1"]], segments
    assert page.js("return document.querySelectorAll('#cluster-workers tr').length") == 0
    page.snapshot("loaded")

    # First turn, clicked.
    page.set_field("temperature", 0)
    page.set_field("max_tokens", MAX_TOKENS)
    page.type_prompt(FIRST_PROMPT)
    page.by_id("send").click()
    first = page.wait_answer(2)
    page.snapshot("first-answer")
    assert first["state"] == "done", first
    expected = api_chat(http, model_id, user(FIRST_PROMPT), temperature=0, max_tokens=MAX_TOKENS)
    assert first["text"] == expected["message"]["content"], (first, expected)
    assert first["finish"] == expected["finish_reason"], (first, expected)
    assert first["stats"] and "tokens" in first["stats"] and "TTFT" in first["stats"], first
    ms = page.messages()
    assert [m["role"] for m in ms] == ["user", "assistant"], ms
    assert ms[0]["text"] == FIRST_PROMPT, ms
    assert page.by_id("send").is_enabled() and not page.by_id("stop").is_enabled()

    # Second turn: two lines (Shift+Enter), sent with Enter; the request carries the history.
    page.type_prompt(*SECOND_PROMPT_LINES)
    page.by_id("prompt").send_keys(Keys.ENTER)
    second = page.wait_answer(4)
    page.snapshot("second-answer")
    assert second["state"] == "done", second
    ms = page.messages()
    assert [m["role"] for m in ms] == ["user", "assistant", "user", "assistant"], ms
    second_prompt = "\n".join(SECOND_PROMPT_LINES)
    assert ms[2]["text"] == second_prompt, ms
    history = [
        {"role": "user", "content": FIRST_PROMPT},
        {"role": "assistant", "content": first["text"]},
        {"role": "user", "content": second_prompt},
    ]
    expected = api_chat(http, model_id, history, temperature=0, max_tokens=MAX_TOKENS)
    assert second["text"] == expected["message"]["content"], (second, expected)
    assert second["stats"], second
    assert page.by_id("prompt").get_attribute("value") == ""
    assert not page.severe_console_entries(), page.severe_console_entries()


def test_bad_requests_show_errors_and_the_page_keeps_working(server, http, model_id, page):
    page.open(server.base_url)
    wait_cluster_ready(page, model_id)
    n = 0
    for max_tokens in (10**9, -1):
        body = {"model": model_id, "messages": user("Hello"), "max_tokens": max_tokens, "stream": True}
        direct = http.post("/v1/chat/completions", json=body)
        assert direct.status_code == 400, direct.text
        message = direct.json()["error"]["message"]
        page.set_field("max_tokens", max_tokens)
        page.type_prompt("Hello")
        page.by_id("send").click()
        n += 2
        answer = page.wait_answer(n)
        page.snapshot(f"error-{max_tokens}")
        assert answer["state"] == "error", answer
        assert answer["error"] and message in answer["error"] and "400" in answer["error"], (answer, message)
        assert answer["text"] == "", answer
        assert page.by_id("send").is_enabled()

    # Failed turns are not sent again: the next answer is that of a one-message conversation.
    page.set_field("max_tokens", 8)
    page.type_prompt("Say hi.")
    page.by_id("send").click()
    n += 2
    answer = page.wait_answer(n)
    page.snapshot("after-errors")
    assert answer["state"] == "done", answer
    expected = api_chat(http, model_id, user("Say hi."), temperature=0, max_tokens=8)
    assert answer["text"] == expected["message"]["content"], (answer, expected)
    assert answer["error"] is None, answer


def test_stop_aborts_the_stream(server, http, model_id, page):
    page.open(server.base_url)
    wait_cluster_ready(page, model_id)
    page.set_field("max_tokens", 2000)
    page.type_prompt(LONG_PROMPT)
    page.by_id("send").click()
    page.wait(lambda: (page.messages()[-1]["text"] or "").strip(), "the first streamed text", REQUEST_TIMEOUT)
    assert page.messages()[-1]["state"] == "streaming"
    assert page.by_id("stop").is_enabled() and not page.by_id("send").is_enabled()
    page.by_id("stop").click()
    answer = page.wait_answer(2, timeout=PAGE_TIMEOUT)
    page.snapshot("stopped")
    assert answer["state"] == "stopped", answer
    assert answer["finish"] == "abort", answer
    assert answer["text"].strip(), answer
    # The server dropped the request and serves the next one; the stopped text is history now.
    page.set_field("max_tokens", 4)
    page.type_prompt("Thanks.")
    page.by_id("send").click()
    answer = page.wait_answer(4)
    assert answer["state"] == "done", answer


def test_thinking_model_shows_reasoning_and_sends_it_back(start_server, model_id, page, tmp_path):
    """With a thinking template the page shows the streamed `reasoning_content` apart from the answer,
    and sends it back with the assistant turn (the template renders it into the next prompt)."""
    template = tmp_path / "thinking.jinja"
    template.write_text(THINKING_TEMPLATE)
    s = start_server("web-thinking", chat_template=template)
    page.open(s.base_url)
    wait_cluster_ready(page, model_id)
    page.set_field("temperature", 0)
    page.set_field("max_tokens", MAX_TOKENS)
    page.type_prompt(FIRST_PROMPT)
    page.by_id("send").click()
    first = page.wait_answer(2)
    page.snapshot("thinking-answer")
    assert first["state"] == "done", first
    with s.http() as http:
        expected = api_chat(http, model_id, user(FIRST_PROMPT), temperature=0, max_tokens=MAX_TOKENS)
        assert expected["message"]["reasoning_content"], expected
        assert first["reasoning"] == expected["message"]["reasoning_content"], (first, expected)
        assert first["text"] == expected["message"]["content"], (first, expected)
        assert page.messages()[0]["reasoning"] is None

        page.type_prompt("And of Italy?")
        page.by_id("send").click()
        second = page.wait_answer(4)
        assert second["state"] == "done", second
        history = [
            *user(FIRST_PROMPT),
            {"role": "assistant", "content": first["text"], "reasoning_content": first["reasoning"]},
            *user("And of Italy?"),
        ]
        expected = api_chat(http, model_id, history, temperature=0, max_tokens=MAX_TOKENS)
        history[1].pop("reasoning_content")
        without = api_chat(http, model_id, history, temperature=0, max_tokens=MAX_TOKENS)
        assert without["message"] != expected["message"], "the check cannot tell whether the page sent the reasoning"
        assert (second["reasoning"], second["text"]) == (
            expected["message"]["reasoning_content"],
            expected["message"]["content"] or "",
        ), (second, expected)
    assert not page.severe_console_entries(), page.severe_console_entries()


def test_api_key_field(start_server, model_id, page):
    """With --api_key the page needs the key (kept in localStorage, sent as a Bearer token, and to
    the monitor socket as ?api_key=); the page itself needs none."""
    key = "sk-web-page-test"
    s = start_server("web-api-key", api_key=key)
    page.open(s.base_url)
    page.wait(lambda: "401" in page.text("status"), "#status showing the 401 of GET /v1/models")
    # Without the key the monitor refuses the page: the cluster panel stays disconnected.
    assert page.by_id("cluster-connection").get_attribute("data-state") == "disconnected"
    page.set_field("max_tokens", 4)
    page.type_prompt("Hi")
    page.by_id("send").click()
    answer = page.wait_answer(2)
    assert answer["state"] == "error" and "401" in (answer["error"] or ""), answer

    page.set_field("api_key", key)
    page.by_id("prompt").click()  # leaves #api_key: its change event stores the key
    page.wait(lambda: page.text("model") == model_id, "#model after entering the key")
    page.wait(lambda: page.text("cluster-status") == "complete", "#cluster-status = complete with the key")
    assert page.js("return localStorage.getItem('tllm.api_key')") == key
    page.type_prompt("Hi")
    page.by_id("send").click()
    answer = page.wait_answer(4)
    assert answer["state"] == "done", answer
    # A reload keeps the key.
    page.open(s.base_url)
    assert page.by_id("api_key").get_attribute("value") == key
    page.wait(lambda: page.text("model") == model_id, "#model after a reload with the stored key")
    page.js("localStorage.removeItem('tllm.api_key')")


# --------------------------------------------------------------------------
# The cluster panel


def start_master(server_bin: Path, model_path: Path, log_dir: Path) -> tuple[Node, str]:
    """tllm.server without --is_local, waiting for 2 workers; returns it and its base URL."""
    port = free_port()
    args = [str(server_bin), "--model_path", str(model_path), "--http_port", str(port),
            "--grpc_port", str(free_port()), "--hostname", "127.0.0.1", "--client_size", "2",
            "--threads", "1"]  # fmt: skip
    node = Node(f"web-master-{port}", args, log_dir)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_TIMEOUT
    with httpx.Client(trust_env=False, timeout=2) as http:
        while True:
            assert node.alive(), f"the master exited ({node.proc.returncode}):\n{logs([node])}"
            with contextlib.suppress(httpx.HTTPError):
                if http.get(f"{url}/health").status_code == 200:
                    return node, url
            assert time.monotonic() < deadline, f"the master is not up in {STARTUP_TIMEOUT}s:\n{logs([node])}"
            time.sleep(0.1)


def test_cluster_panel_follows_registrations(server_bin, model_path, log_dir, model_id, page, worker_port):
    """A master without workers is incomplete; a worker registering and loading shows up
    without a reload (the monitor pushes every change)."""
    node, url = start_master(server_bin, model_path, log_dir)
    try:
        page.open(url)
        page.wait(lambda: page.text("cluster-connection") == "connected", "#cluster-connection = connected")
        page.wait(lambda: page.text("cluster-model") == model_id, f"#cluster-model = {model_id}")
        assert page.text("cluster-status") == "incomplete"
        assert page.text("cluster-mode") == "cluster"
        assert page.text("cluster-clients") == "0"
        assert page.js("return document.querySelectorAll('#cluster-workers tr').length") == 0
        counts = page.js("""return Array.from(document.querySelectorAll('#cluster-bar .segment'))
            .map(s => Number(s.getAttribute('data-count')));""")
        assert all(c == 0 for c in counts), counts
        page.snapshot("no-workers")

        with httpx.Client(base_url=url, trust_env=False, timeout=60) as http:
            answer = http.post("/register_client",
                               json={"client_id": "web-a", "host": ["127.0.0.1"], "port": worker_port}).json()
            assert answer["msg"] == "success", answer
            rows = "document.querySelectorAll('#cluster-workers tr[data-client-id=\"web-a\"]')"
            page.wait(lambda: page.js(f"return {rows}.length") == 1, "a row for the registered worker")
            page.wait(lambda: page.text("cluster-clients") == "1", "#cluster-clients = 1")
            assert page.js(f"return {rows}[0].querySelector('[data-initialized]').getAttribute('data-initialized')") \
                == "false"
            page.snapshot("registered")

            ok = http.post("/init_model", json={"client_id": "web-a", "pp_rank": answer["pp_rank"],
                                                "start_idx": answer["start_idx"], "end_idx": answer["end_idx"]})
            assert ok.json()["msg"] == "success", ok.text
            page.wait(
                lambda: page.js(f"return {rows}[0].querySelector('[data-initialized]').getAttribute('data-initialized')")
                == "true", "the worker's row marked initialized")
            assert page.text("cluster-status") == "incomplete"  # one of two ranges
            page.snapshot("initialized")
    finally:
        rc = node.stop()
    assert rc == 0, f"the master exited {rc} on SIGTERM:\n{logs([node])}"
