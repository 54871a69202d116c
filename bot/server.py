"""`releasegate serve`: one HTTP server for Slack, Rocket.Chat, health and metrics.

Bolt's App is synchronous; its dispatch runs in a worker thread so the event
loop stays free, and Bolt acknowledges Slack before our handlers run.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from redis import Redis
from slack_bolt import App
from slack_bolt.adapter.starlette.handler import to_bolt_request, to_starlette_response
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot.conversation import Conversation
from config.policy import Policy
from config.settings import Settings
from workers.metrics import APPROVALS, REFUSALS, REQUESTS, RedisCollector
from workers.queue import deploy_queue

log = logging.getLogger(__name__)


def create_app(
    settings: Settings, policy: Policy, redis: Redis, conversation: Conversation
) -> Starlette:
    slack: App | None = None
    if settings.slack_bot_token and settings.slack_signing_secret:
        from bot.platforms.slack import slack_app

        slack = slack_app(settings, conversation)

    async def slack_events(request: Request) -> Response:
        if slack is None:
            return JSONResponse({"error": "Slack is not configured"}, status_code=404)
        body = await request.body()
        bolt_response = await asyncio.to_thread(slack.dispatch, to_bolt_request(request, body))
        return to_starlette_response(bolt_response)

    registry = CollectorRegistry()
    for collector in (REQUESTS, REFUSALS, APPROVALS):
        registry.register(collector)
    registry.register(RedisCollector(redis, lambda: deploy_queue(redis).count))

    async def metrics(request: Request) -> Response:
        body = await asyncio.to_thread(generate_latest, registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    rocketchat = None
    if settings.rocketchat_url and settings.rocketchat_token and settings.rocketchat_user_id:
        from bot.platforms.rocketchat import RocketChatAdapter
        from workers.rocketchat_api import RocketChatPoster

        poster = RocketChatPoster(settings.rocketchat_url, settings.rocketchat_user_id,
                                  settings.rocketchat_token.get_secret_value())  # fmt: skip
        rocketchat = RocketChatAdapter(conversation, poster, redis, settings.rocketchat_user_id)

    async def rocketchat_webhook(request: Request) -> Response:
        expected = settings.rocketchat_webhook_token
        if rocketchat is None or expected is None:
            return JSONResponse({"error": "Rocket.Chat webhook is not configured"}, status_code=404)
        try:
            payload = await request.json()
        except ValueError:
            return JSONResponse({"error": "expected JSON"}, status_code=400)
        token = payload.get("token") if isinstance(payload, dict) else None
        if not isinstance(token, str) or not token:
            return JSONResponse({"error": "missing token"}, status_code=401)
        if not hmac.compare_digest(token.encode(), expected.get_secret_value().encode()):
            return JSONResponse({"error": "wrong token"}, status_code=403)
        # Answer at once; the conversation (and its Git read) runs after the response.
        task = BackgroundTask(asyncio.to_thread, rocketchat.on_webhook, payload)
        return JSONResponse({}, background=task)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        try:
            await asyncio.to_thread(redis.ping)
        except Exception as exc:
            log.warning("not ready: Redis unreachable: %s", exc)
            return JSONResponse({"status": "redis unreachable"}, status_code=503)
        return JSONResponse({"status": "ready", "apps": len(policy.apps)})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        stop = threading.Event()
        if rocketchat is not None and settings.rocketchat_poll:
            # Without a webhook, poll for messages too; with one, only for reactions.
            messages_too = settings.rocketchat_webhook_token is None
            threading.Thread(target=rocketchat.run, args=(stop, messages_too),
                             name="rocketchat-poller", daemon=True).start()  # fmt: skip
        handler = None
        if slack is not None and settings.slack_app_token:
            from slack_bolt.adapter.socket_mode import SocketModeHandler

            handler = SocketModeHandler(slack, settings.slack_app_token.get_secret_value())
            await asyncio.to_thread(handler.connect)
            log.info("connected to Slack in Socket Mode")
        yield
        stop.set()
        if handler is not None:
            await asyncio.to_thread(handler.close)

    routes = [
        Route("/slack/events", slack_events, methods=["POST"]),
        Route("/rocketchat/webhook", rocketchat_webhook, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
