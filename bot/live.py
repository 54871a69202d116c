"""What the reconciler says now: live lines for `status ENV`, and `check-config`'s look at
each Argo CD application the policy follows."""

from __future__ import annotations

import logging
import re
from concurrent.futures import ThreadPoolExecutor

from bot.conversation import Conversation
from config.errors import ReconcilerError
from config.policy import Policy
from config.settings import Settings
from config.text import inert
from workers.rollout.reconcilers import ArgoCD, reconciler_for

log = logging.getLogger(__name__)

LIVE_TIMEOUT = 2.0  # seconds `status ENV` waits for the reconciler


def live_lines(conversation: Conversation, settings: Settings, env: str) -> list[str]:
    """What the reconciler says now about each app of `env` (for `status ENV`)."""
    policy = conversation.policy
    rollout = policy.environments[env].rollout
    if rollout is None:
        return []
    token = settings.argocd_token.get_secret_value() if settings.argocd_token else None
    try:
        # A chat answer waits for this: ask briefly, and say so when the reconciler is slow.
        client = reconciler_for(rollout, settings.argocd_url, token, timeout=LIVE_TIMEOUT)
    except ReconcilerError as exc:
        return [f"{env} rollout: cannot ask ({inert(str(exc), 300)})"]

    def line(app: str) -> str:
        name = rollout.target(app, env)
        try:
            said = client.status(name).line()
        except ReconcilerError as exc:
            said = f"cannot ask: {exc}"
        return f"{client.name} {inert(name, 100)}: {inert(said, 300)}"

    apps = [app for app, spec in policy.apps.items() if env in spec.pins]
    # Asked all at once: each answer is bounded, and one slow application delays no other.
    with ThreadPoolExecutor(max(1, min(8, len(apps))), "live") as pool:
        return list(pool.map(line, apps))


def _same_repository(a: str, b: str) -> bool:
    """`git@host:org/repo.git`, `https://host/org/repo` and `ssh://git@host/org/repo.git` are
    one repository."""

    def key(url: str) -> str:
        url = url.strip().lower().removesuffix("/").removesuffix(".git")
        url = re.sub(r"^[a-z+]+://", "", url)
        url = re.sub(r"^[^@/]+@", "", url)
        return url.replace(":", "/", 1) if "/" not in url.split(":", 1)[0] else url

    return key(a) == key(b)


def check_applications(policy: Policy, settings: Settings) -> tuple[list[str], list[str]]:
    """For `check-config`: every Argo CD application the policy follows exists and reads this
    app's repository's branch. Returns (lines to print, problems)."""
    token = settings.argocd_token.get_secret_value() if settings.argocd_token else None
    lines: list[str] = []
    problems: list[str] = []
    for env, spec in policy.environments.items():
        if spec.rollout is None or spec.rollout.argocd is None:
            continue
        try:
            client = reconciler_for(spec.rollout, settings.argocd_url, token)
        except ReconcilerError as exc:
            problems.append(f"{env} rollout: {exc}")
            continue
        if not isinstance(client, ArgoCD):
            continue
        for app, app_spec in policy.apps.items():
            if env not in app_spec.pins:
                continue
            if not policy.repositories[policy.app_repository(app)].reconciled:
                continue  # a pipeline applies it; nothing to follow
            name = spec.rollout.target(app, env)
            try:
                repo_url, revision = client.source(name)
            except ReconcilerError as exc:
                problems.append(f"Argo CD application {name} ({app} in {env}): {exc}")
                lines.append(f"  argocd {name:24} UNUSABLE: {exc}")
                continue
            wrong = []
            repository = policy.repositories[policy.app_repository(app)]
            if not _same_repository(repo_url, repository.url):
                wrong.append(f"reads {repo_url}, not {repository.url}")
            if revision not in (repository.branch, f"refs/heads/{repository.branch}", "HEAD"):
                wrong.append(f"follows {revision}, not {repository.branch}")
            if wrong:
                problems.append(f"Argo CD application {name}: " + "; ".join(wrong))
                lines.append(f"  argocd {name:24} WRONG SOURCE: {'; '.join(wrong)}")
            else:
                lines.append(f"  argocd {name:24} ok: {repo_url} at {revision}")
    return lines, problems
