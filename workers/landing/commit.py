"""The commit message releasegate writes: subject, one body line per change, trailers."""

from __future__ import annotations

from collections.abc import Sequence

from workers.state.request import DeployRequest

REQUEST_TRAILER = "Releasegate-Request"


def commit_message(request: DeployRequest, approvers: Sequence[str]) -> str:
    body = "\n".join(change.line() for change in request.changes)
    trailers = [
        f"{REQUEST_TRAILER}: {request.id}",
        *([f"Releasegate-Kind: {request.verb}"] if request.verb != "deploy" else []),
        f"Requested-by: {request.requester}",
        *(f"Approved-by: {a}" for a in sorted(approvers)),
    ]
    return f"{request.subject}\n\n{body}\n\n" + "\n".join(trailers) + "\n"
