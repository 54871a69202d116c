"""The conversation: every chat event passes through here, whatever platform it came from.

Grammar, authorization, gates, approvals and queueing are decided once, in
platform-free code (`bot/deploys.py`, `bot/approvals.py`, `bot/status.py`),
for the shell, Slack and Rocket.Chat alike. A refusal is an answer, not an
error: it comes back as a reply marked not ok, with a reason for the logs.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Callable
from datetime import timedelta

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bot import approvals, deploys, messages, status
from bot.context import Clock, Context, utcnow
from bot.events import NOT_CONFIRMED, ChatEvent, Reply
from bot.grammar import (
    APPROVE_REACTIONS,
    REJECT_REACTIONS,
    Approve,
    BreakGlass,
    Cancel,
    Clear,
    Command,
    Deploy,
    DeployEnv,
    GrammarError,
    Help,
    History,
    Lock,
    Promote,
    Reject,
    Report,
    Review,
    Rollback,
    Status,
    Unlock,
    parse,
    reaction_name,
)
from config.errors import Refused, ReleasegateError
from config.policy import Policy
from config.principals import ChannelRef, Principal
from workers.artifacts.resolve import Resolver
from workers.git.mirrors import Mirrors
from workers.logs import request_context
from workers.state.metrics import REFUSALS, REQUESTS
from workers.state.request import DeployRequest
from workers.state.store import RETENTION, RequestStore
from workers.state.verdicts import Verdicts

log = logging.getLogger(__name__)

# What a person is told happened only once a replica has it.
WRITES = (
    Deploy,
    DeployEnv,
    Promote,
    Rollback,
    Approve,
    Reject,
    Cancel,
    Lock,
    Unlock,
    BreakGlass,
    Review,
    Clear,
)


class Conversation:
    def __init__(
        self,
        policy: Policy,
        redis: Redis,
        mirror: Mirrors,
        clock: Clock = utcnow,
        retention: timedelta = RETENTION,
        resolver: Resolver | None = None,
    ) -> None:
        self.ctx = Context(policy, redis, mirror, clock, retention)
        if resolver is not None:
            self.ctx.resolver = resolver

    @property
    def policy(self) -> Policy:
        return self.ctx.policy

    @property
    def store(self) -> RequestStore:
        return self.ctx.store

    def handle(self, event: ChatEvent) -> list[Reply]:
        """A message (or slash command) from a person."""

        def run() -> list[Reply]:
            try:
                command = parse(event.text)
            except GrammarError as exc:
                REQUESTS.labels(event.platform, exc.verb or "unknown").inc()
                raise
            REQUESTS.labels(event.platform, command.VERB).inc()
            return self._confirmed(self._dispatch(event, command), isinstance(command, WRITES))

        return self._answer(event, run)

    def react(
        self, event: ChatEvent, emoji: str, request_id: str, added: bool = True
    ) -> list[Reply]:
        """A reaction added to (or removed from) a request's message; other emoji mean nothing."""
        emoji = reaction_name(emoji)
        if emoji in APPROVE_REACTIONS:
            if not added:
                return self._answer(
                    event,
                    lambda: self._confirmed(
                        approvals.withdraw_approval(self.ctx, event, request_id), writes=True
                    ),
                )
            # ✅ on a break-glass deploy's message reviews it; on a request, approves it.
            unreviewed = approvals.unreviewed(self.ctx, request_id)
            command: Command = Review(request_id) if unreviewed else Approve(request_id)
            REQUESTS.labels(event.platform, "reaction").inc()
        elif emoji in REJECT_REACTIONS and added:
            command = Reject(request_id, "")
        else:
            return []
        return self._answer(
            event, lambda: self._confirmed(self._dispatch(event, command), writes=True)
        )

    def offer_rollback(self, request: DeployRequest, app: str) -> Reply:
        """After a degraded rollout, ask for the way back in the requester's name, in the
        request's channel and thread, by the words a person would type (`rollback APP in
        ENV`): the grammar, rights, gates and approvals of every request. Nothing is applied
        on its own; the approvers decide."""
        env = self.policy.environments.get(request.env)
        if env is None or env.approvals == 0:
            # Filed here it would be queued at once: nobody would have decided to go back.
            return Reply(f"{request.env} needs no approval, so nothing is filed for you", ok=False)
        who, where = Principal.of(request.requester), ChannelRef.parse(request.channel)
        thread = self.store.message_of(request.id) or request.thread
        event = ChatEvent(
            platform=who.kind,
            user=who.id,
            user_name=request.requester_name,
            channel=where.id,
            text=f"rollback {app} in {request.env}",
            thread=thread,
        )
        [reply, *_] = self.handle(event) or [Reply("no answer", ok=False)]
        log.info(
            "rollback of %s in %s offered after a degraded rollout: %s",
            app,
            request.env,
            reply.request_id or reply.text,
        )
        return reply

    def offer_promotion(self, env: str, app: str, version: str) -> Reply:
        """Once `app` `version` has soaked upstream of `env` (`auto_promote`), ask for it in
        the name of whoever deployed it upstream, in `env`'s first channel, by the words a
        person would type (`promote APP to ENV`): the grammar, rights, gates, soak and
        approvals of every request. Approvals are still asked."""
        spec = self.policy.environments.get(env)
        if spec is None or spec.promote_from is None or not spec.auto_promote:
            return Reply(f"{env} no longer promotes on its own", ok=False)
        running = Verdicts(self.ctx.redis).running(spec.promote_from, app)
        if running is None or running.version != version or not running.request:
            return Reply(f"{spec.promote_from} no longer runs {app} {version}", ok=False)
        try:
            upstream = self.store.get(running.request)
            who = Principal.of(upstream.requester)
        except (ReleasegateError, ValueError):
            return Reply(f"nobody on record deployed {app} {version} upstream", ok=False)
        where = ChannelRef.parse(spec.channels[0])
        if where.platform != who.kind:
            return Reply(f"{upstream.requester_name} is not on {where.platform}", ok=False)
        event = ChatEvent(
            platform=who.kind,
            user=who.id,
            user_name=upstream.requester_name,
            channel=where.id,
            text=f"promote {app} to {env}",
        )
        [reply, *_] = self.handle(event) or [Reply("no answer", ok=False)]
        log.info(
            "auto-promotion of %s %s to %s: %s", app, version, env, reply.request_id or reply.text
        )
        return reply

    def _confirmed(self, replies: list[Reply], writes: bool) -> list[Reply]:
        """Replies that say something happened, once Redis confirmed it on a replica; else a
        warning that it may not have been recorded (never that it was). Answers that wrote
        nothing (status, help, refusals) wait for nothing."""
        if not writes or not any(r.ok for r in replies):
            return replies
        if self.ctx.durability.confirmed():
            return replies
        about = next((r.about or r.request_id for r in replies if r.about or r.request_id), None)
        return [Reply(messages.not_confirmed(about), ok=False, reason=NOT_CONFIRMED, about=about)]

    def _answer(self, event: ChatEvent, run: Callable[[], list[Reply]]) -> list[Reply]:
        with request_context(actor=event.principal):
            try:
                return run()
            except Refused as exc:
                log.info("refused (%s): %s", exc.reason, exc)
                REFUSALS.labels(exc.reason).inc()
                # Every refusal is in the audit trail, also one that belongs to no request
                # ("alice may not lock prd", a deploy to a locked environment).
                with contextlib.suppress(RedisError):
                    self.ctx.audit(
                        "refused",
                        request=exc.request or None,
                        by=event.principal,
                        reason=exc.reason,
                        why=str(exc)[:300],
                    )
                return [Reply(str(exc), ok=False, private=True, reason=exc.reason)]
            except ReleasegateError as exc:
                log.warning("failed: %s", exc)
                return [Reply(str(exc), ok=False)]
            except (RedisConnectionError, RedisTimeoutError) as exc:
                ref = secrets.token_hex(4)
                log.error(
                    "Redis is unreachable answering %r (ref %s): %s", event.text[:80], ref, exc
                )
                return [Reply(messages.store_unreachable(ref), ok=False, private=True)]
            except Exception:
                # Anything else is our bug or a broken dependency: the person gets a short
                # answer with a reference, the log gets the traceback, the audit the reference.
                ref = secrets.token_hex(4)
                log.exception("unexpected error answering %r (ref %s)", event.text[:80], ref)
                with contextlib.suppress(Exception):
                    self.ctx.audit("error", ref=ref, by=event.principal)
                return [Reply(messages.internal_error(ref), ok=False, private=True)]

    def _dispatch(self, event: ChatEvent, command: Command) -> list[Reply]:
        ctx = self.ctx
        match command:
            case Deploy():
                return deploys.deploy(ctx, event, command)
            case DeployEnv() | Promote():
                return deploys.promote(ctx, event, command)
            case Rollback():
                return deploys.rollback(ctx, event, command)
            case Approve():
                return approvals.approve(ctx, event, command.request_id)
            case Reject():
                return approvals.reject(ctx, event, command)
            case Cancel():
                return approvals.cancel(ctx, event, command.request_id)
            case Status():
                return status.status(ctx, event, command)
            case History():
                return status.history(ctx, event, command)
            case Lock():
                return status.lock(ctx, event, command)
            case Unlock():
                return status.unlock(ctx, event, command)
            case BreakGlass():
                return deploys.break_glass(ctx, event, command)
            case Review():
                return approvals.review(ctx, event, command.request_id)
            case Clear():
                return status.clear(ctx, event, command)
            case Report():
                return status.report(ctx, event, command)
            case Help():
                return [Reply(messages.help_text(command.verb), private=True)]
