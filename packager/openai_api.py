"""The OpenAI-compatible API of `llmpack serve --api`, mounted at /v1 (docs/serve.md):

    GET  /v1/models              the served bundles, in OpenAI's list shape (ids as /api/models names them)
    GET  /v1/models/{id}         one of them
    POST /v1/chat/completions    a chat completion, streamed as server-sent events with "stream": true

A raw ASGI app, so that it sees the client go away: a request whose client disconnects
(a closed stream, a cancelled call) is aborted in the runtime at once, and the model's
queue moves on. The request body goes to the runtime unchanged (it validates every
parameter; the Node host takes llmpack's `speculative` extension field); this side only
needs the `model` it names. Errors have OpenAI's shape
(`{"error": {"message", "type", "param", "code"}}`) and status codes: 400 for a bad
request, 404 for an unknown model or URL, 500 when the server fails.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import TYPE_CHECKING

from .node_api import Call, NodeApiHost

if TYPE_CHECKING:
    from .serve import Bundle, BundleSet

PREFIX = "/v1"
MAX_BODY_BYTES = 32 << 20
JSON_HEADERS = [(b"content-type", b"application/json"), (b"cache-control", b"no-cache")]
SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
               (b"x-accel-buffering", b"no")]


class ApiError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status = status
        self.body = {"error": {"message": message, "type": type_, "param": param, "code": code}}


def model_object(bundle: Bundle) -> dict:
    """A served bundle as OpenAI's model object."""
    created = 0
    try:
        created = int(datetime.fromisoformat(str(bundle.manifest.summary().get("created"))).timestamp())
    except (TypeError, ValueError):
        pass
    return {"id": bundle.id, "object": "model", "created": created, "owned_by": "llmpack"}


class OpenAIApi:
    """ASGI app for the /v1 paths (given with their /v1 prefix)."""

    def __init__(self, bundles: BundleSet, host: NodeApiHost):
        self.bundles = bundles
        self.host = host

    async def __call__(self, scope, receive, send):
        method, path = scope["method"], scope["path"].removeprefix(PREFIX).rstrip("/")
        try:
            if path == "/chat/completions":
                allow(scope, "POST")
                return await self.chat(scope, receive, send)
            if path == "/models" or path.startswith("/models/"):
                allow(scope, "GET", "HEAD")
                return await respond(send, 200, self.models(path.removeprefix("/models").lstrip("/")))
            raise ApiError(404, f"Unknown request URL: {method} {scope['path']}. llmpack serves GET /v1/models "
                           "and POST /v1/chat/completions", code="unknown_url")
        except ApiError as e:
            await respond(send, e.status, e.body)

    def models(self, model_id: str) -> dict:
        if not model_id:
            return {"object": "list", "data": [model_object(b) for b in self.bundles.all()]}
        return model_object(self.bundle(model_id))

    def bundle(self, model_id: str) -> Bundle:
        found = self.bundles.get(model_id)
        if found is None:
            served = ", ".join(b.id for b in self.bundles.all())
            raise ApiError(404, f"The model '{model_id}' does not exist: this server serves {served} "
                           "(GET /v1/models)", param="model", code="model_not_found")
        return found

    async def chat(self, scope, receive, send):
        if content_type(scope) != "application/json":
            # (a page of another site can POST text/plain here without asking first; JSON needs a
            # CORS preflight, which this server never grants: its pages cannot make the models run)
            raise ApiError(415, "send the request body as JSON, with the header Content-Type: application/json",
                           code="unsupported_media_type")
        raw = await read_body(receive)
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError) as e:
            raise ApiError(400, f"the request body is not valid JSON ({e})") from None
        if not isinstance(body, dict):
            raise ApiError(400, "the request body must be a JSON object: {\"model\": ..., \"messages\": [...]}")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise ApiError(400, "you must provide a model parameter (one of the ids GET /v1/models lists)",
                           param="model")
        bundle = self.bundle(model)
        call = self.host.chat(bundle.path, bundle.id, raw.decode("utf-8", "replace"))
        disconnected = asyncio.ensure_future(wait_for_disconnect(receive))
        aborted = True
        try:
            event = await next_event(call, disconnected)
            if event is None:
                return
            if event.kind == "stream":
                aborted = await self.stream(call, disconnected, send)
                return
            aborted = False
            try:
                if event.kind == "result":
                    await respond_raw(send, 200, event.data.encode())
                else:
                    await respond_error(send, event)
            except OSError:  # the client went away as the answer came
                pass
        finally:
            disconnected.cancel()
            self.host.finish(call, abort=aborted)

    async def stream(self, call: Call, disconnected: asyncio.Future, send) -> bool:
        """Sends the chunks as server-sent events, then `data: [DONE]`; an error after the
        stream began is an `error` event. True when the client went away first."""
        try:
            await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
            while True:
                event = await next_event(call, disconnected)
                if event is None:
                    return True
                if event.kind == "chunk":
                    await send({"type": "http.response.body", "body": b"data: " + event.data.encode() + b"\n\n",
                                "more_body": True})
                    continue
                last = b"data: [DONE]\n\n" if event.kind == "done" else sse_error(event)
                await send({"type": "http.response.body", "body": last, "more_body": False})
                return False
        except OSError:  # the client is gone (uvicorn raises ClientDisconnected, an OSError)
            return True


def content_type(scope) -> str:
    """The request's media type, lowercased, without parameters (charset)."""
    for name, value in scope.get("headers", []):
        if name == b"content-type":
            return value.decode("latin-1").split(";")[0].strip().lower()
    return ""


def allow(scope, *methods: str) -> None:
    if scope["method"] not in methods:
        raise ApiError(405, f"{scope['method']} is not allowed on {scope['path']}; use {methods[0]}",
                       code="method_not_allowed")


async def next_event(call: Call, disconnected: asyncio.Future):
    """The call's next event, or None when the client disconnected first."""
    got = asyncio.ensure_future(call.queue.get())
    done, _ = await asyncio.wait({got, disconnected}, return_when=asyncio.FIRST_COMPLETED)
    if got in done:
        return got.result()
    got.cancel()
    return None


async def wait_for_disconnect(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def read_body(receive) -> bytes:
    parts, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ApiError(400, "the client closed the connection before sending the whole body")
        parts.append(message.get("body", b""))
        size += len(parts[-1])
        if size > MAX_BODY_BYTES:
            raise ApiError(413, f"the request body is over {MAX_BODY_BYTES >> 20} MiB", code="request_too_large")
        if not message.get("more_body"):
            return b"".join(parts)


def sse_error(event) -> bytes:
    return b"data: " + json.dumps({"error": error_of(event)[1]["error"]}).encode() + b"\n\n"


def error_of(event) -> tuple[int, dict]:
    """(status, {"error": ...}) of an error event."""
    data = event.json()
    return int(data.get("status", 500)), {"error": data["error"]}


async def respond_error(send, event) -> None:
    status, body = error_of(event)
    await respond(send, status, body)


async def respond(send, status: int, body: dict) -> None:
    await respond_raw(send, status, json.dumps(body).encode())


async def respond_raw(send, status: int, data: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*JSON_HEADERS, (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})
