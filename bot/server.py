"""`releasegate serve`: one HTTP server for Slack, Rocket.Chat, health and metrics.

Bolt's App is synchronous; its dispatch runs in a worker thread so the event
loop stays free, and Bolt acknowledges Slack before our handlers run.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from redis import Redis
from slack_bolt import App
from slack_bolt.adapter.starlette.handler import to_bolt_request, to_starlette_response
from starlette.applications import Starlette
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
        handler = None
        if slack is not None and settings.slack_app_token:
            from slack_bolt.adapter.socket_mode import SocketModeHandler

            handler = SocketModeHandler(slack, settings.slack_app_token.get_secret_value())
            await asyncio.to_thread(handler.connect)
            log.info("connected to Slack in Socket Mode")
        yield
        if handler is not None:
            await asyncio.to_thread(handler.close)

    routes = [
        Route("/slack/events", slack_events, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
