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
import logging
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from functools import partial

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from redis import Redis
from redis.exceptions import RedisError
from slack_bolt import App
from slack_bolt.adapter.starlette.handler import to_bolt_request, to_starlette_response
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot import messages
from bot.conversation import Conversation
from bot.executor import BoundedExecutor
from bot.limits import BodyLimit
from bot.outbox import OutboxConsumer
from bot.rollouts import live_lines, offer_rollback
from config.policy import Policy
from config.settings import Settings
from workers.metrics import APPROVALS, REFUSALS, REQUESTS, RedisCollector
from workers.queue import deploy_queue
from workers.supervisor import Supervisor

log = logging.getLogger(__name__)


def create_app(
    settings: Settings, policy: Policy, redis: Redis, conversation: Conversation
) -> Starlette:
    executor = BoundedExecutor()
    offer = partial(offer_rollback, conversation)
    if conversation.ctx.live is None:
        conversation.ctx.live = partial(live_lines, conversation, settings)
    dispatcher = ThreadPoolExecutor(max_workers=16, thread_name_prefix="http")
    supervisor = Supervisor()
    consumers: list[OutboxConsumer] = []
    checks: list[tuple[str, Callable[[], float]]] = []

    slack: App | None = None
    if settings.slack_bot_token and settings.slack_signing_secret:
        from bot.platforms.slack import slack_app
        from bot.platforms.slack_api import SlackPoster

        slack = slack_app(settings, conversation, executor)
        poster = SlackPoster(settings.slack_bot_token.get_secret_value(), settings.slack_api_url)
        consumers.append(OutboxConsumer(redis, "slack", poster, offer_rollback=offer))

        def slack_answers() -> float:
            """For `/readyz`: Slack's API takes our token (checked hourly once it does)."""
            poster.check_token()
            return 3600.0

        checks.append(("slack-api", slack_answers))

    async def slack_events(request: Request) -> Response:
        if slack is None:
            return JSONResponse({"error": "Slack is not configured"}, status_code=404)
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

    registry = CollectorRegistry()
    for collector in (REQUESTS, REFUSALS, APPROVALS):
        registry.register(collector)
    registry.register(RedisCollector(redis, lambda: deploy_queue(redis).count))

    async def metrics(request: Request) -> Response:
        try:
            body = await asyncio.to_thread(generate_latest, registry)
        except RedisError as exc:  # the cluster-wide counters live there
            log.warning("metrics unavailable: Redis unreachable: %s", exc)
            return JSONResponse({"error": "Redis unreachable"}, status_code=503)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    rocketchat = None
    if settings.rocketchat_url and settings.rocketchat_token and settings.rocketchat_user_id:
        from bot.platforms.rocketchat import RocketChatAdapter
        from bot.platforms.rocketchat_api import RocketChatPoster

        rc_poster = RocketChatPoster(settings.rocketchat_url, settings.rocketchat_user_id,
                                     settings.rocketchat_token.get_secret_value())  # fmt: skip
        rocketchat = RocketChatAdapter(conversation, rc_poster, redis, settings.rocketchat_user_id)
        consumers.append(OutboxConsumer(redis, "rocketchat", rc_poster, offer_rollback=offer))

    async def rocketchat_webhook(request: Request) -> Response:
        expected = settings.rocketchat_webhook_token
        if rocketchat is None or expected is None:
            return JSONResponse({"error": "Rocket.Chat webhook is not configured"}, status_code=404)
        try:
            payload = await request.json()
        except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested to exhaustion
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

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        try:
            await asyncio.to_thread(redis.ping)
        except Exception as exc:
            log.warning("not ready: Redis unreachable: %s", exc)
            return JSONResponse({"status": "redis unreachable"}, status_code=503)
        if down := supervisor.down():
            return JSONResponse({"status": "loops down", "loops": down}, status_code=503)
        return JSONResponse({"status": "ready", "apps": len(policy.apps)})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        stop = threading.Event()
        on = platforms(settings)
        if on:
            log.info("chat platforms: %s", "; ".join(on))
        else:
            log.warning("no chat platform is configured (set RELEASEGATE_SLACK_BOT_TOKEN and "
                        "_SIGNING_SECRET, or RELEASEGATE_ROCKETCHAT_URL, _USER_ID and _TOKEN): "
                        "only /healthz, /readyz and /metrics answer")  # fmt: skip
        log.info("policy: %d apps in %d environments", len(policy.apps), len(policy.environments))
        # Fetch the repository now, so the first chat answer does not wait for a clone.
        threading.Thread(target=_warm, args=(conversation,), name="git-warm", daemon=True).start()
        for name, check in checks:
            supervisor.start(name, check, stop)
        supervisor.start("expiry", partial(_expire_round, conversation), stop)
        for consumer in consumers:
            supervisor.start(f"outbox-{consumer.stream.rsplit(':', 1)[-1]}", consumer.step, stop)
        if rocketchat is not None:
            supervisor.start("rocketchat-ids", rocketchat.resolve_step, stop)
        if rocketchat is not None and settings.rocketchat_poll:
            # Without a webhook, poll for messages too; with one, only for reactions.
            messages_too = settings.rocketchat_webhook_token is None
            supervisor.start("rocketchat-poller", partial(rocketchat.step, messages_too), stop)
        handler = None
        if slack is not None and settings.slack_app_token:
            from slack_bolt.adapter.socket_mode import SocketModeHandler

            handler = SocketModeHandler(slack, settings.slack_app_token.get_secret_value())
            await asyncio.to_thread(handler.connect)
            log.info("connected to Slack in Socket Mode")
        yield
        stop.set()
        for thread in supervisor.threads:  # each round ends within a second
            await asyncio.to_thread(thread.join, 5)
        if handler is not None:
            await asyncio.to_thread(handler.close)
        executor.shutdown(wait=False)
        dispatcher.shutdown(wait=False)

    routes = [
        Route("/slack/events", slack_events, methods=["POST"]),
        Route("/rocketchat/webhook", rocketchat_webhook, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    return app


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


def _expire_round(conversation: Conversation) -> float:
    for request_id in conversation.ctx.expire_due():
        log.info("request %s expired", request_id)
    return EXPIRY_ROUND


def _warm(conversation: Conversation) -> None:
    try:
        conversation.ctx.mirror.snapshot()
    except Exception as exc:
        log.warning("could not fetch the repository yet: %s", exc)
