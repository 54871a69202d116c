"""The delivery figures on /metrics and the chart's Grafana dashboard: counted in Redis, so
two bot replicas say the same; every dashboard expression names only what /metrics has, and
answers with numbers through a real Prometheus scraping `releasegate serve`."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from redis import Redis

from bot.conversation import Conversation
from bot.embedded_redis import EmbeddedRedis, free_port
from config.policy import Policy, parse_policy
from config.settings import Settings
from tests.conftest import Chat, eventually, run_worker
from tests.prometheus import Prometheus, start_prometheus
from tests.test_shipping import DEFAULTS, render
from tests.test_sweeper import kill_tree
from workers.git.mirrors import Mirrors
from workers.rollout import verify
from workers.state.store import RequestStore

DASHBOARD = (
    Path(__file__).parent.parent / "helm" / "releasegate" / "dashboards" / "releasegate.json"
)


def expressions() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel["targets"]]


def exposed(metrics_text: str) -> set[str]:
    """The sample names /metrics can have, from its TYPE lines (also for empty families)."""
    names = set()
    for line in metrics_text.splitlines():
        if found := re.match(r"# TYPE (\S+) (\S+)", line):
            name, kind = found.groups()
            # A counter's TYPE line already names its samples' `_total`.
            names |= {
                "histogram": {f"{name}_bucket", f"{name}_sum", f"{name}_count"},
            }.get(kind, {name})
    return names


def test_the_dashboard_is_a_configmap_for_grafanas_sidecar_when_enabled() -> None:
    assert not [k for k in render(DEFAULTS) if k.endswith("-dashboard")]
    objects = render(
        {**DEFAULTS, "dashboards": {"enabled": True, "annotations": {"grafana_folder": "Delivery"}}}
    )
    config = objects["ConfigMap/rg-releasegate-dashboard"]
    assert config["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config["metadata"]["annotations"] == {"grafana_folder": "Delivery"}
    dashboard = json.loads(config["data"]["releasegate-delivery.json"])
    titles = [p["title"] for p in dashboard["panels"]]
    for wanted in (
        "Deploys per day",
        "Lead time",
        "Change failure rate",
        "Time to restore",
        "Pending requests",
        "Approval wait",
        "Verification results",
    ):
        assert any(t.startswith(wanted) for t in titles), wanted


@pytest.fixture
def served(
    tmp_path: Path, policy_file: Path, redis_server: EmbeddedRedis, settings: Settings
) -> Iterator[list[str]]:
    """Two `releasegate serve` replicas on one Redis."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RELEASEGATE_")},
        "RELEASEGATE_POLICY": str(policy_file),
        "RELEASEGATE_REDIS_URL": redis_server.url,
        "RELEASEGATE_HTTP_HOST": "127.0.0.1",
    }
    ports = [free_port(), free_port()]
    # prd verifies with a web check of the first replica's /healthz: verification results too.
    verify = (
        "    verify:\n      metrics:\n        - name: smoke\n"
        f"          web: {{url: 'http://127.0.0.1:{ports[0]}/healthz'}}\n"
        "          interval: 1s\n"
    )
    anchor = "    approval_ttl: 2h\n"
    policy_file.write_text(policy_file.read_text().replace(anchor, anchor + verify))
    started = []
    for n, port in enumerate(ports):
        process = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "serve"],
            env={
                **env,
                "RELEASEGATE_HTTP_PORT": str(port),
                "RELEASEGATE_WORKDIR": str(tmp_path / f"s{n}"),
            },
            stdout=(tmp_path / f"serve-{n}.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        started.append((process, f"127.0.0.1:{port}"))
    try:
        for _process, where in started:

            def up(where: str = where) -> bool:
                try:
                    return httpx.get(f"http://{where}/metrics", timeout=2).status_code == 200
                except httpx.HTTPError:
                    return False

            assert eventually(up, 60), (tmp_path / "serve-0.log").read_text()[-2000:]
        yield [where for _process, where in started]
    finally:
        for process, _where in started:
            kill_tree(process.pid)
            process.wait()


def test_every_dashboard_expression_names_only_what_metrics_exposes(served: list[str]) -> None:
    answers: list[httpx.Response] = []

    def scraped() -> bool:  # a 503 says Redis did not answer in time (a busy host)
        answers.append(httpx.get(f"http://{served[0]}/metrics", timeout=5))
        return answers[-1].status_code == 200

    assert eventually(scraped, 30), answers[-1].text
    names = exposed(answers[-1].text)
    used = {n for e in expressions() for n in re.findall(r"\b(releasegate_[a-z_]+)", e)}
    assert used
    assert sorted(used - names) == []


def deliver(tmp_path: Path, policy: Policy, redis: Redis) -> None:
    """Deploys with approvals, and rollbacks a person asks for (change failures), each seen
    by a scrape before the next: a series counts from its second sample, as in production."""
    chat = Chat(Conversation(policy, redis, Mirrors.of(policy, tmp_path / "bot", freshness=0)))
    follower = Mirrors.of(policy, tmp_path / "follower", freshness=0)
    for version in ("2.1.0", "2.2.0"):
        request_id = chat.say("alice", "deploy-prd", f"deploy awesome {version} to prd").request_id
        chat.say("carol", "deploy-prd", "approve")
        run_worker(redis)

        def verified(request_id: str | None = request_id) -> bool:
            verify.verify_round(redis, lambda: policy, None, follower.snapshot)
            record = verify.load(redis, str(request_id))
            return record is not None and record.ended

        assert eventually(verified, 30)
        chat.say("alice", "deploy-prd", "rollback awesome in prd")
        chat.say("carol", "deploy-prd", "approve")
        run_worker(redis)
        time.sleep(2.5)
    chat.say("alice", "deploy-int", "deploy awesome 2.3.0 to int")
    chat.say("alice", "deploy-prd", "deploy awesome 2.3.0 to prd")  # left pending
    run_worker(redis)


def test_the_dashboards_queries_answer_through_prometheus_and_replicas_agree(
    served: list[str], tmp_path: Path, policy_file: Path, redis: Redis
) -> None:
    policy = parse_policy(policy_file.read_text())
    prometheus: Prometheus = start_prometheus(tmp_path / "prometheus", served[0], also=served[1:])
    try:

        def scraped() -> bool:
            return len(prometheus.value("releasegate_queue_depth")) == 2

        assert eventually(scraped, 30)
        deliver(tmp_path, policy, redis)
        assert RequestStore(redis).pending_all()
        time.sleep(3)  # a few scrapes after the deploys: increases Prometheus can see
        # Both replicas expose the same counts: they read them from Redis.
        series = prometheus.value('releasegate_delivery_deploys_total{env="prd",app="awesome"}')
        assert [s["value"][1] for s in series] == ["2", "2"]  # type: ignore[index]
        failures = prometheus.value("releasegate_delivery_change_failures_total")
        assert [s["value"][1] for s in failures] == ["2", "2"]  # type: ignore[index]
        for expr in expressions():
            promql = expr.replace("$env", ".*")
            answer = prometheus.value(promql)
            values = [float(s["value"][1]) for s in answer]  # type: ignore[index]
            assert values, promql
            assert any(math.isfinite(v) for v in values), (promql, values)
    finally:
        prometheus.stop()
