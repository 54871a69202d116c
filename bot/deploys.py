"""Asking for a change: `deploy APP VERSION to ENV`, `deploy ENV`, `promote`, `rollback`.

Each builds the list of changes from Git (current versions, the upstream's
versions, the environment's history), checks the gates, and files one
request, queued at once where the environment needs no approval.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from datetime import datetime

from bot import messages
from bot.context import Context
from bot.events import ChatEvent, Reply
from bot.grammar import BreakGlass, Deploy, DeployEnv, Promote, Rollback
from config.errors import Refused, ReleasegateError
from config.principals import Principal
from workers.artifacts.resolve import ArtifactMissing
from workers.artifacts.signatures import Unsigned
from workers.git.mirrors import View
from workers.logs import request_context
from workers.rules.alerts import check_alerts
from workers.rules.checks import check_ci
from workers.rules.gates import check_open, check_prerelease, final_version, ran_upstream
from workers.rules.history import rollback_target, versions_run
from workers.rules.plan import (
    current_version,
    decide_landing,
    digests_held,
    pinned_by_tag,
    plan_changes,
)
from workers.rules.verdicts import check_soaked, check_version_not_failed, span_text
from workers.state import keys
from workers.state.queue import enqueue_deploy, enqueue_forge
from workers.state.request import Built, Change, DeployRequest, RequestState, new_request_id
from workers.state.verdicts import Verdicts

log = logging.getLogger(__name__)


def _check_asker(ctx: Context, event: ChatEvent, env: str) -> None:
    ctx.check_channel(event, env)
    ctx.check_deployer(event, env)
    check_open(ctx.policy, ctx.locks, env, ctx.clock(), holder=event.principal)


def _check_version(ctx: Context, app: str, version: str) -> str:
    try:
        return ctx.policy.apps[app].check_version(app, version)
    except ReleasegateError as exc:
        raise Refused(str(exc), "bad_version") from exc


def _check_promotion(ctx: Context, view: View, app: str, env: str, version: str) -> None:
    upstream = ctx.policy.environments[env].promote_from
    if upstream is None:
        return
    if upstream not in ctx.policy.apps[app].pins:
        raise Refused(
            messages.not_pinned(app, upstream, list(ctx.policy.apps[app].pins)), "not_pinned"
        )
    history = [ran.version for ran in versions_run(ctx.policy, view, app, upstream)]
    if not ran_upstream(version, history):
        raise Refused(messages.not_run_upstream(app, version, upstream, history), "promotion")


def _check_evidence(
    ctx: Context, view: View, app: str, env: str, version: str, upstream_runs: str | None
) -> None:
    """What verification decided: `version` did not fail here or upstream, and where `env`
    has a soak, the upstream has run `upstream_runs` (what it runs now, `version` or an rc
    of it) with the evidence its soak counts, long enough."""
    verdicts = Verdicts(ctx.redis)
    check_version_not_failed(ctx.policy, verdicts, env, app, version)
    spec = ctx.policy.environments[env]
    upstream = spec.promote_from
    if spec.soak is None or upstream is None:
        return
    runs = upstream_runs or current_version(ctx.policy, view.read, app, upstream)
    if version not in (runs, final_version(runs)):
        raise Refused(
            f"{upstream} runs {app} {runs}, not {version}; {env} takes what has soaked in "
            f"{upstream} for {span_text(spec.soak)}",
            "soak",
        )

    def git_since() -> datetime | None:
        ran = versions_run(ctx.policy, view, app, upstream)
        return ran[0].since if ran and ran[0].version == runs else None

    check_soaked(ctx.policy, verdicts, env, app, runs, git_since, ctx.clock())


def _promotion_target(
    ctx: Context, view: View, app: str, env: str, upstream: str
) -> tuple[str, str]:
    """The version `env` takes from `upstream`, and what `upstream` runs (an rc of it)."""
    ran = current_version(ctx.policy, view.read, app, upstream)
    version = ran if ctx.policy.environments[env].prereleases else final_version(ran)
    return _check_version(ctx, app, version), ran


def deploy(ctx: Context, event: ChatEvent, command: Deploy) -> list[Reply]:
    env = ctx.env(command.env)
    app = ctx.pinned_app(command.app, env)
    _check_asker(ctx, event, env)
    version = _check_version(ctx, app, command.version)
    check_prerelease(ctx.policy, env, version)
    view = ctx.mirror.snapshot()
    old = current_version(ctx.policy, view.read, app, env)
    if old == version:
        return [Reply(messages.already_running(app, version, env))]
    _check_promotion(ctx, view, app, env, version)
    _check_evidence(ctx, view, app, env, version, None)
    change = Change(app=app, env=env, old=old, new=version)
    return _file(ctx, event, "deploy", env, [change], view)


def promote(ctx: Context, event: ChatEvent, command: Promote | DeployEnv) -> list[Reply]:
    env = ctx.env(command.env)
    upstream = ctx.policy.environments[env].promote_from
    if upstream is None:
        raise Refused(messages.no_upstream(env), "no_upstream")
    if isinstance(command, Promote):
        apps = [ctx.pinned_app(command.app, env)]
    else:
        apps = [
            a for a, spec in ctx.policy.apps.items() if env in spec.pins and upstream in spec.pins
        ]
    _check_asker(ctx, event, env)
    view = ctx.mirror.snapshot()
    changes = []
    for app in apps:
        if upstream not in ctx.policy.apps[app].pins:
            raise Refused(
                messages.not_pinned(app, upstream, list(ctx.policy.apps[app].pins)),
                "not_pinned",
            )
        new, ran = _promotion_target(ctx, view, app, env, upstream)
        old = current_version(ctx.policy, view.read, app, env)
        if new != old:
            _check_evidence(ctx, view, app, env, new, ran)
            changes.append(
                Change(app=app, env=env, old=old, new=new, promoted_from=f"{upstream} {ran}")
            )
    if not changes:
        return [Reply(messages.nothing_to_promote(env, upstream))]
    verb = "promote" if len(changes) == 1 else "train"
    return _file(ctx, event, verb, env, changes, view)


def rollback(ctx: Context, event: ChatEvent, command: Rollback) -> list[Reply]:
    env = ctx.env(command.env)
    app = ctx.pinned_app(command.app, env)
    _check_asker(ctx, event, env)
    view = ctx.mirror.snapshot()
    old = current_version(ctx.policy, view.read, app, env)
    previous = rollback_target(ctx.policy, view, app, env)
    if previous is None:
        raise Refused(messages.no_previous(app, env), "no_previous")
    previous = _check_version(ctx, app, previous)
    check_prerelease(ctx.policy, env, previous)
    change = Change(app=app, env=env, old=old, new=previous)
    return _file(ctx, event, "rollback", env, [change], view)


def break_glass(ctx: Context, event: ChatEvent, command: BreakGlass) -> list[Reply]:
    """`deploy! APP VERSION to ENV reason TEXT`: queued at once, past approvals, windows,
    freezes, locks, the promotion order, alerts and checks. Who asks, the version's pattern,
    the artifact (its existence, digest and signature) and the pins' safety still hold. The
    environment's approvers are asked to review it."""
    env = ctx.env(command.env)
    app = ctx.pinned_app(command.app, env)
    ctx.check_channel(event, env)
    allowed = ctx.policy.environments[env].break_glass
    if event.is_bot() or not ctx.is_listed(event, allowed):
        raise Refused(messages.not_break_glass(event.display, env, allowed), "not_break_glass")
    if not command.reason.strip():
        raise Refused("say why: deploy! APP VERSION to ENV reason TEXT", "grammar")
    version = _check_version(ctx, app, command.version)
    check_prerelease(ctx.policy, env, version)
    view = ctx.mirror.snapshot()
    old = current_version(ctx.policy, view.read, app, env)
    if old == version:
        return [Reply(messages.already_running(app, version, env))]
    # Break-glass skips the soak, not what verification found broken.
    check_version_not_failed(ctx.policy, Verdicts(ctx.redis), env, app, version)
    change = Change(app=app, env=env, old=old, new=version)
    return _file(ctx, event, "break-glass", env, [change], view, reason=command.reason)


def _check_not_asked(
    env: str, changes: list[Change], open_requests: list[tuple[DeployRequest, RequestState]]
) -> None:
    """Refuse a request for exactly the change a waiting or queued request already makes."""
    wanted = {(c.app, c.env, c.old, c.new) for c in changes}
    for other, state in open_requests:
        same = {(c.app, c.env, c.old, c.new) for c in other.changes} == wanted
        if other.env == env and same and not state.final:
            raise Refused(messages.already_asked(other, state), "duplicate")


def _check_limits(
    ctx: Context,
    event: ChatEvent,
    env: str,
    open_requests: list[tuple[DeployRequest, RequestState]],
) -> None:
    """One person's open requests and pace in `env` are bounded: before anything is filed,
    pushed or opened in the forge."""
    spec = ctx.policy.environments[env]
    who = ctx.identities.identity(event.who)
    mine = [
        other.id
        for other, state in open_requests
        if other.env == env
        and not state.final
        and ctx.identities.identity(Principal.of(other.requester)) == who
    ]
    if len(mine) >= spec.max_open_requests:
        raise Refused(messages.too_many_open(env, spec.max_open_requests, mine), "limit_open")
    minute = int(ctx.clock().timestamp() // 60)
    key = keys.asked(who, env, minute)
    pipe = ctx.redis.pipeline()
    pipe.incr(key)
    pipe.expire(key, 120)
    asked, _ = pipe.execute()
    if int(asked) > spec.requests_per_minute:
        raise Refused(messages.too_fast(env, spec.requests_per_minute), "limit_rate")


def _artifacts(ctx: Context, changes: list[Change], view: View) -> tuple[Built, ...]:
    """Each change's artifact, asked of its store all at once: a version the store does not
    have is refused, and so is one it cannot be asked about (unless `required: false`). A
    promotion whose upstream runs another digest under the same tag says so on the card."""
    wanted = [
        (c.app, artifact, c.new)
        for c in changes
        if (artifact := ctx.policy.apps[c.app].artifact) is not None
    ]
    env = changes[0].env
    gate = ctx.policy.environments[env].gates.signature
    named = {app for app, _artifact, _version in wanted}
    if gate is not None and (bare := [c.app for c in changes if c.app not in named]):
        raise Refused(
            f"{env} takes only signed images; {', '.join(bare)} names none (artifact: image)",
            "unsigned",
        )
    built = []
    for (app, artifact, version), found in zip(
        wanted, ctx.resolver.resolve_all(wanted), strict=True
    ):
        if isinstance(found, ArtifactMissing):
            raise Refused(f"{app} {version}: {found}", "artifact_missing")
        if isinstance(found, ReleasegateError):
            if artifact.required:
                raise Refused(f"{app} {version}: {found}", "artifact_unreachable")
            log.warning("filed without asking %s: %s", artifact.describe(), found)
            continue
        upstream = _upstream_digest(ctx, changes, app, found.digest, view)
        by_tag = pinned_by_tag(ctx.policy, app, env)
        signed = ""
        if gate is not None:
            try:
                signed = ctx.resolver.signed_by(artifact, found.digest, gate)
            except Unsigned as exc:
                raise Refused(f"{app} {version}: {exc}", "unsigned") from exc
        fields = {"app": app, "upstream": upstream, "by_tag": by_tag, "signed_by": signed}
        built.append(Built(**{**asdict(found), **fields}))
    return tuple(built)


def _upstream_digest(ctx: Context, changes: list[Change], app: str, digest: str, view: View) -> str:
    """`int sha256:…` when the environment promoted from runs another digest than `digest`."""
    change = next(c for c in changes if c.app == app)
    if not change.promoted_from:
        return ""
    upstream, _, ran = change.promoted_from.partition(" ")
    if ran != change.new:
        return ""  # int ran a release candidate of it: another tag, another artifact
    held = digests_held(ctx.policy, view.read, app, upstream)
    return f"{upstream} {sorted(held)[0]}" if held and digest not in held else ""


def _file(
    ctx: Context,
    event: ChatEvent,
    verb: str,
    env: str,
    changes: list[Change],
    view: View,
    reason: str = "",
) -> list[Reply]:
    """Store the request (with the diff it will make) and queue it if nobody must approve."""
    open_requests = ctx.store.open_requests()  # read once for both checks
    _check_not_asked(env, changes, open_requests)
    try:
        repositories, merge_request_in = decide_landing(ctx.policy, changes)
    except ReleasegateError as exc:
        raise Refused(str(exc), "spans_forge") from exc
    _check_limits(ctx, event, env, open_requests)
    # The evidence, asked at once: the alerts gate beside the artifacts' stores, each bounded.
    gated = verb not in ("rollback", "break-glass")  # what ran before passed them then
    names = [c.app for c in changes]
    with ThreadPoolExecutor(1, "gates") as pool:
        alerts = pool.submit(check_alerts, ctx.policy, env, names, verb) if gated else None
        built = _artifacts(ctx, changes, view)
        evidence = [alerts.result() if alerts else ""]
    if gated:
        evidence.append(check_ci(ctx.policy, env, built, names))
    spec = ctx.policy.environments[env]
    digests = {b.app: b.digest for b in built}
    diff = plan_changes(ctx.policy, view.read, changes, digests).diff()
    now = ctx.clock()
    request = DeployRequest(
        id=new_request_id(),
        verb=verb,
        env=env,
        changes=tuple(changes),
        requester=event.principal,
        requester_name=event.display,
        channel=event.channel_ref,
        thread=event.thread,
        approvals_needed=0 if reason else spec.approvals,
        created_at=now,
        expires_at=now + spec.approval_ttl if spec.approvals and not reason else None,
        base_commit=view.head,
        bases={name: snapshot.head for name, snapshot in view.snapshots.items()},
        diff=diff,
        artifacts=built,
        evidence=tuple(line for line in evidence if line),
        break_glass=reason,
        repositories=repositories,
        merge_request_in=merge_request_in,
    )
    state = RequestState.PENDING if request.approvals_needed else RequestState.APPROVED
    while not ctx.store.create(request, state):  # an id collision: draw another
        request = request.model_copy(update={"id": new_request_id()})
    apps = ",".join(c.app for c in changes)
    with request_context(request_id=request.id, app=apps, env=env):
        log.info("%s request: %s", verb, messages.changes_text(request.changes))
        ctx.audit(
            "requested",
            request=request.id,
            verb=verb,
            env=env,
            by=event.principal,
            changes=messages.changes_text(request.changes),
        )
        if reason:
            due = (now + spec.break_glass_review).timestamp()
            ctx.store.await_review(request.id, due)
            enqueue_deploy(ctx.redis, request.id)
            text = messages.break_glass_filed(request, spec.approvers)
            return [Reply(text, request_id=request.id, queued=(request.id,), about=request.id)]
        if state is RequestState.APPROVED:
            enqueue_deploy(ctx.redis, request.id)
            text = messages.queued(request)
            return [Reply(text, request_id=request.id, queued=(request.id,), about=request.id)]
        if ctx.merge_requested(request):
            enqueue_forge(ctx.redis, "open_change", request.id)  # checks run while people approve
        text = messages.request_created(request, spec.approvers)
        return [Reply(text, request_id=request.id, about=request.id)]
