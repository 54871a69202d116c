"""Answers from outside services (the forges, Argo CD, the Kubernetes API), bounded.

Every answer is read with a cap on its size and a deadline for the whole of it, not just
for each read: a 300 MB answer is cut at `MAX_BYTES` before it is held in memory, and an
answer trickling a byte a second ends at the deadline. Either is an `AnswerRefused`, which
callers say once, in their own words for the service.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import requests

from config.errors import ReleasegateError

MAX_BYTES = 1024 * 1024
CHUNK = 64 * 1024


class AnswerRefused(ReleasegateError):
    """An outside answer larger than the cap, or slower than the deadline."""


@dataclass(frozen=True)
class Answer:
    status_code: int
    content: bytes
    # Case-insensitive, as the service sent them (a registry's digest, its auth challenge).
    headers: Mapping[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.content) if self.content else {}

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


def fetch(
    session: requests.Session,
    method: str,
    url: str,
    *,
    deadline: float,
    max_bytes: int = MAX_BYTES,
    **kwargs: Any,
) -> Answer:
    """`method url` through `session`, whole within `deadline` seconds and `max_bytes`;
    raises `requests.RequestException` when the service cannot be reached."""
    ends = time.monotonic() + deadline
    response = session.request(method, url, timeout=deadline, stream=True, **kwargs)
    with response:
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise AnswerRefused(f"answered {int(declared)} bytes, more than {max_bytes}")
        body = bytearray()
        while True:
            if time.monotonic() > ends:
                raise AnswerRefused(f"took longer than {deadline:.0f}s to answer")
            chunk = response.raw.read1(CHUNK, decode_content=True)
            if not chunk:
                break
            body += chunk
            if len(body) > max_bytes:
                raise AnswerRefused(f"answered more than {max_bytes} bytes")
    return Answer(response.status_code, bytes(body), response.headers)


def said(answer: Answer, limit: int = 300) -> str:
    """What a service's error answer says: its `message` or `error`, else its text."""
    try:
        body = answer.json()
    except ValueError:
        return answer.text[:limit]
    if isinstance(body, dict):
        return str(body.get("message") or body.get("error") or body)[:limit]
    return str(body)[:limit]
