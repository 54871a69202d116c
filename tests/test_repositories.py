"""One policy, two repositories: the seed's argocd-demo layout and its Terraform environments.

A change whose pins live in both lands one commit in each (the same message), prepared
everywhere before anything lands, landed in the policy's order; a partial landing is said
exactly and asking again lands only what is missing.
"""

from __future__ import annotations

import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from redis import Redis

from bot.demo import create_remote, example
from bot.embedded_redis import EmbeddedRedis
from config.errors import PolicyError
from config.policy import parse_policy
from tests.conftest import Chat, Remote, eventually, git, outbox, run_worker
from tests.fake_forge import TOKEN, FakeForge
from tests.fake_forge import serve as serve_forge
from tests.test_cli import releasegate
from tests.test_sweeper import kill_tree
from workers.state.request import RequestState
from workers.state.store import RequestStore

POLICY = """\
author: "releasegate <releasegate@demo.invalid>"
repositories:
  apps: {{url: {apps}, branch: main}}
  environments: {{url: {environments}, branch: main, validate: false}}
groups:
  developers: ["shell:alice", "shell:bob"]
  release-managers: ["shell:carol", "shell:dave"]
environments:
  int:
    channels: ["shell:deploy-int"]
    deployers: ["group:developers"]
    max_open_requests: 100
    requests_per_minute: 100
  prd:
    channels: ["shell:deploy-prd"]
    deployers: ["group:developers"]
    approvers: ["group:release-managers"]
    approvals: 1
    max_open_requests: 100
    requests_per_minute: 100
apps:
  awesome:
    repository: apps
    pins:
      int: [{{file: env/int/kustomization.yml, kustomize_image: bespinian/awesome-image}}]
      prd:
        - {{file: env/prd/kustomization.yml, kustomize_image: bespinian/awesome-image}}
        - {{repository: environments, file: prod_back_end.tf, terraform_module: prod_back_end,
            format: "v{{version}}"}}
  api:
    repository: apps
    pins:
      prd:
        - {{file: env/prd/api.yaml, yaml_path: image.tag}}
        - {{repository: environments, file: prod_api.tf, terraform_module: prod_api,
            format: "v{{version}}"}}
  spa:
    repository: environments
    versions: '\\d+\\.\\d+\\.\\d+'
    pins:
      prd: [{{file: prod_front_end.tf, terraform_module: prod_front_end}}]
"""


def _environments(path: Path, scratch: Path) -> None:
    """The seed's environments repository, with a second pinned module (the api's)."""
    files = scratch / "files"
    files.mkdir(parents=True)
    for entry in example("environments").iterdir():
        (files / entry.name).write_bytes(entry.read_bytes())
    (files / "prod_api.tf").write_text(
        'module "prod_api" {\n  source = "../api/modules/api?ref=v1.0.0"\n}\n'
    )
    create_remote(files, path, scratch / "seed")


def _apps(path: Path, scratch: Path) -> None:
    files = scratch / "files"
    (files / "env" / "prd").mkdir(parents=True)
    for env in ("int", "prd"):
        source = example("argocd-demo") / "env" / env / "kustomization.yml"
        (files / "env" / env).mkdir(parents=True, exist_ok=True)
        (files / "env" / env / "kustomization.yml").write_bytes(source.read_bytes())
    (files / "env" / "prd" / "api.yaml").write_text(
        "image:\n  repository: acme/api\n  tag: 1.0.0\n"
    )
    create_remote(files, path, scratch / "seed")


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    path = tmp_path / "apps.git"
    _apps(path, tmp_path / "apps-scratch")
    return path


@pytest.fixture
def environments(tmp_path: Path) -> Remote:
    path = tmp_path / "environments.git"
    _environments(path, tmp_path / "environments-scratch")
    return Remote(path)


@pytest.fixture
def policy_file(tmp_path: Path, remote: Path, environments: Remote) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY.format(apps=remote.as_uri(), environments=environments.path.as_uri()))
    return path


def trailer(remote: Remote, rev: str = "main") -> str:
    found = re.search(r"^Releasegate-Request: (\S+)$", remote.message(rev), re.MULTILINE)
    return found.group(1) if found else ""


def commits_of(remote: Remote, request_id: str) -> int:
    log = git("log", "--format=%B", "main", cwd=remote.path)
    return log.count(f"Releasegate-Request: {request_id}\n")


def approved(chat: Chat, text: str, env: str = "prd") -> str:
    reply = chat.say("alice", f"deploy-{env}", text)
    assert reply.request_id, reply.text
    request_id = str(reply.request_id)
    if env == "prd":
        assert chat.say("carol", "deploy-prd", f"approve {request_id}").queued == (request_id,)
    return request_id


def refuse_pushes(remote: Remote, why: str = "frozen by the platform team") -> Path:
    hook = remote.path / "hooks" / "pre-receive"
    hook.write_text(f"#!/bin/sh\necho '{why}' >&2\nexit 1\n")
    hook.chmod(hook.stat().st_mode | stat.S_IEXEC)
    return hook


def test_the_single_repository_key_is_a_repository_named_default(remote: Path) -> None:
    policy = parse_policy(
        f"repository: {{url: {remote.as_uri()}}}\n"
        "environments: {prd: {channels: ['shell:p'], deployers: ['shell:a']}}\n"
        "apps: {awesome: {pins: {prd: [{file: a.yml, kustomize_image: x}]}}}\n"
    )
    assert list(policy.repositories) == ["default"]
    assert policy.apps["awesome"].pins["prd"][0].repository == "default"


def test_a_pin_without_a_repository_or_naming_an_unknown_one_is_said_at_once(
    remote: Path,
) -> None:
    environments = (remote.parent / "environments.git").as_uri()
    text = POLICY.format(apps=remote.as_uri(), environments=environments)
    text = text.replace("  spa:\n    repository: environments\n", "  spa:\n")
    text = text.replace(
        "{repository: environments, file: prod_api.tf", "{repository: infra, file: prod_api.tf"
    )
    with pytest.raises(PolicyError) as err:
        parse_policy(text)
    assert err.value.problems == [
        "apps.api.pins.prd[1].repository: unknown repository 'infra' (the policy has apps, "
        "environments)",
        "apps.spa.pins.prd[0]: which repository? name one (apps, environments) on the app or "
        "the pin",
    ]


def test_a_change_in_both_repositories_lands_one_commit_in_each_with_the_same_message(
    chat: Chat, redis: Redis, origin: Remote, environments: Remote, settings: object
) -> None:
    apps_base, environments_base = origin.head(), environments.head()
    reply = chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd")
    # The card shows each repository's files under its name.
    assert "== apps ==" in reply.text
    assert "== environments ==" in reply.text
    assert '+  source = "../backend/infrastructure/modules/back_end?ref=v2.1.0"' in reply.text
    request_id = str(reply.request_id)
    chat.say("carol", "deploy-prd", f"approve {request_id}")
    run_worker(redis)
    store = RequestStore(redis)
    assert store.state(request_id) is RequestState.PUSHED
    message = origin.message()
    assert message == environments.message()
    assert f"Releasegate-Request: {request_id}\n" in message
    assert "Approved-by: shell:carol\n" in message
    assert git("diff", "--stat", environments_base, "main", cwd=environments.path).count("|") == 1
    assert environments.diff(environments_base).splitlines()[-2:] == [
        '-  source = "../backend/infrastructure/modules/back_end?ref=v2.0.0"',
        '+  source = "../backend/infrastructure/modules/back_end?ref=v2.1.0"',
    ]
    assert origin.diff(apps_base).splitlines()[-2:] == ["-    newTag: 2.0.0", "+    newTag: 2.1.0"]
    result = store.result(request_id)
    assert result is not None
    assert result.commits == {"apps": origin.head(), "environments": environments.head()}
    assert outbox(redis) == [
        f"{request_id}: pushed apps {origin.head()[:7]}, environments "
        f"{environments.head()[:7]}: awesome: 2.0.0 -> 2.1.0 (prd)"
    ]


def test_a_release_train_spans_both_repositories_in_one_commit_each(
    chat: Chat, redis: Redis, origin: Remote, environments: Remote, settings: object
) -> None:
    reply = chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd")
    first = str(reply.request_id)
    chat.say("carol", "deploy-prd", f"approve {first}")
    second = approved(chat, "deploy api 1.1.0 to prd")
    third = approved(chat, "deploy spa 1.0.3 to prd")
    run_worker(redis)
    store = RequestStore(redis)
    assert [store.state(r) for r in (first, second, third)] == [RequestState.PUSHED] * 3
    # Each request one commit per repository it changes, none twice.
    assert (commits_of(origin, first), commits_of(environments, first)) == (1, 1)
    assert (commits_of(origin, second), commits_of(environments, second)) == (1, 1)
    assert (commits_of(origin, third), commits_of(environments, third)) == (0, 1)
    assert b"?ref=v1.1.0" in environments.file("prod_api.tf")
    assert b"?ref=1.0.3" in environments.file("prod_front_end.tf")


def test_a_refused_second_repository_is_said_exactly_and_asking_again_lands_only_it(
    chat: Chat, redis: Redis, origin: Remote, environments: Remote, settings: object
) -> None:
    hook = refuse_pushes(environments)
    request_id = approved(chat, "deploy awesome 2.1.0 to prd")
    run_worker(redis)
    store = RequestStore(redis)
    assert store.state(request_id) is RequestState.FAILED
    [told] = outbox(redis)
    assert told.startswith(
        f"{request_id}: failed: landed in apps {origin.head()[:7]}; not in environments: "
        "the remote refused the push: "
    ), told
    assert "frozen by the platform team" in told
    assert "Nothing was reverted" in told
    assert trailer(origin) == request_id  # what landed stays
    assert environments.count() == 1

    hook.unlink()
    reply = chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd")
    assert "2.1.0 | 2.0.0 -> 2.1.0" in reply.text  # the pins disagree: apps holds it already
    assert "== apps ==" not in reply.text
    assert "== environments ==" in reply.text
    again = str(reply.request_id)
    chat.say("carol", "deploy-prd", f"approve {again}")
    apps_head = origin.head()
    run_worker(redis)
    assert store.state(again) is RequestState.PUSHED
    assert origin.head() == apps_head  # no second commit where it landed
    assert trailer(environments) == again
    assert outbox(redis)[-1] == (
        f"{again}: pushed environments {environments.head()[:7]} (apps already held it): "
        "awesome: 2.1.0 | 2.0.0 -> 2.1.0 (prd)"
    )


def test_nothing_lands_anywhere_when_a_later_repository_cannot_be_prepared(
    chat: Chat, redis: Redis, origin: Remote, environments: Remote, tmp_path: Path, settings: object
) -> None:
    """Every repository is prepared and checked before the first push: a pin that moved in
    the second repository stops the first from landing too."""
    request_id = approved(chat, "deploy awesome 2.1.0 to prd")
    scratch = tmp_path / "by-hand"
    git("clone", "--quiet", str(environments.path), str(scratch))
    tf = scratch / "prod_back_end.tf"
    tf.write_text(tf.read_text().replace("?ref=v2.0.0", "?ref=v2.0.5"))
    git("-c", "user.name=x", "-c", "user.email=x@x", "commit", "-qam", "by hand", cwd=scratch)
    git("push", "--quiet", "origin", "main", cwd=scratch)
    apps_count = origin.count()
    run_worker(redis)
    assert RequestStore(redis).state(request_id) is RequestState.FAILED
    [told] = outbox(redis)
    assert "awesome in prd is now 2.0.5, but the request approved 2.0.0 -> 2.1.0" in told, told
    assert "landed in" not in told
    assert origin.count() == apps_count


def test_history_and_status_read_both_repositories(
    chat: Chat, redis: Redis, origin: Remote, environments: Remote, settings: object
) -> None:
    request_id = approved(chat, "deploy awesome 2.1.0 to prd")
    run_worker(redis)
    status = chat.say("bob", "deploy-prd", "status awesome").text
    assert "awesome: int 2.0.0, prd 2.1.0" in status
    assert f"apps {origin.head()[:7]}, environments {environments.head()[:7]}" in status
    history = chat.say("bob", "deploy-prd", "history prd").text
    assert f"apps {origin.head()[:7]} " in history
    assert f"environments {environments.head()[:7]} " in history
    assert history.count(request_id) == 2
    assert history.count("Initial desired state (by hand: demo)") == 2  # each seed commit
    assert (
        f"commits apps {origin.head()[:7]}"
        in chat.say("bob", "deploy-prd", f"status {request_id}").text
    )


def test_a_rollback_reads_the_app_across_repositories(
    chat: Chat, redis: Redis, origin: Remote, environments: Remote, settings: object
) -> None:
    approved(chat, "deploy awesome 2.1.0 to prd")
    run_worker(redis)
    reply = chat.say("alice", "deploy-prd", "rollback awesome in prd")
    assert "awesome: 2.1.0 -> 2.0.0 (prd)" in reply.text, reply.text
    chat.say("carol", "deploy-prd", f"approve {reply.request_id}")
    run_worker(redis)
    assert b"?ref=v2.0.0" in environments.file("prod_back_end.tf")
    assert b"newTag: 2.0.0" in origin.file("env/prd/kustomization.yml")
    assert trailer(origin) == trailer(environments) == reply.request_id


def test_check_config_prints_every_pin_with_its_repository(
    policy_file: Path, tmp_path: Path, environments: Remote
) -> None:
    env = {"RELEASEGATE_POLICY": str(policy_file), "RELEASEGATE_WORKDIR": str(tmp_path / "w")}
    done = releasegate("check-config", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "repository apps at " in done.stdout
    assert "repository environments at " in done.stdout
    assert "environments: prod_back_end.tf (terraform_module: prod_back_end) = 2.0.0" in done.stdout
    assert "apps: env/prd/kustomization.yml (kustomize_image: bespinian/awesome-image) = 2.0.0" in (
        done.stdout
    )
    git("--git-dir", str(environments.path), "config", "core.bare", "true")
    (environments.path / "HEAD").rename(environments.path / "HEAD.gone")
    done = releasegate("check-config", env=env)
    assert done.returncode == 1
    assert "repository environments: UNREACHABLE" in done.stdout
    assert "repository environments: cannot fetch main from " in done.stderr
    assert "repository apps at " in done.stdout


@contextmanager
def environments_through_forge(
    policy_file: Path,
    redis: Redis,
    environments: Remote,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    token_env: str | None = None,
) -> Iterator[tuple[Chat, FakeForge]]:
    """The policy with environments landing through a GitHub stand-in's pull requests (its
    token in `token_env`, else RELEASEGATE_FORGE_TOKEN), and a chat reading it."""
    from bot.conversation import Conversation
    from workers.git.mirrors import Mirrors

    forge = FakeForge(environments.path, "github")
    server = serve_forge(forge)
    api = f"http://127.0.0.1:{server.server_port}"
    named = f", token_env: {token_env}" if token_env else ""
    text = policy_file.read_text().replace(
        "validate: false}",
        "validate: false, merge_request: {forge: github, api_url: '" + api + "', "
        f"project: acme/environments{named}}}}}",
    )
    policy_file.write_text(text)
    if token_env:
        monkeypatch.delenv("RELEASEGATE_FORGE_TOKEN", raising=False)
    monkeypatch.setenv(token_env or "RELEASEGATE_FORGE_TOKEN", TOKEN)
    policy = parse_policy(text)
    chat = Chat(Conversation(policy, redis, Mirrors.of(policy, tmp_path / "bot", freshness=0)))
    try:
        yield chat, forge
    finally:
        server.shutdown()


def test_a_change_across_a_pull_request_repository_and_a_pushed_one_lands_in_both(
    chat: Chat,
    redis: Redis,
    origin: Remote,
    environments: Remote,
    policy_file: Path,
    settings: object,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """apps is pushed to, then environments' pull request (opened when asked, head-pinned)
    is merged: one commit each, the same request, in the policy's order."""
    with environments_through_forge(policy_file, redis, environments, tmp_path, monkeypatch) as (
        chat,
        forge,
    ):
        request_id = approved(chat, "deploy awesome 2.1.0 to prd")
        run_worker(redis)
        store = RequestStore(redis)
        assert store.state(request_id) is RequestState.MERGED, outbox(redis)
        [pull] = forge.pulls.values()
        assert pull.state == "merged"
        assert (commits_of(origin, request_id), commits_of(environments, request_id)) == (1, 1)
        assert b"?ref=v2.1.0" in environments.file("prod_back_end.tf")
        assert b"newTag: 2.1.0" in origin.file("env/prd/kustomization.yml")
        result = store.result(request_id)
        assert result is not None
        assert result.commits == {"apps": origin.head(), "environments": environments.head()}


def test_a_pull_request_tampered_with_after_the_push_landed_is_said_as_a_partial_landing(
    chat: Chat,
    redis: Redis,
    origin: Remote,
    environments: Remote,
    policy_file: Path,
    settings: object,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """apps lands first (the policy's order); environments' pull request got a commit pushed
    onto it meanwhile, so it is never merged: the request fails saying what landed where."""
    with environments_through_forge(policy_file, redis, environments, tmp_path, monkeypatch) as (
        chat,
        _forge,
    ):
        asked = chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd")
        request_id = str(asked.request_id)
        run_worker(redis)  # the pull request is opened while people approve
        clone = tmp_path / "mallory"
        git(
            "clone",
            "--quiet",
            "--branch",
            f"releasegate/{request_id}",
            str(environments.path),
            str(clone),
        )
        (clone / "backdoor.tf").write_text("# not approved\n")
        git("add", "backdoor.tf", cwd=clone)
        git("-c", "user.name=m", "-c", "user.email=m@x", "commit", "-qm", "more", cwd=clone)
        git("push", "--quiet", "origin", f"HEAD:releasegate/{request_id}", cwd=clone)
        chat.say("carol", "deploy-prd", f"approve {request_id}")
        run_worker(redis)
        assert RequestStore(redis).state(request_id) is RequestState.FAILED
        told = [t for t in outbox(redis) if t.startswith(f"{request_id}: failed")]
        assert len(told) == 1, outbox(redis)
        assert told[0].startswith(
            f"{request_id}: failed: landed in apps {origin.head()[:7]}; not in environments: "
        ), told[0]
        assert "someone pushed to" in told[0]
        assert commits_of(origin, request_id) == 1
        assert commits_of(environments, request_id) == 0


def test_two_repositories_landing_through_pull_requests_in_one_request_are_refused(
    remote: Path, environments: Remote, tmp_path: Path, redis: Redis
) -> None:
    from bot.conversation import Conversation
    from workers.git.mirrors import Mirrors

    forge = "merge_request: {forge: github, api_url: 'http://127.0.0.1:9', project: acme/x}"
    text = POLICY.format(apps=remote.as_uri(), environments=environments.path.as_uri())
    text = text.replace(", branch: main}", f", branch: main, {forge}}}").replace(
        "validate: false}", f"validate: false, {forge}}}"
    )
    policy = parse_policy(text)
    chat = Chat(Conversation(policy, redis, Mirrors.of(policy, tmp_path / "w", freshness=0)))
    reply = chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd")
    assert reply.reason == "spans_forge"
    assert "apps, environments that land through pull requests" in reply.text
    assert not RequestStore(redis).open_requests()


@pytest.fixture
def worker_env(tmp_path: Path, policy_file: Path) -> Iterator[tuple[dict[str, str], EmbeddedRedis]]:
    import os

    server = EmbeddedRedis(tmp_path / "redis").start()
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("RELEASEGATE_")}
    env = {
        **inherited,
        "RELEASEGATE_POLICY": str(policy_file),
        "RELEASEGATE_REDIS_URL": server.url,
        "RELEASEGATE_WORKDIR": str(tmp_path / "work"),
        "RELEASEGATE_VALIDATE_SANDBOX": "none",
    }
    try:
        yield env, server
    finally:
        server.stop()


def test_a_worker_killed_between_the_two_pushes_is_finished_by_a_fresh_one_landing_each_once(
    worker_env: tuple[dict[str, str], EmbeddedRedis],
    origin: Remote,
    environments: Remote,
    tmp_path: Path,
) -> None:
    from bot.conversation import Conversation
    from workers.git.mirrors import Mirrors

    env, server = worker_env
    redis = Redis.from_url(server.url)
    policy = parse_policy(Path(env["RELEASEGATE_POLICY"]).read_text())
    chat = Chat(Conversation(policy, redis, Mirrors.of(policy, tmp_path / "bot", freshness=0)))
    # The environments remote holds the push until the test lets it go.
    entered, release = tmp_path / "entered", tmp_path / "release"
    hook = environments.path / "hooks" / "pre-receive"
    hook.write_text(
        f"#!/bin/sh\ntouch {entered}\nwhile [ ! -e {release} ]; do sleep 0.05; done\nexit 1\n"
    )
    hook.chmod(hook.stat().st_mode | stat.S_IEXEC)
    logs = (tmp_path / "worker-1.log").open("wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "worker"], env=env, stdout=logs, stderr=subprocess.STDOUT
    )
    try:
        request_id = approved(chat, "deploy awesome 2.1.0 to prd")
        assert eventually(lambda: entered.exists(), 60, every=0.05), (
            tmp_path / "worker-1.log"
        ).read_text()
        assert trailer(origin) == request_id  # apps landed; environments is being pushed
        kill_tree(worker.pid)
        worker.wait()
    finally:
        if worker.poll() is None:
            kill_tree(worker.pid)
    hook.unlink()
    release.touch()
    store = RequestStore(redis)
    assert store.state(request_id) is RequestState.RUNNING
    fresh = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "worker"],
        env=env,
        stdout=(tmp_path / "worker-2.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        assert eventually(lambda: store.state(request_id).final, 90, every=0.2), (
            tmp_path / "worker-2.log"
        ).read_text()
    finally:
        kill_tree(fresh.pid)
        fresh.wait()
    assert store.state(request_id) is RequestState.PUSHED
    assert (commits_of(origin, request_id), commits_of(environments, request_id)) == (1, 1)
    result = store.result(request_id)
    assert result is not None
    assert result.commits == {"apps": origin.head(), "environments": environments.head()}
    redis.close()


def test_requests_across_and_within_repositories_racing_through_the_lanes_all_land(
    worker_env: tuple[dict[str, str], EmbeddedRedis],
    origin: Remote,
    environments: Remote,
    tmp_path: Path,
) -> None:
    """Two requests that span both repositories and two that need one lane each, under three
    workers: all land, each once per repository, and nothing waits forever."""
    from bot.conversation import Conversation
    from workers.git.mirrors import Mirrors

    env, server = worker_env
    redis = Redis.from_url(server.url)
    policy = parse_policy(Path(env["RELEASEGATE_POLICY"]).read_text())
    chat = Chat(Conversation(policy, redis, Mirrors.of(policy, tmp_path / "bot", freshness=0)))
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "worker"],
            env=env,
            stdout=(tmp_path / f"worker-{n}.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        for n in range(3)
    ]
    try:
        ids = [
            approved(chat, "deploy awesome 2.1.0 to prd"),
            approved(chat, "deploy api 1.1.0 to prd"),
            approved(chat, "deploy spa 1.0.3 to prd"),
            approved(chat, "deploy awesome 2.1.0 to int", env="int"),
        ]
        store = RequestStore(redis)
        logs = "\n".join(p.read_text()[-2000:] for p in tmp_path.glob("worker-*.log"))
        assert eventually(lambda: all(store.state(r).final for r in ids), 120), logs
    finally:
        for worker in workers:
            kill_tree(worker.pid)
            worker.wait()
    assert [store.state(r) for r in ids] == [RequestState.PUSHED] * 4
    expected = {ids[0]: (1, 1), ids[1]: (1, 1), ids[2]: (0, 1), ids[3]: (1, 0)}
    for request_id, counts in expected.items():
        assert (commits_of(origin, request_id), commits_of(environments, request_id)) == counts
    redis.close()


def test_a_rollout_follows_each_app_to_its_own_repository_and_not_a_pipelines(
    remote: Path, environments: Remote, redis: Redis
) -> None:
    """awesome is followed to its apps commit; spa lives in a repository a Terraform pipeline
    applies (`reconciled: false`), so a request of only spa ends at pushed."""
    from workers.rollout import follow
    from workers.state.request import Change, DeployRequest

    text = POLICY.format(apps=remote.as_uri(), environments=environments.path.as_uri())
    text = text.replace("validate: false}", "validate: false, reconciled: false}")
    text = text.replace(
        "    approvals: 1\n",
        "    approvals: 1\n    rollout: {argocd: {application: '{app}-prd'}}\n",
    )
    policy = parse_policy(text)

    def request(request_id: str, *apps: str) -> DeployRequest:
        return DeployRequest(
            id=request_id,
            verb="train",
            env="prd",
            changes=tuple(Change(app=a, env="prd", old="1.0.0", new="1.1.0") for a in apps),
            requester="shell:alice",
            requester_name="alice",
            channel="shell:deploy-prd",
            approvals_needed=1,
            created_at=datetime.now(UTC),
            base_commit="0" * 40,
            diff="",
        )

    commits = {"apps": "a" * 40, "environments": "e" * 40}
    record = follow.start(redis, policy, request("RBOTH01", "awesome", "spa"), commits)
    assert record is not None
    assert [(t.app, t.name, t.commit) for t in record.targets] == [
        ("awesome", "awesome-prd", "a" * 40)
    ]
    assert follow.start(redis, policy, request("RSPA001", "spa"), commits) is None


def test_one_repository_lands_through_pull_requests_and_the_other_pushes(
    chat: Chat,
    redis: Redis,
    origin: Remote,
    environments: Remote,
    policy_file: Path,
    settings: object,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """environments merges through its forge with a token of its own (token_env); apps pushes."""
    with environments_through_forge(
        policy_file,
        redis,
        environments,
        tmp_path,
        monkeypatch,
        token_env="RELEASEGATE_FORGE_TOKEN_ENVIRONMENTS",
    ) as (chat, forge):
        merged = approved(chat, "deploy spa 1.0.3 to prd")
        pushed = approved(chat, "deploy awesome 2.1.0 to int", env="int")
        run_worker(redis)
        store = RequestStore(redis)
        assert store.state(merged) is RequestState.MERGED, outbox(redis)
        assert store.state(pushed) is RequestState.PUSHED
        [pull] = forge.pulls.values()
        assert pull.state == "merged"
        assert trailer(environments) == merged
        assert b"?ref=1.0.3" in environments.file("prod_front_end.tf")
        assert trailer(origin) == pushed
        assert commits_of(origin, merged) == 0


def yaml_blocks(path: Path) -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", path.read_text(), re.DOTALL)


def test_the_readmes_two_repository_policy_is_valid() -> None:
    root = Path(__file__).parent.parent
    [block] = [b for b in yaml_blocks(root / "README.md") if "repositories:" in b]
    policy = parse_policy(block)
    assert list(policy.repositories) == ["apps", "environments"]
    prd = policy.apps["awesome"].pins["prd"]
    assert [pin.repository for pin in prd] == ["apps", "apps", "environments"]
    assert policy.repositories["environments"].reconciled is False
    [doc] = [b for b in yaml_blocks(root / "docs" / "policy.md") if "repositories:" in b]
    text = doc + "environments:\n  prd: {channels: ['shell:p'], deployers: ['shell:a']}\n"
    token = parse_policy(text).repositories["environments"].merge_request
    assert token is not None
    assert token.token_env == "RELEASEGATE_FORGE_TOKEN_ENVIRONMENTS"


def test_status_names_each_repository_when_the_repositories_disagree(
    chat: Chat, origin: Remote, tmp_path: Path
) -> None:
    """apps moved to 2.3.0 by hand, environments still at 2.0.0: status says both, and where
    (it said one version before)."""
    work = tmp_path / "by-hand"
    git("clone", "--quiet", str(origin.path), str(work))
    kustomization = work / "env" / "prd" / "kustomization.yml"
    kustomization.write_text(kustomization.read_text().replace("newTag: 2.0.0", "newTag: 2.3.0"))
    git("-c", "user.name=x", "-c", "user.email=x@x", "commit", "-qam", "by hand", cwd=work)
    git("push", "--quiet", "origin", "main", cwd=work)
    said = chat.say("bob", "deploy-prd", "status prd").text
    assert "awesome: prd 2.3.0 (apps) | 2.0.0 (environments)" in said, said
