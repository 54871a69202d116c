"""The command line as a user meets it: the demo, the shell and check-config, as processes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from redis import Redis

from bot.embedded_redis import EmbeddedRedis, free_port
from tests.conftest import Remote, eventually, git
from workers.git.env import redact_url

CONVERSATION = """\
/as alice
/in deploy-int
deploy awesome 2.1.0 to int
/in deploy-prd
deploy awesome 2.1.0 to prd
approve
/as bob
approve
/as carol
approve
status prd
"""


def releasegate(
    *args: str, stdin: str = "", env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RELEASEGATE_")}
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**clean, **(env or {})},
        cwd=cwd,
        timeout=180,
    )


def settings_env(policy_file: Path, redis_url: str, workdir: Path, **more: str) -> dict[str, str]:
    """The RELEASEGATE_* variables a process needs here (policy, Redis, work folder), and more."""
    return {
        "RELEASEGATE_POLICY": str(policy_file),
        "RELEASEGATE_REDIS_URL": redis_url,
        "RELEASEGATE_WORKDIR": str(workdir),
        **{f"RELEASEGATE_{k}": v for k, v in more.items()},
    }


def test_the_demo_runs_the_whole_flow_from_stdin(tmp_path: Path) -> None:
    demo_dir = tmp_path / "demo"
    done = releasegate("demo", "--dir", str(demo_dir), stdin=CONVERSATION)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert f"demo GitOps remote: {demo_dir / 'remote.git'}" in out
    assert "queued: awesome: 2.0.0 -> 2.1.0 (int)" in out
    assert "no worker is running" not in out  # its own worker was only starting
    assert "[deploy-int] releasegate (worker): R" in out
    assert "needs 1 approval from group:release-managers" in out
    assert "+    newTag: 2.1.0" in out
    assert "the requester cannot approve their own request" in out
    assert "bob may not approve deploys to prd" in out
    assert "approved by carol (1/1); queued" in out
    # int's outcome, prd's, and prd's verification against the demo's metrics.
    assert out.count("releasegate (worker): R") == 3
    assert "✅ verified in prd: awesome error-rate: 0.01 (0 of 3 failed)" in out
    assert "awesome: prd 2.1.0 (verified " in out
    remote = Remote(demo_dir / "remote.git")
    assert remote.count() == 3
    assert "Approved-by: shell:carol" in remote.message()
    assert b"newTag: 2.1.0" in remote.file("env/prd/kustomization.yml")


def test_the_demo_can_be_run_again_in_the_same_place_and_says_it_starts_over(
    tmp_path: Path,
) -> None:
    runs = []
    for _ in range(2):
        done = releasegate("demo", "--dir", str(tmp_path / "demo"), stdin="status\n")
        assert done.returncode == 0, done.stderr
        assert "awesome: int 2.0.0, prd 2.0.0" in done.stdout
        runs.append(done.stdout)
    assert "replacing the earlier demo" not in runs[0]
    assert f"replacing the earlier demo in {tmp_path / 'demo'}" in runs[1]
    policy = (tmp_path / "demo" / "policy.yaml").read_text()
    assert "repository's url\n# to the file:// URL" in policy  # the comment left alone
    assert f"url: {(tmp_path / 'demo' / 'remote.git').as_uri()}" in policy


def trailer(message: str, key: str) -> str | None:
    found = re.search(rf"^{key}: (.+)$", message, re.MULTILINE)
    return found.group(1) if found else None


RELEASE_TRAIN = """\
/as alice
/in deploy-int
deploy awesome 2.1.0-rc1 to int
/in deploy-prd
deploy awesome 2.2.0 to prd
deploy production
/as carol
approve
status
"""


def test_the_demo_runs_the_seeds_release_train(tmp_path: Path) -> None:
    """int runs a release candidate; `deploy production` promotes its final version."""
    done = releasegate("demo", "--dir", str(tmp_path / "demo"), stdin=RELEASE_TRAIN)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "queued: awesome: 2.0.0 -> 2.1.0-rc1 (int)" in out
    assert "int has not run awesome 2.2.0" in out or "2.2.0 has not run in int" in out, out
    assert "awesome: 2.0.0 -> 2.1.0 (prd)" in out
    assert "approved by carol (1/1); queued" in out
    assert "awesome: int 2.1.0-rc1, prd 2.1.0" in out
    # One release moves both of the seed's repositories: one commit each, the same request.
    apps, environments = (
        Remote(tmp_path / "demo" / "remote.git"),
        Remote(tmp_path / "demo" / "environments.git"),
    )
    request = trailer(apps.message(), "Releasegate-Request")
    assert request
    assert trailer(environments.message(), "Releasegate-Request") == request
    assert apps.message() == environments.message()
    assert b"?ref=v2.1.0" in environments.file("prod_back_end.tf")
    assert environments.count() == 2
    assert f"pushed apps {apps.head()[:7]}, environments {environments.head()[:7]}" in out


def test_the_demo_will_not_overwrite_a_folder_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    done = releasegate("demo", "--dir", str(tmp_path), stdin="status\n")
    assert done.returncode == 1
    assert "is not a releasegate demo" in done.stderr
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_a_failed_deploy_makes_the_shell_exit_non_zero(
    tmp_path: Path, policy_file: Path, redis_server: EmbeddedRedis, redis: Redis, origin: Remote
) -> None:
    env = {
        "RELEASEGATE_POLICY": str(policy_file),
        "RELEASEGATE_REDIS_URL": redis_server.url,
        "RELEASEGATE_WORKDIR": str(tmp_path / "work"),
    }
    # The remote refuses every push, so the queued deploy ends failed.
    hook = origin.path / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\nexit 1\n")
    hook.chmod(0o755)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RELEASEGATE_")}
    worker = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "worker"],
        env={**clean, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        done = releasegate(
            "shell",
            "--as",
            "alice",
            "--channel",
            "deploy-int",
            env=env,
            stdin="deploy awesome 2.1.0 to int\n",
        )
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    assert done.returncode == 1, done.stdout
    assert "failed: the remote refused the push" in done.stdout
    assert origin.count() == 1


def test_check_config_prints_every_pin_and_its_version(tmp_path: Path, policy_file: Path) -> None:
    env = {"RELEASEGATE_POLICY": str(policy_file), "RELEASEGATE_WORKDIR": str(tmp_path / "w")}
    done = releasegate("check-config", env=env)
    assert done.returncode == 0, done.stderr
    assert "awesome              prd        2.0.0" in done.stdout
    assert "env/prd/kustomization.yml (configmap_literal: awesome-config/appVersion) = 2.0.0" in (
        done.stdout
    )


def test_check_config_fails_clearly_when_a_pin_does_not_resolve(
    tmp_path: Path, policy_file: Path, origin: Remote
) -> None:
    clone = tmp_path / "clone"
    git("clone", "--quiet", str(origin.path), str(clone))
    path = clone / "env/int/kustomization.yml"
    path.write_text(path.read_text().replace("bespinian/awesome-image", "bespinian/renamed"))
    git("-c", "user.name=h", "-c", "user.email=h@x", "commit", "-qam", "rename", cwd=clone)
    git("push", "--quiet", "origin", "main", cwd=clone)
    env = {"RELEASEGATE_POLICY": str(policy_file), "RELEASEGATE_WORKDIR": str(tmp_path / "w")}
    done = releasegate("check-config", env=env)
    assert done.returncode == 1
    assert "1 problem(s)" in done.stderr
    assert (
        "awesome in int: env/int/kustomization.yml: no images entry named "
        "'bespinian/awesome-image' (found: bespinian/renamed)"
    ) in done.stderr


def test_an_invalid_policy_is_reported_with_its_problems(tmp_path: Path) -> None:
    bad = tmp_path / "policy.yaml"
    bad.write_text("repository: {url: x}\nenvironments: {}\napps: {}\n")
    done = releasegate("check-config", env={"RELEASEGATE_POLICY": str(bad)})
    assert done.returncode == 2
    assert f"invalid policy {bad}:" in done.stderr
    assert "environments: Dictionary should have at least 1 item" in done.stderr


def test_audit_prints_the_trail_of_a_demo_conversation(
    tmp_path: Path, redis_server: EmbeddedRedis
) -> None:
    env = {"RELEASEGATE_REDIS_URL": redis_server.url}
    script = (
        "deploy awesome 2.1.0 to int\n/in deploy-prd\ndeploy awesome 2.1.0 to prd\n"
        "/as carol\nreject not today\n"
    )
    done = releasegate("demo", "--dir", str(tmp_path / "demo"), stdin=script, env=env)
    assert done.returncode == 0, done.stderr
    trail = releasegate("audit", "-n", "2", env=env)
    assert trail.returncode == 0, trail.stderr
    header, requested, rejected = trail.stdout.splitlines()
    assert (
        header
        == f"audit trail in {redact_url(redis_server.url)} (RELEASEGATE_REDIS_URL), oldest first:"
    )
    assert ' requested  by=shell:alice changes="awesome: 2.0.0 -> 2.1.0 (prd)" env=prd' in requested
    assert ' rejected   by=shell:carol reason="not today" request=R' in rejected


def test_healthcheck_answers_for_kubernetes_probes(
    tmp_path: Path, policy_file: Path, redis_server: EmbeddedRedis
) -> None:
    env = settings_env(policy_file, redis_server.url, tmp_path / "w")
    assert releasegate("healthcheck", env=env).stdout == "ok\n"
    no_worker = releasegate("healthcheck", "--worker", env=env)
    assert no_worker.returncode == 1
    assert "sent a heartbeat" in no_worker.stderr
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RELEASEGATE_")}
    worker = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "worker"],
        env={**clean, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert eventually(
            lambda: releasegate("healthcheck", "--worker", env=env).returncode == 0, 30, every=0.5
        ), "the worker never registered"
        # Ready means warm: by the time it registered, its clone holds the pinned files.
        [slot] = (tmp_path / "w").glob("*/*/slot-0")
        assert (slot / "env" / "prd" / "kustomization.yml").is_file()
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    unreachable = {**env, "RELEASEGATE_REDIS_URL": "redis://127.0.0.1:1/0"}
    down = releasegate("healthcheck", env=unreachable)
    assert down.returncode == 1
    assert down.stderr.startswith("releasegate: cannot reach Redis (RELEASEGATE_REDIS_URL): ")
    assert "Traceback" not in down.stderr


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        (
            "RELEASEGATE_REDIS_URL",
            "localhost:6379",
            "RELEASEGATE_REDIS_URL: expected a URL like redis://",
        ),
        ("RELEASEGATE_HTTP_PORT", "abc", "RELEASEGATE_HTTP_PORT: Input should be a valid integer"),
        ("RELEASEGATE_HTTP_PORT", "99999", "RELEASEGATE_HTTP_PORT: Input should be less than or"),
        ("RELEASEGATE_HTTP_PORT", "-1", "RELEASEGATE_HTTP_PORT: Input should be greater than or"),
        (
            "RELEASEGATE_REDIS_URL",
            "redis://127.0.0.1:notaport/0",
            "RELEASEGATE_REDIS_URL: its port is not a number from 1 to 65535",
        ),
        (
            "RELEASEGATE_ROCKETCHAT_POLL",
            "maybe",
            "RELEASEGATE_ROCKETCHAT_POLL: Input should be a valid boolean",
        ),
    ],
)
def test_a_bad_setting_is_one_line_naming_the_variable_not_a_traceback(
    tmp_path: Path, policy_file: Path, variable: str, value: str, said: str
) -> None:
    done = releasegate(
        "check-config", env={"RELEASEGATE_POLICY": str(policy_file), variable: value}
    )
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"releasegate: {said}")
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        ("RELEASEGATE_LOG_FORMAT", "xml", "RELEASEGATE_LOG_FORMAT: Input should be 'auto', 'json'"),
        ("RELEASEGATE_WORKDIR", "/proc/nope", "RELEASEGATE_WORKDIR: cannot create /proc/nope"),
    ],
)
def test_a_setting_that_cannot_work_is_one_line_naming_it(
    policy_file: Path, variable: str, value: str, said: str
) -> None:
    done = releasegate(
        "check-config", env={"RELEASEGATE_POLICY": str(policy_file), variable: value}
    )
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"releasegate: {said}")


def test_version_and_an_empty_audit_say_something(redis_server: EmbeddedRedis) -> None:
    version = releasegate("--version")
    assert version.returncode == 0
    assert version.stdout.startswith("releasegate ")
    empty = EmbeddedRedis(redis_server.directory.parent / "empty-audit")
    with empty:
        audit = releasegate("audit", env={"RELEASEGATE_REDIS_URL": empty.url})
    assert audit.returncode == 0
    header, said = audit.stdout.splitlines()
    assert (
        header == f"audit trail in {redact_url(empty.url)} (RELEASEGATE_REDIS_URL), oldest first:"
    )
    assert said.startswith("no audit entries yet")


def test_a_missing_policy_file_names_the_setting(tmp_path: Path) -> None:
    done = releasegate("check-config", cwd=tmp_path)
    assert done.returncode == 2
    assert "releasegate.yaml" in done.stderr
    assert "(RELEASEGATE_POLICY names it)" in done.stderr
    assert "Traceback" not in done.stderr


def test_audit_refuses_a_count_that_is_not_positive() -> None:
    done = releasegate("audit", "-n", "-5")
    assert done.returncode == 2
    assert "'-5' is not a positive whole number" in done.stderr
    assert "Traceback" not in done.stderr


def serve_log(env: dict[str, str], until: str) -> str:
    """Start `releasegate serve`, read its log until `until` appears, stop it."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RELEASEGATE_")}
    server = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "serve"],
        env={**clean, **env, "RELEASEGATE_LOG_FORMAT": "text"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    try:
        assert server.stdout is not None
        for line in server.stdout:
            lines.append(line)
            if until in line:
                break
    finally:
        server.terminate()
        server.wait(timeout=30)
    return "".join(lines)


def test_serve_says_where_it_listens_and_warns_without_a_chat_platform(
    tmp_path: Path, policy_file: Path, redis_server: EmbeddedRedis
) -> None:
    port = free_port()
    env = settings_env(
        policy_file, redis_server.url, tmp_path / "w", HTTP_HOST="127.0.0.1", HTTP_PORT=str(port)
    )
    log = serve_log(env, until="policy: ")
    assert f"listening on http://127.0.0.1:{port}" in log
    assert "no chat platform is configured" in log
    assert "policy: 1 apps in 2 environments" in log


def test_serve_names_the_chat_platforms_it_serves(
    tmp_path: Path, policy_file: Path, redis_server: EmbeddedRedis
) -> None:
    env = settings_env(
        policy_file,
        redis_server.url,
        tmp_path / "w",
        HTTP_PORT=str(free_port()),
        SLACK_BOT_TOKEN="xoxb-x",
        SLACK_SIGNING_SECRET="s",
        SLACK_API_URL="http://127.0.0.1:1/api/",
        ROCKETCHAT_URL="http://127.0.0.1:1",
        ROCKETCHAT_USER_ID="u",
        ROCKETCHAT_TOKEN="t",
    )
    log = serve_log(env, until="policy: ")
    assert "Slack (Events API at POST /slack/events)" in log
    assert "Rocket.Chat at http://127.0.0.1:1 (polling messages and reactions)" in log
    assert "xoxb-x" not in log


def test_a_warm_venv_is_not_reinstalled() -> None:
    """`scripts/demo` and `scripts/test` call scripts/venv each time: when pyproject.toml and the
    extras are unchanged since the last install, it must not run pip again."""
    root = Path(__file__).resolve().parent.parent
    stamp = root / ".venv" / ".releasegate-installed"
    first = subprocess.run(
        [str(root / "scripts" / "venv"), "dev"], capture_output=True, text=True, timeout=600
    )
    assert first.returncode == 0, first.stderr
    before = stamp.stat().st_mtime_ns
    again = subprocess.run(
        [str(root / "scripts" / "venv"), "dev"], capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 0, again.stderr
    assert again.stdout == again.stderr == ""
    assert stamp.stat().st_mtime_ns == before


def test_a_piped_shell_without_any_worker_says_so_instead_of_waiting_silently(
    tmp_path: Path, policy_file: Path, redis_server: EmbeddedRedis, redis: Redis
) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RELEASEGATE_")}
    env = {**clean, **settings_env(policy_file, redis_server.url, tmp_path / "w")}
    shell = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "shell", "--as", "alice", "--channel", "deploy-int"],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert shell.stdin is not None
    assert shell.stdout is not None
    shell.stdin.write("deploy awesome 2.1.0 to int\n")
    shell.stdin.close()
    lines = []
    try:
        for line in shell.stdout:
            lines.append(line)
            if "no worker is running" in line:
                break
    finally:
        shell.kill()
        shell.wait()
    assert "no worker is running: start `releasegate worker`" in lines[-1], lines


@pytest.mark.parametrize("command", ["audit", "serve"])
def test_a_database_redis_does_not_have_is_one_line(
    command: str, tmp_path: Path, policy_file: Path, redis_server: EmbeddedRedis
) -> None:
    """`serve` too: it logged a traceback every round and said "redis unreachable"."""
    env = settings_env(policy_file, redis_server.url.rsplit("/", 1)[0] + "/99", tmp_path)
    done = releasegate(command, env={**env, "RELEASEGATE_HTTP_PORT": str(free_port())})
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "releasegate: Redis refused (RELEASEGATE_REDIS_URL): DB index is out of range"
    )


def test_serve_on_a_port_in_use_is_one_line_and_never_says_listening(
    tmp_path: Path, policy_file: Path, redis_server: EmbeddedRedis
) -> None:
    import socket

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        env = settings_env(
            policy_file,
            redis_server.url,
            tmp_path / "w",
            HTTP_HOST="127.0.0.1",
            HTTP_PORT=str(port),
        )
        done = releasegate("serve", env=env)
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "Address already in use" in done.stderr
    assert "listening on" not in done.stderr
    assert "Traceback" not in done.stderr


def test_every_problem_of_a_policy_is_said_at_once(tmp_path: Path) -> None:
    """Type errors and what the policy names but does not define, together; a key in the
    wrong place is said to be in the wrong place."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "repository: {url: file:///nowhere}\n"
        "environments:\n  prd:\n    channels: ['shell:p']\n    deployers: ['group:nope']\n"
        "    approvals: two\n    approvers: ['shell:carol']\n"
        "apps:\n  awesome:\n    repository: x\n    branch: main\n"
        "    pins: {qa: [{file: a.yml, kustomize_image: x}]}\n"
    )
    done = releasegate("check-config", env={"RELEASEGATE_POLICY": str(policy)})
    assert done.returncode == 2
    said = done.stderr
    assert "environments.prd.approvals: Input should be a valid integer" in said
    assert "environments.prd.deployers[0]: unknown group 'nope'" in said
    assert "apps.awesome.pins.qa: unknown environment 'qa'" in said
    assert "apps.awesome.branch: `branch` is not a key here; it belongs to a repository" in said
    assert "apps.awesome.repository: unknown repository 'x' (the policy has default)" in said


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_a_redis_without_a_password_is_refused_unless_said_deliberate(
    command: str, tmp_path: Path, policy_file: Path
) -> None:
    """Whoever can write to Redis can approve anything: the bot and the workers start only
    on a Redis with a password, or where the operator says none is deliberate."""
    with EmbeddedRedis(tmp_path / "open", password=False) as open_redis:
        env = settings_env(policy_file, open_redis.url, tmp_path / "work")
        done = releasegate(command, *(["--burst"] if command == "worker" else []), env=env)
        assert done.returncode == 2
        assert done.stderr.startswith("releasegate: RELEASEGATE_REDIS_URL names no password"), (
            done.stderr
        )
        if command == "worker":
            deliberate = {**env, "RELEASEGATE_REDIS_WITHOUT_PASSWORD": "true"}
            assert releasegate("worker", "--burst", env=deliberate).returncode == 0


@pytest.mark.parametrize("command", ["serve", "worker", "check-config"])
def test_help_names_the_policy_setting_and_where_the_settings_are(command: str) -> None:
    said = " ".join(releasegate(command, "--help").stdout.split())
    assert "RELEASEGATE_POLICY names the policy file" in said
    assert "docs/running.md" in said


def test_quit_in_a_piped_conversation_ends_it_there(tmp_path: Path) -> None:
    """`/quit` was "unknown shell command" when the conversation came from a pipe."""
    done = releasegate(
        "demo",
        "--dir",
        str(tmp_path / "demo"),
        stdin="status\n/quit\ndeploy awesome 2.1.0 to int\n",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "unknown shell command" not in done.stdout
    assert "queued" not in done.stdout  # nothing after /quit was read


def test_a_version_never_built_is_refused_in_the_demo(tmp_path: Path) -> None:
    """The demo's versions are the tags of its awesome.git: one that does not exist is
    refused before anyone is asked, and nothing lands."""
    done = releasegate(
        "demo", "--dir", str(tmp_path / "demo"), stdin="deploy awesome 9.9.9 to int\n"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "releasegate (refused): awesome 9.9.9: the tags of " in done.stdout
    assert "has no 9.9.9; the newest it has: 2.3.0, 2.2.0, 2.2.0-rc1" in done.stdout
    assert git("rev-list", "--count", "main", cwd=tmp_path / "demo" / "remote.git").strip() == "1"


BROKEN_RELEASE = """\
deploy awesome 2.3.0 to int
/in deploy-prd
deploy awesome 2.3.0 to prd
/as carol
approve
status prd
deploy awesome 2.3.0 to prd
"""


def test_the_demos_broken_release_is_rolled_back_by_itself_after_its_verification_fails(
    tmp_path: Path,
) -> None:
    """The demo's prd verifies against the metrics the demo serves; its 2.3.0 serves errors,
    so releasegate rolls it back without asking anyone, and refuses it until cleared."""
    done = releasegate("demo", "--dir", str(tmp_path / "demo"), stdin=BROKEN_RELEASE)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "🔬 verifying awesome 2.3.0 in prd: error-rate (< 0.05, 3 times every 1s)" in out
    assert "❌ verification failed in prd: awesome error-rate: 0.3 ≥ 0.05" in out
    assert "Rolling back at once: R" in out
    assert "awesome: prd 2.0.0" in out
    assert "⛔ awesome 2.3.0 failed verification in prd" in out
    assert "releasegate (refused): awesome 2.3.0 failed verification in prd" in out
    apps = Remote(tmp_path / "demo" / "remote.git")
    assert trailer(apps.message(), "Rollback-Of")
    assert b"newTag: 2.0.0" in apps.file("env/prd/kustomization.yml")
    assert apps.count() == 4  # int, prd, and the rollback
