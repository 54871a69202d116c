"""The alerts gate: an active alert in Alertmanager that matches the environment's matchers
blocks a deploy, when it is filed and again right before its commit. Rollbacks are never
blocked by alerts (they are how an incident ends).

Alertmanager's API v2 is asked for active, unsilenced, uninhibited alerts matching every
matcher (`GET /api/v2/alerts?active=true&silenced=false&inhibited=false&filter=…`), through
the bounded reader: an answer is cut at 1 MiB and must arrive whole within 5 s. An
Alertmanager that cannot be asked blocks, saying so, unless the gate says `required: false`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import requests

from config.errors import Refused
from config.gates import AlertsGate
from config.policy import Policy
from config.text import inert
from workers.http import AnswerRefused, fetch

log = logging.getLogger(__name__)

DEADLINE = 5.0
SHOWN = 3  # alerts named in a refusal; the rest are counted


@dataclass(frozen=True)
class Alert:
    name: str
    summary: str
    since: str  # startsAt, as Alertmanager wrote it

    def describe(self) -> str:
        summary = f": {inert(self.summary, 160)}" if self.summary else ""
        return f"{inert(self.name, 80)}{summary} (since {inert(self.since[:16], 20)})"


class AlertmanagerUnreachable(Exception):
    """Alertmanager could not be asked, or answered what it does not answer."""


def firing(gate: AlertsGate, matchers: list[str]) -> list[Alert]:
    """The active, unsilenced, uninhibited alerts matching every one of `matchers`."""
    params: list[tuple[str, str]] = [
        ("active", "true"),
        ("silenced", "false"),
        ("inhibited", "false"),
        *(("filter", m) for m in matchers),
    ]
    url = gate.alertmanager.rstrip("/") + "/api/v2/alerts"
    try:
        with requests.Session() as session:
            answer = fetch(session, "GET", url, deadline=DEADLINE, params=params)
    except AnswerRefused as exc:
        raise AlertmanagerUnreachable(f"Alertmanager {exc}") from exc
    except requests.RequestException as exc:
        raise AlertmanagerUnreachable(f"cannot reach Alertmanager ({type(exc).__name__})") from exc
    if answer.status_code != 200:
        raise AlertmanagerUnreachable(f"Alertmanager answered {answer.status_code}")
    try:
        body = answer.json()
    except ValueError as exc:
        raise AlertmanagerUnreachable("Alertmanager answered something that is not JSON") from exc
    if not isinstance(body, list):
        raise AlertmanagerUnreachable("Alertmanager answered something that is not a list")
    return [_alert(item) for item in body if isinstance(item, dict)]


def _alert(item: dict[str, Any]) -> Alert:
    labels = item.get("labels") if isinstance(item.get("labels"), dict) else {}
    notes = item.get("annotations") if isinstance(item.get("annotations"), dict) else {}
    return Alert(
        name=str((labels or {}).get("alertname", "an alert")),
        summary=str((notes or {}).get("summary", "")),
        since=str(item.get("startsAt", "")),
    )


def check_alerts(policy: Policy, env: str, apps: list[str], verb: str) -> str:
    """Refuse while an alert the environment's gate names fires (never for a rollback);
    returns the evidence for the card ("" where the gate is not asked)."""
    gate = policy.environments[env].gates.alerts
    if gate is None or verb == "rollback":
        return ""
    queries = [gate.filled(env, app) for app in apps] if gate.per_app else [gate.filled(env)]
    found: dict[str, Alert] = {}
    for matchers in queries:
        try:
            for alert in firing(gate, matchers):
                found.setdefault(f"{alert.name} {alert.since}", alert)
        except AlertmanagerUnreachable as exc:
            if not gate.required:
                log.warning("deploying to %s without the alerts gate: %s", env, exc)
                return f"⚠️ alerts not checked: {exc} (the gate is not required)"
            raise Refused(
                f"{env}'s alerts gate cannot tell whether an alert fires: {exc}; the deploy "
                "waits until it can (or the gate says `required: false`)",
                reason="alerts_unknown",
            ) from exc
    if found:
        alerts = list(found.values())
        named = "; ".join(a.describe() for a in alerts[:SHOWN])
        more = f" and {len(alerts) - SHOWN} more" if len(alerts) > SHOWN else ""
        raise Refused(
            f"{env} has a firing alert: {named}{more}. Deploys wait until it is resolved or "
            "silenced (rollbacks do not)",
            reason="alert",
        )
    return f"✓ no firing alert matches {', '.join(gate.filled(env, '{app}'))}"
