"""The gate: every chat command passes through here, whatever platform it came from.

Grammar, authorization, version checks, approvals and queueing are decided
once, in this module, for the shell, Slack and Rocket.Chat alike. It talks to
Redis (requests, approvals, the queue) and reads the GitOps repository for
the current versions and the diff a request will make; it never writes Git.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from redis import Redis

from bot import messages
from bot.authz import is_listed
from bot.events import ChatEvent, Reply
from bot.grammar import (
    APPROVE_REACTIONS,
    REJECT_REACTIONS,
    Approve,
    Cancel,
    Command,
    Deploy,
    Help,
    Reject,
    Status,
    is_request_id,
    parse,
)
from config.errors import PinError, Refused, ReleasegateError
from config.policy import Policy
from workers.gitops import Checkout, snapshot
from workers.logs import request_context
from workers.plan import current_version, plan_changes
from workers.queue import enqueue_deploy
from workers.request import Change, DeployRequest, RequestState, Result, new_request_id
from workers.store import RequestStore

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


def _refuse(message: str, reason: str) -> Refused:
    return Refused(message, reason)


class Conversation:
    def __init__(
        self, policy: Policy, redis: Redis, checkout: Checkout, clock: Clock = utcnow
    ) -> None:
        self.policy = policy
        self.redis = redis
        self.store = RequestStore(redis)
        self.checkout = checkout
        self.clock = clock

    # Entry points: a message, or a reaction on a request's message.

    def handle(self, event: ChatEvent) -> list[Reply]:
        with request_context(actor=event.principal):
            try:
                return self._dispatch(event, parse(event.text))
            except Refused as exc:
                log.info("refused (%s): %s", exc.reason, exc)
                return [Reply(str(exc), ok=False, private=True)]
            except ReleasegateError as exc:
                log.warning("failed: %s", exc)
                return [Reply(str(exc), ok=False)]

    def react(self, event: ChatEvent, emoji: str, request_id: str) -> list[Reply]:
        """A reaction on a request's message: approve or reject it; other emoji mean nothing."""
        if emoji in APPROVE_REACTIONS:
            command: Command = Approve(request_id)
        elif emoji in REJECT_REACTIONS:
            command = Reject(request_id, "")
        else:
            return []
        with request_context(actor=event.principal, request_id=request_id):
            try:
                return self._dispatch(event, command)
            except Refused as exc:
                return [Reply(str(exc), ok=False, private=True)]

    def _dispatch(self, event: ChatEvent, command: Command) -> list[Reply]:
        match command:
            case Deploy():
                return self._deploy(event, command)
            case Approve():
                return self._approve(event, command.request_id)
            case Reject():
                return self._reject(event, command)
            case Cancel():
                return self._cancel(event, command.request_id)
            case Status():
                return self._status(event, command.target)
            case Help():
                return [Reply(messages.help_text(), private=True)]
        verb = type(command).__name__.lower().replace("deployenv", "deploy ENV")
        raise _refuse(messages.not_available(verb), "not_available")

    # Names and rights.

    def _env(self, name: str) -> str:
        env = self.policy.environment_named(name)
        if env is None:
            raise _refuse(messages.unknown_env(name, list(self.policy.environments)), "unknown_env")
        return env

    def _app(self, name: str) -> str:
        app = self.policy.app_named(name)
        if app is None:
            raise _refuse(messages.unknown_app(name, list(self.policy.apps)), "unknown_app")
        return app

    def _check_channel(self, event: ChatEvent, env: str) -> None:
        channels = self.policy.environments[env].channels
        if event.channel_ref not in channels:
            raise _refuse(messages.wrong_channel(env, channels), "wrong_channel")

    def _is_approver(self, event: ChatEvent, env: str) -> bool:
        approvers = self.policy.environments[env].approvers
        return is_listed(self.policy, event.principal, event.groups, approvers)

    # Deploy requests.

    def _deploy(self, event: ChatEvent, command: Deploy) -> list[Reply]:
        env_name, app_name = self._env(command.env), self._app(command.app)
        app, env = self.policy.apps[app_name], self.policy.environments[env_name]
        if env_name not in app.pins:
            raise _refuse(messages.not_pinned(app_name, env_name, list(app.pins)), "not_pinned")
        self._check_channel(event, env_name)
        if not is_listed(self.policy, event.principal, event.groups, env.deployers):
            raise _refuse(messages.not_deployer(event.display, env_name), "not_deployer")
        try:
            version = app.check_version(app_name, command.version)
        except ReleasegateError as exc:
            raise _refuse(str(exc), "bad_version") from exc

        with snapshot(self.checkout) as (head, repo):
            old = current_version(self.policy, repo.read, app_name, env_name)
            if old == version:
                return [Reply(messages.already_running(app_name, version, env_name))]
            change = Change(app=app_name, env=env_name, old=old, new=version)
            diff = plan_changes(self.policy, repo.read, [change]).diff()

        now = self.clock()
        request = self._create(
            DeployRequest(
                id=new_request_id(),
                verb="deploy",
                env=env_name,
                changes=(change,),
                requester=event.principal,
                requester_name=event.display,
                channel=event.channel_ref,
                thread=event.thread,
                approvals_needed=env.approvals,
                created_at=now,
                expires_at=now + env.approval_ttl if env.approvals else None,
                base_commit=head,
                diff=diff,
            )
        )
        with request_context(request_id=request.id, app=app_name, env=env_name):
            log.info("request created: %s", messages.changes_text(request.changes))
            if request.approvals_needed == 0:
                enqueue_deploy(self.redis, request.id)
                return [
                    Reply(messages.queued(request), request_id=request.id, queued=(request.id,))
                ]
            return [Reply(messages.request_created(request, env.approvers), request_id=request.id)]

    def _create(self, draft: DeployRequest) -> DeployRequest:
        state = RequestState.PENDING if draft.approvals_needed else RequestState.APPROVED
        request = draft
        while not self.store.create(request, state):  # an id collision: draw another
            request = request.model_copy(update={"id": new_request_id()})
        return request

    # Approvals.

    def _pending_request(self, event: ChatEvent, request_id: str | None) -> DeployRequest:
        if request_id is None:
            ids = self.store.pending_in(event.channel_ref)
            if event.thread:
                threaded = [i for i in ids if self.store.get(i).thread == event.thread]
                ids = threaded or ids
            if not ids:
                raise _refuse(messages.nothing_pending(), "nothing_pending")
            if len(ids) > 1:
                raise _refuse(messages.several_pending(ids), "ambiguous")
            request_id = ids[0]
        request = self.store.get(request_id)
        state = self.store.state(request.id)
        if state is not RequestState.PENDING:
            raise _refuse(messages.not_pending(request.id, state), "not_pending")
        if request.expires_at is not None and self.clock() >= request.expires_at:
            result = Result(state=RequestState.EXPIRED, message="expired", finished_at=self.clock())
            self.store.finish(request.id, [RequestState.PENDING], result)
            raise _refuse(messages.expired(request.id), "expired")
        return request

    def _approve(self, event: ChatEvent, request_id: str | None) -> list[Reply]:
        request = self._pending_request(event, request_id)
        if event.principal == request.requester:
            raise _refuse(messages.own_request(request.id), "own_request")
        env = self.policy.environments[request.env]
        if not self._is_approver(event, request.env):
            raise _refuse(
                messages.not_approver(event.display, request.env, env.approvers), "not_approver"
            )
        outcome = self.store.approve(request.id, event.principal, request.approvals_needed)
        with request_context(request_id=request.id, env=request.env):
            if outcome.status == "duplicate":
                raise _refuse(messages.already_approved(request.id, event.display), "duplicate")
            if outcome.status == "not_pending" and outcome.state is not None:
                raise _refuse(messages.not_pending(request.id, outcome.state), "not_pending")
            log.info("approval %d/%d", outcome.count, request.approvals_needed)
            if outcome.status == "quorum":
                enqueue_deploy(self.redis, request.id)
                text = messages.approved(request, event.display, outcome.count)
                return [Reply(text, queued=(request.id,))]
            return [Reply(messages.approval_counted(request, event.display, outcome.count))]

    def _reject(self, event: ChatEvent, command: Reject) -> list[Reply]:
        request = self._pending_request(event, command.request_id)
        env = self.policy.environments[request.env]
        if not self._is_approver(event, request.env):
            raise _refuse(
                messages.not_approver(event.display, request.env, env.approvers), "not_approver"
            )
        result = Result(
            state=RequestState.REJECTED,
            message=f"rejected by {event.principal}: {command.reason}".rstrip(": "),
            finished_at=self.clock(),
        )
        if not self.store.finish(request.id, [RequestState.PENDING], result):
            raise _refuse(
                messages.not_pending(request.id, self.store.state(request.id)), "not_pending"
            )
        return [Reply(messages.rejected(request.id, event.display, command.reason))]

    def _cancel(self, event: ChatEvent, request_id: str | None) -> list[Reply]:
        if request_id is None:
            request = self._pending_request(event, None)
        else:
            request = self.store.get(request_id)
        if event.principal != request.requester and not self._is_approver(event, request.env):
            raise _refuse(messages.may_not_cancel(request.id), "may_not_cancel")
        result = Result(
            state=RequestState.CANCELLED,
            message=f"cancelled by {event.principal}",
            finished_at=self.clock(),
        )
        if not self.store.finish(request.id, [RequestState.PENDING, RequestState.APPROVED], result):
            raise _refuse(
                messages.not_pending(request.id, self.store.state(request.id)), "not_pending"
            )
        return [Reply(messages.cancelled(request.id, event.display))]

    # Status, read from Git.

    def _status(self, event: ChatEvent, target: str | None) -> list[Reply]:
        if target is not None and is_request_id(target.upper()):
            request = self.store.get(target.upper())
            result = self.store.result(request.id)
            text = messages.request_status(
                request,
                self.store.state(request.id),
                self.store.approvals(request.id),
                result.message if result else None,
            )
            return [Reply(text)]
        envs = list(self.policy.environments)
        apps = list(self.policy.apps)
        if target is not None:
            if env := self.policy.environment_named(target):
                envs = [env]
            else:
                apps = [self._app(target)]
        lines = []
        with snapshot(self.checkout) as (head, repo):
            for app in apps:
                cells = []
                for env in envs:
                    if env not in self.policy.apps[app].pins:
                        continue
                    try:
                        version = current_version(self.policy, repo.read, app, env)
                    except PinError as exc:
                        version = f"unreadable ({exc})"
                    cells.append(f"{env} {version}")
                if cells:
                    lines.append(f"{app}: " + ", ".join(cells))
        pending = self.store.pending_in(event.channel_ref)
        lines.append(f"at {head[:7]}; pending here: {messages.names(pending)}")
        return [Reply("\n".join(lines))]
