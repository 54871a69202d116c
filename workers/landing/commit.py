"""The commit message releasegate writes: subject, one body line per change, trailers."""

from __future__ import annotations

import re
from collections.abc import Sequence

from workers.state.request import DeployRequest

REQUEST_TRAILER = "Releasegate-Request"


def one_line(text: str, limit: int = 200) -> str:
    """`text` fit for a trailer's value: control characters and line breaks made spaces."""
    flat = "".join(c if c.isprintable() else " " for c in text)
    return " ".join(flat.split())[:limit]


def commit_message(request: DeployRequest, approvers: Sequence[str]) -> str:
    promoted = [c for c in request.changes if c.promoted_from]
    train = len(request.changes) > 1
    body = "\n".join(
        [change.line() for change in request.changes]
        + [f"{c.app}: promoted from {c.promoted_from}" for c in promoted]
    )
    trailers = [
        f"{REQUEST_TRAILER}: {request.id}",
        *([f"Releasegate-Kind: {request.verb}"] if request.verb != "deploy" else []),
        f"Requested-by: {request.requester}",
        # Past the gates during an incident: the reason, on one line (it was typed in chat).
        *([f"Break-Glass: {one_line(request.break_glass)}"] if request.break_glass else []),
        *(f"Approved-by: {a}" for a in sorted(approvers)),
        # Undone by releasegate after its verification failed: which request, and why.
        *([f"Rollback-Of: {request.rollback_of}"] if request.rollback_of else []),
        *([f"Reason: {one_line(request.reason)}"] if request.rollback_of else []),
        # What the upstream ran, per app (a train names the app): the rc a final came from.
        *(f"Promoted-from: {c.promoted_from}" + (f" ({c.app})" if train else "") for c in promoted),
        # The artifact each approval bound, by digest (a train names the app).
        *(
            f"Artifact-Digest: {b.digest}" + (f" ({b.app})" if train else "")
            for b in request.artifacts
        ),
        # The commit each artifact was built from, where it names one: the durable record
        # lead time is measured from (a train names the app).
        *(
            f"Source-Revision: {b.revision}" + (f" ({b.app})" if train else "")
            for b in request.artifacts
            if re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", b.revision)
        ),
        # The pins name the artifact by tag alone: what runs is whatever the tag names then.
        *(
            "Pinned-By: tag" + (f" ({b.app})" if train else "")
            for b in request.artifacts
            if b.by_tag
        ),
    ]
    return f"{request.subject}\n\n{body}\n\n" + "\n".join(trailers) + "\n"
