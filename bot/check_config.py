"""`releasegate check-config`: the policy checked against everything it names.

Rocket.Chat users resolved to ids, Argo CD applications reading the right repository,
every verification query asked of its Prometheus once,
signing keys where required, every repository cloned and every pin read, and every
version the pins hold asked of its app's artifact store. Each problem is one line.
"""

from __future__ import annotations

import sys

from config.errors import ReleasegateError
from config.policy import Policy, load_policy
from config.settings import Settings
from workers.artifacts.resolve import Resolver


def check_config(settings: Settings) -> int:
    """`releasegate check-config`: 0 when everything the policy names resolves."""
    from workers.git.mirror import Snapshot
    from workers.git.mirrors import Mirrors, View
    from workers.rules.plan import current_versions

    policy = load_policy(settings.policy)
    counts = f"{len(policy.apps)} apps, {len(policy.environments)} environments"
    print(f"policy {settings.policy}: {counts}")
    problems = _rocketchat_users(policy, settings)
    problems += _verifications(policy, settings)
    from bot.live import check_applications

    lines, rollout_problems = check_applications(policy, settings)
    if lines:
        print("Argo CD applications:")
        print("\n".join(lines))
    problems += rollout_problems
    from workers.git.signing import Signer, require_key

    signer = Signer.from_setting(settings.git_signing_key)
    for repository in policy.repositories.values():
        try:
            require_key(repository, signer)
        except ReleasegateError as exc:
            problems.append(str(exc))
    several = len(policy.repositories) > 1
    mirrors = Mirrors.of(policy, settings.workdir, access=settings.git_access())
    snapshots: dict[str, Snapshot] = {}
    for name, mirror in mirrors.mirrors.items():
        # Each repository on its own: one that cannot be reached is named, the others read.
        label = f"repository {name}" if several else "repository"
        try:
            snapshots[name] = mirror.snapshot()
        except ReleasegateError as exc:
            problems.append(f"{label}: {exc}" if several else str(exc))
            print(f"{label}: UNREACHABLE")
            continue
        print(f"{label} at {snapshots[name].head[:7]}")
    running: list[tuple[str, str, str]] = []  # (app, env, version) as the pins hold them
    for app_name, app in policy.apps.items():
        for env_name, pins in app.pins.items():
            unreachable = sorted({p.repository for p in pins} - set(snapshots))
            if unreachable:
                print(f"  {app_name:20} {env_name:10} UNREAD: {', '.join(unreachable)} unreachable")
                continue
            try:
                found = current_versions(policy, View(snapshots).read, app_name, env_name)
            except ReleasegateError as exc:
                problems.append(f"{app_name} in {env_name}: {exc}")
                print(f"  {app_name:20} {env_name:10} UNRESOLVED: {exc}")
                continue
            versions = sorted({f.version for f in found})
            shown = versions[0] if len(versions) == 1 else "disagree: " + ", ".join(versions)
            print(f"  {app_name:20} {env_name:10} {shown}")
            for pin_version in found:
                where = f"{pin_version.pin.repository}: " if several else ""
                print(f"      {where}{pin_version.pin.describe()} = {pin_version.version}")
            running.extend((app_name, env_name, v) for v in versions)
    mirrors.close()
    problems += _artifacts(policy, settings, running)
    if problems:
        print(f"{len(problems)} problem(s):", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    return 0


def _artifacts(
    policy: Policy, settings: Settings, running: list[tuple[str, str, str]]
) -> list[str]:
    """Every version the pins hold, asked of its app's store (all at once): print what each
    is, and return where a store does not have it or cannot be asked."""
    wanted = [
        (app, artifact, version)
        for app, _env, version in running
        if (artifact := policy.apps[app].artifact) is not None
    ]
    if not wanted:
        return []
    print("artifacts:")
    problems = []
    found = Resolver.from_settings(settings).resolve_all(wanted)
    for (app, env, version), answer in zip(
        [r for r in running if policy.apps[r[0]].artifact is not None], found, strict=True
    ):
        if isinstance(answer, ReleasegateError):
            problems.append(f"{app} in {env} runs {version}: {answer}")
            print(f"  {app:20} {env:10} {version}: MISSING OR UNASKED")
        else:
            print(f"  {app:20} {env:10} {version} is {answer.digest}")
    return problems


def _verifications(policy: Policy, settings: Settings) -> list[str]:
    """Ask every verification query once, per app pinned in its environment, and print what
    Prometheus says; a query it refuses, or a Prometheus it cannot reach, is a problem."""
    from workers.git.env import redact_url
    from workers.rollout.measure import measure

    token = settings.prometheus_token.get_secret_value() if settings.prometheus_token else None
    problems: list[str] = []
    for env_name, env in policy.environments.items():
        if env.verify is None or env.verify.prometheus is None:
            continue
        shown = redact_url(env.verify.prometheus.url)  # a URL may carry a login
        print(f"verification in {env_name} (Prometheus {shown}):")
        for metric in env.verify.metrics:
            if metric.query is None:
                continue
            for app_name, app in policy.apps.items():
                if env_name not in app.pins:
                    continue
                url = env.verify.prometheus.url
                found = measure(metric, app_name, env_name, "", url, token)
                print(f"  {metric.name:20} {app_name:20} {found.outcome}: {found.said}")
                if found.said.startswith(("Prometheus refused", "Prometheus unreachable")):
                    problems.append(f"{env_name} {metric.name} for {app_name}: {found.said}")
    return problems


def _rocketchat_users(policy: Policy, settings: Settings) -> list[str]:
    """Resolve every Rocket.Chat user the policy names to an id, print them, list failures."""
    from workers.rules.identity import rocketchat_names

    names = rocketchat_names(policy)
    if not names:
        return []
    if not (settings.rocketchat_url and settings.rocketchat_user_id and settings.rocketchat_token):
        return [
            "the policy names Rocket.Chat users, but RELEASEGATE_ROCKETCHAT_URL, _USER_ID and "
            "_TOKEN are not all set, so they cannot be resolved to ids"
        ]
    from bot.platforms.rocketchat_api import RocketChatPoster

    poster = RocketChatPoster(
        settings.rocketchat_url,
        settings.rocketchat_user_id,
        settings.rocketchat_token.get_secret_value(),
    )
    problems = []
    print("Rocket.Chat users:")
    for name in names:
        user_id = poster.user_id(name)
        if user_id is None:
            problems.append(f"rocketchat:{name} is no Rocket.Chat user (neither an id nor a name)")
            print(f"  rocketchat:{name:20} UNRESOLVED")
        else:
            print(f"  rocketchat:{name:20} id {user_id}")
    return problems
