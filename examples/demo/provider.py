"""A fake OpenAI-compatible provider served over real HTTP (stdlib only).

Every provider of the demo is served by one :class:`FakeProvider` under a path prefix::

    POST /<provider>/v1/chat/completions   {"model": ..., "messages": [...]}
    POST /<provider>/v1/responses          {"model": ..., "input": ...}
    GET  /<provider>/v1/models
    GET  /health

The models fail the way real ones do; the error bodies are copied in shape from
``provider_errors.jsonl`` (the classifier's golden set):

============================== ============== ==================================================
target                         behaviour      what it answers
============================== ============== ==================================================
openai/gpt-4o-mini             healthy        200 on both endpoints
openai/gpt-4o                  flaky          a seeded share of 500 (OpenAI JSON) and 502
                                              (Cloudflare HTML page); else 200
openai/gpt-4-0314              retired        404 ``model_not_found``
openai/o3-pro                  responses_only 404 "only supported in v1/responses" on chat
                                              completions; 200 on /v1/responses
openai/o1                      param_renamed  400 "Unsupported parameter: 'max_tokens' is not
                                              supported with this model. Use
                                              'max_completion_tokens' instead." (with ``param``
                                              and ``code``) to a request with ``max_tokens``;
                                              200 to one with ``max_completion_tokens``
ollama/deepseek-r1:14b         no_tools       400 "registry.ollama.ai/library/deepseek-r1:14b does
                                              not support tools" (Ollama's OpenAI-compatible
                                              error) to a request with ``tools``; 200 without
groq/llama-3.3-70b-versatile   rate_limited   ``rate_limit_requests`` per ``rate_limit_window_s``
                                              window, then 429 with ``retry-after`` (s)
anthropic/claude-sonnet-4      overloaded     529 ``overloaded_error`` until
                                              ``overloaded_recover_s`` after its first request
together/*                     quota          429 ``insufficient_quota`` (not transient: the
                                              provider's quota is gone)
============================== ============== ==================================================

Unknown models get a 404 ``model_not_found``. Outcomes are deterministic from the seed (the
n-th request of the flaky model always gets the same answer); the time-based behaviours
(rate-limit windows, recovery) count from :meth:`FakeProvider.start` and from a model's first
request. Every request is kept in a log with its wall-clock time (seconds since the epoch,
the same clock Redis uses on this host): the demo's ground truth for calls made.

The two refusals are the wordings of real corpus entries (OpenAI's reasoning models, and
Ollama's OpenAI-compatible endpoint for a model without tool support), so the library's
classifier reads from them what the model accepts: ``max_tokens`` renamed
``max_completion_tokens`` (a caller error), and no tools (an ``endpoint_mismatch``).
Neither is a provider failure: the models answer every request that does not ask for what
they refuse.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import socket
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

__all__ = [
    "DEMO_MODELS",
    "Behaviour",
    "FakeProvider",
    "ModelSpec",
    "ProviderRequest",
    "Reply",
]

Behaviour = Literal[
    "healthy",
    "flaky",
    "retired",
    "responses_only",
    "param_renamed",
    "no_tools",
    "rate_limited",
    "overloaded",
    "quota",
]

CHAT_PATH = "/v1/chat/completions"
RESPONSES_PATH = "/v1/responses"


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One model the fake provider serves.

    Attributes:
        provider, model: the names (the provider is the URL path prefix).
        behaviour: how it answers (see the module docstring).
        label: a short description for the live view.
    """

    provider: str
    model: str
    behaviour: Behaviour
    label: str


DEMO_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec("openai", "gpt-4o-mini", "healthy", "healthy"),
    ModelSpec("openai", "gpt-4o", "flaky", "flaky (500, 502)"),
    ModelSpec("openai", "gpt-4-0314", "retired", "retired (404)"),
    ModelSpec("openai", "o3-pro", "responses_only", "/v1/responses only"),
    ModelSpec("openai", "o1", "param_renamed", "max_tokens refused"),
    ModelSpec("ollama", "deepseek-r1:14b", "no_tools", "no tools"),
    ModelSpec("groq", "llama-3.3-70b-versatile", "rate_limited", "rate limited (429)"),
    ModelSpec("anthropic", "claude-sonnet-4", "overloaded", "overloaded (529)"),
    ModelSpec("together", "meta-llama/Llama-3.3-70B-Instruct-Turbo", "quota", "no quota (429)"),
    ModelSpec("together", "Qwen/Qwen2.5-72B-Instruct", "quota", "no quota (429)"),
)
"""The models of the demo, in the order the live view shows them."""


@dataclass(frozen=True, slots=True)
class ProviderRequest:
    """One request the fake provider answered.

    Attributes:
        time: when it arrived, wall clock (seconds since the epoch).
        provider, model: whom it was for (``model`` is ``""`` when the body had none).
        path: the endpoint without the provider prefix (``/v1/chat/completions``, ...).
        status: the HTTP status answered.
        worker: the ``x-demo-worker`` header, or None.
    """

    time: float
    provider: str
    model: str
    path: str
    status: int
    worker: str | None

    @property
    def ok(self) -> bool:
        """True for a 2xx answer."""
        return 200 <= self.status < 300


@dataclass(frozen=True, slots=True)
class Reply:
    """An answer: status, extra headers and the body (bytes)."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


def _json(status: int, payload: Any, headers: Sequence[tuple[str, str]] = ()) -> Reply:
    body = json.dumps(payload, indent=None).encode("utf-8")
    return Reply(status, (("content-type", "application/json"), *headers), body)


def _openai_error(
    status: int, message: str, type_: str, code: str | None, param: str | None = None
) -> Reply:
    return _json(
        status, {"error": {"message": message, "type": type_, "param": param, "code": code}}
    )


CLOUDFLARE_502 = (
    "<html>\n<head><title>502 Bad Gateway</title></head>\n<body>\n"
    "<center><h1>502 Bad Gateway</h1></center>\n<hr><center>cloudflare</center>\n"
    "</body>\n</html>\n"
)


class FakeProvider:
    """The fake providers of the demo, served over HTTP on ``host:port`` in a daemon thread.

    Args:
        seed: makes the flaky model's answers and the request ids reproducible.
        host: address to bind (loopback by default; the container image binds 0.0.0.0).
        port: TCP port, 0 for a free one (see :attr:`port` after :meth:`start`).
        models: the models served (default :data:`DEMO_MODELS`).
        flaky_failure_rate: share of the flaky model's requests that fail (0-1).
        overloaded_recover_s: seconds after its first request when the overloaded model
            starts answering 200.
        rate_limit_requests: requests the rate-limited model answers per window.
        rate_limit_window_s: length of a rate-limit window (s); a 429 carries
            ``retry-after`` = whole seconds to the next window (at least 1).
        latency_s: time a successful answer takes (s); errors answer at once.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        host: str = "127.0.0.1",
        port: int = 0,
        models: Sequence[ModelSpec] = DEMO_MODELS,
        flaky_failure_rate: float = 0.35,
        overloaded_recover_s: float = 1.5,
        rate_limit_requests: int = 4,
        rate_limit_window_s: float = 2.0,
        latency_s: float = 0.005,
    ) -> None:
        if not 0.0 <= flaky_failure_rate <= 1.0:
            raise ValueError("flaky_failure_rate must be within 0-1")
        if rate_limit_window_s <= 0 or rate_limit_requests < 0:
            raise ValueError("rate limit window must be > 0 s and requests >= 0")
        self.seed = seed
        self.host = host
        self._port = port
        self.models = {(m.provider, m.model): m for m in models}
        self.flaky_failure_rate = flaky_failure_rate
        self.overloaded_recover_s = overloaded_recover_s
        self.rate_limit_requests = rate_limit_requests
        self.rate_limit_window_s = rate_limit_window_s
        self.latency_s = latency_s
        self._lock = threading.Lock()
        self._log: list[ProviderRequest] = []
        self._counts: dict[tuple[str, str], int] = {}
        self._first_seen: dict[tuple[str, str], float] = {}
        self._rngs: dict[tuple[str, str], random.Random] = {}
        self._windows: dict[tuple[str, str], tuple[int, int]] = {}
        self._started = time.monotonic()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> FakeProvider:
        """Binds the port and serves in a daemon thread; returns self."""
        if self._server is not None:
            return self
        server = ThreadingHTTPServer((self.host, self._port), _handler_for(self))
        server.daemon_threads = True
        self._server = server
        self._started = time.monotonic()
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.name = "fake-provider"
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Binds the port and serves in the calling thread until interrupted."""
        server = ThreadingHTTPServer((self.host, self._port), _handler_for(self))
        server.daemon_threads = True
        self._server = server
        self._started = time.monotonic()
        try:
            server.serve_forever(poll_interval=0.2)
        finally:
            server.server_close()
            self._server = None

    def stop(self) -> None:
        """Stops serving, closes the listening socket and every open keep-alive connection
        (idempotent)."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        with self._lock:
            open_connections = list(self._connections)
        for conn in open_connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeProvider:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound TCP port (after :meth:`start`)."""
        if self._server is None:
            return self._port
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """``http://host:port`` of the running server."""
        return f"http://{self.host}:{self.port}"

    def url_for(self, provider: str) -> str:
        """Base URL of one provider (append ``/v1/chat/completions`` or ``/v1/responses``)."""
        return f"{self.base_url}/{provider}"

    # ------------------------------------------------------------------ the log
    def requests(
        self, provider: str | None = None, model: str | None = None
    ) -> list[ProviderRequest]:
        """A copy of the request log, oldest first, optionally for one provider or model."""
        with self._lock:
            log = list(self._log)
        return [
            r
            for r in log
            if (provider is None or r.provider == provider) and (model is None or r.model == model)
        ]

    def __iter__(self) -> Iterator[ProviderRequest]:
        return iter(self.requests())

    # ------------------------------------------------------------------ answering
    def answer(
        self, method: str, path: str, body: bytes, worker: str | None = None
    ) -> tuple[Reply, ProviderRequest | None]:
        """The reply to one HTTP request (the server calls this; tests may too).

        Returns the reply and the logged request (None for requests that are not model
        calls, like ``/health``).
        """
        now = time.time()
        if method == "GET" and path in ("/health", "/healthz"):
            return Reply(200, (("content-type", "text/plain"),), b"ok\n"), None
        provider, _, rest = path.lstrip("/").partition("/")
        rest = "/" + rest
        if method == "GET" and rest == "/v1/models":
            data = [
                {"id": m.model, "object": "model", "owned_by": provider}
                for m in self.models.values()
                if m.provider == provider
            ]
            return _json(200, {"object": "list", "data": data}), None
        if method != "POST" or rest not in (CHAT_PATH, RESPONSES_PATH):
            return _openai_error(
                404, f"Unknown request URL: {method} {path}.", "invalid_request_error", None
            ), None
        try:
            payload = json.loads(body or b"{}")
            model = payload.get("model") if isinstance(payload, dict) else None
        except ValueError:
            model = None
            payload = None
        if not isinstance(payload, dict):
            reply = _openai_error(
                400,
                "We could not parse the JSON body of your request.",
                "invalid_request_error",
                None,
            )
            return reply, self._record(now, provider, "", rest, reply.status, worker)
        if not isinstance(model, str) or not model:
            reply = _openai_error(
                400, "you must provide a model parameter", "invalid_request_error", None
            )
            return reply, self._record(now, provider, "", rest, reply.status, worker)
        reply = self._model_reply(provider, model, rest, now, payload)
        return reply, self._record(now, provider, model, rest, reply.status, worker)

    def _record(
        self, now: float, provider: str, model: str, path: str, status: int, worker: str | None
    ) -> ProviderRequest:
        entry = ProviderRequest(now, provider, model, path, status, worker)
        with self._lock:
            self._log.append(entry)
        return entry

    def _model_reply(
        self, provider: str, model: str, path: str, now: float, payload: dict[str, Any]
    ) -> Reply:
        key = (provider, model)
        spec = self.models.get(key)
        with self._lock:
            n = self._counts.get(key, 0) + 1
            self._counts[key] = n
            first = self._first_seen.setdefault(key, time.monotonic())
            rng = self._rngs.get(key)
            if rng is None:
                rng = random.Random(self.seed * 1_000_003 + zlib.crc32(f"{key}".encode()))
                self._rngs[key] = rng
            draw, pick = rng.random(), rng.random()
        request_id = f"req_{zlib.crc32(f'{self.seed}:{provider}:{model}:{n}'.encode()):08x}"
        if spec is None or spec.behaviour == "retired":
            return _openai_error(
                404,
                f"The model `{model}` does not exist or you do not have access to it.",
                "invalid_request_error",
                "model_not_found",
            )
        b = spec.behaviour
        if b == "responses_only" and path == CHAT_PATH:
            return _openai_error(
                404,
                "This model is only supported in v1/responses and not in v1/chat/completions.",
                "invalid_request_error",
                None,
                "model",
            )
        if b == "param_renamed" and "max_tokens" in payload:
            return _openai_error(
                400,
                "Unsupported parameter: 'max_tokens' is not supported with this model. "
                "Use 'max_completion_tokens' instead.",
                "invalid_request_error",
                "unsupported_parameter",
                "max_tokens",
            )
        if b == "no_tools" and payload.get("tools"):
            return _openai_error(
                400, f"registry.ollama.ai/library/{model} does not support tools", "api_error", None
            )
        if b == "flaky" and draw < self.flaky_failure_rate:
            if pick < 0.5:
                return _openai_error(
                    500,
                    "The server had an error while processing your request. Sorry about that!",
                    "server_error",
                    None,
                )
            return Reply(502, (("content-type", "text/html"),), CLOUDFLARE_502.encode())
        if b == "overloaded" and time.monotonic() - first < self.overloaded_recover_s:
            return _json(
                529,
                {
                    "type": "error",
                    "error": {"type": "overloaded_error", "message": "Overloaded"},
                    "request_id": request_id,
                },
            )
        if b == "quota":
            return _openai_error(
                429,
                "You exceeded your current quota, please check your plan and billing details. "
                "For more information on this error, read the docs: "
                "https://platform.openai.com/docs/guides/error-codes/api-errors.",
                "insufficient_quota",
                "insufficient_quota",
            )
        if b == "rate_limited":
            limited = self._rate_limit(key)
            if limited is not None:
                wait = limited
                return _json(
                    429,
                    {
                        "error": {
                            "message": f"Rate limit reached for model `{model}` in organization "
                            f"org_demo on requests per minute (RPM): Limit "
                            f"{self.rate_limit_requests}, Used {self.rate_limit_requests}, "
                            f"Requested 1. Please try again in {wait}s.",
                            "type": "requests",
                            "code": "rate_limit_exceeded",
                        }
                    },
                    (("retry-after", str(wait)),),
                )
        if self.latency_s > 0:
            time.sleep(self.latency_s)
        return self._success(model, path, n, now)

    def _rate_limit(self, key: tuple[str, str]) -> int | None:
        """None when the request fits the window, else whole seconds to the next window."""
        elapsed = time.monotonic() - self._started
        window = int(elapsed // self.rate_limit_window_s)
        with self._lock:
            current, used = self._windows.get(key, (window, 0))
            if current != window:
                used = 0
            used += 1
            self._windows[key] = (window, used)
        if used <= self.rate_limit_requests:
            return None
        left = (window + 1) * self.rate_limit_window_s - elapsed
        return max(1, math.ceil(left))

    @staticmethod
    def _success(model: str, path: str, n: int, now: float) -> Reply:
        text = f"Hello from {model} (answer {n})."
        usage = {"prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20}
        if path == RESPONSES_PATH:
            return _json(
                200,
                {
                    "id": f"resp_{n:06d}",
                    "object": "response",
                    "created_at": int(now),
                    "model": model,
                    "status": "completed",
                    "output": [
                        {
                            "type": "message",
                            "id": f"msg_{n:06d}",
                            "role": "assistant",
                            "content": [{"type": "output_text", "text": text}],
                        }
                    ],
                    "usage": {"input_tokens": 12, "output_tokens": 8, "total_tokens": 20},
                },
            )
        return _json(
            200,
            {
                "id": f"chatcmpl-{n:06d}",
                "object": "chat.completion",
                "created": int(now),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage,
            },
        )


def _handler_for(provider: FakeProvider) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "fake-llm-provider/1"

        # One buffered write per answer, flushed by the base class after each request, and
        # no Nagle delay: headers and body leave in one segment at once.
        wbufsize = 64 * 1024

        def setup(self) -> None:
            super().setup()
            with contextlib.suppress(OSError):
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with provider._lock:
                provider._connections.add(self.connection)

        def finish(self) -> None:
            with provider._lock:
                provider._connections.discard(self.connection)
            with contextlib.suppress(OSError):
                super().finish()

        def _serve(self, method: str) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length > 0 else b""
            reply, _ = provider.answer(
                method, self.path.split("?", 1)[0], body, self.headers.get("x-demo-worker")
            )
            self.send_response(reply.status)
            for name, value in reply.headers:
                self.send_header(name, value)
            self.send_header("content-length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)

        def do_POST(self) -> None:
            self._serve("POST")

        def do_GET(self) -> None:
            self._serve("GET")

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the request log is the provider's own record

    return Handler
