"""A scriptable LLM provider on 127.0.0.1 for the client integration tests.

Each model answers from a script of replies (the last one repeats): a JSON answer with any
status and headers, or a server-sent-event stream that may be cut off mid-way (the connection
is dropped before the chunked body ends). Every request is recorded. The error bodies below
are real provider answers; each names where it was copied from.
"""

from __future__ import annotations

import json
import re
import socket
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

# https://github.com/github/gh-models/issues/98
OPENAI_500 = {
    "error": {
        "message": "The server had an error while processing your request. Sorry about that!",
        "type": "server_error",
        "param": None,
        "code": None,
    }
}
# https://github.com/Pythagora-io/gpt-pilot/pull/53 (with the Retry-After header the API sends)
OPENAI_429 = {
    "error": {
        "message": "Rate limit reached for 10KTPM-200RPM in organization org-OASFC7k1Ff5IzueeLA"
        "rhQtnT on tokens per min. Limit: 10000 / min. Please try again in 6ms. Contact us "
        "through our help center at help.openai.com if you continue to have issues.",
        "type": "tokens",
        "param": None,
        "code": "rate_limit_exceeded",
    }
}
# https://github.com/n8n-io/n8n/issues/18352
OPENAI_ONLY_RESPONSES = {
    "error": {
        "message": "This model is only supported in v1/responses and not in v1/chat/completions.",
        "type": "invalid_request_error",
        "param": "model",
        "code": None,
    }
}
# https://github.com/bytedance/deer-flow/issues/310 (context_length: the caller's error)
OPENAI_CONTEXT = {
    "error": {
        "message": "This model's maximum context length is 128000 tokens. However, your "
        "messages resulted in 202868 tokens (202767 in the messages, 101 in the functions). "
        "Please reduce the length of the messages or functions.",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    }
}
# https://github.com/anthropics/claude-code/issues/35792
ANTHROPIC_529 = {
    "type": "error",
    "error": {"type": "overloaded_error", "message": "Overloaded"},
    "request_id": "req_011CZAau32QzxDkriovTaFCB",
}
# Anthropic's streamed error event (same payload, sent inside a 200 text/event-stream)
ANTHROPIC_STREAM_ERROR = b'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}\n\n'  # noqa: E501


@dataclass
class Reply:
    """One scripted answer.

    ``events`` makes it a text/event-stream answer (each item one chunk); ``cut_after`` drops
    the connection after that many events, before the body ends.
    """

    status: int = 200
    body: Any = None
    headers: Sequence[tuple[str, str]] = ()
    events: Sequence[bytes] | None = None
    cut_after: int | None = None


@dataclass
class Seen:
    method: str
    path: str
    model: str | None
    headers: dict[str, str]
    body: Any


@dataclass
class LLMServer:
    """The server; ``script[model]`` is the list of replies of a model (path models too)."""

    script: dict[str, list[Reply]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._httpd = _Server(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> LLMServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def calls(self, model: str) -> int:
        with self._lock:
            return sum(1 for s in self.seen if s.model == model)

    def next_reply(self, model: str | None) -> Reply:
        with self._lock:
            replies = self.script.get(model or "", [])
            if not replies:
                return _ok(model or "unknown")
            return replies.pop(0) if len(replies) > 1 else replies[0]

    def reply_to(self, seen: Seen) -> Reply:
        """The reply to one request (a subclass may look at the request)."""
        return self.next_reply(seen.model)

    def record(self, seen: Seen) -> None:
        with self._lock:
            self.seen.append(seen)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):  # a client that hung up
            return
        super().handle_error(request, client_address)


_PATH_MODEL = re.compile(r"/(?:model|deployments|models)/([^/:]+)")


def _ok(model: str) -> Reply:
    return Reply(200, chat_completion(model))


def chat_completion(model: str, text: str = "hello") -> dict[str, Any]:
    """An OpenAI chat completion."""
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def anthropic_message(model: str, text: str = "hello") -> dict[str, Any]:
    """An Anthropic message."""
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }


def openai_stream(model: str, words: Sequence[str] = ("a", "b", "c")) -> list[bytes]:
    """OpenAI chat completion chunks, each one SSE event, then ``[DONE]``."""
    events = []
    for i, word in enumerate(words):
        last = i == len(words) - 1
        chunk = {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "delta": {"content": word},
                    "finish_reason": "stop" if last else None,
                }
            ],
        }
        events.append(b"data: " + json.dumps(chunk).encode() + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return events


def anthropic_stream(model: str, words: Sequence[str] = ("a", "b", "c")) -> list[bytes]:
    """Anthropic message stream events."""

    def ev(name: str, data: dict[str, Any]) -> bytes:
        return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()

    out = [
        ev(
            "message_start",
            {
                "type": "message_start",
                "message": {**anthropic_message(model, ""), "content": []},
            },
        ),
        ev(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
    ]
    for word in words:
        out.append(
            ev(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": word},
                },
            )
        )
    out.append(ev("content_block_stop", {"type": "content_block_stop", "index": 0}))
    out.append(
        ev(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": len(words)},
            },
        )
    )
    out.append(ev("message_stop", {"type": "message_stop"}))
    return out


def _handler(server: LLMServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self._serve()

        def do_POST(self) -> None:
            self._serve()

        def _serve(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
            path = self.path.split("?", 1)[0]
            m = _PATH_MODEL.search(path)
            model = unquote(m.group(1)) if m else None
            if model is None and isinstance(body, dict):
                model = body.get("model")
            seen = Seen(self.command, path, model, dict(self.headers), body)
            server.record(seen)
            reply = server.reply_to(seen)
            try:
                if reply.events is not None:
                    self._stream(reply)
                else:
                    self._json(reply)
            except (BrokenPipeError, ConnectionResetError):  # the client closed early
                self.close_connection = True

        def _json(self, reply: Reply) -> None:
            if isinstance(reply.body, str):
                data = reply.body.encode()
            else:  # real providers send UTF-8, not \u escapes
                data = (
                    b""
                    if reply.body is None
                    else json.dumps(reply.body, ensure_ascii=False).encode()
                )
            self.send_response(reply.status)
            self.send_header("content-type", "application/json")
            for name, value in reply.headers:
                self.send_header(name, value)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()

        def _stream(self, reply: Reply) -> None:
            self.send_response(reply.status)
            self.send_header("content-type", "text/event-stream")
            self.send_header("transfer-encoding", "chunked")
            for name, value in reply.headers:
                self.send_header(name, value)
            self.end_headers()
            for n, event in enumerate(reply.events or ()):
                if reply.cut_after is not None and n >= reply.cut_after:
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

    return Handler
