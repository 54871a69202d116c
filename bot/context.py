"""The service context every chat handler gets: policy, stores, the Git mirror, the clock,
and the checks of names and rights."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from redis import Redis
from redis.exceptions import RedisError

from bot import messages
from bot.events import ChatEvent
from config.errors import Refused, ReleasegateError, UnknownRequest
from config.policy import Policy
from config.principals import Principal
from workers.artifacts.resolve import Resolver
from workers.git.mirrors import Mirrors
from workers.rules.gates import Locks
from workers.rules.identity import Identities, load_rocketchat_ids
from workers.rules.plan import landing
from workers.state import audit, outbox
from workers.state.durability import Durability
from workers.state.queue import enqueue_forge
from workers.state.request import DeployRequest, RequestState, Result
from workers.state.store import RETENTION, RequestStore

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Context:
    policy: Policy
    redis: Redis
    mirror: Mirrors
    clock: Clock = utcnow
    retention: timedelta = RETENTION
    # What the reconciler says now about an environment's apps, for `status ENV` (set by the
    # processes that know how to reach Argo CD or the Kubernetes API).
    live: Callable[[str], list[str]] | None = None
    # Asks the artifact stores (registries, Git tags, chart repositories) what a version is.
    resolver: Resolver = field(default_factory=Resolver)
    store: RequestStore = field(init=False)
    locks: Locks = field(init=False)
    # Whether a write reached a replica before a person is told it happened.
    durability: Durability = field(init=False)
    # Rocket.Chat names in the policy -> user ids, as the bot last resolved them.
    rocketchat_ids: dict[str, str] = field(init=False)
    _identities: Identities | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.store = RequestStore(self.redis, self.retention)
        self.locks = Locks(self.redis)
        self.durability = Durability(self.redis)
        try:
            self.rocketchat_ids = load_rocketchat_ids(self.redis)
        except RedisError:
            self.rocketchat_ids = {}

    @property
    def identities(self) -> Identities:
        """Who is who under the current policy (rebuilt when the policy or the ids change)."""
        known = self._identities
        if (
            known is None
            or known.policy is not self.policy
            or (known.rocketchat_ids != self.rocketchat_ids)
        ):
            self._identities = known = Identities(self.policy, self.rocketchat_ids)
        return known

    def learn_rocketchat_ids(self, ids: dict[str, str]) -> None:
        self.rocketchat_ids = {**self.rocketchat_ids, **ids}

    def audit(self, event: str, **fields: str | None) -> None:
        audit.record(self.redis, event, **fields)

    def env(self, name: str) -> str:
        env = self.policy.environment_named(name)
        if env is None:
            raise Refused(messages.unknown_env(name, list(self.policy.environments)), "unknown_env")
        return env

    def app(self, name: str) -> str:
        app = self.policy.app_named(name)
        if app is None:
            raise Refused(messages.unknown_app(name, list(self.policy.apps)), "unknown_app")
        return app

    def pinned_app(self, name: str, env: str) -> str:
        app = self.app(name)
        pins = self.policy.apps[app].pins
        if env not in pins:
            raise Refused(messages.not_pinned(app, env, list(pins)), "not_pinned")
        return app

    def check_channel(self, event: ChatEvent, env: str) -> None:
        channels = self.policy.environments[env].channels
        if event.channel_ref not in channels:
            raise Refused(messages.wrong_channel(env, channels), "wrong_channel")

    def is_listed(self, event: ChatEvent, allowed: list[str]) -> bool:
        groups = [Principal.of(g) for g in event.groups]
        return self.identities.is_listed(event.who, groups, allowed)

    def check_deployer(self, event: ChatEvent, env: str) -> None:
        deployers = self.policy.environments[env].deployers
        if not self.is_listed(event, deployers):
            raise Refused(messages.not_deployer(event.display, env, deployers), "not_deployer")

    def is_approver(self, event: ChatEvent, env: str) -> bool:
        return self.is_listed(event, self.policy.environments[env].approvers)

    def is_requester(self, event: ChatEvent, request: DeployRequest) -> bool:
        """True for the requester under any of their ids (a person on several platforms)."""
        return self.identities.same_person(event.who, Principal.of(request.requester))

    def check_approver(self, event: ChatEvent, env: str) -> None:
        if not self.is_approver(event, env):
            approvers = self.policy.environments[env].approvers
            raise Refused(messages.not_approver(event.display, env, approvers), "not_approver")

    def check_locker(self, event: ChatEvent, env: str) -> None:
        lockers = self.policy.environments[env].may_lock
        if not self.is_listed(event, lockers):
            raise Refused(messages.not_locker(event.display, env, lockers), "not_locker")

    def merge_requested(self, request: DeployRequest) -> bool:
        """Whether `request` lands through the forge's merge request (its pins' repository's
        `merge_request`)."""
        try:
            return bool(landing(self.policy, request)[1])
        except ReleasegateError:
            return False

    def close_merge_request(self, request: DeployRequest) -> None:
        """A request that ended without landing closes its merge request (a worker's job)."""
        if self.merge_requested(request):
            enqueue_forge(self.redis, "close_change", request.id)

    def expire_if_due(self, request: DeployRequest) -> bool:
        """End a pending request whose time ran out; True if it did now. Whoever ends it (a
        person talking to the bot, or the background round) queues the news, so its thread
        is told once and its card loses its buttons."""
        if request.expires_at is None or self.clock() < request.expires_at:
            return False
        message = messages.not_approved_in_time(request)
        result = Result(state=RequestState.EXPIRED, message=message, finished_at=self.clock())
        if self.store.finish(request.id, [RequestState.PENDING], result, outbox.report_to(request)):
            self.audit("expired", request=request.id, env=request.env)
            self.close_merge_request(request)
            return True
        return False

    def remind_unreviewed(self) -> list[str]:
        """Remind each break-glass deploy's channel, once, when its review is overdue (its
        environment's `break_glass_review` after it was filed)."""
        reminded = []
        for request_id in self.store.unreviewed(due_by=self.clock().timestamp()):
            if not self.store.first_reminder(request_id):
                continue
            with contextlib.suppress(UnknownRequest):
                request = self.store.get(request_id)
                outbox.note(
                    self.redis, request, "break_glass_unreviewed", reason=request.break_glass
                )
                reminded.append(request_id)
        return reminded

    def expire_due(self) -> list[str]:
        """End every pending request whose time ran out, whether or not anyone talks to us."""
        ended = []
        for request_id in self.store.pending_all():
            with contextlib.suppress(UnknownRequest):
                if self.expire_if_due(self.store.get(request_id)):
                    ended.append(request_id)
        return ended
