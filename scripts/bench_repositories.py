"""What reading two repositories costs `status`, against one, on repositories of real size.

It generates two GitOps repositories like `scripts/bench.py`'s (10,000 files and 20,000
commits each by default), then asks `status` (every app, every environment) through the
real conversation, first with a policy of one repository, then with the same apps' prd
pins split across both. Three numbers each: the first answer (the bot's first clone), a
warm answer (the mirror's head is fresh), and an answer that fetches every time (the
freshness bound at zero: the cost of asking the remote). Target: two repositories cost no
more than twice one; the mirrors fetch side by side, so it should be about once.

    .venv/bin/python scripts/bench_repositories.py [--files N] [--commits N] [--runs N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench import APPS, generate  # noqa: E402 - after the checkout is on sys.path
from redis import Redis  # noqa: E402 - after the checkout is on sys.path

from bot.conversation import Conversation  # noqa: E402 - after the checkout is on sys.path
from bot.embedded_redis import EmbeddedRedis  # noqa: E402 - after the checkout is on sys.path
from bot.events import ChatEvent  # noqa: E402 - after the checkout is on sys.path
from config.policy import parse_policy  # noqa: E402 - after the checkout is on sys.path
from workers.git.mirrors import Mirrors  # noqa: E402 - after the checkout is on sys.path


def policy_text(first: str, second: str | None) -> str:
    """Every app pinned in int and prd; with `second`, each prd pin has a twin there."""
    twin = "{repository: second, file: apps/app%03d/values-prd.yaml, yaml_path: image.tag}"
    pins = "".join(
        f"  app{n:03d}:\n    pins:\n"
        f"      int: [{{file: apps/app{n:03d}/values-int.yaml, yaml_path: image.tag}}]\n"
        f"      prd: [{{file: apps/app{n:03d}/values-prd.yaml, yaml_path: image.tag}}"
        + (f", {twin % n}" if second else "")
        + "]\n"
        for n in range(APPS)
    )
    repositories = f"repositories:\n  first: {{url: '{first}'}}\n"
    if second:
        repositories += f"  second: {{url: '{second}'}}\n"
    apps = pins.replace("    pins:\n", "    repository: first\n    pins:\n")
    return (
        repositories + "environments:\n"
        '  int: {channels: ["shell:int"], deployers: ["shell:alice"]}\n'
        '  prd: {channels: ["shell:prd"], deployers: ["shell:alice"]}\n'
        f"apps:\n{apps}"
    )


def status(conversation: Conversation) -> float:
    event = ChatEvent(platform="shell", user="bob", user_name="bob", channel="prd", text="status")
    started = time.perf_counter()
    [reply] = conversation.handle(event)
    elapsed = time.perf_counter() - started
    if "app049: int 1.0.0, prd 1.0.0" not in reply.text:
        raise SystemExit(f"status did not read every app: {reply.text[-300:]}")
    return elapsed


def measure(
    text: str, workdir: Path, redis: Redis, runs: int
) -> tuple[float, list[float], list[float]]:
    policy = parse_policy(text)
    warm_mirrors = Mirrors.of(policy, workdir / "warm")
    warm = Conversation(policy, redis, warm_mirrors)
    first = status(warm)
    warm_times = [status(warm) for _ in range(runs)]
    fetching_mirrors = Mirrors.of(policy, workdir / "warm", freshness=0)
    fetching = Conversation(policy, redis, fetching_mirrors)
    fetch_times = [status(fetching) for _ in range(runs)]
    warm_mirrors.close()
    fetching_mirrors.close()
    return first, warm_times, fetch_times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--commits", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rg-bench-repos-") as tmp:
        base = Path(tmp)
        print(f"generating two repositories of {args.files} files, {args.commits} commits ...")
        for name in ("first", "second"):
            generate(base / f"{name}.git", args.files, args.commits)
        server = EmbeddedRedis(base / "redis").start()
        redis = Redis.from_url(server.url)
        urls = [(base / f"{name}.git").as_uri() for name in ("first", "second")]
        results = {}
        for label, second in (("one repository", None), ("two repositories", urls[1])):
            workdir = base / label.replace(" ", "-")
            results[label] = measure(policy_text(urls[0], second), workdir, redis, args.runs)
        redis.close()
        server.stop()
    print(f"\n`status` of {APPS} apps in 2 environments, {args.runs} runs each (ms):")
    print(f"{'':18} {'first (clone)':>14} {'warm p50':>9} {'warm max':>9} {'fetch p50':>10}")
    for label, (first, warm, fetch) in results.items():
        print(
            f"{label:18} {first * 1000:14.0f} {statistics.median(warm) * 1000:9.1f} "
            f"{max(warm) * 1000:9.1f} {statistics.median(fetch) * 1000:10.1f}"
        )
    one, two = results["one repository"], results["two repositories"]
    ratio = statistics.median(two[2]) / statistics.median(one[2])
    print(f"two against one, fetching every time: {ratio:.2f}x (target: at most 2x)")


if __name__ == "__main__":
    main()
