"""The scale of a real organisation: a policy of 500 apps over 1,000 pins.

It generates a GitOps repository like `scripts/bench.py`'s (10,000 files, 20,000 commits by
default) with 500 apps pinned in int and prd (int one version ahead), then measures through
the real conversation: `status` of every app (warm mirror), a release train of all 500 apps
filed (`deploy prd`, promoted from int), and `check-config` (every pin read).
Targets: status p99 <= 1 s, a train filed in <= 2 s.

    .venv/bin/python scripts/bench_scale.py [--apps N] [--files N] [--commits N] [--runs N]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench import generate, pct  # noqa: E402 - after the checkout is on sys.path
from redis import Redis  # noqa: E402 - after the checkout is on sys.path

from bot.check_config import check_config  # noqa: E402 - after the checkout is on sys.path
from bot.conversation import Conversation  # noqa: E402 - after the checkout is on sys.path
from bot.embedded_redis import EmbeddedRedis  # noqa: E402 - after the checkout is on sys.path
from bot.events import ChatEvent  # noqa: E402 - after the checkout is on sys.path
from config.policy import parse_policy  # noqa: E402 - after the checkout is on sys.path
from config.settings import Settings  # noqa: E402 - after the checkout is on sys.path
from workers.git.mirrors import Mirrors  # noqa: E402 - after the checkout is on sys.path


def policy_text(url: str, apps: int) -> str:
    pins = "".join(
        f"  app{n:03d}:\n    pins:\n"
        f"      int: [{{file: apps/app{n:03d}/values-int.yaml, yaml_path: image.tag}}]\n"
        f"      prd: [{{file: apps/app{n:03d}/values-prd.yaml, yaml_path: image.tag}}]\n"
        for n in range(apps)
    )
    return (
        f"repository: {{url: '{url}'}}\n"
        "environments:\n"
        '  int: {channels: ["shell:int"], deployers: ["shell:alice"]}\n'
        '  prd: {channels: ["shell:prd"], deployers: ["shell:alice"], promote_from: int,\n'
        '        approvers: ["shell:carol"], approvals: 1}\n'
        f"apps:\n{pins}"
    )


def said(conversation: Conversation, user: str, text: str) -> tuple[float, str]:
    event = ChatEvent(platform="shell", user=user, user_name=user, channel="prd", text=text)
    started = time.perf_counter()
    [reply] = conversation.handle(event)
    return time.perf_counter() - started, reply.text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--apps", type=int, default=500)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--commits", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rg-bench-scale-") as tmp:
        base = Path(tmp)
        remote = base / "remote.git"
        started = time.perf_counter()
        generate(remote, args.files, args.commits, apps=args.apps, int_tag="1.1.0")
        print(
            f"generated {args.files} files, {args.commits} commits, {args.apps} apps "
            f"in {time.perf_counter() - started:.1f}s"
        )
        server = EmbeddedRedis(base / "redis").start()
        redis = Redis.from_url(server.url)
        text = policy_text(remote.as_uri(), args.apps)
        policy = parse_policy(text)
        mirrors = Mirrors.of(policy, base / "work")
        conversation = Conversation(policy, redis, mirrors)
        first, answer = said(conversation, "bob", "status")
        last_app = f"app{args.apps - 1:03d}: int 1.1.0, prd 1.0.0"
        if last_app not in answer:
            raise SystemExit(f"status did not read every app: {answer[-300:]}")
        status = [said(conversation, "bob", "status")[0] for _ in range(args.runs)]
        trains = []
        for _ in range(max(3, args.runs // 4)):
            took, answer = said(conversation, "alice", "deploy prd")
            if "release train request" not in answer:
                raise SystemExit(f"no train was filed: {answer[:300]}")
            trains.append(took)
            request_id = answer.split("request ", 1)[1].split(" ", 1)[0]
            said(conversation, "alice", f"cancel {request_id}")
        policy_file = base / "policy.yaml"
        policy_file.write_text(text)
        os.environ.update(
            RELEASEGATE_POLICY=str(policy_file), RELEASEGATE_WORKDIR=str(base / "check")
        )
        checks = []
        for _ in range(2):
            started = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                code = check_config(Settings())
            checks.append(time.perf_counter() - started)
            if code != 0:
                raise SystemExit("check-config failed")
        mirrors.close()
        redis.close()
        server.stop()
    pins = args.apps * 2
    print(f"\n{args.apps} apps over {pins} pins, {args.runs} runs (ms):")
    print(f"{'what':46} {'measured':>24} {'target':>14}")
    print(f"{'status of every app: first (clone)':46} {first * 1000:24.0f} {'':>14}")
    status_line = f"{statistics.median(status) * 1000:.0f} / {pct(status, 99) * 1000:.0f}"
    print(f"{'status of every app, warm: p50 / p99':46} {status_line:>24} {'p99 <= 1000':>14}")
    train_line = f"{statistics.median(trains) * 1000:.0f} / {max(trains) * 1000:.0f}"
    print(f"{'deploy prd (a train of every app): p50 / max':46} {train_line:>24} {'<= 2000':>14}")
    check_line = " / ".join(f"{c * 1000:.0f}" for c in checks)
    print(f"{'check-config (first: clone; second: warm)':46} {check_line:>24} {'':>14}")


if __name__ == "__main__":
    main()
