"""Deciding on a request: `approve`, `reject`, `cancel` (words, reactions and buttons alike)."""

from __future__ import annotations

import logging

from bot import messages
from bot.context import Context
from bot.events import ChatEvent, Reply
from bot.grammar import Reject
from config.errors import Refused
from workers.logs import request_context
from workers.rules.gates import check_open
from workers.state.metrics import APPROVALS, record_approval_wait
from workers.state.queue import enqueue_deploy
from workers.state.request import Approval, DeployRequest, RequestState, Result

log = logging.getLogger(__name__)


def pending_request(ctx: Context, event: ChatEvent, request_id: str | None) -> DeployRequest:
    """The request meant: by id, else the one pending in this thread or channel."""
    store = ctx.store
    if request_id is None and event.thread:
        request_id = store.request_for_message(event.channel_ref, event.thread)
    if request_id is None:
        ids: list[str] = []
        expired: list[str] = []
        for candidate in store.pending_in(event.channel_ref):
            (expired if ctx.expire_if_due(store.get(candidate)) else ids).append(candidate)
        if event.thread:
            threaded = [i for i in ids if store.get(i).thread == event.thread]
            ids = threaded or ids
        if not ids and expired:
            raise Refused(messages.expired(expired[-1]), "expired")
        if not ids:
            raise Refused(messages.nothing_pending(), "nothing_pending")
        if len(ids) > 1:
            raise Refused(messages.several_pending(ids), "ambiguous")
        request_id = ids[0]
    request = store.get(request_id)
    if ctx.expire_if_due(request):
        raise Refused(messages.expired(request.id), "expired")
    state = store.state(request.id)
    if state is not RequestState.PENDING:
        raise Refused(messages.not_pending(request.id, state), "not_pending")
    return request


def _approved_by(ctx: Context, event: ChatEvent, request_id: str) -> bool:
    who = ctx.identities.identity(event.who)
    return any(a.identity == who for a in ctx.store.approval_records(request_id))


def approve(ctx: Context, event: ChatEvent, request_id: str | None) -> list[Reply]:
    try:
        request = pending_request(ctx, event, request_id)
    except Refused as exc:
        # Someone whose answer was lost (a Redis failover) asks again: their approval counted,
        # maybe as the last one. They hear that, not only that the request moved on.
        if exc.reason == "not_pending" and request_id and _approved_by(ctx, event, request_id):
            said = messages.already_approved(request_id, event.display)
            raise Refused(said, "duplicate") from exc
        raise
    with request_context(request_id=request.id, env=request.env):
        try:
            if ctx.is_requester(event, request):
                raise Refused(messages.own_request(request.id), "own_request")
            if event.is_bot():
                raise Refused(messages.bot_approver(event.display, request.id), "bot")
            ctx.check_approver(event, request.env)
            check_open(ctx.policy, ctx.locks, request.env, ctx.clock(), holder=request.requester)
        except Refused as exc:
            exc.request = request.id  # the conversation audits it, naming the request
            raise
        who = ctx.identities.identity(event.who)
        approval = Approval(who, event.principal, tuple(sorted(event.groups)), event.user_name)
        outcome = ctx.store.approve(request.id, approval, request.approvals_needed)
        if outcome.status == "duplicate":
            raise Refused(messages.already_approved(request.id, event.display), "duplicate")
        if outcome.status == "not_pending" and outcome.state is not None:
            raise Refused(messages.not_pending(request.id, outcome.state), "not_pending")
        log.info("approval %d/%d", outcome.count, request.approvals_needed)
        APPROVALS.inc()
        ctx.audit(
            "approved",
            request=request.id,
            by=event.principal,
            count=f"{outcome.count}/{request.approvals_needed}",
        )
        if outcome.status == "quorum":
            enqueue_deploy(ctx.redis, request.id)
            waited = (ctx.clock() - request.created_at).total_seconds()
            record_approval_wait(ctx.redis, request.env, max(0.0, waited))
            text = messages.approved(request, event.display, outcome.count)
            return [Reply(text, queued=(request.id,), about=request.id)]
        text = messages.approval_counted(request, event.display, outcome.count)
        return [Reply(text, about=request.id)]


def withdraw_approval(ctx: Context, event: ChatEvent, request_id: str) -> list[Reply]:
    """A removed approval reaction: the approval no longer counts, if quorum was not reached."""
    if ctx.store.withdraw(request_id, ctx.identities.identity(event.who), event.principal):
        ctx.audit("withdrawn", request=request_id, by=event.principal)
        return [Reply(messages.approval_withdrawn(request_id, event.display), about=request_id)]
    return []


def reject(ctx: Context, event: ChatEvent, command: Reject) -> list[Reply]:
    request = pending_request(ctx, event, command.request_id)
    ctx.check_approver(event, request.env)
    reason = command.reason
    result = Result(
        state=RequestState.REJECTED,
        message=messages.rejected(request.id, event.display, reason),
        finished_at=ctx.clock(),
    )
    if not ctx.store.finish(request.id, [RequestState.PENDING], result):
        raise Refused(messages.not_pending(request.id, ctx.store.state(request.id)), "not_pending")
    ctx.audit("rejected", request=request.id, by=event.principal, reason=reason or None)
    ctx.close_merge_request(request)
    return [Reply(result.message, about=request.id)]


def cancel(ctx: Context, event: ChatEvent, request_id: str | None) -> list[Reply]:
    store = ctx.store
    request = pending_request(ctx, event, None) if request_id is None else store.get(request_id)
    if not ctx.is_requester(event, request) and not ctx.is_approver(event, request.env):
        raise Refused(messages.may_not_cancel(request.id), "may_not_cancel")
    result = Result(
        state=RequestState.CANCELLED,
        message=messages.cancelled(request.id, event.display),
        finished_at=ctx.clock(),
    )
    if not store.finish(request.id, [RequestState.PENDING, RequestState.APPROVED], result):
        raise Refused(messages.not_pending(request.id, store.state(request.id)), "not_pending")
    ctx.audit("cancelled", request=request.id, by=event.principal)
    ctx.close_merge_request(request)
    return [Reply(result.message, about=request.id)]


def unreviewed(ctx: Context, request_id: str) -> bool:
    """Whether `request_id` is a break-glass deploy nobody has reviewed yet."""
    return ctx.store.is_unreviewed(request_id)


def review(ctx: Context, event: ChatEvent, request_id: str | None) -> list[Reply]:
    """An approver of the environment (never the requester, never a bot) looks at a
    break-glass deploy after the fact: `review ID`, or ✅ on its message."""
    if request_id is None and event.thread:
        request_id = ctx.store.request_for_message(event.channel_ref, event.thread)
    if request_id is None:
        here = [
            r
            for r in ctx.store.unreviewed()
            if ctx.store.exists(r) and ctx.store.get(r).channel == event.channel_ref
        ]
        if len(here) != 1:
            raise Refused("say which: review ID (`status` lists the unreviewed)", "ambiguous")
        request_id = here[0]
    request = ctx.store.get(request_id)
    if not request.break_glass or not unreviewed(ctx, request.id):
        raise Refused(f"{request.id} is not a break-glass deploy waiting for review", "not_pending")
    if ctx.is_requester(event, request):
        raise Refused(f"{request.id} is yours: someone else reviews it", "own_request")
    if event.is_bot():
        raise Refused(messages.bot_approver(event.display, request.id), "bot")
    ctx.check_approver(event, request.env)
    if not ctx.store.mark_reviewed(request.id, event.principal):
        raise Refused(f"{request.id} was reviewed already", "not_pending")
    ctx.audit("reviewed", request=request.id, by=event.principal)
    return [Reply(messages.reviewed(request.id, event.display), about=request.id)]
