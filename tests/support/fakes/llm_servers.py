"""Loopback HTTP servers speaking the Anthropic Messages and OpenAI Chat Completions protocols.

Tests point the REAL `anthropic` and `openai` SDKs at one of these (ANTHROPIC_BASE_URL =
`server.anthropic_url`, OPENAI_BASE_URL = `server.openai_url`) and script what the
"provider" answers, one `Step` per completion request, in order:

    server = FakeLLM([reply("Description: ..."), error(429, retry_after=0.01), overloaded(),
                      slow("Description: ...", delay=2.0), malformed("{not json")])

When the script runs out, `responder(request_json) -> Step` is asked (e.g. a function that
reads the file from the prompt and edits it); without one the server answers 500. Every
request is recorded (path, headers, JSON body) for assertions. GET /v1/models lists
`models`. Not streamed: the agents do not stream.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Step:
    """One scripted answer to a completion request."""

    text: str = ""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    raw_body: str | None = None  # sent verbatim instead of a well-formed body (malformed replies)
    delay: float = 0.0  # seconds to wait before answering (slow replies, client timeouts)
    input_tokens: int = 1000
    output_tokens: int = 200
    error_message: str = ""
    cached_tokens: int = 0  # of input_tokens, read from the prompt cache


def reply(
    text: str,
    *,
    input_tokens: int = 1000,
    output_tokens: int = 200,
    delay: float = 0.0,
    cached_tokens: int = 0,
) -> Step:
    return Step(
        text=text,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        delay=delay,
        cached_tokens=cached_tokens,
    )


def error(status: int, *, retry_after: float | None = None, message: str = "") -> Step:
    headers = {} if retry_after is None else {"retry-after": f"{retry_after:g}"}
    return Step(status=status, headers=headers, error_message=message or f"injected HTTP {status}")


def overloaded() -> Step:
    return Step(status=529, error_message="Overloaded")


def slow(text: str, delay: float) -> Step:
    return Step(text=text, delay=delay)


def malformed(body: str = '{"id": "x", "content": [', status: int = 200) -> Step:
    return Step(status=status, raw_body=body)


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class FakeLLM:
    """A threaded loopback server; use as a context manager or call start()/stop()."""

    def __init__(
        self,
        script: Iterable[Step] = (),
        *,
        responder: Callable[[dict[str, Any]], Step] | None = None,
        models: Iterable[str] = ("fake-model",),
    ) -> None:
        self.script: deque[Step] = deque(script)
        self.responder = responder
        self.models = list(models)
        self.models_status = 200  # e.g. 501: a server without a model list
        self.requests: list[Recorded] = []
        self.completions = 0  # completion requests answered with 200 and a reply
        self.intervals: list[tuple[float, float]] = []  # (start, end) time.time() of each completion request
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------- lifecycle

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def anthropic_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FakeLLM:
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-llm", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeLLM:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def push(self, *steps: Step) -> None:
        with self._lock:
            self.script.extend(steps)

    def completion_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "POST"]

    # ----------------------------------------------------------------- protocol

    def _next_step(self, body: dict[str, Any]) -> Step:
        with self._lock:
            if self.script:
                return self.script.popleft()
        if self.responder is not None:
            return self.responder(body)
        return Step(status=500, error_message="fake LLM script exhausted")

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet test output
                return

            def _send(self, status: int, body: str, headers: dict[str, str] | None = None) -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 - http.server naming
                fake.requests.append(Recorded("GET", self.path, dict(self.headers), {}))
                route = self.path.split("?", 1)[0].rstrip("/")
                if route.endswith("/models") and fake.models_status != 200:
                    self._send(fake.models_status, json.dumps({"error": {"message": "no model list here"}}))
                elif route.endswith("/models"):
                    data = [
                        {"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in fake.models
                    ]
                    self._send(200, json.dumps({"object": "list", "data": data}))
                else:
                    self._send(404, json.dumps({"error": {"message": "not found", "type": "not_found"}}))

            def do_POST(self) -> None:  # noqa: N802 - http.server naming
                started = time.time()
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    body = {"_raw": raw.decode(errors="replace")}
                fake.requests.append(Recorded("POST", self.path, dict(self.headers), body))
                anthropic = self.path.rstrip("/").endswith("/messages")
                if not anthropic and not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, json.dumps({"error": {"message": f"no route {self.path}"}}))
                    return
                step = fake._next_step(body)
                if step.delay:
                    time.sleep(step.delay)
                try:
                    if step.raw_body is not None:
                        self._send(step.status, step.raw_body, step.headers)
                    elif step.status != 200:
                        self._send(step.status, _error_body(anthropic, step), step.headers)
                    else:
                        model = str(body.get("model") or "fake-model")
                        out = _anthropic_body(step, model) if anthropic else _openai_body(step, model)
                        self._send(200, out, step.headers)
                        with fake._lock:
                            fake.completions += 1
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and hung up: that is the point of a slow step
                finally:
                    with fake._lock:
                        fake.intervals.append((started, time.time()))

        return Handler


def _error_body(anthropic: bool, step: Step) -> str:
    kind = {
        400: "invalid_request_error",
        401: "authentication_error",
        404: "not_found_error",
        429: "rate_limit_error",
        529: "overloaded_error",
    }.get(step.status, "api_error")
    if anthropic:
        return json.dumps({"type": "error", "error": {"type": kind, "message": step.error_message}})
    return json.dumps({"error": {"message": step.error_message, "type": kind, "code": None, "param": None}})


def _anthropic_body(step: Step, model: str) -> str:
    return json.dumps(
        {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": step.text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            # Anthropic counts cached input apart from input_tokens.
            "usage": {
                "input_tokens": step.input_tokens - step.cached_tokens,
                "cache_read_input_tokens": step.cached_tokens,
                "output_tokens": step.output_tokens,
            },
        }
    )


def _openai_body(step: Step, model: str) -> str:
    return json.dumps(
        {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": step.text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": step.input_tokens,
                "completion_tokens": step.output_tokens,
                "total_tokens": step.input_tokens + step.output_tokens,
                "prompt_tokens_details": {"cached_tokens": step.cached_tokens},
            },
        }
    )


def prompt_text(body: dict[str, Any]) -> str:
    """The user text of a recorded request, for either protocol."""
    messages = body.get("messages") or []
    parts = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(str(c.get("text", "")) for c in content if isinstance(c, dict))
    return "\n".join(parts)


def system_text(body: dict[str, Any]) -> str:
    """The system text of a recorded request, for either protocol."""
    system = body.get("system")
    if isinstance(system, str):
        return system
    if isinstance(system, list):
        return "\n".join(str(c.get("text", "")) for c in system if isinstance(c, dict))
    for message in body.get("messages") or []:
        if message.get("role") in ("system", "developer"):
            return str(message.get("content", ""))
    return ""
