"""Looking around: `status`, `history`, and the environment locks `lock` / `unlock`."""

from __future__ import annotations

from functools import partial

from bot import messages, verification
from bot.context import Context
from bot.events import ChatEvent, Reply
from bot.grammar import Clear, History, Lock, Report, Status, Unlock, is_request_id
from config.errors import PinError, Refused, UnknownRequest
from config.policy import Policy
from config.text import inert, inert_block
from workers.records import figures
from workers.records.report import report as delivery_report
from workers.rollout.verify import latest as latest_verification
from workers.rules import gates
from workers.rules.history import deployments
from workers.rules.plan import MIXED, Reader, current_version, current_versions
from workers.rules.verdicts import failure_text
from workers.state.verdicts import Verdicts


def status(ctx: Context, event: ChatEvent, command: Status) -> list[Reply]:
    target = command.target
    if target is not None and is_request_id(target.upper()):
        return [Reply(request_status(ctx, target.upper()))]
    policy = ctx.policy
    envs, apps = list(policy.environments), list(policy.apps)
    if target is not None:
        if env := policy.environment_named(target):
            envs = [env]
        else:
            apps = [ctx.app(target)]
    lines = []
    view = ctx.mirror.snapshot()
    verified = latest_verification(ctx.redis, envs)  # every app's, read at once
    for app in apps:
        cells = []
        for env in envs:
            if env in policy.apps[app].pins:
                try:
                    # What a pin holds at a commit never changes: remembered per head.
                    pins = tuple(policy.apps[app].pins[env])
                    read = partial(shown_version, policy, view.read, app, env)
                    version = view.memo(("version", pins), read)
                except PinError as exc:
                    version = f"unreadable ({exc})"
                checked = verification.cell(verified.get((env, app)), app, version)
                cells.append(f"{env} {version or '(unset)'}{checked}")
        if cells:
            lines.append(f"{app}: " + ", ".join(cells))
    lines.append(f"(read from Git at {view.heads()})")
    if ctx.live is not None and len(envs) == 1:
        lines.extend(ctx.live(envs[0]))
    if stale := view.staleness():
        lines.append(f"⚠️ {stale}")
    now = ctx.clock()
    for env in envs:
        if held := ctx.locks.get(env):
            lines.append(f"🔒 {held.describe()}")
        for failure in Verdicts(ctx.redis).failures(env):
            if failure.app in apps:
                lines.append(f"⛔ {inert(failure_text(failure), 400)}")
        for freeze in gates.upcoming_freezes(policy, env, now):
            state = "frozen" if freeze.covers(now) else "freeze ahead"
            lines.append(f"❄️ {env} {state}: {inert(freeze.describe(), 200)}")
    for request_id in ctx.store.unreviewed():
        try:
            glass = ctx.store.get(request_id)
        except UnknownRequest:
            continue  # past the retention: Git keeps its record, its Break-Glass trailer
        if glass.env in envs:
            what = messages.changes_text(glass.changes) + f" by {glass.requester_name}"
            lines.append(messages.break_glass_unreviewed(glass.id, what, glass.break_glass))
    pending = []
    for request_id in ctx.store.pending_all():
        request = ctx.store.get(request_id)
        if request.env in envs and not ctx.expire_if_due(request):
            pending.append(f"{request.id} {messages.changes_text(request.changes)}")
    lines.append("pending: " + ("; ".join(pending) if pending else "none"))
    return [Reply("\n".join(lines))]


def shown_version(policy: Policy, read: Reader, app: str, env: str) -> str:
    """What `status` says `app` runs in `env`: one version, or where pins disagree every
    version they hold, each named by its repository when the repositories disagree (`2.3.0
    (apps) | 2.2.0 (environments)`), as mixed pins in one repository are said."""
    held = current_versions(policy, read, app, env)
    by_repository: dict[str, list[str]] = {}
    for found in held:
        by_repository.setdefault(found.pin.repository, []).append(found.version)
    if len({v for vs in by_repository.values() for v in vs}) <= 1 or len(by_repository) == 1:
        return current_version(policy, read, app, env)
    return MIXED.join(
        f"{' | '.join(dict.fromkeys(versions))} ({repository})"
        for repository, versions in by_repository.items()
    )


def request_status(ctx: Context, request_id: str) -> str:
    store = ctx.store
    request = store.get(request_id)
    ctx.expire_if_due(request)
    result = store.result(request.id)
    note = messages.result_text(request, result) if result else None
    if result is not None and len(result.commits) > 1:
        note = f"commits {messages.commits_text(result)}" + (
            f": {note}" if note and note not in ("pushed", "merged") else ""
        )
    elif result is not None and result.commit:
        note = f"commit {result.commit[:12]}" + (
            f": {note}" if note and note not in ("pushed", "merged") else ""
        )
    if store.is_unreported(request.id):
        note = (note or "") + " (the outcome could not be posted yet; it will be retried)"
    # People by the name their platform gave them, as the requester is named.
    approvers = [a.name or a.principal for a in store.approval_records(request.id)]
    return messages.request_status(request, store.state(request.id), approvers, note)


def history(ctx: Context, event: ChatEvent, command: History) -> list[Reply]:
    env = ctx.env(command.env)
    view = ctx.mirror.snapshot()
    found = deployments(ctx.policy, view, env, command.count)
    if not found:
        return [Reply(f"no commits touch {env}'s pinned files")]
    lines = [f"last {len(found)} change(s) to {env}, newest first:"]
    several = len(ctx.policy.repositories) > 1
    for d in found:
        # Subjects, authors and trailers are whatever their committers typed: said inert.
        when, subject = d.when.strftime("%Y-%m-%d %H:%M"), inert(d.subject, 120)
        where = f"{d.repository} {d.commit[:7]}" if several else d.commit[:7]
        if d.request:
            approved = inert(d.approved_by, 200)
            who = f"asked by {inert(d.requested_by, 80)}, " + (
                f"approved by {approved}" if approved else "no approval needed"
            )
            lines.append(f"{where} {when} {subject} ({inert(d.request, 20)}; {who})")
        else:
            lines.append(f"{where} {when} {subject} (by hand: {inert(d.author, 80)})")
    return [Reply("\n".join(lines))]


def _all(ctx: Context, name: str) -> bool:
    """`lock all` / `unlock all` (unless an environment is called `all`)."""
    return name.lower() == "all" and ctx.policy.environment_named(name) is None


def _lockable(ctx: Context, event: ChatEvent) -> list[str]:
    """Every environment the person may lock; refused when there is none."""
    envs = [e for e, spec in ctx.policy.environments.items() if ctx.is_listed(event, spec.may_lock)]
    if not envs:
        raise Refused(f"{event.display} may not lock any environment", "not_locker")
    return envs


def lock(ctx: Context, event: ChatEvent, command: Lock) -> list[Reply]:
    if _all(ctx, command.env):
        return lock_all(ctx, event, command.reason)
    env = ctx.env(command.env)
    ctx.check_locker(event, env)
    wanted = _lock(ctx, event, env, command.reason)
    if held := ctx.locks.lock(wanted):
        raise Refused(held.describe(), "already_locked")
    ctx.audit("locked", env=env, by=event.principal, reason=command.reason or None)
    return [Reply(messages.locked(wanted.describe()))]


def _lock(ctx: Context, event: ChatEvent, env: str, reason: str) -> gates.Lock:
    return gates.Lock(
        env=env,
        owner=event.principal,
        owner_name=event.display,
        reason=reason,
        since=ctx.clock().isoformat(),
    )


def lock_all(ctx: Context, event: ChatEvent, reason: str) -> list[Reply]:
    """Lock every environment the person may lock ("stop the line"); those locked already
    stay as they are, and are named."""
    taken, held = [], []
    for env in _lockable(ctx, event):
        if other := ctx.locks.lock(_lock(ctx, event, env, reason)):
            held.append(other.describe())
            continue
        ctx.audit("locked", env=env, by=event.principal, reason=reason or None)
        taken.append(env)
    return [Reply(messages.locked_all(taken, held, event.display, reason))]


def unlock(ctx: Context, event: ChatEvent, command: Unlock) -> list[Reply]:
    if _all(ctx, command.env):
        return unlock_all(ctx, event, command.reason)
    env = ctx.env(command.env)
    ctx.check_locker(event, env)
    if ctx.locks.unlock(env) is None:
        raise Refused(f"{env} is not locked", "not_locked")
    ctx.audit("unlocked", env=env, by=event.principal, reason=command.reason or None)
    return [Reply(messages.unlocked(env, event.display, command.reason))]


def report(ctx: Context, event: ChatEvent, command: Report) -> list[Reply]:
    """`report ENV [SPAN]`: the delivery figures of ENV, read from Git (the same table as
    `releasegate report`)."""
    env = ctx.env(command.env)
    now = ctx.clock()
    since = figures.window(command.span, now)
    text = delivery_report(ctx.policy, ctx.mirror, since, now, env=env)
    return [Reply(f"```\n{inert_block(text)}\n```")]


def clear(ctx: Context, event: ChatEvent, command: Clear) -> list[Reply]:
    """`clear APP VERSION in ENV`: a locker of the environment lets a version that failed
    verification there deploy again (there and downstream)."""
    env = ctx.env(command.env)
    app = ctx.pinned_app(command.app, env)
    ctx.check_locker(event, env)
    forgotten = Verdicts(ctx.redis).clear(env, app, command.version)
    if forgotten is None:
        shown = inert(command.version, 40)
        raise Refused(f"{app} {shown} has not failed verification in {env}", "not_failed")
    ctx.audit(
        "cleared",
        env=env,
        app=app,
        version=command.version,
        by=event.principal,
        request=forgotten.request,
    )
    return [Reply(messages.cleared(forgotten, event.display))]


def unlock_all(ctx: Context, event: ChatEvent, reason: str) -> list[Reply]:
    freed = []
    for env in _lockable(ctx, event):
        if ctx.locks.unlock(env) is not None:
            ctx.audit("unlocked", env=env, by=event.principal, reason=reason or None)
            freed.append(env)
    if not freed:
        raise Refused("no environment you may unlock is locked", "not_locked")
    return [Reply(messages.unlocked(", ".join(freed), event.display, reason))]
