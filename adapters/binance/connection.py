"""One WebSocket connection to Binance's combined streams, opened as the server's rules ask
(every ping answered, an occasional ping of our own, bounded frames and queue), with its
reader task and, while it stands by for a hand-over, the frames it buffers and the first id
it saw of each symbol."""

from __future__ import annotations

import asyncio
import time

import orjson

from .config import BinanceConfig


class Connection:
    """One WebSocket connection, its reader task, and a buffer while it is on standby."""

    def __init__(self, ws, standby: bool) -> None:
        self.ws = ws
        self.standby = standby
        self.buffer: list[tuple[bytes | str, int]] = []
        self.first_ids: dict[str, int] = {}
        self.opened = time.monotonic()
        self.task: asyncio.Task | None = None
        self.frames = 0
        self.closed = False

    def note_first_id(self, frame: str) -> None:
        """Remember the first trade id of the frame's symbol (a standby's start)."""
        try:
            obj = orjson.loads(frame)
            data = obj.get("data", obj)
            sym = data["s"]
            tid = data["t"] if data.get("e") == "trade" else data["a"]
        except Exception:  # noqa: BLE001 - not a trade: the parser will judge it
            return
        if isinstance(tid, int) and isinstance(sym, str):
            self.first_ids.setdefault(sym, tid)

    async def close(self) -> None:
        """Close the link; the reader first takes every frame that arrived before the
        server's close (a run that ends keeps the trades already on the wire)."""
        try:
            await asyncio.wait_for(self.ws.close(), 5)
        except (Exception, asyncio.CancelledError):  # noqa: BLE001 - closing a dead link
            pass
        if self.task is not None:
            # the reader ends by itself once the queue is drained; the bound is a safety net
            await asyncio.wait([self.task], timeout=30)
            self.task.cancel()
            try:
                await self.task
            except (Exception, asyncio.CancelledError):  # noqa: BLE001
                pass


async def connect(endpoint: str, cfg: BinanceConfig):
    """A WebSocket to ``endpoint`` (``websockets`` answers the server's pings with their payload)."""
    from websockets.asyncio.client import connect as ws_connect

    return await ws_connect(
        endpoint,
        open_timeout=cfg.open_timeout,
        ping_interval=cfg.ping_interval,
        ping_timeout=cfg.ping_interval,
        max_size=1 << 22,
        max_queue=4096,
    )


def handshake_status(exc: BaseException) -> int | None:
    """The HTTP status of a refused WebSocket handshake, if that is what ``exc`` is."""
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def short(exc: BaseException) -> str:
    """The first line of an error, for a log line."""
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]
