"""The push lane: ready requests land in batches, one commit each, and a dead holder is replaced."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from redis import Redis

from bot.conversation import Conversation
from bot.embedded_redis import EmbeddedRedis
from bot.messages import result_text
from config.policy import parse_policy
from tests.conftest import Chat, Remote, eventually, git, run_worker
from tests.test_sweeper import kill_tree
from workers.git.mirrors import Mirrors
from workers.landing.sweeper import sweep
from workers.state.lane import Lane, lane_name
from workers.state.request import RequestState
from workers.state.store import RequestStore

APPS = 6


def many_apps_remote(path: Path, scratch: Path, apps: int = APPS, env: str = "int") -> None:
    """A bare remote with `apps` Helm-style apps, each pinned in apps/NAME/values-ENV.yaml."""
    scratch.mkdir()
    git("init", "--quiet", "--initial-branch=main", cwd=scratch)
    for n in range(apps):
        values = scratch / "apps" / f"app{n}" / f"values-{env}.yaml"
        values.parent.mkdir(parents=True)
        values.write_text(f"# app{n}\nimage:\n  repository: acme/app{n}\n  tag: 1.0.0\n")
    git("add", "--all", cwd=scratch)
    git("-c", "user.name=seed", "-c", "user.email=s@x", "commit", "-qm", "seed", cwd=scratch)
    git("init", "--quiet", "--bare", "--initial-branch=main", str(path), cwd=scratch)
    git("push", "--quiet", str(path), "main", cwd=scratch)


def many_apps_policy(url: str, apps: int = APPS) -> str:
    pins = "".join(
        f"  app{n}:\n    pins:\n      int: [{{file: apps/app{n}/values-int.yaml, "
        "yaml_path: image.tag}]\n"
        for n in range(apps)
    )
    return (
        f"repository:\n  url: {url}\n  branch: main\n"
        '  author: "releasegate <releasegate@demo.invalid>"\n'
        "environments:\n  int:\n"
        '    channels: ["shell:deploy-int"]\n    deployers: ["shell:alice"]\n'
        # One person asks for every app at once here; the limits per person are tested
        # elsewhere.
        "    max_open_requests: 1000\n    requests_per_minute: 1000\n"
        f"apps:\n{pins}"
    )


def count_pushes(remote: Path) -> Path:
    """Make the remote log one line per push it accepts; returns the log's path."""
    log = remote / "pushes.log"
    hook = remote / "hooks" / "post-receive"
    hook.write_text(f"#!/bin/sh\ncat >> {log}\n")
    hook.chmod(hook.stat().st_mode | stat.S_IEXEC)
    return log


@pytest.fixture
def apps_world(
    tmp_path: Path, redis: Redis, monkeypatch: pytest.MonkeyPatch, redis_server: EmbeddedRedis
) -> tuple[Chat, Remote, Path]:
    remote = tmp_path / "apps.git"
    many_apps_remote(remote, tmp_path / "seed")
    policy_file = tmp_path / "apps-policy.yaml"
    policy_file.write_text(many_apps_policy(remote.as_uri()))
    monkeypatch.setenv("RELEASEGATE_POLICY", str(policy_file))
    monkeypatch.setenv("RELEASEGATE_REDIS_URL", redis_server.url)
    monkeypatch.setenv("RELEASEGATE_WORKDIR", str(tmp_path / "work"))
    policy = parse_policy(policy_file.read_text())
    mirror = Mirrors.of(policy, tmp_path / "work", freshness=0)
    return Chat(Conversation(policy, redis, mirror)), Remote(remote), policy_file


def deploy_all(chat: Chat, apps: range, version: str = "1.1.0") -> list[str]:
    ids = []
    for n in apps:
        reply = chat.say("alice", "deploy-int", f"deploy app{n} {version} to int")
        assert reply.queued, reply.text
        ids.append(str(reply.request_id))
    return ids


def test_ready_requests_for_one_branch_land_as_one_push_of_one_commit_each(
    apps_world: tuple[Chat, Remote, Path], redis: Redis
) -> None:
    chat, origin, _policy = apps_world
    pushes = count_pushes(origin.path)
    ids = deploy_all(chat, range(APPS))
    run_worker(redis)
    store = RequestStore(redis)
    assert [store.state(i) for i in ids] == [RequestState.PUSHED] * APPS
    assert len(pushes.read_text().splitlines()) == 1
    assert origin.count() == 1 + APPS
    trailers = git(
        "log",
        "--format=%(trailers:key=Releasegate-Request,valueonly)",
        "-n",
        str(APPS),
        "main",
        cwd=origin.path,
    ).split()
    assert sorted(trailers) == sorted(ids)
    for request_id in ids:  # each commit is its request's alone: revertable on its own
        commit = store.result(request_id).commit  # type: ignore[union-attr]
        changed = git("show", "--name-only", "--format=", str(commit), cwd=origin.path).split()
        assert len(changed) == 1


def test_a_failing_request_in_a_batch_does_not_hold_back_the_others(
    apps_world: tuple[Chat, Remote, Path], redis: Redis, tmp_path: Path
) -> None:
    chat, origin, _policy = apps_world
    pushes = count_pushes(origin.path)
    ids = deploy_all(chat, range(3))
    # Someone moves app1's pin by hand after the request was made.
    clone = tmp_path / "hand"
    git("clone", "--quiet", str(origin.path), str(clone))
    values = clone / "apps" / "app1" / "values-int.yaml"
    values.write_text(values.read_text().replace("1.0.0", "1.0.5"))
    git("-c", "user.name=h", "-c", "user.email=h@x", "commit", "-qam", "by hand", cwd=clone)
    git("push", "--quiet", "origin", "main", cwd=clone)
    run_worker(redis)
    store = RequestStore(redis)
    assert store.state(ids[0]) is RequestState.PUSHED
    assert store.state(ids[1]) is RequestState.FAILED
    result = store.result(ids[1])
    assert result is not None
    assert "app1 in int is now 1.0.5" in result_text(store.get(ids[1]), result)
    assert store.state(ids[2]) is RequestState.PUSHED
    assert origin.count() == 2 + 2  # the seed, the hand edit, two deploys
    assert len(pushes.read_text().splitlines()) == 2  # the hand edit's and ours


def test_a_lane_holder_killed_after_its_push_is_replaced_and_nothing_lands_twice(
    apps_world: tuple[Chat, Remote, Path],
    redis: Redis,
    tmp_path: Path,
    redis_server: EmbeddedRedis,
) -> None:
    chat, origin, policy_file = apps_world
    ids = deploy_all(chat, range(3))
    # The remote takes the push, then hangs in post-receive: the worker is killed there,
    # after its commits landed and before it could record that they did.
    landed = origin.path / "landed"
    hook = origin.path / "hooks" / "post-receive"
    hook.write_text(f"#!/bin/sh\ntouch {landed}\nsleep 120\n")
    hook.chmod(hook.stat().st_mode | stat.S_IEXEC)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RELEASEGATE_")},
        "RELEASEGATE_POLICY": str(policy_file),
        "RELEASEGATE_REDIS_URL": redis_server.url,
        "RELEASEGATE_WORKDIR": str(tmp_path / "work-a"),
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert eventually(lambda: landed.exists(), 60, every=0.1), "the worker never pushed"
    kill_tree(worker.pid)
    worker.wait()
    hook.unlink()
    store = RequestStore(redis)
    assert {store.state(i) for i in ids} == {RequestState.RUNNING}
    assert origin.count() == 1 + 3

    lane = Lane(redis, lane_name(chat.conversation.policy.repository))
    died = time.monotonic()
    while lane.holder() is not None:
        assert time.monotonic() - died < 15, "the dead holder's lease did not run out"
        time.sleep(0.2)
    assert sorted(sweep(redis, lane)) == sorted(ids)
    run_worker(redis)
    assert [store.state(i) for i in ids] == [RequestState.PUSHED] * 3
    assert origin.count() == 1 + 3
    assert {store.result(i).commit for i in ids} <= set(  # type: ignore[union-attr]
        git("rev-list", "main", cwd=origin.path).split()
    )


def test_status_answers_from_the_last_fetch_while_the_remote_hangs(
    apps_world: tuple[Chat, Remote, Path], redis: Redis, tmp_path: Path
) -> None:
    chat, _origin, _policy = apps_world
    assert "app0: int 1.0.0" in chat.say("bob", "deploy-int", "status app0").text
    mirror = chat.conversation.ctx.mirror["default"]
    mirror.join_wait = 0.5
    # From now on the remote's upload-pack takes a minute to answer.
    slow = tmp_path / "slow-upload-pack"
    slow.write_text('#!/bin/sh\nsleep 60\nexec git-upload-pack "$@"\n')
    slow.chmod(0o755)
    git("--git-dir", str(mirror.git_dir), "config", "remote.origin.uploadpack", str(slow))
    started = time.monotonic()
    reply = chat.say("bob", "deploy-int", "status app0")
    assert time.monotonic() - started < 30  # long before the fetch could end
    assert "app0: int 1.0.0" in reply.text
    assert "still fetching" in reply.text


def test_status_answers_from_the_last_fetch_when_the_remote_is_gone_and_says_so(
    apps_world: tuple[Chat, Remote, Path], redis: Redis
) -> None:
    chat, origin, _policy = apps_world
    assert "app0: int 1.0.0" in chat.say("bob", "deploy-int", "status app0").text
    origin.path.rename(origin.path.with_name("gone.git"))
    reply = chat.say("bob", "deploy-int", "status app0")
    assert "app0: int 1.0.0" in reply.text
    assert "the remote did not answer" in reply.text
    assert "this is Git as fetched" in reply.text


def test_each_host_clones_into_its_own_folder_and_folders_of_hosts_long_gone_are_removed(
    apps_world: tuple[Chat, Remote, Path], tmp_path: Path
) -> None:
    from workers.git.checkout import Checkout

    policy = apps_world[0].conversation.policy
    here = Checkout(policy.repository, tmp_path / "cache", host="worker-7f9c")
    with here.in_slot():
        here.sync()
    assert here.path.parent.name == "worker-7f9c"
    other = Checkout(policy.repository, tmp_path / "cache", host="worker-0ld")
    with other.in_slot():
        other.sync()
    recent = Checkout(policy.repository, tmp_path / "cache", host="worker-b2")
    with recent.in_slot():
        recent.sync()
    week_ago = time.time() - 8 * 24 * 3600
    for lock in other.base.glob("slot-*.lock"):
        os.utime(lock, (week_ago, week_ago))
    assert here.prune_gone_hosts() == [other.base]
    assert not other.base.exists()
    assert recent.base.exists()
    assert (here.path / ".git").exists()
    assert (here.base / "store.git").is_dir()  # one object store for every slot of the host
