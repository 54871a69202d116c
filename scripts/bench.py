"""How fast the chat request path answers, and how long an approved deploy takes to land.

Slack wants an answer within 3 seconds. The request path only parses, checks,
reads the warm clone (one incremental fetch) and writes to Redis; this
measures it on the demo repository with a local remote and an embedded
Redis, then times approval-to-push through a real RQ worker.

    .venv/bin/python scripts/bench.py [ROUNDS]
"""

from __future__ import annotations

import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from redis import Redis
from rq import SimpleWorker
from rq.serializers import JSONSerializer

from bot.conversation import Conversation
from bot.demo import prepare
from bot.embedded_redis import EmbeddedRedis
from bot.events import ChatEvent
from config.policy import load_policy
from workers.gitops import Checkout
from workers.queue import deploy_queue


def event(user: str, channel: str, text: str) -> ChatEvent:
    return ChatEvent(platform="shell", user=user, user_name=user, channel=channel, text=text)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main(rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "redis") as server:
        policy_path = prepare(Path(tmp) / "demo")
        os.environ["RELEASEGATE_POLICY"] = str(policy_path)  # the worker reads these
        os.environ["RELEASEGATE_REDIS_URL"] = server.url
        os.environ["RELEASEGATE_WORKDIR"] = str(Path(tmp) / "work")
        policy = load_policy(policy_path)
        redis = Redis.from_url(server.url)
        chat = Conversation(
            policy, redis, Checkout(policy.repository, Path(tmp) / "work", name="bot")
        )
        chat.handle(event("alice", "deploy-prd", "status"))  # warm the clone once

        timings: dict[str, list[float]] = {"status": [], "deploy request": [], "approve": []}
        to_push: list[float] = []
        for i in range(rounds):
            started = time.perf_counter()
            chat.handle(event("bob", "deploy-prd", "status prd"))
            timings["status"].append(time.perf_counter() - started)

            started = time.perf_counter()
            [reply] = chat.handle(event("alice", "deploy-prd", f"deploy awesome 3.0.{i} to prd"))
            timings["deploy request"].append(time.perf_counter() - started)
            if not reply.request_id:
                raise SystemExit(f"the deploy request was refused: {reply.text}")

            started = time.perf_counter()
            chat.handle(event("carol", "deploy-prd", f"approve {reply.request_id}"))
            timings["approve"].append(time.perf_counter() - started)

            approved = time.perf_counter()
            SimpleWorker([deploy_queue(redis)], connection=redis, serializer=JSONSerializer).work(
                burst=True, logging_level="WARNING"
            )
            to_push.append(time.perf_counter() - approved)

        print(f"{rounds} rounds on the demo repository (local remote, embedded Redis)")
        print(f"{'step':22} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
        for name, values in [*timings.items(), ("approval to push", to_push)]:
            ms = [v * 1000 for v in values]
            print(
                f"{name:22} {statistics.median(ms):8.1f} {percentile(ms, 95):8.1f} {max(ms):8.1f}"
            )
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak memory of this process: {peak:.0f} MiB")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 30)
