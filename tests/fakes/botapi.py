"""A local HTTP server that answers ``sendMessage`` like the Telegram Bot API, for tests.

It checks the token, the fields and the HTML of ``parse_mode=HTML`` messages as Telegram
does, records what it accepts, and can be told to fail the next requests (429, 5xx, drop).
"""

from __future__ import annotations

import html
import json
import threading
import time
from collections import deque
from dataclasses import dataclass
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self
from urllib.parse import parse_qsl

from .quiet_http import QuietHandler

# the tags Telegram's HTML parse mode knows
ALLOWED_TAGS = {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "a", "code", "pre",
                "span", "tg-spoiler", "tg-emoji", "blockquote"}
MAX_TEXT = 4096
_DESCRIPTIONS = {400: "Bad Request: chat not found", 403: "Forbidden: bot was blocked by the user",
                 500: "Internal Server Error", 503: "Service Unavailable"}


@dataclass(frozen=True, slots=True)
class Message:
    """A message the server accepted: its HTML as sent, its plain text, and when it came."""

    chat_id: str
    html: str
    text: str
    parse_mode: str | None
    message_id: int
    at: float  # time.monotonic() on arrival


@dataclass(frozen=True, slots=True)
class Request:
    """One sendMessage request and the status it was answered with."""

    status: int
    at: float
    text: str | None


class _EntityCheck(HTMLParser):
    """Parses HTML the way Telegram's parse mode accepts it; ``error`` says why not."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.stack: list[str] = []
        self.text: list[str] = []
        self.error: str | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag not in ALLOWED_TAGS:
            self.error = self.error or f"Unsupported start tag \"{tag}\""
        self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.error = self.error or f"Unmatched end tag \"{tag}\""
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        if "<" in data or ">" in data or "&" in data:
            self.error = self.error or "Unescaped character in text"
        self.text.append(data)

    def handle_entityref(self, name: str) -> None:
        if name not in ("lt", "gt", "amp", "quot"):
            self.error = self.error or f"Unsupported entity \"&{name};\""
        self.text.append(html.unescape(f"&{name};"))

    def handle_charref(self, name: str) -> None:
        self.text.append(html.unescape(f"&#{name};"))


def check_html(text: str) -> tuple[str | None, str]:
    """(error or None, plain text) of ``text`` in Telegram's HTML parse mode."""
    parser = _EntityCheck()
    try:
        parser.feed(text)
        parser.close()
    except Exception as exc:  # noqa: BLE001 - any parser failure is a bad message
        return f"{exc}", text
    if parser.error is None and parser.stack:
        parser.error = f"Can't find end tag corresponding to start tag \"{parser.stack[-1]}\""
    return parser.error, "".join(parser.text)


class BotApiServer:
    """The fake Bot API on 127.0.0.1 (a free port) in a background thread; use as a context manager."""

    def __init__(self, token: str, *, retry_after: int = 1) -> None:
        self.token = token
        self.retry_after = retry_after
        self.messages: list[Message] = []
        self.requests: list[Request] = []
        self._failures: deque[int | str] = deque()
        self._lock = threading.Lock()
        self._next_id = 1
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name="botapi", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def fail_next(self, failures: list[int | str], *, retry_after: int | None = None) -> None:
        """Answer the next requests with these statuses (429, 500, 502, ...) or ``"drop"``
        (close the connection without an answer), in order."""
        with self._lock:
            if retry_after is not None:
                self.retry_after = retry_after
            self._failures.extend(failures)

    def texts(self) -> list[str]:
        return [m.text for m in self.messages]

    # -- request handling ----------------------------------------------------------------
    def _answer(self, path: str, body: dict) -> tuple[int, dict | str] | None:
        """Status and JSON (or an HTML page) for a request; None drops the connection."""
        prefix = f"/bot{self.token}/"
        if not path.startswith("/bot"):
            return 404, {"ok": False, "error_code": 404, "description": "Not Found"}
        if not path.startswith(prefix):
            return 401, {"ok": False, "error_code": 401, "description": "Unauthorized"}
        if path[len(prefix):].lower() != "sendmessage":
            return 404, {"ok": False, "error_code": 404, "description": "Not Found: method not found"}
        with self._lock:
            failure = self._failures.popleft() if self._failures else None
            retry_after = self.retry_after
        if failure == "drop":
            return None
        if failure == 429:
            return 429, {"ok": False, "error_code": 429,
                         "description": f"Too Many Requests: retry after {retry_after}",
                         "parameters": {"retry_after": retry_after}}
        if failure == 502:  # what nginx in front of the Bot API answers
            return 502, "<html><head><title>502 Bad Gateway</title></head><body>502 Bad Gateway</body></html>"
        if failure is not None:
            code = int(failure)
            description = _DESCRIPTIONS.get(code, "Internal Server Error" if code >= 500 else "Bad Request")
            return code, {"ok": False, "error_code": code, "description": description}
        chat_id, text = body.get("chat_id"), body.get("text")
        if chat_id in (None, ""):
            return 400, {"ok": False, "error_code": 400, "description": "Bad Request: chat_id is empty"}
        if not text:
            return 400, {"ok": False, "error_code": 400, "description": "Bad Request: message text is empty"}
        plain = str(text)
        if body.get("parse_mode") == "HTML":
            error, plain = check_html(str(text))
            if error is not None:
                return 400, {"ok": False, "error_code": 400,
                             "description": f"Bad Request: can't parse entities: {error}"}
        if len(plain) > MAX_TEXT:
            return 400, {"ok": False, "error_code": 400, "description": "Bad Request: message is too long"}
        with self._lock:
            message_id, self._next_id = self._next_id, self._next_id + 1
            self.messages.append(Message(str(chat_id), str(text), plain, body.get("parse_mode"),
                                         message_id, time.monotonic()))
        return 200, {"ok": True, "result": {
            "message_id": message_id,
            "from": {"id": int(self.token.split(":")[0]) if self.token.split(":")[0].isdigit() else 1,
                     "is_bot": True, "first_name": "qsf-test"},
            "chat": {"id": int(chat_id) if str(chat_id).lstrip("-").isdigit() else chat_id, "type": "private"},
            "date": int(time.time()),
            "text": plain,
        }}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                self._reply(404, {"ok": False, "error_code": 404, "description": "Not Found"})

            def do_POST(self) -> None:
                at = time.monotonic()
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                ctype = self.headers.get("Content-Type", "")
                try:
                    body = json.loads(raw or b"{}") if "json" in ctype else dict(parse_qsl(raw.decode()))
                except ValueError:
                    body = {}
                if not isinstance(body, dict):
                    body = {}
                answer = server._answer(self.path.split("?")[0], body)
                status = 0 if answer is None else answer[0]
                with server._lock:
                    server.requests.append(Request(status, at, body.get("text")))
                if answer is None:
                    self.close_connection = True
                    return
                self._reply(*answer)

            def _reply(self, status: int, payload: dict | str) -> None:
                data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/html" if isinstance(payload, str) else "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status == 429:
                    self.send_header("Retry-After", str(server.retry_after))
                self.end_headers()
                self.wfile.write(data)

        return Handler
