"""`releasegate serve`: one HTTP server for Slack, Rocket.Chat, health and metrics.

Nothing a chat platform sends waits for Git or Redis work: Bolt's dispatch
(signature check, then our listeners, which only hand work to a bounded
pool) runs on a thread pool of its own, and the Rocket.Chat webhook is
answered as soon as its token checks out. Outcomes that workers queue in
the outbox are posted by consumers running here, under a supervisor that
keeps them going and tells `/readyz` which one is down.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from urllib.parse import quote

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from redis import Redis
from redis.exceptions import RedisError
from slack_bolt.adapter.starlette.handler import to_bolt_request, to_starlette_response
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot import messages
from bot.conversation import Conversation
from bot.executor import BoundedExecutor
from bot.limits import BodyLimit
from bot.live import live_lines
from bot.reports import OutboxConsumer
from bot.telling import Links
from config.policy import Policy
from config.settings import Settings
from workers.state.leader import Leadership, led
from workers.state.metrics import APPROVALS, REFUSALS, REQUESTS, RedisCollector
from workers.state.queue import job_queue
from workers.supervisor import Round, Supervisor

log = logging.getLogger(__name__)


@dataclass
class Parts:
    """What each platform adds to the server: its routes' handlers, the loops to supervise,
    and what to close when the server stops."""

    loops: list[tuple[str, Round]] = field(default_factory=list)
    connect: list[Callable[[], None]] = field(default_factory=list)
    close: list[Callable[[], None]] = field(default_factory=list)
    # Loops that run on one replica at a time, by name: this replica's claim on each.
    leaders: dict[str, Leadership] = field(default_factory=dict)

    def once_at_a_time(self, redis: Redis, name: str, one_round: Round, ttl: float) -> None:
        """Supervise `one_round` here, run only while this replica holds its lease."""
        self.leaders[name] = leadership = Leadership(redis, name, ttl)
        self.loops.append((name, led(leadership, one_round)))
        self.close.append(leadership.release)


Endpoint = Callable[[Request], Awaitable[Response]]


def _not_configured(what: str) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        return JSONResponse({"error": f"{what} is not configured"}, status_code=404)

    return endpoint


def _slack(
    settings: Settings, conversation: Conversation, executor: BoundedExecutor, parts: Parts
) -> Endpoint:
    """`POST /slack/events`, the Slack outbox consumer, and Socket Mode when an app token is
    set. Bolt's dispatch runs on a thread pool of its own, never on the event loop."""
    if not (settings.slack_bot_token and settings.slack_signing_secret):
        return _not_configured("Slack")
    from bot.platforms.slack import slack_app
    from bot.platforms.slack_api import SlackPoster, refresh_slack_groups

    slack = slack_app(settings, conversation, executor)
    poster = SlackPoster(
        settings.slack_bot_token.get_secret_value(), settings.slack_api_url, settings.slack_app_id
    )
    consumer = OutboxConsumer(
        conversation.ctx.redis,
        "slack",
        poster,
        offer_rollback=conversation.offer_rollback,
        offer_promotion=conversation.offer_promotion,
        links=links(settings, conversation),
    )
    dispatcher = ThreadPoolExecutor(max_workers=16, thread_name_prefix="http")

    def slack_answers() -> float:
        """For `/readyz`: Slack's API takes our token (checked hourly once it does)."""
        poster.check_token()
        return 3600.0

    def slack_groups() -> float:
        """Workers count an approval given through a Slack user group only while the group
        still holds the approver: they read the memberships the bot refreshes here."""
        refresh_slack_groups(conversation.ctx.redis, poster, conversation.policy)
        return SLACK_GROUPS_EVERY

    parts.loops += [
        ("slack-api", slack_answers),
        ("outbox-slack", consumer.one_round),
        ("slack-groups", slack_groups),
    ]
    parts.close.append(lambda: dispatcher.shutdown(wait=False))
    if settings.slack_app_token:
        from bot.platforms.socket_mode import socket_mode_handler

        handler = socket_mode_handler(slack, settings.slack_app_token.get_secret_value())
        parts.connect.append(handler.connect)
        parts.close.append(handler.close)

    async def slack_events(request: Request) -> Response:
        body = await request.body()
        try:
            bolt_request = to_bolt_request(request, body)
        except (UnicodeDecodeError, ValueError):
            return JSONResponse({"error": "the body is not UTF-8 text"}, status_code=400)
        loop = asyncio.get_running_loop()
        try:
            bolt_response = await loop.run_in_executor(dispatcher, slack.dispatch, bolt_request)
        except (ValueError, RecursionError, KeyError, TypeError):
            # Bolt parses after checking the signature: only a signed, malformed body lands here.
            return JSONResponse({"error": "malformed request"}, status_code=400)
        return to_starlette_response(bolt_response)

    return slack_events


def _rocketchat(
    settings: Settings, conversation: Conversation, executor: BoundedExecutor, parts: Parts
) -> Endpoint:
    """`POST /rocketchat/webhook`, the Rocket.Chat outbox consumer, name resolution and the
    poller. The webhook is answered as soon as its token checks out."""
    if not (settings.rocketchat_url and settings.rocketchat_token and settings.rocketchat_user_id):
        return _not_configured("Rocket.Chat webhook")
    from bot.platforms.rocketchat import RocketChatAdapter
    from bot.platforms.rocketchat_api import RocketChatPoster

    redis = conversation.ctx.redis
    poster = RocketChatPoster(
        settings.rocketchat_url,
        settings.rocketchat_user_id,
        settings.rocketchat_token.get_secret_value(),
    )
    rocketchat = RocketChatAdapter(conversation, poster, redis, settings.rocketchat_user_id)
    consumer = OutboxConsumer(
        redis,
        "rocketchat",
        poster,
        offer_rollback=conversation.offer_rollback,
        offer_promotion=conversation.offer_promotion,
        links=links(settings, conversation),
    )
    parts.loops.append(("outbox-rocketchat", consumer.one_round))
    parts.once_at_a_time(redis, "rocketchat-ids", rocketchat.resolve_round, LEASE)
    if settings.rocketchat_poll:
        # Without a webhook, poll for messages too; with one, only for reactions. One replica
        # reads the channels at a time; another takes over within LEASE when it dies.
        messages_too = settings.rocketchat_webhook_token is None
        poll = partial(rocketchat.poll_round, messages_too)
        parts.once_at_a_time(redis, "rocketchat-poller", poll, LEASE)
    expected = settings.rocketchat_webhook_token
    if expected is None:
        return _not_configured("Rocket.Chat webhook")

    async def rocketchat_webhook(request: Request) -> Response:
        body = await request.body()
        if _nesting(body) > MAX_NESTING:  # refused before a parser recurses into it
            return JSONResponse({"error": "expected JSON"}, status_code=400)
        try:
            payload = json.loads(body)
        except ValueError:  # not JSON, or not UTF-8
            return JSONResponse({"error": "expected JSON"}, status_code=400)
        token = payload.get("token") if isinstance(payload, dict) else None
        if not isinstance(token, str) or not token:
            return JSONResponse({"error": "missing token"}, status_code=401)
        if not hmac.compare_digest(token.encode(), expected.get_secret_value().encode()):
            return JSONResponse({"error": "wrong token"}, status_code=403)
        # Answer at once; the conversation runs on the pool. A full pool is said in the
        # channel: Rocket.Chat posts an outgoing webhook's `text` answer there.
        if not executor.submit(rocketchat.on_webhook, payload):
            return JSONResponse({"text": messages.busy()})
        return JSONResponse({})

    return rocketchat_webhook


def _metrics(redis: Redis) -> Endpoint:
    registry = CollectorRegistry()
    for collector in (REQUESTS, REFUSALS, APPROVALS):
        registry.register(collector)
    registry.register(RedisCollector(redis, lambda: job_queue(redis).count))

    async def metrics(request: Request) -> Response:
        try:
            body = await asyncio.to_thread(generate_latest, registry)
        except RedisError as exc:  # the cluster-wide counters live there
            log.warning("metrics unavailable: Redis unreachable: %s", exc)
            return JSONResponse({"error": "Redis unreachable"}, status_code=503)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return metrics


def _commit_url(policy: Policy, repository: str, sha: str) -> str | None:
    found = policy.repositories.get(repository) or policy.repository
    return found.commit_url(sha)


def links(settings: Settings, conversation: Conversation) -> Links:
    """Where people click: the commit on the forge (from the repository's URL, or its
    web_url), the application in Argo CD (RELEASEGATE_ARGOCD_URL)."""
    argocd = (settings.argocd_url or "").rstrip("/")
    return Links(
        commit=lambda name, sha: _commit_url(conversation.policy, name, sha),
        application=lambda name: (
            f"{argocd}/applications/{quote(name, safe='')}" if argocd else None
        ),
    )


def create_app(
    settings: Settings, policy: Policy, redis: Redis, conversation: Conversation
) -> Starlette:
    executor = BoundedExecutor()
    if conversation.ctx.live is None:
        conversation.ctx.live = partial(live_lines, conversation, settings)
    supervisor = Supervisor()
    parts = Parts()
    parts.once_at_a_time(redis, "expiry", partial(_expire_round, conversation), LEASE)
    slack_events = _slack(settings, conversation, executor, parts)
    rocketchat_webhook = _rocketchat(settings, conversation, executor, parts)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        try:
            await asyncio.to_thread(redis.ping)
        except RedisError as exc:
            log.warning("not ready: Redis unreachable: %s", exc)
            return JSONResponse({"status": "redis unreachable"}, status_code=503)
        except Exception as exc:  # not Redis's fault: say what it was, keep the traceback
            log.exception("not ready: the Redis check failed")
            return JSONResponse({"status": f"not ready: {type(exc).__name__}"}, status_code=503)
        if not conversation.ctx.mirror.has_head():
            # Every answer reads Git: a pod is ready once its first fetch brought a head, not
            # before (a rollout would send it traffic it can only make wait).
            return JSONResponse({"status": "git: first fetch"}, status_code=503)
        if down := supervisor.down():
            return JSONResponse({"status": "loops down", "loops": down}, status_code=503)
        # Which once-at-a-time loops this replica runs now (the Rocket.Chat poller's lease).
        leads = sorted(name for name, lead in parts.leaders.items() if lead.holding)
        return JSONResponse({"status": "ready", "apps": len(policy.apps), "leads": leads})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        stop = threading.Event()
        on = platforms(settings)
        if on:
            log.info("chat platforms: %s", "; ".join(on))
        else:
            log.warning(
                "no chat platform is configured (set RELEASEGATE_SLACK_BOT_TOKEN and "
                "_SIGNING_SECRET, or RELEASEGATE_ROCKETCHAT_URL, _USER_ID and _TOKEN): "
                "only /healthz, /readyz and /metrics answer"
            )
        log.info("policy: %d apps in %d environments", len(policy.apps), len(policy.environments))
        # Fetch the repository now, so the first chat answer does not wait for a clone.
        threading.Thread(target=_warm, args=(conversation,), name="git-warm", daemon=True).start()
        for name, one_round in parts.loops:
            supervisor.start(name, one_round, stop)
        for connect in parts.connect:
            await asyncio.to_thread(connect)
            log.info("connected to Slack in Socket Mode")
        yield
        stop.set()
        for thread in supervisor.threads:  # each round ends within a second
            await asyncio.to_thread(thread.join, 5)
        for close in parts.close:
            await asyncio.to_thread(close)
        executor.shutdown(wait=False)

    routes = [
        Route("/slack/events", slack_events, methods=["POST"]),
        Route("/rocketchat/webhook", rocketchat_webhook, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", _metrics(redis), methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.state.chat_work = executor  # what the handlers handed on: `wait_idle()` says when done
    return app


MAX_NESTING = 32  # a webhook's JSON is a flat object; nothing legitimate nests deeper


def _nesting(body: bytes) -> int:
    """How deep `[` and `{` nest in `body` (outside strings), stopping early past the limit."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_NESTING:
                break
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return deepest


def platforms(settings: Settings) -> list[str]:
    """The chat platforms this configuration turns on, and how each reaches us."""
    on = []
    if settings.slack_bot_token and settings.slack_signing_secret:
        how = "Socket Mode" if settings.slack_app_token else "Events API at POST /slack/events"
        on.append(f"Slack ({how})")
    if settings.rocketchat_url and settings.rocketchat_token and settings.rocketchat_user_id:
        webhook = settings.rocketchat_webhook_token is not None
        ways = ["outgoing webhook at POST /rocketchat/webhook"] if webhook else []
        if settings.rocketchat_poll:
            ways.append("polling reactions" if webhook else "polling messages and reactions")
        how = ", ".join(ways) or "nothing: set RELEASEGATE_ROCKETCHAT_WEBHOOK_TOKEN or _POLL"
        on.append(f"Rocket.Chat at {settings.rocketchat_url} ({how})")
    return on


EXPIRY_ROUND = 5.0  # seconds between looks for pending requests whose time ran out
LEASE = 6.0  # seconds a dead replica's once-at-a-time loop waits to be taken over
SLACK_GROUPS_EVERY = 20.0  # seconds between readings of the policy's Slack user groups


def _expire_round(conversation: Conversation) -> float:
    for request_id in conversation.ctx.expire_due():
        log.info("request %s expired", request_id)
    for request_id in conversation.ctx.remind_unreviewed():
        log.info("break-glass %s is still unreviewed: its channel is reminded", request_id)
    return EXPIRY_ROUND


def _warm(conversation: Conversation) -> None:
    try:
        conversation.ctx.mirror.snapshot()
    except Exception:
        log.warning("could not fetch the repository yet", exc_info=True)
