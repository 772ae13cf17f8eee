"""The seed calls with the real anthropic and google-genai SDKs: the seed's first integration pattern
(a key from acquire(), a client scoped to it) against test/fake-provider and a real server
(KEYMESH_ADDR), failures handed to mark_failed(key, error=...) as the SDK raised them; and
classification.json's cases of those SDKs' shapes (and openai's) answered by a loopback server, so
that classify() reads the real SDK exceptions the way the vectors say."""

from __future__ import annotations

import json
import threading
import urllib.request
import uuid
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator

import anthropic
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from e2e_helpers import key as key_config, key_stats, live_leases
from keymesh_client import Client, KeyPool, SyncKeyPool, classify
from keymesh_client.seed import key_id_of
from keymesh_client.v1 import admin_pb2


def _register(url: str, secret: str) -> None:
    body = json.dumps({"key": secret, "limits": {"requestsPerWindow": 100, "windowMs": 1000}}).encode()
    urllib.request.urlopen(urllib.request.Request(f"{url}/_fake/keys", data=body, method="POST"), timeout=5)


def _fault(url: str, secret: str, status: int, retry_after_s: int | None = None) -> None:
    fault: dict[str, Any] = {"key": secret, "status": status, "count": 1}
    if retry_after_s is not None:
        fault["retryAfterS"] = retry_after_s
    urllib.request.urlopen(urllib.request.Request(f"{url}/_fake/faults", data=json.dumps(fault).encode(), method="POST"), timeout=5)


@pytest.fixture
def secrets(fake_provider_url: str) -> list[str]:
    keys = [f"sk-sdk-{uuid.uuid4().hex[:10]}" for _ in range(2)]
    for secret in keys:
        _register(fake_provider_url, secret)
    return keys


@pytest.fixture
def pool_name(client: Client) -> Iterator[str]:
    name = f"py-sdk-{uuid.uuid4().hex[:10]}"
    yield name
    client.admin.DeletePool(admin_pb2.DeletePoolRequest(name=name, force=True))


def _anthropic_ask(sdk: anthropic.Anthropic, text: str) -> str:
    message = sdk.messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=[{"role": "user", "content": text}])
    block = message.content[0]
    return block.text if block.type == "text" else ""


def _gemini_ask(sdk: genai.Client, text: str) -> str:
    return sdk.models.generate_content(model="gemini-2.5-flash", contents=text).text or ""


@pytest.mark.asyncio
async def test_pattern_1_with_the_async_anthropic_client(client: Client, addr: str, pool_name: str, secrets: list[str], fake_provider_url: str) -> None:
    pool = KeyPool(keys=secrets, pool=pool_name, addr=addr)
    sdk = anthropic.AsyncAnthropic(api_key="unused", base_url=fake_provider_url, max_retries=0)
    key = await pool.acquire()
    try:
        scoped = sdk.with_options(api_key=key)
        message = await scoped.messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=[{"role": "user", "content": "p1"}])
        await pool.release(key, latency=0.01)
    except Exception:
        await pool.mark_failed(key)
        raise
    finally:
        await pool.close()
    assert message.content[0].type == "text" and message.content[0].text == "echo: p1"
    assert live_leases(client, pool_name) == []


def test_anthropic_errors_handed_to_mark_failed(client: Client, addr: str, pool_name: str, secrets: list[str], fake_provider_url: str) -> None:
    """A RateLimitError cools its key for the retry-after it carries; an AuthenticationError disables its key."""
    limited, rejected = secrets
    _fault(fake_provider_url, limited, 429, retry_after_s=30)
    _fault(fake_provider_url, rejected, 401)
    raised: list[type[Exception]] = []
    with SyncKeyPool(keys=secrets, pool=pool_name, addr=addr) as pool:
        for _ in secrets:
            key = pool.acquire()
            try:
                _anthropic_ask(anthropic.Anthropic(api_key=key, base_url=fake_provider_url, max_retries=0), "x")
                pool.release(key)
            except anthropic.APIStatusError as error:
                raised.append(type(error))
                pool.mark_failed(key, error=error)
    assert sorted(e.__name__ for e in raised) == ["AuthenticationError", "RateLimitError"]
    stats = key_stats(client, pool_name)
    assert stats[key_id_of(limited)].cooldown_remaining.seconds > 20
    assert key_config(client, pool_name, key_id_of(rejected)).state == admin_pb2.KEY_STATE_AUTO_DISABLED_AUTH
    assert live_leases(client, pool_name) == []


def test_pattern_1_and_errors_with_the_google_genai_client(client: Client, addr: str, pool_name: str, secrets: list[str], fake_provider_url: str) -> None:
    """generate_content with the leased key; a 429's RetryInfo cools its key, a 403 PERMISSION_DENIED disables its key."""
    limited, rejected = secrets
    with SyncKeyPool(keys=secrets, pool=pool_name, addr=addr) as pool:
        key = pool.acquire()
        assert _gemini_ask(genai.Client(api_key=key, http_options=genai_types.HttpOptions(base_url=fake_provider_url)), "hello") == "echo: hello"
        pool.release(key)

        _fault(fake_provider_url, limited, 429, retry_after_s=30)
        _fault(fake_provider_url, rejected, 403)
        codes: list[int] = []
        for _ in secrets:
            key = pool.acquire()
            try:
                _gemini_ask(genai.Client(api_key=key, http_options=genai_types.HttpOptions(base_url=fake_provider_url)), "x")
                pool.release(key)
            except genai_errors.APIError as error:
                codes.append(error.code)
                pool.mark_failed(key, error=error)
    assert sorted(codes) == [403, 429]
    assert key_stats(client, pool_name)[key_id_of(limited)].cooldown_remaining.seconds > 20
    assert key_config(client, pool_name, key_id_of(rejected)).state == admin_pb2.KEY_STATE_AUTO_DISABLED_AUTH
    assert live_leases(client, pool_name) == []


# classification.json through the real SDKs' exceptions.

VECTORS = json.loads((Path(__file__).resolve().parents[3] / "test" / "vectors" / "classification.json").read_text())
NOW = datetime.fromisoformat(VECTORS["now"].replace("Z", "+00:00"))


def _cases(shape: str) -> list[dict[str, Any]]:
    return [c for c in VECTORS["cases"] if (c["input"]["error"] or {}).get("shape") == shape]


Answer = Callable[[BaseHTTPRequestHandler], None]


@pytest.fixture(scope="module")
def replay() -> Iterator[tuple[str, Callable[[Answer], None]]]:
    """A loopback server answering every request with the answer last set; yields its URL and the setter."""
    current: list[Answer] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            self.rfile.read(int(self.headers.get("content-length") or 0))
            current[-1](self)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", current.append
    finally:
        server.shutdown()
        server.server_close()


def _json(status: int, body: Any, headers: dict[str, str] | None = None, content_type: str = "application/json") -> Answer:
    def answer(handler: BaseHTTPRequestHandler) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        handler.send_response(status)
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.send_header("content-type", content_type)
        handler.send_header("content-length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    return answer


def _expect(case: dict[str, Any], error: BaseException) -> None:
    given = case["input"]
    outcome = classify(given["status"], given["headers"], error, now=NOW)
    assert {"outcome": outcome.kind.value, "retry_after_ms": outcome.retry_after_ms} == case["expect"]


@pytest.mark.parametrize("case", _cases("openai"), ids=lambda c: c["name"])
def test_classification_with_openai_errors(replay: tuple[str, Callable[[Answer], None]], case: dict[str, Any]) -> None:
    url, answer = replay
    e = case["input"]["error"]
    answer(_json(e["status"], {"error": {"message": e.get("message", ""), "type": e.get("type"), "param": None, "code": e.get("code")}}, e.get("headers")))
    with pytest.raises(openai.APIStatusError) as raised:
        openai.OpenAI(api_key="k", base_url=f"{url}/v1", max_retries=0).chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    _expect(case, raised.value)


@pytest.mark.parametrize("case", _cases("anthropic"), ids=lambda c: c["name"])
def test_classification_with_anthropic_errors(replay: tuple[str, Callable[[Answer], None]], case: dict[str, Any]) -> None:
    url, answer = replay
    e = case["input"]["error"]
    body = {"type": "error", "error": e["error"]}
    sdk = anthropic.Anthropic(api_key="k", base_url=url, max_retries=0)
    with pytest.raises(anthropic.APIError) as raised:
        if e["status"] < 300:
            # An error event inside a streamed answer, after a 200.
            answer(_json(e["status"], f"event: error\ndata: {json.dumps(body)}\n\n".encode(), e.get("headers"), "text/event-stream"))
            for _event in sdk.messages.create(model="m", max_tokens=8, messages=[{"role": "user", "content": "x"}], stream=True):
                pass
        else:
            answer(_json(e["status"], body, e.get("headers")))
            sdk.messages.create(model="m", max_tokens=8, messages=[{"role": "user", "content": "x"}])
    _expect(case, raised.value)


@pytest.mark.parametrize("case", _cases("gemini"), ids=lambda c: c["name"])
def test_classification_with_google_genai_errors(replay: tuple[str, Callable[[Answer], None]], case: dict[str, Any]) -> None:
    url, answer = replay
    e = case["input"]["error"]
    error_body: dict[str, Any] = {"code": e["code"], "message": e.get("message", ""), "status": e.get("status")}
    if "details" in e:
        error_body["details"] = e["details"]
    answer(_json(e["code"], {"error": error_body}))
    sdk = genai.Client(api_key="k", http_options=genai_types.HttpOptions(base_url=url))
    with pytest.raises(genai_errors.APIError) as raised:
        sdk.models.generate_content(model="m", contents="x")
    _expect(case, raised.value)
