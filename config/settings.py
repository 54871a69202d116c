"""Process settings, read from `RELEASEGATE_*` environment variables."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from config.git_access import GitAccess


def _default_workdir() -> Path:
    return Path.home() / ".cache" / "releasegate"


class Settings(BaseSettings):
    """Everything a releasegate process reads from its environment.

    Secrets are `SecretStr`, so they print as `**********` in logs and reprs.
    """

    model_config = SettingsConfigDict(env_prefix="RELEASEGATE_", extra="ignore")

    policy: Path = Path("releasegate.yaml")
    redis_url: SecretStr | None = None
    # Redis Sentinel: `h1:26379,h2:26379,h3:26379`. With it, redis_url gives only the user,
    # password, database and TLS; the master is the one the sentinels name.
    redis_sentinels: str | None = None
    redis_sentinel_master: str = "mymaster"
    redis_sentinel_password: SecretStr | None = None
    # `serve` and `worker` refuse a Redis URL without a password (whoever can write to Redis
    # can approve anything) unless this says it is deliberate.
    redis_without_password: bool = False

    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_api_url: str = "https://slack.com/api/"
    # Our Slack app's id (A…): a delivery for another app is refused. Read from bots.info
    # when unset.
    slack_app_id: str = ""

    rocketchat_url: str | None = None
    rocketchat_user_id: str | None = None
    rocketchat_token: SecretStr | None = None
    rocketchat_webhook_token: SecretStr | None = None
    # Poll Rocket.Chat: for reactions on waiting requests, and for messages when no
    # webhook token is set. Tests turn it off and drive polling rounds themselves.
    rocketchat_poll: bool = True

    # Following rollouts: Argo CD's API (a token of an account that may get and sync the
    # applications), or Flux through the Kubernetes API (in-cluster, or KUBECONFIG).
    # A GitHub or GitLab token for repository.merge_request (merge requests, merges).
    forge_token: SecretStr | None = None
    argocd_url: str | None = None
    argocd_token: SecretStr | None = None
    # A bearer token for the Prometheus that `verify:` queries, where it asks for one.
    prometheus_token: SecretStr | None = None

    # Registries reached over plain HTTP (host[:port], comma-separated); loopback always is.
    # Credentials come from the Docker config (DOCKER_CONFIG, else ~/.docker/config.json).
    insecure_registries: str = ""
    # Token services (host[:port], comma-separated) a registry may send the Docker config's
    # login to, besides its own host: a registry's 401 names the realm, and a login goes
    # nowhere else on its word.
    registry_auth_hosts: str = ""

    http_host: str = "0.0.0.0"  # noqa: S104 - the bot runs in a container behind a Service
    http_port: int = Field(default=8080, ge=1, le=65535)
    # Bodies over this many bytes are refused (413) before they are read whole or parsed.
    max_body_bytes: int = 1024 * 1024
    workdir: Path = _default_workdir()
    # How long an ended request (and its approvals) stays in Redis; Git keeps the record.
    retention_days: int = Field(default=30, ge=1)
    git_ssh_key: Path | None = None
    # The SSH host keys of the Git servers (a known_hosts file); without it the user's own
    # ~/.ssh/known_hosts. Trust on first use only when asked for (kept in the work folder).
    git_known_hosts: Path | None = None
    git_accept_new_host_keys: bool = False
    # Sign every commit: an SSH private key's path, or gpg:KEYID (see workers/signing.py).
    git_signing_key: str | None = None
    # Where the repository's `validate` command runs: under bubblewrap (bwrap), away from
    # every secret of the worker, or (none) beside them. More read-only paths for it, for a
    # validator installed outside /usr (os.pathsep-separated).
    validate_sandbox: Literal["bwrap", "none"] = "bwrap"
    validate_readonly: str = ""
    # What the validate command may use: processes, address space, its largest file, the
    # size of its /tmp, and time. A command that runs into one fails, saying which.
    validate_max_processes: int = Field(default=256, ge=8)
    validate_max_memory_mb: int = Field(default=4096, ge=64)
    validate_max_file_mb: int = Field(default=256, ge=1)
    validate_tmp_mb: int = Field(default=512, ge=1)
    validate_timeout: float = Field(default=300, gt=0)
    log_format: Literal["auto", "json", "text"] = "auto"  # auto: text on a terminal

    @property
    def retention(self) -> timedelta:
        return timedelta(days=self.retention_days)

    def git_access(self) -> GitAccess:
        return GitAccess(
            ssh_key=self.git_ssh_key,
            known_hosts=self.git_known_hosts,
            accept_new=self.git_accept_new_host_keys,
            workdir=self.workdir,
        )

    @property
    def insecure_registry_hosts(self) -> tuple[str, ...]:
        return tuple(h.strip() for h in self.insecure_registries.split(",") if h.strip())

    @property
    def registry_auth_host_names(self) -> tuple[str, ...]:
        return tuple(h.strip() for h in self.registry_auth_hosts.split(",") if h.strip())

    @property
    def validate_readonly_paths(self) -> tuple[Path, ...]:
        return tuple(Path(p) for p in self.validate_readonly.split(os.pathsep) if p)

    def secret_values(self) -> list[str]:
        """Every secret this process holds, to scrub from anything it shows."""
        values = [getattr(self, name) for name in type(self).model_fields]
        return [v.get_secret_value() for v in values if isinstance(v, SecretStr)]
