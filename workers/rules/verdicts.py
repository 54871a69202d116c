"""What verification decided, as gates: a failed version is refused in its environment and
downstream until cleared, and a promotion waits for the upstream's soak.

The chat checks both when a request is filed; the worker checks the failed versions again
right before the commit (a verification can fail while a request waits for approval).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from config.errors import Refused
from config.policy import Policy
from workers.state.request import DeployRequest
from workers.state.verdicts import STRENGTH, Failure, Verdicts, needed


def _minute(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M UTC")


def failure_text(failure: Failure) -> str:
    """`awesome 2.1.0 failed verification in prd at 14:02 UTC (R…): error-rate 0.21 ≥ 0.05`."""
    return (
        f"{failure.app} {failure.version} failed verification in {failure.env} at "
        f"{_minute(failure.at)} ({failure.request}): {failure.why}"
    )


def check_version_not_failed(
    policy: Policy, verdicts: Verdicts, env: str, app: str, version: str
) -> None:
    failure = verdicts.failure(policy, env, app, version)
    if failure is not None:
        raise Refused(
            f"{failure_text(failure)[:600]}. It is refused in {failure.env} and downstream "
            f"until a locker of {failure.env} says `clear {app} {version} in {failure.env}`",
            reason="failed_verification",
        )


def check_not_failed(policy: Policy, verdicts: Verdicts, request: DeployRequest) -> None:
    """Refuse a request that deploys a version that failed verification here or upstream."""
    if request.rollback_of or request.verb == "rollback":
        return  # going back is how a failure ends
    for change in request.changes:
        check_version_not_failed(policy, verdicts, request.env, change.app, change.new)


def check_soaked(
    policy: Policy,
    verdicts: Verdicts,
    env: str,
    app: str,
    upstream_runs: str,
    git_since: Callable[[], datetime | None],
    now: datetime,
) -> None:
    """Refuse promoting `app` into `env` until its upstream has run `upstream_runs` with the
    evidence its soak counts (verified, else healthy, else pushed) for `env`'s `soak`.
    `git_since` says since when the upstream's pins hold that version, by Git alone: it
    counts where the upstream asks for no more than a push (a deploy made by hand)."""
    spec = policy.environments[env]
    upstream = spec.promote_from
    if spec.soak is None or upstream is None:
        return
    wanted = needed(policy, upstream)
    running = verdicts.running(upstream, app)
    since: datetime | None = None
    if running is not None and running.version == upstream_runs:
        if STRENGTH[running.evidence] >= STRENGTH[wanted]:
            since = datetime.fromtimestamp(running.since, UTC)
        else:
            raise Refused(
                f"{upstream} runs {app} {upstream_runs} but it is not {wanted} there yet; "
                f"{env} takes it once it has been {wanted} in {upstream} for "
                f"{span_text(spec.soak)}",
                reason="soak",
            )
    elif wanted == "pushed":
        since = git_since()
    if since is None:
        raise Refused(
            f"{upstream} has no {wanted} run of {app} {upstream_runs} on record; deploy it "
            f"to {upstream} through releasegate, and {env} takes it {span_text(spec.soak)} later",
            reason="soak",
        )
    eligible = since + spec.soak
    if now < eligible:
        ran = span_text(now - since)
        raise Refused(
            f"{app} {upstream_runs} has soaked in {upstream} for {ran} of {span_text(spec.soak)} "
            f"({wanted} at {since.strftime('%Y-%m-%d %H:%M:%S UTC')}); it is eligible for "
            f"{env} at {eligible.strftime('%Y-%m-%d %H:%M:%S UTC')}",
            reason="soak",
        )


def span_text(span: timedelta) -> str:
    seconds = max(0, int(span.total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"
