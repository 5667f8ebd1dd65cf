"""Guarded httpx and httpx2 transports: any HTTP-based SDK guarded with no other code change.

::

    client = openai.OpenAI(http_client=httpx2.Client(transport=GuardedTransport(breaker, "openai")))

One class serves both libraries: the transport looks at the request it is given (an
``httpx.Request`` or an ``httpx2.Request``), wraps the response stream in the matching
library's stream class, and, when no inner transport was given, makes that library's default
``HTTPTransport`` on first use.

What a request goes through:

1. **Target.** ``(provider, model)``: the model is read from the URL path where the API puts
   it (Bedrock ``/model/{id}/invoke``, Azure ``/openai/deployments/{name}/...``, Gemini and
   Vertex ``.../models/{model}:generateContent``), else from the JSON body's ``"model"``, or
   given by the ``model=`` argument. A request with no model (listing models, uploading a
   file) passes through unguarded.
2. **Admission.** ``breaker.acquire(target)``. While the target or its provider is open the
   request is not sent: a :class:`~resilience.CircuitOpenError` is raised (see "SDK retries").
3. **Endpoint hint.** A learned hint that is a pure URL change is applied: a Bedrock
   ``inference-profile:<id>`` hint replaces the model id in the path with the profile id
   (the body is the same for both). A request signed with AWS SigV4 is left as it is: the
   signature covers the path, and the transport has no credentials to sign it again (send the
   profile id as the model yourself, or use Bedrock API keys). Every other hint changes what
   the request means (``/v1/responses`` instead of ``/v1/chat/completions`` takes another body
   and returns another shape; ``capability:*`` hints name what the model lacks): the request
   is sent as written, the provider's own error reaches the caller, and the failure is
   recorded as ``endpoint_mismatch`` (which does not count toward a trip). Use
   :class:`~resilience.Router` with a call function that reads ``attempt.endpoint`` to switch
   endpoints automatically.
4. **Compatibility hints** (with ``adapt=True``). What the fleet learned the model accepts
   is applied to the JSON body before it is sent: renamed parameters renamed
   (``max_tokens`` -> ``max_completion_tokens``), refused parameters or values dropped,
   output caps lowered to the model's limit (see :meth:`resilience.Attempt.adapt`). The
   request that teaches a hint fails as the provider answered it; every later request, in any
   process of the fleet, is adapted. A hint applied that fails the same way is dropped.
5. **Outcome.** An error status (400 and up) is recorded when its (short) body has been read,
   before the response is returned. A success is recorded when its body ends, so a streamed
   answer counts when the stream ends: a failure while reading it is that failure, an error
   event inside a ``text/event-stream`` body (Anthropic ``event: error``, OpenAI
   ``data: {"error": ...}``) is classified from its payload, and a body the caller closes
   early is a success. A transport error (connect, timeout) is recorded and re-raised
   unchanged. Cancellation and Ctrl-C are never recorded as failures.

SDK retries. The OpenAI and Anthropic SDKs retry connection errors, timeouts and 408/409/429/5xx
answers themselves (two retries by default; ``x-should-retry`` overrides). A refusal must not
be one of those, or each refusal would turn into three, with back-off sleeps in between. The
OpenAI SDK re-raises any exception that is not an httpx error unchanged, but the Anthropic SDK
wraps every foreign exception from the transport in ``APIConnectionError``, which it retries;
both re-raise their own base error (``openai.OpenAIError``, ``anthropic.AnthropicError``)
without retrying. So the refusal is a :class:`~resilience.CircuitOpenError` that, when the
openai or anthropic package is loaded, is also an instance of those base classes: one refusal
costs no request and no sleep, and ``except CircuitOpenError`` and an existing
``except openai.OpenAIError`` / ``except anthropic.AnthropicError`` both catch it. The SDKs'
retries of real failures go through the transport like any request: each attempt is recorded,
and once the target opens the next attempt is refused at once.

Do not put a guarded transport under :meth:`Breaker.guard` or a router for the same target:
each call would be recorded twice.
"""

from __future__ import annotations

import functools
import importlib
import re
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any
from urllib.parse import quote, unquote

import orjson

from .._breaker import AsyncBreaker, Breaker, _shielded, async_gate, sync_gate
from .._classification import Classification, CompatHint
from .._compat import adapt
from .._exceptions import CircuitOpenError
from .._types import Permit, Target

__all__ = ["AsyncGuardedTransport", "GuardedTransport"]

ModelOf = Callable[[Any], "str | None"]

# --------------------------------------------------------------------------- the target

# Bedrock runtime: /model/{modelId}/invoke (and the streaming and Converse variants).
_BEDROCK = re.compile(
    r"/model/([^/]+)/(?:invoke|invoke-with-response-stream|converse|converse-stream|count-tokens)$"
)
# Azure OpenAI: /openai/deployments/{deployment}/chat/completions (the deployment is the model).
_AZURE = re.compile(r"/deployments/([^/]+)/")
# Gemini / Vertex AI: .../models/{model}:generateContent (and every other :method).
_GOOGLE = re.compile(r"/(?:models|tunedModels)/([^/:]+):[A-Za-z]+$")

_MAX_MODEL_CHARS = 512  # Target's own limit


def model_from_path(path: str) -> str | None:
    """The model an API names in the URL path (Bedrock, Azure deployments, Gemini/Vertex),
    or None. ``path`` is the raw (percent-encoded) path."""
    for rx in (_BEDROCK, _GOOGLE, _AZURE):
        m = rx.search(path)
        if m:
            return unquote(m.group(1)) or None
    return None


def model_from_body(request: Any) -> str | None:
    """The top-level ``"model"`` of a JSON request body, or None (no body, not JSON, a
    streamed body that was not read)."""
    content_type = request.headers.get("content-type", "")
    if "json" not in content_type:
        return None
    try:
        body = request.content
    except Exception:  # RequestNotRead: a streamed upload, never parsed here
        return None
    if not body:
        return None
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    model = data.get("model") if isinstance(data, dict) else None
    return model if isinstance(model, str) and model else None


def _raw_path(request: Any) -> str:
    raw: bytes = request.url.raw_path
    return raw.split(b"?", 1)[0].decode("ascii", "replace")


class _Guard:
    """What both transports share: the breaker's target and endpoint for one request."""

    def __init__(self, provider: str, model: str | ModelOf | None, adapt: bool = False) -> None:
        if not isinstance(provider, str) or not provider:
            raise ValueError("GuardedTransport: provider must be a non-empty str")
        if model is not None and not callable(model) and not (isinstance(model, str) and model):
            raise ValueError(
                "GuardedTransport: model must be a non-empty str, a callable(request) -> str "
                "| None, or None (read from the request)"
            )
        self.provider = provider
        self.model = model
        self.adapt = adapt
        self._inner: dict[str, Any] = {}
        self._lock = threading.Lock()

    def target(self, request: Any) -> Target | None:
        if isinstance(self.model, str):
            name: str | None = self.model
        elif self.model is not None:
            name = self.model(request)
        else:
            name = model_from_path(_raw_path(request)) or model_from_body(request)
        if not name:
            return None
        return Target(self.provider, name[:_MAX_MODEL_CHARS])

    def apply_hint(self, request: Any, permit: Permit) -> str | None:
        """Applies a learned endpoint hint that is a pure URL change; returns the hint when
        the request now uses it (pass it to ``record_*`` as ``endpoint=``), else None."""
        hint = permit.endpoint
        if not hint or not hint.startswith("inference-profile:"):
            return None
        profile = hint.split(":", 1)[1]
        raw: bytes = request.url.raw_path
        path, sep, query = raw.partition(b"?")
        m = _BEDROCK.search(path.decode("ascii", "replace"))
        if not profile or m is None:
            return None
        if request.headers.get("authorization", "").startswith("AWS4-HMAC-SHA256"):
            return None  # SigV4 covers the path: a rewrite would break the signature
        start, end = m.span(1)
        new_path = path[:start] + quote(profile, safe="").encode("ascii") + path[end:]
        request.url = request.url.copy_with(raw_path=new_path + sep + query)
        return hint

    def adapt_body(self, request: Any, permit: Permit) -> tuple[Any, tuple[CompatHint, ...]]:
        """The request with the learned compatibility hints applied to its JSON body (a new
        request of the same library), and the hints applied; unchanged when none applies."""
        if not self.adapt or not permit.hints:
            return request, ()
        try:
            params = orjson.loads(request.content)
        except Exception:  # no JSON body, or a streamed one
            return request, ()
        if not isinstance(params, dict):
            return request, ()
        adapted, applied = adapt(params, permit.hints)
        if not applied:
            return request, ()
        headers = [(k, v) for k, v in request.headers.raw if k.lower() != b"content-length"]
        new = type(request)(
            request.method,
            request.url,
            headers=headers,
            content=orjson.dumps(adapted),
            extensions=request.extensions,
        )
        return new, tuple(applied)

    def inner(self, request: Any, given: Any, factory: str) -> Any:
        """The inner transport: the one given, or the default of the request's library."""
        if given is not None:
            return given
        root = type(request).__module__.partition(".")[0]
        found = self._inner.get(root)
        if found is None:
            with self._lock:
                found = self._inner.get(root)
                if found is None:
                    found = getattr(importlib.import_module(root), factory)()
                    self._inner[root] = found
        return found

    def made(self) -> list[Any]:
        with self._lock:
            return list(self._inner.values())


# --------------------------------------------------------------------------- refusals


def _sdk_error_bases() -> tuple[type[Exception], ...]:
    """The SDK base errors their retry loops re-raise as they are, for the SDKs loaded."""
    bases: list[type[Exception]] = []
    for module, name in (("openai", "OpenAIError"), ("anthropic", "AnthropicError")):
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type) and issubclass(cls, Exception):
            bases.append(cls)
    return tuple(bases)


@functools.lru_cache(maxsize=8)
def _refusal_class(bases: tuple[type[Exception], ...]) -> type[CircuitOpenError]:
    if not bases:
        return CircuitOpenError
    doc = "A CircuitOpenError that the loaded SDKs re-raise without retrying."
    made = type("TransportCircuitOpenError", (CircuitOpenError, *bases), {"__doc__": doc})
    made.__module__ = __name__
    return made


def refusal(exc: CircuitOpenError) -> CircuitOpenError:
    """``exc`` as the transport raises it (see the module docstring, "SDK retries")."""
    return _refusal_class(_sdk_error_bases())(exc.target, exc.retry_after_s, exc.reason)


# --------------------------------------------------------------------------- streamed bodies

_MAX_LINE = 65536  # bytes of one SSE line kept while looking for an error event


class _SSEErrors:
    """Finds an error event in a ``text/event-stream`` body as it passes: Anthropic's
    ``event: error`` + ``data: {...}`` and OpenAI's ``data: {"error": ...}``."""

    def __init__(self) -> None:
        self.error: bytes | None = None
        self._partial = b""
        self._event = b""

    def feed(self, chunk: bytes) -> None:
        if self.error is not None or not chunk:
            return
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        if len(self._partial) > _MAX_LINE:
            self._partial = b""  # an overlong line (a big chunk of text): resync
        for line in lines:
            self._line(line.rstrip(b"\r"))
            if self.error is not None:
                return

    def _line(self, line: bytes) -> None:
        if not line:
            self._event = b""
        elif line.startswith(b"event:"):
            self._event = line[6:].strip()
        elif line.startswith(b"data:"):
            data = line[5:].strip()
            if self._event == b"error" or data.startswith(b'{"error"'):
                self.error = data


def _sniffer(response: Any) -> _SSEErrors | None:
    headers = response.headers
    if not headers.get("content-type", "").startswith("text/event-stream"):
        return None
    if headers.get("content-encoding", "identity") not in ("", "identity"):
        return None  # compressed bytes: nothing readable at this level
    return _SSEErrors()


_FinishArgs = tuple[
    Target, Permit, Classification | None, float, "str | None", tuple[CompatHint, ...]
]


def _finish_args(
    breaker: Breaker | AsyncBreaker, outcome: _Outcome, exc: BaseException | None
) -> _FinishArgs:
    """What the gate records for a finished request: its failure classified by the breaker
    (its classifier, the target's provider), or None for a success."""
    failure = outcome.failure(exc)
    c = None if failure is None else breaker.classify(failure, outcome.target.provider)
    return (outcome.target, outcome.permit, c, outcome.latency(), outcome.endpoint, outcome.applied)


class _Outcome:
    """One admitted request: records its outcome exactly once."""

    __slots__ = ("applied", "done", "endpoint", "permit", "sse", "start", "target")

    def __init__(
        self,
        target: Target,
        permit: Permit,
        endpoint: str | None,
        applied: tuple[CompatHint, ...] = (),
    ) -> None:
        self.target = target
        self.permit = permit
        self.endpoint = endpoint
        self.applied = applied
        self.start = time.monotonic()
        self.sse: _SSEErrors | None = None
        self.done = False

    def take(self) -> bool:
        """True the first time only: the caller then records the outcome."""
        if self.done:
            return False
        self.done = True
        return True

    def failure(self, exc: BaseException | None) -> object | None:
        """What to record: None for a success, else what the call failed with (classified
        by the breaker, with its classifier and the target's provider)."""
        if exc is not None:
            return exc
        if self.sse is not None and self.sse.error is not None:
            return self.sse.error
        return None

    def latency(self) -> float:
        return time.monotonic() - self.start


def _error_of(response: Any, raw: bytes) -> Any:
    """What an error response failed with, for the breaker to classify (its classifier
    first, with the target's provider): a copy of the response whose body is read and
    decoded. The response itself gets a fresh stream of the raw bytes, so its client reads
    (and decodes, and times) it as usual."""
    lib = _library(response)
    response.stream = lib.ByteStream(raw)
    body: bytes = raw
    if response.headers.get("content-encoding", "identity") not in ("", "identity"):
        decoded = lib.Response(
            response.status_code, headers=response.headers, stream=lib.ByteStream(raw)
        )
        try:
            body = decoded.read()
        except Exception:  # a body that does not decode is classified by its status alone
            body = b""
    headers = [(k, v) for k, v in response.headers.raw if k.lower() != b"content-encoding"]
    copy = lib.Response(response.status_code, headers=headers, content=body)
    request = getattr(response, "_request", None)  # the property raises when it is unset
    if request is not None:
        copy.request = request
    return copy


def _read_raw(stream: Any) -> bytes:
    try:
        return b"".join(stream)
    finally:
        stream.close()


async def _aread_raw(stream: Any) -> bytes:
    try:
        return b"".join([chunk async for chunk in stream])
    finally:
        await stream.aclose()


@functools.cache
def _sync_stream_class(base: type) -> type:
    """A subclass of the library's ``SyncByteStream`` (its client asserts the type)."""

    class GuardedStream(base):  # type: ignore[misc]
        def __init__(self, inner: Any, transport: GuardedTransport, outcome: _Outcome) -> None:
            self._inner = inner
            self._transport = transport
            self._outcome = outcome

        def __iter__(self) -> Iterator[bytes]:
            sse = self._outcome.sse
            try:
                for chunk in self._inner:
                    if sse is not None:
                        sse.feed(chunk)
                    yield chunk
            except GeneratorExit:
                raise  # closed early: close() records it
            except BaseException as exc:
                self._transport._finish(self._outcome, exc)
                raise
            self._transport._finish(self._outcome, None)

        def close(self) -> None:
            try:
                self._inner.close()
            finally:
                self._transport._finish(self._outcome, None)  # closed early: a success

    return GuardedStream


@functools.cache
def _async_stream_class(base: type) -> type:
    """A subclass of the library's ``AsyncByteStream``."""

    class AsyncGuardedStream(base):  # type: ignore[misc]
        def __init__(self, inner: Any, transport: AsyncGuardedTransport, outcome: _Outcome) -> None:
            self._inner = inner
            self._transport = transport
            self._outcome = outcome

        async def __aiter__(self) -> AsyncIterator[bytes]:
            sse = self._outcome.sse
            try:
                async for chunk in self._inner:
                    if sse is not None:
                        sse.feed(chunk)
                    yield chunk
            except GeneratorExit:
                raise
            except BaseException as exc:
                await _shielded(self._transport._finish(self._outcome, exc))
                raise
            await self._transport._finish(self._outcome, None)

        async def aclose(self) -> None:
            try:
                await self._inner.aclose()
            finally:
                await _shielded(self._transport._finish(self._outcome, None))

    return AsyncGuardedStream


def _library(obj: Any) -> Any:
    return sys.modules[type(obj).__module__.partition(".")[0]]


# --------------------------------------------------------------------------- the transports


class GuardedTransport:
    """An httpx / httpx2 transport that guards every model call it carries.

    Args:
        breaker: the :class:`~resilience.Breaker` (sync) that keeps the shared state.
        provider: the provider name of every target this transport calls (``"openai"``).
        transport: the inner transport (``httpx.HTTPTransport(...)`` or
            ``httpx2.HTTPTransport(...)``, with your limits, proxy, TLS settings); by default
            the default ``HTTPTransport`` of the library the client is built on.
        model: the model name, or ``callable(request) -> str | None``; by default read from
            the URL path (Bedrock, Azure, Gemini/Vertex) or the JSON body.

    Raises:
        CircuitOpenError: (from ``handle_request``) the target or its provider is open; no
            request was sent. With the openai / anthropic package loaded it is also an
            ``openai.OpenAIError`` / ``anthropic.AnthropicError``, which those SDKs re-raise
            without retrying.

    Everything else (provider errors, transport errors, the response) passes through
    unchanged; see the module docstring for endpoint hints, streams and SDK retries. Pass it
    to a client: ``httpx2.Client(transport=GuardedTransport(breaker, "anthropic"))``. Type
    checkers may want a ``cast`` there: it is not a subclass of either library's
    ``BaseTransport`` (the Anthropic SDK refuses transports derived from httpx classes).
    """

    def __init__(
        self,
        breaker: Breaker,
        provider: str,
        *,
        transport: Any = None,
        model: str | ModelOf | None = None,
        adapt: bool = False,
    ) -> None:
        if not isinstance(breaker, Breaker):
            raise TypeError(
                f"GuardedTransport needs a resilience.Breaker, got {type(breaker).__name__} "
                "(use AsyncGuardedTransport with an AsyncBreaker)"
            )
        self.breaker = breaker
        self.transport = transport
        self._guard = _Guard(provider, model, adapt)
        self._gate = sync_gate(breaker)

    @property
    def provider(self) -> str:
        """The provider name of every target."""
        return self._guard.provider

    def __enter__(self) -> GuardedTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def handle_request(self, request: Any) -> Any:
        """Sends one request (see the class docstring); returns the inner transport's
        response with its stream wrapped."""
        inner = self._guard.inner(request, self.transport, "HTTPTransport")
        target = self._guard.target(request)
        if target is None:
            return inner.handle_request(request)
        try:
            permit = self.breaker.acquire(target)
        except CircuitOpenError as exc:
            raise refusal(exc) from None
        endpoint = self._guard.apply_hint(request, permit)
        request, applied = self._guard.adapt_body(request, permit)
        outcome = _Outcome(target, permit, endpoint, applied)
        try:
            response = inner.handle_request(request)
        except BaseException as exc:
            self._finish(outcome, exc)
            raise
        if response.status_code >= 400:
            try:
                raw = _read_raw(response.stream)
            except BaseException as exc:
                self._finish(outcome, exc)
                raise
            if outcome.take():
                c = self.breaker.classify(_error_of(response, raw), target.provider)
                self._gate.finish(
                    target, permit, c, outcome.latency(), outcome.endpoint, outcome.applied
                )
            return response
        outcome.sse = _sniffer(response)
        wrapper = _sync_stream_class(_library(response).SyncByteStream)
        response.stream = wrapper(response.stream, self, outcome)
        return response

    def _finish(self, outcome: _Outcome, exc: BaseException | None) -> None:
        if not outcome.take():
            return
        self._gate.finish(*_finish_args(self.breaker, outcome, exc))

    def close(self) -> None:
        """Closes the inner transport (the given one or the defaults made)."""
        for inner in [self.transport, *self._guard.made()]:
            if inner is not None:
                inner.close()


class AsyncGuardedTransport:
    """The asyncio twin of :class:`GuardedTransport` (same arguments and behaviour), for
    ``httpx.AsyncClient`` / ``httpx2.AsyncClient``.

    Args:
        breaker: the :class:`~resilience.AsyncBreaker` that keeps the shared state.
        provider: the provider name of every target this transport calls.
        transport: the inner async transport (``httpx2.AsyncHTTPTransport(...)``); by
            default the library's default ``AsyncHTTPTransport``.
        model: the model name, or ``callable(request) -> str | None``; by default read from
            the request.

    Raises:
        CircuitOpenError: (from ``handle_async_request``) the target or its provider is open.
    """

    def __init__(
        self,
        breaker: AsyncBreaker,
        provider: str,
        *,
        transport: Any = None,
        model: str | ModelOf | None = None,
        adapt: bool = False,
    ) -> None:
        if not isinstance(breaker, AsyncBreaker):
            raise TypeError(
                "AsyncGuardedTransport needs a resilience.AsyncBreaker, got "
                f"{type(breaker).__name__} (use GuardedTransport with a Breaker)"
            )
        self.breaker = breaker
        self.transport = transport
        self._guard = _Guard(provider, model, adapt)
        self._gate = async_gate(breaker)

    @property
    def provider(self) -> str:
        """The provider name of every target."""
        return self._guard.provider

    async def __aenter__(self) -> AsyncGuardedTransport:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def handle_async_request(self, request: Any) -> Any:
        """Sends one request (see :class:`GuardedTransport`)."""
        inner = self._guard.inner(request, self.transport, "AsyncHTTPTransport")
        target = self._guard.target(request)
        if target is None:
            return await inner.handle_async_request(request)
        try:
            permit = await self.breaker.acquire(target)
        except CircuitOpenError as exc:
            raise refusal(exc) from None
        endpoint = self._guard.apply_hint(request, permit)
        request, applied = self._guard.adapt_body(request, permit)
        outcome = _Outcome(target, permit, endpoint, applied)
        try:
            response = await inner.handle_async_request(request)
        except BaseException as exc:
            await _shielded(self._finish(outcome, exc))
            raise
        if response.status_code >= 400:
            try:
                raw = await _aread_raw(response.stream)
            except BaseException as exc:
                await _shielded(self._finish(outcome, exc))
                raise
            if outcome.take():
                c = self.breaker.classify(_error_of(response, raw), target.provider)
                await self._gate.finish(
                    target, permit, c, outcome.latency(), outcome.endpoint, outcome.applied
                )
            return response
        outcome.sse = _sniffer(response)
        wrapper = _async_stream_class(_library(response).AsyncByteStream)
        response.stream = wrapper(response.stream, self, outcome)
        return response

    async def _finish(self, outcome: _Outcome, exc: BaseException | None) -> None:
        if not outcome.take():
            return
        await self._gate.finish(*_finish_args(self.breaker, outcome, exc))

    async def aclose(self) -> None:
        """Closes the inner transport (the given one or the defaults made)."""
        for inner in [self.transport, *self._guard.made()]:
            if inner is not None:
                await inner.aclose()
