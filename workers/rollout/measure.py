"""One measurement of a verification: a Prometheus instant query, or a web check.

Each is successful, failed or inconclusive. Inconclusive is everything that is not evidence
either way: no sample, several series, NaN, an error answer, or Prometheus unreachable,
slow or answering more than it should (every answer is read through the bounded reader:
cut at 1 MiB, whole within 5 s). Inconclusive is never a pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import requests

from config.text import inert
from config.verify import Metric, failed_as, fill, holds
from workers.http import AnswerRefused, fetch

DEADLINE = 5.0
Outcome = Literal["success", "failure", "inconclusive"]


@dataclass(frozen=True)
class Measurement:
    outcome: Outcome
    said: str  # the value ("0.012"), how it failed ("0.21 ≥ 0.05"), or why nothing was known
    value: float | None = None


def inconclusive(why: str) -> Measurement:
    return Measurement("inconclusive", why)


def measure(
    metric: Metric,
    app: str,
    env: str,
    version: str,
    prometheus_url: str | None,
    token: str | None,
) -> Measurement:
    """Take `metric` once for `app` in `env`, running `version`."""
    if metric.web is not None:
        return check_web(fill(metric.web.url, app, env, version))
    if metric.query is None or metric.success is None or prometheus_url is None:
        return inconclusive("nothing to ask")  # the policy's validation rules this out
    try:
        value = query(prometheus_url, fill(metric.query, app, env, version), token)
    except Inconclusive as exc:
        return inconclusive(str(exc))
    if holds(metric.success, value):
        return Measurement("success", f"{value:.4g}", value)
    return Measurement("failure", failed_as(metric.success, value), value)


class Inconclusive(Exception):
    """A query that gave no single number."""


def query(url: str, promql: str, token: str | None) -> float:
    """The one value of an instant query (`/api/v1/query`); raises `Inconclusive`."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    endpoint = url.rstrip("/") + "/api/v1/query"
    try:
        with requests.Session() as session:
            answer = fetch(
                session,
                "GET",
                endpoint,
                deadline=DEADLINE,
                params={"query": promql},
                headers=headers,
                allow_redirects=False,
            )
    except AnswerRefused as exc:
        raise Inconclusive(f"Prometheus {exc}") from exc
    except requests.RequestException as exc:
        raise Inconclusive(f"Prometheus unreachable ({type(exc).__name__})") from exc
    try:
        body: Any = answer.json()
    except ValueError as exc:
        raise Inconclusive(f"Prometheus answered {answer.status_code}, not JSON") from exc
    if not isinstance(body, dict):
        raise Inconclusive("Prometheus answered something that is not an object")
    if body.get("status") != "success":
        why = inert(str(body.get("error") or f"HTTP {answer.status_code}"), 160)
        raise Inconclusive(f"Prometheus refused the query: {why}")
    return _one_value(body.get("data"))


def _one_value(data: Any) -> float:
    if not isinstance(data, dict):
        raise Inconclusive("Prometheus answered no data")
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar":
        sample = result
    elif kind == "vector" and isinstance(result, list):
        if not result:
            raise Inconclusive("no data")
        if len(result) > 1:
            raise Inconclusive(f"{len(result)} series, not one")
        sample = result[0].get("value") if isinstance(result[0], dict) else None
    else:
        raise Inconclusive(f"a {inert(str(kind), 20)} result, not one number")
    try:
        value = float(sample[1])  # type: ignore[index]
    except (TypeError, ValueError, IndexError, KeyError) as exc:
        raise Inconclusive("a sample that is not a number") from exc
    if math.isnan(value):
        raise Inconclusive("NaN")
    return value


def check_web(url: str) -> Measurement:
    """2xx within 5 s is a success; anything else (another status, no answer in time, no
    answer at all) is a failure: the check asks the service itself."""
    try:
        with requests.Session() as session:
            answer = fetch(session, "GET", url, deadline=DEADLINE, allow_redirects=False)
    except AnswerRefused as exc:
        return Measurement("failure", f"answered too slowly or too much: {exc}")
    except requests.RequestException as exc:
        return Measurement("failure", f"unreachable ({type(exc).__name__})")
    if 200 <= answer.status_code < 300:
        return Measurement("success", f"HTTP {answer.status_code}", float(answer.status_code))
    return Measurement("failure", f"HTTP {answer.status_code}", float(answer.status_code))
