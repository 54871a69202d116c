"""The stores that are not registries: a Git repository's tags, a Helm chart repository."""

from __future__ import annotations

import requests
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from config.git_access import GitAccess
from workers.artifacts.registry import DEADLINE, RegistryError
from workers.git.env import git_env, git_said, redact_url
from workers.git.run import GitTimedOut, run_git
from workers.http import AnswerRefused, fetch

MAX_INDEX = 20 * 1024 * 1024  # a big chart repository's index.yaml is a few MB
MAX_TAGS_OUTPUT = 4 * 1024 * 1024


def git_tags(url: str, access: GitAccess | None = None) -> dict[str, str]:
    """Tag -> the commit it points to (annotated tags peeled), from `git ls-remote`."""
    try:
        done = run_git("ls-remote", "--tags", "--", url, env=git_env(access), timeout=DEADLINE)
    except GitTimedOut as exc:
        raise RegistryError(f"{redact_url(url)} did not list its tags in {DEADLINE:.0f}s") from exc
    if done.returncode != 0:
        said = git_said(done.stderr.decode("utf-8", "replace"))
        raise RegistryError(f"cannot list the tags of {redact_url(url)}: {said}")
    tags: dict[str, str] = {}
    for line in done.stdout[:MAX_TAGS_OUTPUT].decode("utf-8", "replace").splitlines():
        sha, _, ref = line.partition("\t")
        name = ref.removeprefix("refs/tags/")
        if name.endswith("^{}"):
            tags[name[:-3]] = sha  # the commit an annotated tag points to wins
        else:
            tags.setdefault(name, sha)
    return tags


def chart_versions(repo_url: str, chart: str) -> dict[str, dict[str, str]]:
    """Version -> {digest, created} of `chart`, from the repository's index.yaml."""
    session = requests.Session()
    url = repo_url.rstrip("/") + "/index.yaml"
    try:
        answer = fetch(session, "GET", url, deadline=DEADLINE, max_bytes=MAX_INDEX)
    except (requests.RequestException, AnswerRefused) as exc:
        raise RegistryError(f"cannot read {url}: {exc}") from exc
    if answer.status_code != 200:
        raise RegistryError(f"{url} answered {answer.status_code}")
    try:
        index = YAML(typ="safe", pure=True).load(answer.content)
    except YAMLError as exc:
        raise RegistryError(f"{url} is not a chart index: {exc}") from exc
    entries = index.get("entries", {}).get(chart) if isinstance(index, dict) else None
    if not isinstance(entries, list):
        return {}
    found = {}
    for entry in entries:
        if isinstance(entry, dict) and entry.get("version"):
            digest = str(entry.get("digest") or "")
            found[str(entry["version"])] = {
                "digest": f"sha256:{digest}" if digest and ":" not in digest else digest,
                "created": str(entry.get("created") or "")[:40],
            }
    return found
