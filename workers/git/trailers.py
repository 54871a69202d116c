"""Reading releasegate's trailers (who asked, who approved, which request) out of `git log`."""

from __future__ import annotations

_FIELD, _RECORD = "\x1f", "\x1e"
_TRAILERS = ("Releasegate-Request", "Requested-by", "Approved-by", "Releasegate-Kind")
TRAILER_FORMAT = (
    _FIELD.join(
        ["%H", "%ct", "%an", "%s"]
        + [f"%(trailers:key={key},valueonly,separator=%x2C)" for key in _TRAILERS]
    )
    + _RECORD
)


def parse_trailer_log(out: str) -> list[dict[str, str]]:
    """`git log --format=TRAILER_FORMAT` output as one dict per commit, newest first."""
    entries = []
    for record in out.split(_RECORD):
        if record.strip():
            values = record.strip("\n").split(_FIELD)
            entries.append(
                dict(zip(("commit", "time", "author", "subject", *_TRAILERS), values, strict=True))
            )
    return entries
