"""The deploy policy: who may deploy what where, and where each version is pinned.

The YAML is parsed into pydantic models, then checked as a whole (references
between groups, environments and apps). Every problem is reported at once,
each with its YAML path, as one `PolicyError`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from config.artifact import Artifact
from config.environments import App, AppEnv, Environment
from config.errors import PolicyError, VersionError
from config.gates import KNOWN_FORGES, AlertsGate, Forge, Freeze, Gates, SignatureGate
from config.pin import Pin
from config.principals import Principal
from config.repository import MergeRequestSpec, Repository
from config.rollout import ArgoCDRollout, FluxRollout, Rollout
from config.verify import Metric, Prometheus, Verify, WebCheck

REPOSITORY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
SINGLE = "default"  # the name of the repository a policy's single `repository:` key gives


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Policy(_Model):
    # In the order they land: a request spanning several lands in this order.
    repositories: dict[str, Repository] = Field(min_length=1)
    # One person's principals on each platform: `person:NAME` matches any of them, the
    # requester is excluded under all of them, and their approvals count once.
    people: dict[str, list[str]] = {}
    groups: dict[str, list[str]] = {}
    environments: dict[str, Environment] = Field(min_length=1)
    apps: dict[str, App] = Field(min_length=1)
    # Where the apps' source repositories live, for the checks gate (github.com and
    # gitlab.com are known without it).
    forges: list[Forge] = []

    def forge_of(self, host: str) -> Forge | None:
        """The forge serving `host` (host[:port]): the policy's, else a known one."""
        return next((f for f in [*self.forges, *KNOWN_FORGES] if f.host == host), None)

    @model_validator(mode="before")
    @classmethod
    def _one_repository(cls, data: Any) -> Any:
        """`repository:` (one) is `repositories: {default: ...}`; a top-level `author:` is every
        repository's unless it names its own; a pin's repository is its app's unless named."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if "repository" in data and "repositories" in data:
            raise ValueError("give either `repository` (one) or `repositories`, not both")
        if "repository" in data:
            data["repositories"] = {SINGLE: data.pop("repository")}
        repos = data.get("repositories")
        if "author" in data and isinstance(repos, dict):
            author = data.pop("author")
            data["repositories"] = {
                name: {"author": author, **repo} if isinstance(repo, dict) else repo
                for name, repo in repos.items()
            }
        only = next(iter(repos)) if isinstance(repos, dict) and len(repos) == 1 else None
        apps = data.get("apps")
        if isinstance(apps, dict):
            data["apps"] = {name: _with_pin_repositories(app, only) for name, app in apps.items()}
        return data

    @property
    def repository(self) -> Repository:
        """The first repository: the only one of a single-repository policy."""
        return next(iter(self.repositories.values()))

    def repositories_of(self, pins: list[Pin]) -> list[str]:
        """The repositories `pins` live in, in the policy's (landing) order."""
        used = {pin.repository for pin in pins}
        return [name for name in self.repositories if name in used]

    def repositories_for(self, changes: Iterable[AppEnv]) -> list[str]:
        """The repositories that pins of `changes` (each with `.app` and `.env`) live in, in
        the policy's order; none for changes the policy no longer pins."""
        pins = [
            pin
            for c in changes
            if c.app in self.apps
            for pin in self.apps[c.app].pins.get(c.env, [])
        ]
        return self.repositories_of(pins)

    def app_repository(self, app: str) -> str:
        """The repository `app`'s reconciler watches: the one it names, else its first pin's
        (the first repository for an app the policy no longer names)."""
        spec = self.apps.get(app)
        if spec is None:
            return next(iter(self.repositories))
        pinned = (pin.repository for pins in spec.pins.values() for pin in pins)
        return spec.repository or next(pinned, next(iter(self.repositories)))

    def environment_named(self, name: str) -> str | None:
        """The canonical name of an environment given its name or an alias (case-insensitive)."""
        wanted = name.lower()
        for env_name, env in self.environments.items():
            if wanted == env_name.lower() or wanted in (a.lower() for a in env.aliases):
                return env_name
        return None

    def app_named(self, name: str) -> str | None:
        wanted = name.lower()
        return next((a for a in self.apps if a.lower() == wanted), None)


def _with_pin_repositories(app: Any, only: str | None) -> Any:
    """`app` (raw) with its repository written into each pin that names none."""
    if not isinstance(app, dict) or not isinstance(app.get("pins"), dict):
        return app
    default = app.get("repository") or only
    if not isinstance(default, str):
        return app

    def filled(pin: Any) -> Any:
        return {"repository": default, **pin} if isinstance(pin, dict) else pin

    pins = {
        env: [filled(pin) for pin in listed] if isinstance(listed, list) else listed
        for env, listed in app["pins"].items()
    }
    return {**app, "pins": pins}


def _in_order(problems: list[str]) -> list[str]:
    """Problems in the order of the policy's sections (each section's in the order found)."""
    sections = ["repository", *Policy.model_fields]
    return sorted(
        problems,
        key=lambda p: next((i for i, s in enumerate(sections) if p.startswith(s)), len(sections)),
    )


def _mapping(value: Any) -> dict[str, Any]:
    return {str(k): v for k, v in value.items()} if isinstance(value, dict) else {}


def _references(data: dict[str, Any]) -> list[str]:
    """What the policy names that it does not define (groups, people, environments), read
    from the YAML as written: said together with any type error, not only after it is
    fixed."""
    problems: list[str] = []
    groups, people = _mapping(data.get("groups")), _mapping(data.get("people"))
    envs = _mapping(data.get("environments"))

    def check_refs(path: str, principals: Any) -> None:
        for i, text in enumerate(principals if isinstance(principals, list) else []):
            try:
                principal = Principal.parse(str(text))
            except ValueError:
                continue  # the field's own check says what is wrong with it
            if principal.kind == "group" and principal.id not in groups:
                problems.append(f"{path}[{i}]: unknown group {principal.id!r}")
            if principal.kind == "person" and principal.id not in people:
                problems.append(f"{path}[{i}]: unknown person {principal.id!r}")

    for name, raw in envs.items():
        env, base = _mapping(raw), f"environments.{name}"
        for key in ("deployers", "approvers", "lockers"):
            check_refs(f"{base}.{key}", env.get(key))
        upstream = env.get("promote_from")
        if upstream is not None and str(upstream) not in envs:
            problems.append(f"{base}.promote_from: unknown environment {upstream!r}")
    repos = _mapping(data.get("repositories")) or {SINGLE: data.get("repository")}
    known = ", ".join(repos)

    def check_repo(path: str, name: Any) -> None:
        if isinstance(name, str) and name not in repos:
            problems.append(f"{path}: unknown repository {name!r} (the policy has {known})")

    for app_name, raw in _mapping(data.get("apps")).items():
        app = _mapping(raw)
        check_repo(f"apps.{app_name}.repository", app.get("repository"))
        for env_name, pins in _mapping(app.get("pins")).items():
            base = f"apps.{app_name}.pins.{env_name}"
            if env_name not in envs:
                problems.append(f"{base}: unknown environment {env_name!r}")
            for i, pin in enumerate(pins if isinstance(pins, list) else []):
                named = _mapping(pin).get("repository", app.get("repository"))
                if named is None and len(repos) > 1:
                    problems.append(
                        f"{base}[{i}]: which repository? name one ({known}) on the app or the pin"
                    )
                elif "repository" in _mapping(pin):
                    check_repo(f"{base}[{i}].repository", named)
    for name in repos:
        if not REPOSITORY_NAME.fullmatch(name):
            problems.append(
                f"repositories.{name}: a repository's name is letters, digits and . _ -"
            )
    return problems


def _problems(policy: Policy) -> list[str]:
    """What is wrong with a policy whose every field is of the right type."""
    problems: list[str] = []
    envs = policy.environments

    owner: dict[str, str] = {}
    for person, ids in policy.people.items():
        for i, text in enumerate(ids):
            try:
                principal = Principal.parse(text)
            except ValueError as exc:
                problems.append(f"people.{person}[{i}]: {exc}")
                continue
            if not principal.is_user:
                problems.append(f"people.{person}[{i}]: {text!r} is not a user's id")
            elif owner.setdefault(text, person) != person:
                problems.append(f"people.{person}[{i}]: {text!r} is already {owner[text]}'s")

    for group, members in policy.groups.items():
        for i, member in enumerate(members):
            try:
                principal = Principal.parse(member)
            except ValueError as exc:
                problems.append(f"groups.{group}[{i}]: {exc}")
                continue
            if principal.kind == "group":
                problems.append(f"groups.{group}[{i}]: {member!r}: groups cannot hold groups")
            elif principal.kind == "person" and principal.id not in policy.people:
                problems.append(f"groups.{group}[{i}]: unknown person {principal.id!r}")

    # Two names for one branch would take two push lanes for it: a request spanning both
    # would wait for a lane it already holds.
    branches: dict[tuple[str, str], str] = {}
    for name, repository in policy.repositories.items():
        where = (repository.url.rstrip("/").removesuffix(".git"), repository.branch)
        if (other := branches.setdefault(where, name)) != name:
            problems.append(
                f"repositories.{name}: the same URL and branch as {other!r}; name a branch once"
            )

    seen_names: dict[str, str] = {}
    for name, env in envs.items():
        base = f"environments.{name}"
        if env.approvals > 0 and not env.approvers:
            problems.append(
                f"{base}.approvers: approvals is {env.approvals} but nobody may approve"
            )
        if (env.soak is not None or env.auto_promote) and env.promote_from is None:
            problems.append(f"{base}.soak: soak and auto_promote need promote_from")
        if env.auto_promote and env.soak is None:
            problems.append(f"{base}.auto_promote: name the soak it waits for")
        for alias in [name, *env.aliases]:
            other = seen_names.setdefault(alias.lower(), name)
            if other != name:
                problems.append(f"{base}.aliases: {alias!r} already names {other!r}")

    for app_name, app in policy.apps.items():
        for env_name, pins in app.pins.items():
            base = f"apps.{app_name}.pins.{env_name}"
            if not pins:
                problems.append(f"{base}: no pins")
            for i, pin in enumerate(pins):
                problems.extend(f"{base}[{i}]: {problem}" for problem in pin.problems())
    return problems


def _location(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(top level)"


_MODELS: dict[str, type[BaseModel]] = {
    "the top level": Policy,
    "a repository": Repository,
    "an environment": Environment,
    "an app": App,
    "a pin": Pin,
    "rollout": Rollout,
    "rollout.argocd": ArgoCDRollout,
    "rollout.flux": FluxRollout,
    "artifact": Artifact,
    "gates": Gates,
    "gates.alerts": AlertsGate,
    "gates.signature": SignatureGate,
    "a forge": Forge,
    "a freeze": Freeze,
    "verify": Verify,
    "verify.prometheus": Prometheus,
    "a verify metric": Metric,
    "a metric's web": WebCheck,
    "a repository's merge_request": MergeRequestSpec,
}


def _keys_of(model: type[BaseModel]) -> list[str]:
    keys = [field.alias or name for name, field in model.model_fields.items()]
    return [*keys, "repository", "author"] if model is Policy else keys


def _unknown_key(key: str) -> str:
    """Why `key` is unknown where it stands, and what was probably meant."""
    homes = [where for where, model in _MODELS.items() if key in _keys_of(model)]
    if homes:  # a real key, in the wrong place (a nested `repository` under an app)
        return f"`{key}` is not a key here; it belongs to {' or '.join(homes)}"
    known = sorted({k for model in _MODELS.values() for k in _keys_of(model)})
    close = difflib.get_close_matches(key, known, n=1)
    hint = f": did you mean `{close[0]}`?" if close else " (see docs/policy.md)"
    return f"unknown key `{key}`{hint}"


def _plain(err: Any, single: bool = False) -> str:
    """One pydantic error in words a policy's author acts on (`single`: the policy gave one
    `repository:`, and its errors are said under that name)."""
    loc = tuple(err["loc"])
    if single and loc[:2] == ("repositories", SINGLE):
        loc = ("repository", *loc[2:])
    where, kind = _location(loc), err["type"]
    if kind == "extra_forbidden":
        return f"{where}: {_unknown_key(str(err['loc'][-1]))}"
    if kind == "missing" and loc == ("repositories",):
        return "repository: required, but missing (one `repository:`, or `repositories:` by name)"
    if kind == "missing":
        return f"{where}: required, but missing"
    return f"{where}: {str(err['msg']).removeprefix('Value error, ')}"


def _yaml_problem(exc: YAMLError) -> str:
    """A YAML error on one line: what is wrong, and the line and column where it was found."""
    problem = getattr(exc, "problem", None) or " ".join(str(exc).split())[:200]
    mark = getattr(exc, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return f"{problem}{where}"


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    """Parse and validate policy YAML; raise one `PolicyError` listing every problem."""
    try:
        data = YAML(typ="safe", pure=True).load(text)
    except YAMLError as exc:
        raise PolicyError(source, [f"not valid YAML: {_yaml_problem(exc)}"]) from exc
    if not isinstance(data, dict):
        raise PolicyError(source, ["(top level): expected a mapping"])
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        single = "repository" in data and "repositories" not in data
        problems = _in_order([_plain(err, single) for err in exc.errors()] + _references(data))
        raise PolicyError(source, problems) from exc
    if problems := _in_order(_references(data) + _problems(policy)):
        raise PolicyError(source, problems)
    return policy


_loaded: dict[Path, tuple[tuple[int, int, int], Policy]] = {}


def load_policy(path: Path) -> Policy:
    """The policy in `path`, parsed again only when the file changed (a worker reads it for
    every job, and a ConfigMap update replaces the file)."""
    try:
        info = path.stat()
        stamp = (info.st_mtime_ns, info.st_size, info.st_ino)
        if (cached := _loaded.get(path)) and cached[0] == stamp:
            return cached[1]
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        why = f"cannot read the policy file: {exc.strerror} (RELEASEGATE_POLICY names it)"
        raise PolicyError(str(path), [why]) from exc
    policy = parse_policy(text, str(path))
    _loaded[path] = (stamp, policy)
    return policy


__all__ = ["App", "Environment", "Pin", "Policy", "Repository", "VersionError", "load_policy"]
