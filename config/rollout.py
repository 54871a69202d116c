"""How an environment's reconciler is followed after a push: the policy's `rollout:` block.

```yaml
environments:
  prd:
    rollout:
      argocd: {application: "{app}-prd", sync: true}
      # or: flux: {kind: Kustomization, name: apps, namespace: flux-system, reconcile: true}
      timeout: 10m
```
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from config.durations import Duration


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ArgoCDRollout(_Model):
    # One Argo CD application per app; `{app}` and `{env}` are filled in.
    application: str = Field(min_length=1, max_length=253)
    sync: bool = False  # ask Argo CD to sync the pushed revision right away


class FluxRollout(_Model):
    kind: Literal["Kustomization", "HelmRelease"] = "Kustomization"
    name: str = Field(min_length=1, max_length=253)  # `{app}` and `{env}` are filled in
    namespace: str = Field(default="flux-system", min_length=1, max_length=63)
    reconcile: bool = False  # annotate reconcile.fluxcd.io/requestedAt to reconcile now


class Rollout(_Model):
    argocd: ArgoCDRollout | None = None
    flux: FluxRollout | None = None
    timeout: Duration = timedelta(minutes=10)

    @model_validator(mode="after")
    def _one_reconciler(self) -> Rollout:
        if (self.argocd is None) == (self.flux is None):
            raise ValueError("name exactly one reconciler: argocd or flux")
        if self.timeout <= timedelta(0):
            raise ValueError("timeout must be positive")
        return self

    def target(self, app: str, env: str) -> str:
        """The reconciler's object for `app` in `env` (an Argo CD application, a Flux object)."""
        if self.argocd is not None:
            pattern = self.argocd.application
        elif self.flux is not None:
            pattern = self.flux.name
        else:  # the validator above makes this unreachable
            raise ValueError("the rollout names no reconciler")
        return pattern.replace("{app}", app).replace("{env}", env)

    @property
    def kind(self) -> str:
        return "argocd" if self.argocd else "flux"
