"""The HTML texts of alert messages: one alert, or one "+N more" summary standing for many;
every field is escaped and a text is cut to Telegram's message limit."""

from __future__ import annotations

import html
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from ...durations import format_time

MAX_MESSAGE_CHARS = 4000  # Telegram's limit is 4096 characters after entity parsing


def _esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=False)


def _fit(head: str, body: str, tail: str) -> str:
    """``head\\nbody\\ntail`` cut in ``body`` (never inside an entity) to the message limit."""
    room = MAX_MESSAGE_CHARS - len(head) - len(tail) - 3
    if len(body) > room:
        body = re.sub(r"&[#A-Za-z0-9]*$", "", body[: max(room, 0)]) + "…"
    return "\n".join(part for part in (head, body, tail) if part)


def format_alert(row: Mapping[str, Any]) -> str:
    """The HTML text of one alert; every field from the alert is escaped."""
    head = f"<b>[{_esc(row.get('severity') or 'INFO').upper()}] {_esc(row.get('name') or 'alert')}</b>"
    if row.get("key"):
        head += f" {_esc(row['key'])}"
    meta = [format_time(row["ts_event"])] if row.get("ts_event") is not None else []
    if row.get("strategy"):
        meta.append(_esc(row["strategy"]))
    tail = f"<i>{' · '.join(meta)}</i>" if meta else ""
    return _fit(head, _esc(row.get("text")), tail)


def format_summary(rows: Sequence[Mapping[str, Any]], *, max_lines: int = 10) -> str:
    """The HTML text of one "+N more" message standing for ``rows``."""
    counts = Counter(
        (str(r.get("severity") or "INFO").upper(), str(r.get("name") or "alert")) for r in rows
    )
    lines = [f"{n} × [{_esc(sev)}] {_esc(name)}" for (sev, name), n in counts.most_common(max_lines)]
    if len(counts) > max_lines:
        lines.append(f"… and {len(counts) - max_lines} more kinds")
    times = [r["ts_event"] for r in rows if r.get("ts_event") is not None]
    tail = f"<i>{format_time(min(times))} … {format_time(max(times))}</i>" if times else ""
    return _fit(f"<b>+{len(rows)} more alerts</b>", "\n".join(lines), tail)
