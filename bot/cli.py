"""The `releasegate` command line."""

from __future__ import annotations

import argparse
import gc
import getpass
import logging
import os
import socket
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from config.errors import PolicyError, ReleasegateError
from config.policy import Policy, load_policy
from config.settings import Settings
from workers.logs import setup_logging

if TYPE_CHECKING:
    from redis import Redis

    from bot.conversation import Conversation
    from bot.platforms.shell import ShellChat
    from workers.git.mirrors import Mirrors

log = logging.getLogger("releasegate")


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from bot.server import create_app

    conversation = _conversation(settings)
    _check_redis(conversation.store.redis)
    app = create_app(settings, conversation.policy, conversation.store.redis, conversation)
    # Hand the GIL over every 2 ms instead of 5: an acknowledgement is a few lines of Python
    # and must not wait long behind a chat answer being computed on another thread.
    sys.setswitchinterval(0.002)
    # What is loaded by now (modules, the policy, the app) lives as long as the process: kept
    # out of the collector's sweeps, a full sweep no longer stalls every thread for tens of
    # milliseconds, acknowledgements included.
    gc.collect()
    gc.freeze()
    # Bind first: a port in use (or not ours to take) is one line, and "listening" is said
    # only once it is true.
    where = f"{settings.http_host}:{settings.http_port}"
    try:
        sock = socket.create_server(
            (settings.http_host, settings.http_port), family=_family(settings.http_host)
        )
    except OSError as exc:
        raise ReleasegateError(
            f"cannot listen on {where} (RELEASEGATE_HTTP_HOST, RELEASEGATE_HTTP_PORT): "
            f"{os.strerror(exc.errno) if exc.errno else exc}"
        ) from exc
    log.info("listening on http://%s (RELEASEGATE_HTTP_HOST, RELEASEGATE_HTTP_PORT)", where)
    config = uvicorn.Config(app, log_config=None)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def _mirrors(policy: Policy, settings: Settings, redis: Redis) -> Mirrors:
    """The bot's mirrors, each told at once when its repository's push lane pushed."""
    from workers.git.mirrors import Mirrors
    from workers.state.lane import Lane, lane_name

    return Mirrors.of(
        policy,
        settings.workdir,
        access=settings.git_access(),
        pushed=lambda repo: Lane(redis, lane_name(repo)).pushed,
    )


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _check_redis(redis: Redis) -> None:
    """Before serving: a Redis that refuses us (a database it does not have, a wrong password)
    is a setting to fix, said once (`main` prints it); one not reachable yet is waited for,
    as every loop of the bot does, and said in one line."""
    try:
        redis.ping()
    except RedisConnectionError as exc:
        log.warning("cannot reach Redis yet (RELEASEGATE_REDIS_URL): %s; waiting for it", exc)


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    from workers import runner

    return runner.run(settings, burst=args.burst)


def _this_command() -> str:
    """How the person runs this releasegate again: the script they ran (`.venv/bin/releasegate`
    is not on everyone's PATH), else this Python with the module."""
    script = sys.argv[0] if sys.argv else ""
    if Path(script).name == "releasegate":
        return script
    return f"{sys.executable} -m bot.cli"


def _shell_chat(settings: Settings, user: str, channel: str) -> ShellChat:
    from bot.platforms.shell import ShellChat

    conversation = _conversation(settings)
    return ShellChat(conversation, conversation.store.redis, sys.stdout, user, channel)


def _conversation(settings: Settings) -> Conversation:
    """The conversation every chat front end of this process answers through."""
    from bot.conversation import Conversation
    from workers.artifacts.resolve import Resolver
    from workers.state.connection import connect

    policy = load_policy(settings.policy)
    redis = connect(settings)
    return Conversation(
        policy,
        redis,
        _mirrors(policy, settings, redis),
        retention=settings.retention,
        resolver=Resolver.from_settings(settings),
    )


def _chat_in_terminal(chat: ShellChat, directory: Path) -> int:
    """Interactive with history at a terminal, else a script read from stdin; the logs go to
    a file in `directory`, never into the conversation."""
    directory.mkdir(parents=True, exist_ok=True)
    log_file = directory / "releasegate.log"
    setup_logging("text", logging.INFO, path=log_file)
    if sys.stdin.isatty():
        print(f"log: {log_file}")
        from bot.demo import HISTORY

        chat.run_interactive(history=directory / HISTORY)
        return 0
    return 0 if chat.run_script(sys.stdin) else 1


def _shell(args: argparse.Namespace, settings: Settings) -> int:
    chat = _shell_chat(settings, args.as_user or getpass.getuser(), args.channel or "")
    return _chat_in_terminal(chat, settings.workdir)


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from bot import demo
    from bot.embedded_redis import EmbeddedRedis
    from workers.git.env import redact_url

    directory = Path(args.dir).resolve()
    metrics = demo.serve_metrics(directory / "remote.git")
    metrics_url = f"http://127.0.0.1:{metrics.server_port}"
    policy = demo.prepare(directory, metrics_url)
    env = {
        **os.environ,
        "RELEASEGATE_POLICY": str(policy),
        "RELEASEGATE_WORKDIR": str(directory / "work"),
        "RELEASEGATE_LOG_FORMAT": "text",
        # The demo is local and its embedded Redis has a password of its own; one given in
        # RELEASEGATE_REDIS_URL is the person's to choose.
        "RELEASEGATE_REDIS_WITHOUT_PASSWORD": "true",
    }
    with ExitStack() as stack:
        if not settings.redis_url:
            redis = stack.enter_context(EmbeddedRedis(directory / "redis"))
            env["RELEASEGATE_REDIS_URL"] = redis.url
        stack.callback(metrics.shutdown)
        worker = demo.start_worker(env, directory / "worker.log")
        stack.callback(demo.stop, worker)
        os.environ.update(env)
        chat = _shell_chat(Settings(), args.as_user, args.channel)
        remote = directory / "remote.git"
        print(f"demo GitOps remote: {remote} (its history: git -C {remote} log)")
        environments = demo.environments_of(remote)
        print(f"demo environments remote: {environments} (git -C {environments} log)")
        source = demo.source_of(remote)
        print(f"demo source of awesome: {source} (its tags are the versions: git -C {source} tag)")
        shown = redact_url(env["RELEASEGATE_REDIS_URL"])
        print(
            f"demo Redis: {shown} (its audit trail: /audit here, or "
            f"RELEASEGATE_REDIS_URL='<the URL>' {_this_command()} audit)"
        )
        print(
            f"demo metrics for prd's verification: {metrics_url}/api/v1/query (Prometheus' "
            f"query API; awesome {', '.join(sorted(demo.BROKEN))} serves errors)"
        )
        print(f"worker log: {directory / 'worker.log'}")
        return _chat_in_terminal(chat, directory)
    return 1


def _check_config(args: argparse.Namespace, settings: Settings) -> int:
    from bot.check_config import check_config

    return check_config(settings)


def _healthcheck(args: argparse.Namespace, settings: Settings) -> int:
    """For Kubernetes exec probes: the policy loads, Redis answers, and (--worker) this host's
    RQ worker sent a heartbeat recently."""
    import socket
    from datetime import UTC, datetime, timedelta

    from rq import Worker

    from workers.state.connection import connect
    from workers.state.queue import job_queue

    load_policy(settings.policy)
    redis = connect(settings)
    redis.ping()
    if args.worker:
        host = socket.gethostname()
        recent = datetime.now(UTC) - timedelta(seconds=args.max_age)
        beats = [
            w.last_heartbeat.replace(tzinfo=UTC)
            for w in Worker.all(queue=job_queue(redis))
            if w.hostname == host and w.last_heartbeat
        ]
        alive = [beat for beat in beats if beat > recent]
        if not alive:
            print(f"no RQ worker on {host} sent a heartbeat in {args.max_age}s", file=sys.stderr)
            return 1
    print("ok")
    return 0


def _audit(args: argparse.Namespace, settings: Settings) -> int:
    from workers.git.env import redact_url
    from workers.state import audit
    from workers.state.connection import DEFAULT_REDIS_URL, connect

    url = settings.redis_url.get_secret_value() if settings.redis_url else DEFAULT_REDIS_URL
    entries = audit.read(connect(settings), args.count)
    print(f"audit trail in {redact_url(url)} (RELEASEGATE_REDIS_URL), oldest first:")
    for entry in entries:
        print(entry.line())
    if not entries:
        print("no audit entries yet: requests, approvals, locks and outcomes appear here")
    return 0


def _report(args: argparse.Namespace, settings: Settings) -> int:
    """The delivery figures, computed from the GitOps repositories' history alone."""
    from datetime import UTC, datetime

    from config.errors import ReleasegateError
    from config.policy import load_policy
    from workers.git.mirrors import Mirrors
    from workers.records import figures
    from workers.records.report import picture, report

    policy = load_policy(settings.policy)
    now = datetime.now(UTC)
    try:
        since = figures.window(args.since, now)
    except ValueError as exc:
        print(f"releasegate report: --since: {exc}", file=sys.stderr)
        return 2
    for name, known in (("env", policy.environments), ("app", policy.apps)):
        wanted = getattr(args, name)
        if wanted is not None and wanted not in known:
            print(f"releasegate report: --{name}: the policy has no {wanted!r}", file=sys.stderr)
            return 2
    mirrors = Mirrors.of(policy, settings.workdir, access=settings.git_access(), freshness=0)
    try:
        text = report(policy, mirrors, since, now, env=args.env, app=args.app, form=args.format)
        if args.png is not None:
            picture(policy, mirrors, since, now, args.png, env=args.env, app=args.app)
    except ReleasegateError as exc:
        print(f"releasegate report: {exc}", file=sys.stderr)
        return 1
    finally:
        mirrors.close()
    print(text)
    return 0


def _positive(text: str) -> int:
    if not text.isascii() or not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return int(text)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("releasegate")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "(not installed)"


SETTINGS_HINT = (
    "Settings are RELEASEGATE_* environment variables: RELEASEGATE_POLICY names the policy "
    "file (default releasegate.yaml), RELEASEGATE_REDIS_URL the Redis. Every setting is in "
    "docs/running.md; the policy file in docs/policy.md."
)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="releasegate", description=__doc__, epilog=SETTINGS_HINT)
    root.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = root.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve", help="serve Slack, Rocket.Chat, health and metrics", epilog=SETTINGS_HINT
    )
    serve.set_defaults(run=_serve)
    worker = commands.add_parser(
        "worker", help="run an RQ worker for the deploy queue", epilog=SETTINGS_HINT
    )
    worker.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    worker.set_defaults(run=_worker)
    shell = commands.add_parser("shell", help="chat with releasegate in this terminal")
    shell.add_argument("--as", dest="as_user", help="who you are (default: your login)")
    shell.add_argument("--channel", help="the channel you are in")
    shell.set_defaults(run=_shell)
    demo = commands.add_parser("demo", help="try releasegate with nothing set up")
    demo.add_argument("--dir", default="releasegate-demo", help="where the demo lives")
    demo.add_argument("--as", dest="as_user", default="alice")
    demo.add_argument("--channel", default="deploy-int")
    demo.set_defaults(run=_demo)
    check = commands.add_parser(
        "check-config", help="validate the policy against the repository", epilog=SETTINGS_HINT
    )
    check.set_defaults(run=_check_config)
    health = commands.add_parser("healthcheck", help="exit 0 when this process can work")
    health.add_argument("--worker", action="store_true", help="also require a live local worker")
    health.add_argument("--max-age", type=int, default=120, help="heartbeat age in seconds")
    health.set_defaults(run=_healthcheck)
    audit = commands.add_parser("audit", help="print the audit trail, oldest first")
    audit.add_argument("-n", "--count", type=_positive, default=100, help="how many entries")
    audit.set_defaults(run=_audit)
    report = commands.add_parser(
        "report",
        help="deploys, lead time, change failure rate and time to restore, from Git",
        epilog=SETTINGS_HINT,
    )
    report.add_argument("--since", default="30d", help="how far back: 30d, 12h, 2w (30d)")
    report.add_argument("--env", help="one environment")
    report.add_argument("--app", help="one app")
    report.add_argument("--format", choices=["table", "csv", "json"], default="table")
    report.add_argument(
        "--png", type=Path, help="also draw deploys per week and lead time into this file"
    )
    report.set_defaults(run=_report)
    return root


def _settings() -> Settings | None:
    """The settings, or None after one line per bad variable (never a traceback)."""
    try:
        settings = Settings()
    except ValidationError as exc:
        for error in exc.errors():
            name = "RELEASEGATE_" + "_".join(str(p) for p in error["loc"]).upper()
            print(f"releasegate: {name}: {error['msg']}", file=sys.stderr)
        return None
    url = settings.redis_url.get_secret_value() if settings.redis_url else None
    if url is not None:
        problem = _redis_url_problem(url)
        if problem:
            print(f"releasegate: RELEASEGATE_REDIS_URL: {problem}", file=sys.stderr)
            return None
    return settings


def _unguarded_redis(settings: Settings) -> str | None:
    """Why the bot and the workers will not use a Redis without a password, unless the
    settings say it is deliberate: whoever can write to it can approve any deploy."""
    from urllib.parse import parse_qs, urlsplit

    if settings.redis_without_password:
        return None
    url = settings.redis_url.get_secret_value() if settings.redis_url else ""
    parts = urlsplit(url)
    if parts.password or parse_qs(parts.query).get("password"):
        return None
    return (
        "RELEASEGATE_REDIS_URL names no password, and whoever can write to this Redis can "
        "approve any deploy. Give one (redis://:PASSWORD@HOST:6379/0, or an ACL user: "
        "redis://releasegate:PASSWORD@HOST:6379/0), or set "
        "RELEASEGATE_REDIS_WITHOUT_PASSWORD=true where nothing else can reach it"
    )


def _redis_url_problem(url: str) -> str | None:
    """Why a Redis URL cannot work, found before anything connects (never echoing it: it may
    hold a password)."""
    from urllib.parse import urlsplit

    if not url.startswith(("redis://", "rediss://", "unix://")):
        return "expected a URL like redis://HOST:6379/0"
    if url.startswith("unix://"):
        return None
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - reading it is the check: urllib raises for a bad port
    except ValueError:
        return "its port is not a number from 1 to 65535 (redis://HOST:6379/0)"
    database = parts.path.strip("/")
    if database and not database.isdigit():
        return f"the database {database!r} is not a number (redis://HOST:6379/0)"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    settings = _settings()
    if settings is None:
        return 2
    if args.command in ("serve", "worker") and (problem := _unguarded_redis(settings)):
        print(f"releasegate: {problem}", file=sys.stderr)
        return 2
    if args.command in ("serve", "worker", "shell", "check-config"):
        try:
            settings.workdir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            print(
                f"releasegate: RELEASEGATE_WORKDIR: cannot create {settings.workdir}: "
                f"{exc.strerror}",
                file=sys.stderr,
            )
            return 2
    setup_logging(
        settings.log_format, logging.WARNING if args.command in ("shell", "demo") else logging.INFO
    )
    try:
        return int(args.run(args, settings))
    except PolicyError as exc:
        print(f"releasegate: {exc}", file=sys.stderr)
        return 2
    except ReleasegateError as exc:
        print(f"releasegate: {exc}", file=sys.stderr)
        return 1
    except RedisConnectionError as exc:
        print(f"releasegate: cannot reach Redis (RELEASEGATE_REDIS_URL): {exc}", file=sys.stderr)
        return 1
    except RedisError as exc:  # it answered, and said no (a database it does not have)
        print(f"releasegate: Redis refused (RELEASEGATE_REDIS_URL): {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
