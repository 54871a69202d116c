"""The policy file: what it accepts, and how it reports every problem with its YAML path."""

from __future__ import annotations

from datetime import timedelta
from importlib import resources
from pathlib import Path

import pytest

from config.errors import PolicyError, VersionError
from config.policy import load_policy, parse_policy

MINIMAL = """
repository: {url: "file:///tmp/x.git"}
groups:
  devs: ["shell:alice"]
environments:
  prd:
    channels: ["shell:deploy-prd"]
    deployers: ["group:devs"]
apps:
  awesome:
    pins:
      prd: [{file: env/prd/kustomization.yml, kustomize_image: bespinian/awesome-image}]
"""


def test_the_demo_policy_is_valid() -> None:
    text = (resources.files("config") / "examples" / "demo.yaml").read_text()
    policy = parse_policy(text.replace("REPOSITORY_URL", "file:///tmp/remote.git"))
    assert policy.environments["prd"].approvals == 1
    assert policy.environments["prd"].approval_ttl == timedelta(hours=2)
    assert policy.environment_named("Production") == "prd"


def test_defaults_fill_what_the_file_leaves_out() -> None:
    policy = parse_policy(MINIMAL)
    assert policy.repository.branch == "main"
    assert policy.environments["prd"].approvals == 0
    assert policy.apps["awesome"].versions == "semver"


def test_every_problem_is_reported_at_once_with_its_yaml_path() -> None:
    text = """
repository: {url: "file:///tmp/x.git", branch: "--upload-pack=evil"}
groups:
  devs: ["alice"]
environments:
  prd:
    channels: ["deploy-prd"]
    deployers: ["group:nobody"]
    approvals: 1
    promote_from: staging
apps:
  awesome:
    versions: "([unclosed"
    pins:
      qa: [{file: ../outside.yml, kustomize_image: x}]
"""
    with pytest.raises(PolicyError) as err:
        parse_policy(text, "policy.yaml")
    problems = err.value.problems
    assert any(p.startswith("repository.branch:") for p in problems)
    assert any(p.startswith("environments.prd.channels:") for p in problems)
    assert any(p.startswith("apps.awesome.versions:") for p in problems)
    assert any(p.startswith("apps.awesome.pins.qa[0].file:") for p in problems)
    assert "policy.yaml" in str(err.value)


def test_a_misspelt_or_missing_key_is_said_in_plain_words() -> None:
    text = MINIMAL.replace("    deployers:", "    aproval: 1\n    deployers:").replace(
        'repository: {url: "file:///tmp/x.git"}', "repository: {branch: main}"
    )
    with pytest.raises(PolicyError) as err:
        parse_policy(text, "policy.yaml")
    assert err.value.problems == [
        "repository.url: required, but missing",
        "environments.prd.aproval: unknown key `aproval`: did you mean `approvals`?",
    ]
    assert "Extra inputs" not in str(err.value)


def test_references_between_sections_are_checked() -> None:
    text = MINIMAL.replace(
        'deployers: ["group:devs"]', 'deployers: ["group:ops"]\n    approvals: 2'
    )
    text = text.replace("prd: [{file", "staging: [{file")
    text += "    versions: semver\n"
    with pytest.raises(PolicyError) as err:
        parse_policy(text)
    assert err.value.problems == [
        "environments.prd.deployers[0]: unknown group 'ops'",
        "environments.prd.approvers: approvals is 2 but nobody may approve",
        "apps.awesome.pins.staging: unknown environment 'staging'",
    ]


def test_a_pin_needs_exactly_one_kind() -> None:
    text = MINIMAL.replace(
        "kustomize_image: bespinian/awesome-image",
        "kustomize_image: a, configmap_literal: b/c",
    )
    with pytest.raises(
        PolicyError, match=r"apps\.awesome\.pins\.prd\[0\]: a pin needs exactly one"
    ):
        parse_policy(text)


def test_a_missing_policy_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read the policy file"):
        load_policy(tmp_path / "nope.yaml")


def test_yaml_that_does_not_parse_is_a_policy_error() -> None:
    with pytest.raises(PolicyError, match="not valid YAML"):
        parse_policy("repository: [unclosed")


@pytest.mark.parametrize("version", ["2.1.0", "2.1.1-rc1", "10.0.0+build.5", "0.0.1"])
def test_semver_versions_are_accepted(version: str) -> None:
    app = parse_policy(MINIMAL).apps["awesome"]
    assert app.check_version("awesome", version) == version


@pytest.mark.parametrize(
    "version",
    [
        "2.1",
        "v2.1.0",
        "2.1.0\nnewTag: x",
        "2.1.0\n",
        "--upload-pack=touch /tmp/x",
        "$(reboot)",
        "2.1.0;rm -rf /",
        "1" * 500,
        "01.2.3",
        "2.1.0 ",
        "",
    ],
)
def test_crafted_versions_are_refused(version: str) -> None:
    app = parse_policy(MINIMAL).apps["awesome"]
    with pytest.raises(VersionError, match="is not a valid version of awesome"):
        app.check_version("awesome", version)


def test_a_regex_version_pattern_still_refuses_option_like_text() -> None:
    text = MINIMAL.replace("  awesome:\n", "  awesome:\n    versions: '.*'\n")
    app = parse_policy(text).apps["awesome"]
    assert app.check_version("awesome", "anything-goes.1") == "anything-goes.1"
    with pytest.raises(VersionError):
        app.check_version("awesome", "--upload-pack=x")


@pytest.mark.parametrize("name", ["argocd-demo.yaml", "environments.yaml"])
def test_the_example_policies_for_the_seeds_layouts_are_valid(name: str) -> None:
    policy = parse_policy((resources.files("config") / "examples" / name).read_text(), name)
    assert policy.apps


def test_two_repositories_with_the_same_url_and_branch_are_refused() -> None:
    text = """
repositories:
  apps: {url: "file:///srv/gitops.git", branch: main}
  again: {url: "file:///srv/gitops.git/", branch: main}
environments:
  int: {channels: ["shell:deploy-int"], deployers: ["shell:alice"]}
apps:
  awesome:
    pins:
      int: [{repository: apps, file: a.yml, yaml_path: tag}, {repository: again, file: b.yml, yaml_path: tag}]
"""
    with pytest.raises(PolicyError) as refused:
        parse_policy(text)
    assert refused.value.problems == [
        "repositories.again: the same URL and branch as 'apps'; name a branch once"
    ]


def test_a_yaml_mistake_is_said_on_one_line_with_where() -> None:
    with pytest.raises(PolicyError) as refused:
        parse_policy("repository:\n  url: x\n bad: indentation\n")
    [problem] = refused.value.problems
    assert "\n" not in problem
    assert problem.startswith("not valid YAML: "), problem
    assert "(line 3, column 2)" in problem, problem


def test_a_policy_without_any_repository_names_the_single_key_first() -> None:
    with pytest.raises(PolicyError) as refused:
        parse_policy("environments: {}\n")
    assert refused.value.problems[0] == (
        "repository: required, but missing (one `repository:`, or `repositories:` by name)"
    )
