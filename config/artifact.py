"""Where an app's versions live: the policy's `artifact:` block.

```yaml
apps:
  awesome:
    artifact:
      image: registry.acme.example/bespinian/awesome-image   # VERSION is a tag of this image
  back_end:
    artifact:
      git_tags: https://github.com/acme/backend.git            # the ?ref= is a tag there
      tag_format: "v{version}"
  podinfo:
    artifact:
      chart_repo: https://stefanprodan.github.io/podinfo      # its index.yaml
      chart: podinfo
```

A request is filed only for a version its store has (unless `required: false`), and the
approval binds the artifact's digest: the worker resolves the tag again right before it
commits, and refuses when it moved.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, model_validator

# registry[:port]/path/name: lower-case path components, as the distribution spec says.
IMAGE = re.compile(
    r"(?:[A-Za-z0-9.-]+(?::\d{1,5})?/)?[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*"
)


class Artifact(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    image: str | None = Field(default=None, max_length=255)
    # Write the approved digest where a pin can hold one (beside a kustomize_image's tag; a
    # `{digest}` format): the default for an OCI store, since a tag can be moved by anyone
    # who can push to the registry. `false` pins by tag alone, and the card and the commit
    # say so.
    pin_digest: bool | None = None
    git_tags: str | None = Field(default=None, max_length=500)
    chart: str | None = Field(default=None, max_length=300)  # NAME in chart_repo, or oci://…
    chart_repo: str | None = Field(default=None, pattern=r"^https?://[^\s]+$", max_length=500)
    tag_format: str = "{version}"  # how the store names a version: "v{version}"
    # False: a store that cannot be asked does not stop a request (a missing version does).
    required: bool = True

    @model_validator(mode="after")
    def _one_store(self) -> Artifact:
        stores = [s for s in (self.image, self.git_tags, self.chart) if s]
        if len(stores) != 1:
            raise ValueError("name exactly one store: image, git_tags or chart")
        if self.image is not None and not IMAGE.fullmatch(self.image):
            raise ValueError(f"{self.image!r} is not an image name (registry/path/name)")
        if self.chart is not None:
            oci = self.chart.startswith("oci://")
            if oci == (self.chart_repo is not None):
                raise ValueError("a chart is oci://REGISTRY/PATH, or a NAME with chart_repo")
            if oci and not IMAGE.fullmatch(self.chart.removeprefix("oci://")):
                raise ValueError(f"{self.chart!r} is not oci://REGISTRY/PATH")
        if self.chart_repo is not None and self.chart is None:
            raise ValueError("chart_repo needs the chart's name in `chart`")
        if self.pin_digest is True and self.oci_name is None:
            raise ValueError("pin_digest needs an OCI store: image, or chart: oci://")
        if self.tag_format.count("{version}") != 1 or "{" in self.tag_format.replace(
            "{version}", ""
        ):
            raise ValueError("tag_format must contain {version} once and no other braces")
        return self

    @property
    def digests_pinned(self) -> bool:
        """Whether pins that can hold the approved digest get it: `pin_digest`, which is on by
        default for an OCI store (an image, an oci:// chart)."""
        return self.pin_digest if self.pin_digest is not None else self.oci_name is not None

    @property
    def oci_name(self) -> str | None:
        """The OCI repository (`registry/path`) this artifact lives in, if it is one."""
        if self.image is not None:
            return self.image
        if self.chart is not None and self.chart.startswith("oci://"):
            return self.chart.removeprefix("oci://")
        return None

    def tag(self, version: str) -> str:
        return self.tag_format.replace("{version}", version)

    def describe(self) -> str:
        """The store, as a person names it."""
        if self.oci_name is not None:
            return self.oci_name
        if self.git_tags is not None:
            return f"the tags of {self.git_tags}"
        return f"{self.chart} in {self.chart_repo}"
