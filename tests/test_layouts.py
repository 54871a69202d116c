"""Each common GitOps layout bumped through the real chat, rules, queue and worker.

The seed's Terraform `environments` repository is the demo's own
(config/examples/environments); the fixture repositories under tests/fixtures
are written for the project: a Helm umbrella chart with values per
environment, a Flux HelmRelease beside its HelmRepository, and an Argo CD
Application. Each test asserts the exact lines `git diff` shows.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from redis import Redis

from bot.conversation import Conversation
from bot.demo import create_remote, example
from config.policy import parse_policy
from config.settings import Settings
from tests.conftest import Chat, Remote, outbox, run_worker
from workers.git.mirrors import Mirrors
from workers.state.request import RequestState
from workers.state.store import RequestStore

FIXTURES = Path(__file__).parent / "fixtures"

POLICY = """
repository: {{url: "{url}"}}
environments:
  int: {{channels: ["shell:deploy"], deployers: ["shell:alice"]}}
  prd: {{channels: ["shell:deploy"], deployers: ["shell:alice"]}}
apps:
{apps}
"""

Layout = Callable[[str, str], tuple[Chat, Remote]]


@pytest.fixture
def layout(
    tmp_path: Path, redis: Redis, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> Layout:
    def make(fixture: str, apps: str) -> tuple[Chat, Remote]:
        remote = tmp_path / f"{fixture}.git"
        source = example(fixture) if fixture == "environments" else FIXTURES / fixture
        create_remote(source, remote, tmp_path / f"{fixture}-seed")
        policy_file = tmp_path / f"{fixture}.yaml"
        policy_file.write_text(POLICY.format(url=remote.as_uri(), apps=apps))
        monkeypatch.setenv("RELEASEGATE_POLICY", str(policy_file))
        policy = parse_policy(policy_file.read_text())
        checkout = Mirrors.of(policy, settings.workdir, freshness=0)
        return Chat(Conversation(policy, redis, checkout)), Remote(remote)

    return make


def deploy(chat: Chat, redis: Redis, text: str) -> str:
    reply = chat.say("alice", "deploy", text)
    assert reply.queued, reply.text
    run_worker(redis)
    request_id = reply.queued[0]
    assert RequestStore(redis).state(request_id) is RequestState.PUSHED, outbox(redis)
    return request_id


def changed_lines(remote: Remote) -> list[str]:
    diff = remote.diff("main~1")
    return [
        line for line in diff.splitlines() if line[:1] in "+-" and line[:3] not in ("---", "+++")
    ]


def test_terraform_module_ref_in_the_seeds_environments_repo(layout: Layout, redis: Redis) -> None:
    chat, remote = layout(
        "environments",
        "  back_end:\n"
        "    versions: '^v\\d+\\.\\d+\\.\\d+(-rc\\d+)?$'\n"
        "    pins:\n"
        "      prd: [{file: prod_back_end.tf, terraform_module: prod_back_end}]\n",
    )
    before = remote.file("prod_back_end.tf")
    deploy(chat, redis, "deploy back_end v2.1.0 to prd")
    assert remote.file("prod_back_end.tf") == before.replace(b"?ref=v2.0.0", b"?ref=v2.1.0")
    assert changed_lines(remote) == [
        '-  source = "../backend/infrastructure/modules/back_end?ref=v2.0.0"',
        '+  source = "../backend/infrastructure/modules/back_end?ref=v2.1.0"',
    ]
    assert "back_end: v2.0.0 -> v2.1.0 (prd)" in remote.message()


def test_terraform_git_source_with_crlf_and_a_registry_version(
    layout: Layout, redis: Redis
) -> None:
    chat, remote = layout(
        "environments",
        "  front_end:\n"
        "    pins:\n"
        "      prd: [{file: prod_front_end.tf, terraform_module: prod_front_end}]\n"
        "  monitoring:\n"
        "    pins:\n"
        "      prd: [{file: prod_front_end.tf, terraform_module: monitoring, part: version}]\n"
        "  spa:\n"
        "    pins:\n"
        "      int: [{file: dev_front_end.tf, terraform_module: dev_front_end}]\n",
    )
    before = remote.file("prod_front_end.tf")
    deploy(chat, redis, "deploy front_end 1.1.0 to prd")
    deploy(chat, redis, "deploy monitoring 4.4.0 to prd")
    expected = before.replace(b"ref=1.0.2&", b"ref=1.1.0&").replace(b'"4.3.0"', b'"4.4.0"')
    assert remote.file("prod_front_end.tf") == expected
    assert b"\r\n" in expected
    assert not expected.endswith(b"\n")
    before = remote.file("dev_front_end.tf")
    deploy(chat, redis, "deploy spa 1.0.3 to int")
    assert remote.file("dev_front_end.tf") == before.replace(b"?ref=1.0.2", b"?ref=1.0.3")


def test_helm_umbrella_values_and_chart_dependency(layout: Layout, redis: Redis) -> None:
    chat, remote = layout(
        "helm-umbrella",
        "  checkout:\n"
        "    pins:\n"
        "      int:\n"
        "        - {file: values-int.yaml, yaml_path: checkout.image.tag}\n"
        "      prd:\n"
        "        - {file: values-prd.yaml, yaml_path: checkout.image.tag}\n"
        "        - {file: charts/shop/Chart.yaml, yaml_path: 'dependencies[name=checkout].version'}\n",
    )
    deploy(chat, redis, "deploy checkout 1.10.0 to prd")
    assert changed_lines(remote) == [
        "-    version: 1.4.0   # our own chart",
        "+    version: 1.10.0   # our own chart",
        '-    tag: "1.4.0"   # bumped by releasegate',
        '+    tag: "1.10.0"   # bumped by releasegate',
    ]
    assert b'tag: "1.4.0"' in remote.file("values-int.yaml")


def test_flux_helm_release_in_a_multi_document_file(layout: Layout, redis: Redis) -> None:
    chat, remote = layout(
        "flux",
        "  podinfo:\n"
        "    pins:\n"
        "      prd:\n"
        "        - file: clusters/prd/podinfo.yaml\n"
        "          yaml_path: spec.chart.spec.version\n"
        "          document: HelmRelease/podinfo\n",
    )
    deploy(chat, redis, "deploy podinfo 6.6.0 to prd")
    assert changed_lines(remote) == ["-      version: 6.5.4", "+      version: 6.6.0"]


def test_argocd_application_target_revision_with_a_format(layout: Layout, redis: Redis) -> None:
    chat, remote = layout(
        "argocd-apps",
        "  web:\n"
        "    pins:\n"
        "      prd:\n"
        "        - {file: apps/web-prd.yaml, yaml_path: spec.source.targetRevision, format: 'v{version}'}\n",
    )
    reply = chat.say("alice", "deploy", "status web")
    assert reply.text.startswith("web: prd 3.2.0")
    deploy(chat, redis, "deploy web 3.3.0 to prd")
    assert changed_lines(remote) == ["-    targetRevision: v3.2.0", "+    targetRevision: v3.3.0"]


def test_a_pin_that_resolves_twice_is_refused_before_anything_is_queued(
    layout: Layout, redis: Redis
) -> None:
    chat, remote = layout(
        "flux",
        "  podinfo:\n"
        "    pins:\n"
        "      prd: [{file: clusters/prd/podinfo.yaml, yaml_path: metadata.name}]\n",
    )
    reply = chat.say("alice", "deploy", "deploy podinfo 6.6.0 to prd")
    assert not reply.queued
    assert reply.text == (
        "clusters/prd/podinfo.yaml: metadata.name is in 2 documents "
        "(HelmRepository/podinfo, HelmRelease/podinfo); set document"
    )
    assert remote.count() == 1
    assert redis.keys("releasegate:request:*") == []


def test_all_pins_of_a_request_apply_or_none_do(layout: Layout, redis: Redis) -> None:
    chat, remote = layout(
        "helm-umbrella",
        "  checkout:\n"
        "    pins:\n"
        "      prd:\n"
        "        - {file: values-prd.yaml, yaml_path: checkout.image.tag}\n"
        "        - {file: charts/shop/Chart.yaml, yaml_path: 'dependencies[name=nope].version'}\n",
    )
    reply = chat.say("alice", "deploy", "deploy checkout 1.5.0 to prd")
    assert "charts/shop/Chart.yaml: no dependencies[name=nope].version" in reply.text
    assert remote.count() == 1
