"""Evidence after the rollout: an environment's `verify:` block.

```yaml
environments:
  prd:
    verify:
      prometheus: {url: http://prometheus.monitoring:9090}   # token: RELEASEGATE_PROMETHEUS_TOKEN
      metrics:
        - name: error-rate
          query: sum(rate(http_requests_total{app="{app}",code=~"5.."}[2m])) / sum(...)
          success: "< 0.05"        # <, <=, >, >=, ==, != and a number
          interval: 30s
          count: 10                # conclusive measurements
          failure_limit: 1         # failed measurements tolerated
        - name: smoke
          web: {url: "https://awesome.prd.acme.example/healthz"}   # 2xx within 5 s
      inconclusive_limit: 2        # per measured series: no data, NaN, several series, unreachable
      on_failure: rollback         # or: hold
```
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from config.durations import Duration

_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
}
# What a failed comparison is said as: `0.21 ≥ 0.05` for a failed `< 0.05`.
_NEGATED = {"<": "≥", "<=": ">", ">": "≤", ">=": "<", "==": "≠", "!=": "="}
CONDITION = re.compile(r"\s*(<=|>=|==|!=|<|>)\s*(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)\s*")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_condition(text: str) -> tuple[str, float]:
    found = CONDITION.fullmatch(text)
    if not found:
        raise ValueError(f'{text!r} is not a condition like "< 0.05"')
    return found.group(1), float(found.group(2))


def holds(condition: str, value: float) -> bool:
    """Whether `value` meets `condition` (`< 0.05`); NaN never does."""
    op, bound = parse_condition(condition)
    return not math.isnan(value) and _COMPARE[op](value, bound)


def failed_as(condition: str, value: float) -> str:
    """`0.21 ≥ 0.05`: how a value that failed `condition` is said."""
    op, bound = parse_condition(condition)
    return f"{value:.4g} {_NEGATED[op]} {bound:g}"


class Prometheus(_Model):
    url: str = Field(pattern=r"^https?://[^\s]+$", max_length=500)


class WebCheck(_Model):
    url: str = Field(pattern=r"^https?://[^\s]+$", max_length=2000)  # `{app}`, `{env}` filled in


class Metric(_Model):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
    query: str | None = Field(default=None, min_length=1, max_length=4000)
    web: WebCheck | None = None
    success: str | None = None
    interval: Duration = timedelta(seconds=30)
    count: int = Field(default=1, ge=1, le=1000)
    failure_limit: int = Field(default=0, ge=0, le=1000)

    @field_validator("success")
    @classmethod
    def _success(cls, value: str | None) -> str | None:
        if value is not None:
            parse_condition(value)
        return value

    @model_validator(mode="after")
    def _one_source(self) -> Metric:
        if (self.query is None) == (self.web is None):
            raise ValueError(f"{self.name}: name exactly one of query or web")
        if self.query is not None and self.success is None:
            raise ValueError(f'{self.name}: a query needs success, like "< 0.05"')
        if self.interval < timedelta(seconds=1):
            raise ValueError(f"{self.name}: interval must be at least 1s")
        if self.failure_limit >= self.count:
            raise ValueError(f"{self.name}: failure_limit must be less than count")
        return self

    def describe(self) -> str:
        """`error-rate (< 0.05, 10 times every 30s)`: what is measured, for the thread."""
        what = self.success if self.query is not None else "web 2xx"
        every = _short(self.interval)
        return f"{self.name} ({what}, {self.count} times every {every})"


class Verify(_Model):
    prometheus: Prometheus | None = None
    metrics: list[Metric] = Field(min_length=1, max_length=20)
    inconclusive_limit: int = Field(default=2, ge=0, le=1000)
    on_failure: Literal["rollback", "hold"] = "rollback"

    @model_validator(mode="after")
    def _sources(self) -> Verify:
        names = [m.name for m in self.metrics]
        if len(set(names)) != len(names):
            raise ValueError("metric names must differ")
        if self.prometheus is None and any(m.query for m in self.metrics):
            raise ValueError("a query needs prometheus: {url: …}")
        return self


def fill(text: str, app: str, env: str, version: str) -> str:
    return text.replace("{app}", app).replace("{env}", env).replace("{version}", version)


def _short(span: timedelta) -> str:
    seconds = int(span.total_seconds())
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"
