"""A GitOps repository in the policy: where it is, its branch, who commits, how it lands."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from config.git_access import GitAccess

FORGE_TOKEN_ENV = "RELEASEGATE_FORGE_TOKEN"  # noqa: S105 - a variable's name, not a secret


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MergeRequestSpec(_Model):
    forge: Literal["github", "gitlab"]
    api_url: str = Field(pattern=r"^https?://")
    project: str = Field(min_length=1, max_length=300)  # GitHub owner/repo; GitLab path or id
    merge_method: Literal["merge", "squash", "rebase"] = "squash"
    # The environment variable holding this forge's token (one per repository where they differ).
    token_env: str = Field(default=FORGE_TOKEN_ENV, pattern=r"^[A-Z_][A-Z0-9_]{0,99}$")

    @property
    def noun(self) -> str:
        """What its forge calls a merge request, for chat: GitHub's is a pull request."""
        return "pull request" if self.forge == "github" else "merge request"


class Repository(_Model):
    url: str
    branch: str = "main"
    author: str = "releasegate <releasegate@localhost>"
    # Every commit must be signed: a worker without RELEASEGATE_GIT_SIGNING_KEY refuses to start.
    require_signed: bool = False
    # An SSH allowed-signers file: never commit on top of a head that does not verify against it.
    trusted_signers: Path | None = None
    # Land through the forge's pull (merge) requests instead of pushing to the branch.
    merge_request: MergeRequestSpec | None = None
    # A commit's web page, `{sha}` filled in; derived for GitHub, GitLab and Bitbucket URLs.
    web_url: str | None = Field(default=None, pattern=r"^https?://[^\s<>|]*\{sha\}[^\s<>|]*$")
    # This repository's deploy key, where it differs from RELEASEGATE_GIT_SSH_KEY.
    ssh_key: Path | None = None
    # Run the environment's `validate` command in this repository's tree (a Kustomize check
    # means nothing in a repository of Terraform files).
    validate_here: bool = Field(default=True, alias="validate")
    # A reconciler (Argo CD, Flux) watches this repository; false for one a pipeline applies
    # (Terraform): an environment's `rollout` does not follow its apps, a push is the end.
    reconciled: bool = True

    def access(self, base: GitAccess) -> GitAccess:
        """How git reaches this repository: the process's host keys, this repository's key."""
        return replace(base, ssh_key=self.ssh_key) if self.ssh_key is not None else base

    def commit_url(self, sha: str) -> str | None:
        """Where people see commit `sha` in a browser, if we can tell."""
        if self.web_url:
            return self.web_url.replace("{sha}", sha)
        found = re.fullmatch(
            r"(?:[a-z+]+://)?(?:[^@/]+@)?([A-Za-z0-9.-]+)(?::\d+)?[:/]([\w.-]+(?:/[\w.-]+)+?)(?:\.git)?/?",
            self.url,
        )
        if found is None:
            return None
        host, path = found.group(1).lower(), found.group(2).removesuffix(".git")
        if "github" in host:
            return f"https://{host}/{path}/commit/{sha}"
        if "gitlab" in host:
            return f"https://{host}/{path}/-/commit/{sha}"
        if "bitbucket" in host:
            return f"https://{host}/{path}/commits/{sha}"
        return None

    @field_validator("branch")
    @classmethod
    def _branch(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,199}", value):
            raise ValueError(f"{value!r} is not a plain branch name")
        return value

    @field_validator("author")
    @classmethod
    def _author(cls, value: str) -> str:
        if not re.fullmatch(r"[^<>\n]+ <[^<>\s]+>", value):
            raise ValueError(f"{value!r} is not of the form 'Name <email>'")
        return value
