"""A fake OpenAI chat-completions server on 127.0.0.1 with fault injection, for judge-client tests.

It speaks enough of the protocol for the official ``openai`` client: ``POST /v1/chat/completions``
(with ``logprobs``/``top_logprobs``) and ``GET /v1/models``. Anything else answers 404.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import socket
import threading
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

Reply = Callable[[list[dict]], "str | dict[str, Any]"]

MODEL_ID = "fake-judge"
DEFAULT_REPLY = "[[A]]"
TOKEN_LOGPROB = -0.1
_ALTERNATIVES = ("A", "B", "C", "tie", "D", "E", "yes", "no", "1", "2", "3", "4", "5")
_TOKEN_RE = re.compile(r"\s*(?:\w+|[^\w\s])|\s+")
_SIMPLE_KINDS = {"401", "429", "500", "503", "malformed", "nologprobs", "drop"}
_PREFIX_KINDS = ("429:", "slow:", "text:")
_ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error",
                429: "rate_limit_error",
                500: "server_error", 503: "service_unavailable"}


def tokenize(text: str) -> list[str]:
    """Split text into word/punctuation tokens carrying their leading whitespace; they concatenate back."""
    return _TOKEN_RE.findall(text)


def _content_text(content: Any) -> str:
    """A message's content as text (string content, or the text parts of a content list)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def last_content(body: dict) -> str:
    """The text of the last message in a chat-completions request body ('' if none)."""
    messages = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(messages, list) or not messages or not isinstance(messages[-1], dict):
        return ""
    return _content_text(messages[-1].get("content"))


def _logprob_entry(token: str, logprob: float) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}


def _top_logprobs(token: str, n: int, scripted: list | None) -> tuple[float, list[dict[str, Any]]]:
    """The token's own logprob and its top-n alternatives (scripted, or the token then fixed alternatives)."""
    if scripted:
        entries = [_logprob_entry(str(t), float(lp)) for t, lp in scripted]
        return entries[0]["logprob"], entries[:n]
    others = (a for a in itertools.chain(_ALTERNATIVES, (f"alt{i}" for i in itertools.count())) if a != token)
    alts = [_logprob_entry(token, TOKEN_LOGPROB)]
    alts += [_logprob_entry(a, -3.0 - i) for i, a in zip(range(max(n - 1, 0)), others, strict=False)]
    return TOKEN_LOGPROB, alts[:n]


def _validate_kind(kind: str) -> None:
    if kind in _SIMPLE_KINDS:
        return
    if kind.startswith(_PREFIX_KINDS):
        head, _, value = kind.partition(":")
        if head != "text":
            float(value)  # raises ValueError on a bad number
        return
    raise ValueError(f"unknown fault kind {kind!r}")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    fake: FakeOpenAI

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet: clients hang up on purpose (timeouts, drops) and nothing may go to stdout."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        threading.current_thread().name = "FakeOpenAI-handler"
        self.server.fake._track(self.connection, add=True)

    def finish(self) -> None:
        self.server.fake._track(self.connection, add=False)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default per-request log line."""

    # -- responses ---------------------------------------------------------------------------------
    def _send(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("x-request-id", f"req_fake_{next(self.server.fake._ids)}")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)
        self.wfile.flush()

    def _send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode("utf-8"), headers)

    def _send_error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        code = {429: "rate_limit_exceeded", 404: "unknown_url"}.get(status)
        kind = _ERROR_TYPES.get(status, "api_error")
        error = {"message": message, "type": kind, "param": None, "code": code}
        self._send_json(status, {"error": error}, headers)

    # -- routes ------------------------------------------------------------------------------------
    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        if path == "/v1/models":
            model = {"id": MODEL_ID, "object": "model", "created": 1700000000, "owned_by": "fake-openai"}
            self._send_json(200, {"object": "list", "data": [model]})
        else:
            self._send_error(404, f"Unknown request URL: GET {path}")

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if path != "/v1/chat/completions":
            self._send_error(404, f"Unknown request URL: POST {path}")
            return
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("request body must be a JSON object")
        except ValueError as exc:
            self._send_error(400, f"Invalid JSON body: {exc}")
            return
        fake = self.server.fake
        fake.authorizations.append(self.headers.get("Authorization"))
        kind = fake._record(body)
        if kind == "drop":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if kind is not None and kind.split(":", 1)[0] == "429":
            retry_after = kind.partition(":")[2] or "0"
            self._send_error(429, "Rate limit reached (fake).", {"Retry-After": retry_after})
            return
        if kind == "401":
            self._send_error(401, "Incorrect API key provided (fake).")
            return
        if kind in ("500", "503"):
            message = "The server had an error while processing your request (fake)."
            self._send_error(int(kind), message if kind == "500" else "The server is overloaded (fake).")
            return
        if kind == "malformed":
            self._send(200, b'{"id": "chatcmpl-broken", "object": "chat.completion", "choices": [{"ind')
            return
        if kind is not None and kind.startswith("slow:") and fake._stopping.wait(float(kind[5:])):
            self.close_connection = True  # shutting down: give up on the sleeping request
            return
        if body.get("stream"):
            self._send_error(400, "stream=true is not supported by FakeOpenAI")
            return
        try:
            self._send_json(200, fake._completion(body, kind))
        except Exception as exc:  # a broken test `reply` callback: surface it without killing the server
            self._send_error(500, f"FakeOpenAI reply callback failed: {exc!r}", {"x-should-retry": "false"})


class FakeOpenAI:
    """Context manager: starts a ThreadingHTTPServer on 127.0.0.1 (port 0) in a daemon thread."""

    def __init__(self, reply: Reply | None = None) -> None:
        self.reply = reply
        self.url = ""
        self.requests: list[dict] = []
        self.authorizations: list[str | None] = []  # each request's Authorization header
        self._lock = threading.Lock()
        self._faults: dict[str, deque[str]] = {}
        self._ids = itertools.count(1)
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> FakeOpenAI:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self
        self._server = server
        self.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="FakeOpenAI-server", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Stop serving, wake sleeping "slow" requests and hang up on open keep-alive connections."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def fault(self, marker: str, *kinds: str) -> None:
        """Queue faults for requests whose LAST message content contains `marker`, one kind per request.

        Kinds: "401", "429" / "429:<retry-after>", "500", "503", "slow:<seconds>", "malformed", "nologprobs",
        "text:<content>", "drop". Once a marker's queue is used up its requests get normal answers.
        """
        for kind in kinds:
            _validate_kind(kind)
        with self._lock:
            self._faults.setdefault(marker, deque()).extend(kinds)

    def calls(self, marker: str) -> int:
        """How many received requests had `marker` in their last message's content."""
        with self._lock:
            return sum(marker in last_content(body) for body in self.requests)

    # -- internals used by the handler -------------------------------------------------------------
    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _record(self, body: dict) -> str | None:
        """Record a request and pop its fault: every matching marker's queue advances; the first one wins."""
        text = last_content(body)
        kind = None
        with self._lock:
            self.requests.append(body)
            for marker, queue in self._faults.items():
                if marker in text and queue:
                    popped = queue.popleft()
                    kind = kind or popped
        return kind

    def _completion(self, body: dict, kind: str | None) -> dict[str, Any]:
        """A chat.completion object answering `body`."""
        messages = body.get("messages") or []
        scripted: list = []
        if kind is not None and kind.startswith("text:"):
            content = kind[5:]
        else:
            answer = self.reply(messages) if self.reply is not None else DEFAULT_REPLY
            if isinstance(answer, dict):
                content, scripted = str(answer["content"]), list(answer.get("top_logprobs") or [])
            else:
                content = str(answer)
        tokens = tokenize(content)
        logprobs = None
        if body.get("logprobs") and kind != "nologprobs":
            n = int(body.get("top_logprobs") or 0)
            entries = []
            for i, token in enumerate(tokens):
                own, top = _top_logprobs(token, n, scripted[i] if i < len(scripted) else None)
                entries.append({**_logprob_entry(token, own), "top_logprobs": top})
            logprobs = {"content": entries, "refusal": None}
        prompt_words = (_content_text(m.get("content")).split() for m in messages if isinstance(m, dict))
        prompt_tokens = sum(map(len, prompt_words))
        message = {"role": "assistant", "content": content, "refusal": None}
        return {
            "id": f"chatcmpl-fake-{next(self._ids)}",
            "object": "chat.completion",
            "created": 1700000000,
            "model": body.get("model") or MODEL_ID,
            "choices": [{"index": 0, "message": message, "finish_reason": "stop", "logprobs": logprobs}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(tokens),
                      "total_tokens": prompt_tokens + len(tokens)},
            "system_fingerprint": "fp_fake",
        }


def judge_config(directory: Path, url: str, model: str, max_tokens: int, price: tuple[float, float],
                 concurrency: int = 4) -> Path:
    """A judge config YAML for a paid judge behind the fake server (no key needed)."""
    path = directory / f"fake-{model}.yaml"
    path.write_text(json.dumps({"model": model, "base_url": url, "api_key_env": None,
                                "max_tokens": max_tokens, "concurrency": concurrency,
                                "price": {"input_per_mtok": price[0], "output_per_mtok": price[1]}}))
    return path
