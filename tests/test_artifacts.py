"""What is approved is what runs: a version is asked of its store before a request is
filed, and the digest the approval bound is asked again right before the commit. The
registry is real (Debian's docker-registry, the CNCF distribution registry)."""

from __future__ import annotations

import functools
import http.server
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from config.artifact import Artifact
from config.errors import ReleasegateError
from tests.conftest import Chat, Remote, git, outbox, run_worker
from tests.registry import Registry, docker_config, start_registry
from workers.artifacts.resolve import ArtifactMissing, Resolver
from workers.state.request import RequestState
from workers.state.store import RequestStore

IMAGE = "bespinian/awesome-image"
REVISION = "3f3fc76a1b2c3d4e5f60718293a4b5c6d7e8f901"


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    started = start_registry(tmp_path / "registry")
    yield started
    started.stop()


def with_artifact(policy_file: Path, artifact: str) -> None:
    text = policy_file.read_text()
    assert "  awesome:\n" in text
    policy_file.write_text(
        text.replace("  awesome:\n", f"  awesome:\n    artifact: {artifact}\n", 1)
    )


@pytest.fixture
def imaged(policy_file: Path, registry: Registry) -> Registry:
    """awesome's versions are tags of its image in the registry (2.0.0 and 2.1.0 pushed)."""
    with_artifact(policy_file, f"{{image: {registry.host}/{IMAGE}}}")
    registry.push(IMAGE, "2.0.0")
    registry.push(IMAGE, "2.1.0", source="https://github.com/bespinian/awesome", revision=REVISION)
    return registry


def nothing_filed(redis: Redis, origin: Remote) -> None:
    assert not RequestStore(redis).open_requests()
    assert origin.count() == 1


def test_a_version_the_registry_does_not_have_is_refused_naming_the_newest_it_has(
    imaged: Registry, chat: Chat, redis: Redis, origin: Remote
) -> None:
    reply = chat.say("alice", "deploy-prd", "deploy awesome 2.1.1 to prd")
    assert reply.reason == "artifact_missing"
    assert reply.text == (
        f"awesome 2.1.1: {imaged.host}/{IMAGE} has no 2.1.1; the newest it has: 2.1.0, 2.0.0"
    )
    nothing_filed(redis, origin)


def test_an_existing_tag_shows_its_digest_and_source_and_lands_bound_to_it(
    imaged: Registry, chat: Chat, redis: Redis, origin: Remote, settings: object
) -> None:
    digest = imaged.push(
        IMAGE, "2.1.0", source="https://github.com/bespinian/awesome", revision=REVISION
    )
    reply = chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd")
    assert reply.request_id, reply.text
    assert f"📦 awesome 2.1.0 is {digest[:19]}, built 2026-11-30T12:00:00Z" in reply.text
    assert f"from https://github.com/bespinian/awesome/commit/{REVISION}" in reply.text
    chat.say("carol", "deploy-prd", "approve")
    run_worker(redis)
    assert RequestStore(redis).state(str(reply.request_id)) is RequestState.PUSHED
    assert f"Artifact-Digest: {digest}\n" in origin.message()
    # pin_digest is the default for an image: the digest is written beside the tag.
    written = origin.file("env/prd/kustomization.yml").decode()
    assert f"digest: {digest}" in written
    assert "pinned by tag" not in reply.text
    assert "Pinned-By" not in origin.message()


def test_an_image_pinned_by_tag_alone_is_said_on_the_card_and_in_the_commit(
    imaged: Registry, policy_file: Path, redis: Redis, origin: Remote, chat: Chat
) -> None:
    """With `pin_digest: false` the registry can move the tag under a running deploy: the
    approver is told so, and the commit says it for whoever reads the history."""
    text = policy_file.read_text().replace("pin_digest", "unused")
    policy_file.write_text(
        text.replace(
            f"image: {imaged.host}/{IMAGE}}}", f"image: {imaged.host}/{IMAGE}, pin_digest: false}}"
        )
    )
    from bot.conversation import Conversation
    from config.policy import parse_policy

    policy = parse_policy(policy_file.read_text())
    chat = Chat(Conversation(policy, redis, chat.conversation.ctx.mirror))
    reply = chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd")
    assert "⚠️ awesome is pinned by tag: the registry can move it" in reply.text, reply.text
    chat.say("carol", "deploy-prd", "approve")
    run_worker(redis)
    assert "Pinned-By: tag\n" in origin.message()
    assert "digest:" not in origin.file("env/prd/kustomization.yml").decode()


def test_a_tag_pushed_again_after_approval_is_refused_and_nothing_is_committed(
    imaged: Registry, chat: Chat, redis: Redis, origin: Remote, settings: object
) -> None:
    reply = chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd")
    approved = reply.text.split(" is ")[1][:19]
    chat.say("carol", "deploy-prd", "approve")
    moved = imaged.push(IMAGE, "2.1.0", salt="rebuilt by someone")
    run_worker(redis)
    assert RequestStore(redis).state(str(reply.request_id)) is RequestState.FAILED
    [told] = outbox(redis)
    assert f"tag 2.1.0 of awesome now points to {moved[:19]}…, approved {approved}…" in told
    assert origin.count() == 1


def test_a_registry_that_is_down_refuses_the_request_unless_the_app_allows_it(
    imaged: Registry, chat: Chat, redis: Redis, origin: Remote, policy_file: Path
) -> None:
    imaged.stop()
    reply = chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd")
    assert reply.reason == "artifact_unreachable"
    assert "could not be asked whether it has this version: cannot reach" in reply.text
    nothing_filed(redis, origin)
    text = policy_file.read_text()
    image = f"{imaged.host}/{IMAGE}}}"
    policy_file.write_text(text.replace(image, image[:-1] + ", required: false}", 1))
    from bot.conversation import Conversation
    from config.policy import parse_policy

    policy = parse_policy(policy_file.read_text())
    lenient = Chat(Conversation(policy, redis, chat.conversation.ctx.mirror))
    assert lenient.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd").request_id


def test_a_registry_with_basic_auth_is_asked_with_the_docker_configs_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    locked = start_registry(tmp_path / "locked", user="ci", password="s3cret")
    try:
        digest = locked.push(IMAGE, "2.1.0")
        artifact = Artifact(image=f"{locked.host}/{IMAGE}")
        monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "nobody"))
        with pytest.raises(
            ReleasegateError, match="asks for a login, and the Docker config has none"
        ):
            Resolver().resolve("awesome", artifact, "2.1.0")
        folder = docker_config(tmp_path / "docker", locked.host, "ci", "s3cret")
        monkeypatch.setenv("DOCKER_CONFIG", str(folder))
        assert Resolver().resolve("awesome", artifact, "2.1.0").digest == digest
    finally:
        locked.stop()


def test_a_git_tag_module_is_checked_against_the_tags_of_its_repository(
    tmp_path: Path, policy_file: Path, chat: Chat, redis: Redis, origin: Remote
) -> None:
    module = tmp_path / "module.git"
    git("init", "--quiet", "--bare", "--initial-branch=main", str(module))
    work = tmp_path / "module"
    git("clone", "--quiet", str(module), str(work))
    git(
        "-c",
        "user.name=x",
        "-c",
        "user.email=x@x",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "m",
        cwd=work,
    )
    git("tag", "-a", "v2.1.0", "-m", "release", cwd=work)
    git("push", "--quiet", "--tags", "origin", "HEAD:main", cwd=work)
    commit = git("rev-parse", "HEAD", cwd=work).strip()
    with_artifact(policy_file, f"{{git_tags: {module.as_uri()}, tag_format: 'v{{version}}'}}")
    from bot.conversation import Conversation
    from config.policy import parse_policy

    policy = parse_policy(policy_file.read_text())
    chat = Chat(Conversation(policy, redis, chat.conversation.ctx.mirror))
    missing = chat.say("alice", "deploy-prd", "deploy awesome 2.2.0 to prd")
    assert missing.text == (
        f"awesome 2.2.0: the tags of {module.as_uri()} has no v2.2.0; the newest it has: v2.1.0"
    )
    nothing_filed(redis, origin)
    reply = chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd")
    assert f"📦 awesome v2.1.0 is {commit[:19]}" in reply.text  # the annotated tag, peeled


def test_a_helm_chart_is_checked_against_its_repositorys_index(tmp_path: Path) -> None:
    charts = tmp_path / "charts"
    charts.mkdir()
    (charts / "index.yaml").write_text(
        "apiVersion: v1\nentries:\n  podinfo:\n"
        "    - {version: 6.5.0, digest: " + "a" * 64 + ", created: '2026-10-01T00:00:00Z'}\n"
        "    - {version: 6.4.1, digest: " + "b" * 64 + "}\n"
    )
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(charts))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        artifact = Artifact(chart="podinfo", chart_repo=url)
        found = Resolver().resolve("podinfo", artifact, "6.5.0")
        assert (found.digest, found.created) == ("sha256:" + "a" * 64, "2026-10-01T00:00:00Z")
        newest = re.escape("has no 7.0.0; the newest it has: 6.5.0, 6.4.1")
        with pytest.raises(ReleasegateError, match=newest):
            Resolver().resolve("podinfo", artifact, "7.0.0")
    finally:
        server.shutdown()


def test_a_train_of_twenty_apps_is_resolved_at_once_and_then_remembered(
    registry: Registry,
) -> None:
    """Behind a link that adds 100 ms to every chunk either way, twenty images asked in a
    row take over 15 s; asked together, a couple of rounds. A second train within the cache
    window is answered without the registry."""
    from tests.socket_standin import _Relay

    digests = {f"app{n:02d}": registry.push(f"acme/app{n:02d}", "1.1.0") for n in range(20)}
    relay = _Relay(registry.port, delay=0.1)
    host = f"127.0.0.1:{relay.port}"
    wanted = [(app, Artifact(image=f"{host}/acme/{app}"), "1.1.0") for app in digests]
    resolver = Resolver()
    started = time.monotonic()
    found = resolver.resolve_all(wanted)
    took = time.monotonic() - started
    assert [getattr(f, "digest", f) for f in found] == list(digests.values())
    assert took < 6.0, f"{took:.1f}s: not asked at the same time"
    registry.stop()
    again = resolver.resolve_all(wanted)
    assert [getattr(f, "digest", f) for f in again] == list(digests.values())
    relay.close()


def test_check_config_asks_each_store_for_the_versions_the_pins_hold(
    policy_file: Path, registry: Registry, tmp_path: Path
) -> None:
    from tests.test_cli import releasegate

    with_artifact(policy_file, f"{{image: {registry.host}/{IMAGE}}}")
    env = {"RELEASEGATE_POLICY": str(policy_file), "RELEASEGATE_WORKDIR": str(tmp_path / "w")}
    done = releasegate("check-config", env=env)
    assert done.returncode == 1
    assert f"awesome in int runs 2.0.0: {registry.host}/{IMAGE} has no 2.0.0; it has none" in (
        done.stderr
    )
    digest = registry.push(IMAGE, "2.0.0")
    done = releasegate("check-config", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"  awesome              prd        2.0.0 is {digest}" in done.stdout


def test_pin_digest_writes_the_approved_digest_beside_the_tag(
    policy_file: Path,
    registry: Registry,
    chat: Chat,
    redis: Redis,
    origin: Remote,
    settings: object,
) -> None:
    """kustomize_image gets `newTag` and `digest` together; a yaml_path pin whose format names
    `{digest}` gets both in one value."""
    with_artifact(policy_file, f"{{image: {registry.host}/{IMAGE}, pin_digest: true}}")
    text = policy_file.read_text().replace(
        "        - {file: env/prd/kustomization.yml, configmap_literal: awesome-config/appVersion}",
        "        - {file: env/prd/kustomization.yml, configmap_literal: awesome-config/appVersion,"
        " format: '{version}@{digest}'}",
    )
    policy_file.write_text(text)
    before = registry.push(IMAGE, "2.0.0")
    digest = registry.push(IMAGE, "2.1.0")
    work = origin.path.parent / "by-hand"
    git("clone", "--quiet", str(origin.path), str(work))
    kustomization = work / "env" / "prd" / "kustomization.yml"
    kustomization.write_text(
        kustomization.read_text().replace("appVersion=2.0.0", f"appVersion=2.0.0@{before}")
    )
    git("-c", "user.name=x", "-c", "user.email=x@x", "commit", "-qam", "digests", cwd=work)
    git("push", "--quiet", "origin", "main", cwd=work)
    from bot.conversation import Conversation
    from config.policy import parse_policy

    policy = parse_policy(text)
    chat = Chat(Conversation(policy, redis, chat.conversation.ctx.mirror))
    reply = chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd")
    assert f"+    digest: {digest}" in reply.text, reply.text
    chat.say("carol", "deploy-prd", "approve")
    run_worker(redis)
    assert RequestStore(redis).state(str(reply.request_id)) is RequestState.PUSHED, outbox(redis)
    written = origin.file("env/prd/kustomization.yml").decode()
    assert "    newTag: 2.1.0\n" in written
    assert f"    digest: {digest}\n" in written
    assert f"appVersion=2.1.0@{digest}" in written
    status = chat.say("bob", "deploy-prd", "status awesome").text
    assert "prd 2.1.0" in status  # the digest is written beside the version, not read as it


def test_a_registry_with_token_authentication_is_asked_with_a_token_from_its_realm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The registry answers 401 with a Bearer challenge; the token service takes the Docker
    config's credentials and hands out a pull token for the repository asked about."""
    from tests.token_service import SERVICE, TokenService

    tokens = TokenService(tmp_path / "tokens", "ci", "s3cret")
    guarded = start_registry(
        tmp_path / "guarded",
        auth_config=tokens.registry_config(),
        push_token=lambda name: tokens.mint(name, ["pull", "push"]),
    )
    try:
        digest = guarded.push(IMAGE, "2.1.0")
        artifact = Artifact(image=f"{guarded.host}/{IMAGE}")
        folder = docker_config(tmp_path / "docker", guarded.host, "ci", "s3cret")
        monkeypatch.setenv("DOCKER_CONFIG", str(folder))
        assert Resolver().resolve("awesome", artifact, "2.1.0").digest == digest
        assert tokens.asked[-1] == {"service": SERVICE, "scope": f"repository:{IMAGE}:pull"}
        wrong = docker_config(tmp_path / "wrong", guarded.host, "ci", "guess")
        monkeypatch.setenv("DOCKER_CONFIG", str(wrong))
        with pytest.raises(ReleasegateError, match=r"token service refused \(401\)"):
            Resolver().resolve("awesome", artifact, "2.1.0")
    finally:
        guarded.stop()
        tokens.close()


def test_a_chart_in_an_oci_registry_is_a_tag_there(registry: Registry) -> None:
    digest = registry.push("charts/podinfo", "6.5.0")
    artifact = Artifact(chart=f"oci://{registry.host}/charts/podinfo")
    assert Resolver().resolve("podinfo", artifact, "6.5.0").digest == digest
    with pytest.raises(ArtifactMissing, match=re.escape("has no 6.6.0; the newest it has: 6.5.0")):
        Resolver().resolve("podinfo", artifact, "6.6.0")


def test_a_promotion_says_when_the_upstream_runs_another_image_under_the_same_tag(
    policy_file: Path, registry: Registry, chat: Chat, redis: Redis, origin: Remote
) -> None:
    """int took 2.1.0 as one digest; the tag was pushed again since. Promoting it to prd binds
    the registry's digest of today, and the card says int runs another."""
    with_artifact(policy_file, f"{{image: {registry.host}/{IMAGE}, pin_digest: true}}")
    text = policy_file.read_text().replace(
        "    approvals: 1\n", "    approvals: 1\n    promote_from: int\n", 1
    )
    policy_file.write_text(text)
    first = registry.push(IMAGE, "2.1.0")
    work = origin.path.parent / "by-hand"
    git("clone", "--quiet", str(origin.path), str(work))
    kustomization = work / "env" / "int" / "kustomization.yml"
    kustomization.write_text(
        kustomization.read_text()
        .replace("newTag: 2.0.0", f"newTag: 2.1.0\n    digest: {first}")
        .replace("appVersion=2.0.0", "appVersion=2.1.0")
    )
    git("-c", "user.name=x", "-c", "user.email=x@x", "commit", "-qam", "int", cwd=work)
    git("push", "--quiet", "origin", "main", cwd=work)
    now = registry.push(IMAGE, "2.1.0", salt="rebuilt")
    from bot.conversation import Conversation
    from config.policy import parse_policy

    policy = parse_policy(text)
    chat = Chat(Conversation(policy, redis, chat.conversation.ctx.mirror))
    reply = chat.say("alice", "deploy-prd", "promote awesome to prd")
    assert reply.request_id, reply.text
    assert f"📦 awesome 2.1.0 is {now[:19]}" in reply.text
    assert f"⚠️ int runs awesome 2.1.0 as {first[:19]}: the tag names another image now" in (
        reply.text
    )


def test_plain_http_is_used_only_for_loopback_and_the_registries_named_insecure() -> None:
    from workers.artifacts.registry import Registry as Client

    assert Client("registry.acme.example").base == "https://registry.acme.example"
    assert Client("127.0.0.1:5000").base == "http://127.0.0.1:5000"
    assert Client("localhost:5000").base == "http://localhost:5000"
    lan = Client("registry.lan:5000", insecure=("registry.lan:5000",))
    assert lan.base == "http://registry.lan:5000"


def test_a_registry_naming_a_token_service_on_another_host_never_gets_the_login(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A registry's 401 names the realm: one on another host (127.0.0.2 here) is asked
    without the Docker config's login, and gets it only once the operator lists it."""
    from tests.token_service import TokenService

    rogue = TokenService(tmp_path / "tokens", "ci", "s3cret", host="127.0.0.2")
    guarded = start_registry(
        tmp_path / "guarded",
        auth_config=rogue.registry_config(),
        push_token=lambda name: rogue.mint(name, ["pull", "push"]),
    )
    try:
        guarded.push(IMAGE, "2.1.0")
        artifact = Artifact(image=f"{guarded.host}/{IMAGE}")
        monkeypatch.setenv(
            "DOCKER_CONFIG", str(docker_config(tmp_path / "docker", guarded.host, "ci", "s3cret"))
        )
        with pytest.raises(ReleasegateError, match=r"token service refused \(401\)"):
            Resolver().resolve("awesome", artifact, "2.1.0")
        assert rogue.logins == [""], "the login went to a host the registry named"
        listed = Resolver(auth_hosts=(f"127.0.0.2:{rogue.server.server_port}",))
        assert listed.resolve("awesome", artifact, "2.1.0").digest.startswith("sha256:")
        assert rogue.logins[-1].startswith("Basic ")
    finally:
        guarded.stop()
        rogue.close()


def test_a_token_service_over_plain_http_is_refused_for_a_registry_spoken_to_over_https() -> None:
    from workers.artifacts.registry import Registry as Client
    from workers.artifacts.registry import RegistryError

    client = Client("registry.acme.example")
    challenge = 'Bearer realm="http://registry.acme.example/token",service="r"'
    with pytest.raises(RegistryError, match="over plain HTTP"):
        client._authorize("team/app", challenge)
    assert client._may_see_credentials("registry.acme.example:443")
    assert not client._may_see_credentials("127.0.0.2:5000")
    assert Client("registry-1.docker.io")._may_see_credentials("auth.docker.io")


def test_a_manifest_whose_bytes_do_not_hash_to_the_digest_the_registry_names_is_refused(
    tmp_path: Path,
) -> None:
    """A registry (or something between us) that names one digest and sends another
    manifest: what binds the approval is the hash of the bytes, so it is refused."""
    import http.server
    import threading

    manifest = b'{"schemaVersion": 2, "config": {"digest": "sha256:' + b"0" * 64 + b'"}}'

    class Lying(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Docker-Content-Digest", "sha256:" + "a" * 64)
            self.send_header("Content-Length", str(len(manifest)))
            self.end_headers()
            self.wfile.write(manifest)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Lying)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        artifact = Artifact(image=f"127.0.0.1:{server.server_port}/{IMAGE}")
        with pytest.raises(ReleasegateError, match="hashes to sha256:"):
            Resolver().resolve("awesome", artifact, "2.1.0")
    finally:
        server.shutdown()


def test_the_newest_versions_put_a_release_after_its_candidates() -> None:
    from workers.artifacts.resolve import newest

    tags = ["2.0.0", "2.1.0-rc1", "2.2.0", "2.2.0-rc1", "2.10.0", "2.2.0-rc2", "2.3.0+build.7"]
    assert newest(tags) == ["2.10.0", "2.3.0+build.7", "2.2.0", "2.2.0-rc2", "2.2.0-rc1"]
