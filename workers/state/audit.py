"""The audit trail: every request, approval, rejection, expiry, lock and outcome, in a Redis stream.

Git trailers remain the record of what was deployed; this stream also keeps
what never reached Git (refusals, rejections, expiries, locks).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from redis import Redis

from workers.state import keys

AUDIT_STREAM = keys.AUDIT


@dataclass(frozen=True)
class AuditEntry:
    id: str
    when: datetime
    event: str
    fields: dict[str, str]

    def line(self) -> str:
        details = " ".join(f"{k}={_quoted(v)}" for k, v in sorted(self.fields.items()))
        return f"{self.when.isoformat(timespec='seconds')} {self.event:10} {details}"


def _quoted(value: str) -> str:
    """A value as one word: quoted where it has spaces (or quotes) of its own."""
    return json.dumps(value, ensure_ascii=False) if any(c in value for c in ' "=') else value


def record(redis: Redis, event: str, **fields: str | None) -> None:
    entry: dict[Any, Any] = {"event": event, **{k: v for k, v in fields.items() if v is not None}}
    redis.xadd(AUDIT_STREAM, entry, maxlen=keys.AUDIT_MAXLEN, approximate=True)


def read(redis: Redis, count: int = 100) -> list[AuditEntry]:
    """The last `count` entries, oldest first."""
    raw = cast(list[Any], redis.xrevrange(AUDIT_STREAM, count=count))
    entries = []
    for entry_id, fields in reversed(raw):
        decoded = {k.decode(): v.decode() for k, v in fields.items()}
        millis = int(entry_id.decode().split("-")[0])
        entries.append(
            AuditEntry(
                id=entry_id.decode(),
                when=datetime.fromtimestamp(millis / 1000, UTC),
                event=decoded.pop("event"),
                fields=decoded,
            )
        )
    return entries
