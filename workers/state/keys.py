"""Every Redis key releasegate uses, named in one place (rq's `Job.key_for` style).

A key family is a function of what it is about; the Lua scripts get the keys
(and the limits) as arguments instead of spelling them.
"""

from __future__ import annotations

PREFIX = "releasegate"

# Requests.
ACTIVE = f"{PREFIX}:active"  # requests a worker still owes an outcome (approved or running)
PENDING = f"{PREFIX}:pending"  # every pending request, by creation time
PENDING_IN = f"{PREFIX}:pending:"  # + channel: the pending requests of one channel
UNREPORTED = f"{PREFIX}:unreported"  # ended requests whose news was not posted yet
DURABLE_PROBE = f"{PREFIX}:durable-probe"  # written, then waited for on a replica


def request(request_id: str) -> str:
    return f"{PREFIX}:request:{request_id}"


def approvals(request_id: str) -> str:
    return f"{PREFIX}:request:{request_id}:approvals"


def pending_in(channel: str) -> str:
    return PENDING_IN + channel


def message(channel: str, ts: str) -> str:
    """The request a chat message (a request's card) shows."""
    return f"{PREFIX}:message:{channel}:{ts}"


def seen(kind: str, delivery_id: str) -> str:
    """A platform delivery already handled (Slack's retries, Rocket.Chat's reactions)."""
    return f"{PREFIX}:seen:{kind}:{delivery_id}"


def asked(identity: str, env: str, minute: int) -> str:
    """How many requests a person filed for an environment in one minute."""
    return f"{PREFIX}:asked:{env}:{identity}:{minute}"


def opening(request_id: str) -> str:
    """Claimed while a worker opens the request's merge request."""
    return f"{PREFIX}:opening:{request_id}"


# Break-glass deploys not reviewed yet: request id -> when the review is due (Unix seconds).
BREAK_GLASS_UNREVIEWED = f"{PREFIX}:break-glass:unreviewed"


# Environments.
def lock(env: str) -> str:
    return f"{PREFIX}:lock:{env}"


# Push lanes: one per repository branch.
def leader(loop: str) -> str:
    """Which bot replica runs `loop` (the Rocket.Chat poller, expiry): a lease."""
    return f"{PREFIX}:leader:{loop}"


def lane_lease(lane: str) -> str:
    return f"{PREFIX}:lane:{lane}:lease"


def lane_fence(lane: str) -> str:
    return f"{PREFIX}:lane:{lane}:fence"


def lane_pushed(lane: str) -> str:
    return f"{PREFIX}:lane:{lane}:pushed"


# News for chat and the audit trail.
OUTBOX_MAXLEN = 100_000
AUDIT = f"{PREFIX}:audit"
AUDIT_MAXLEN = 1_000_000


def outbox(platform: str) -> str:
    return f"{PREFIX}:outbox:{platform}"


# Rollouts.
ROLLOUTS_DUE = f"{PREFIX}:rollouts"  # request id -> when to look next (Unix seconds)


def rollout(request_id: str) -> str:
    return f"{PREFIX}:rollout:{request_id}"


def rollout_step(request_id: str, step: str) -> str:
    """A step of telling a rollout's end that is done (told, a rollback filed or posted)."""
    return f"{PREFIX}:rollout:{request_id}:{step}"


# Verification after the rollout.
VERIFICATIONS_DUE = f"{PREFIX}:verifications"  # request id -> when to measure next
PROMOTIONS_DUE = f"{PREFIX}:promotions"  # {env, app, version, since} -> when its soak ends


def verification(request_id: str) -> str:
    return f"{PREFIX}:verification:{request_id}"


def verification_step(request_id: str, step: str) -> str:
    """A consequence of a verification's end that is done (a rollback filed, the lock)."""
    return f"{PREFIX}:verification:{request_id}:{step}"


def last_verification(env: str) -> str:
    """app -> the id of the request whose verification in `env` started last."""
    return f"{PREFIX}:verification-last:{env}"


def failed(env: str) -> str:
    """ "app version" -> how it failed verification in `env`, until cleared."""
    return f"{PREFIX}:failed:{env}"


def running(env: str) -> str:
    """app -> the version `env` runs, since when and with what evidence (the soak clock)."""
    return f"{PREFIX}:running:{env}"


def artifacts_landed(env: str) -> str:
    """ "app version" -> the artifact (Built) that version named when it landed in `env`."""
    return f"{PREFIX}:artifacts:{env}"


def auto_promotion(env: str, app: str, version: str) -> str:
    """Set once the automatic promotion of `app` `version` to `env` was filed (or refused)."""
    return f"{PREFIX}:auto-promotion:{env}:{app}:{version}"


# Deployment records on the apps' source repositories (GitHub, GitLab).
def deployment(request_id: str, app: str) -> str:
    """The forge's deployment of `app` for the request: its id and the statuses posted."""
    return f"{PREFIX}:deployment:{request_id}:{app}"


def deployment_current(host: str, project: str, env: str, app: str) -> str:
    """The forge's deployment that last succeeded for `app` in `env`."""
    return f"{PREFIX}:deployment-current:{host}/{project}:{env}:{app}"


# Identities and chat platforms.
ROCKETCHAT_IDS = f"{PREFIX}:identity:rocketchat"  # name or id in the policy -> user id
# Slack user group id -> {"members": [...], "at": unix seconds}, as the bot last read it.
SLACK_GROUPS = f"{PREFIX}:identity:slack-groups"


def rocketchat_cursor(channel: str) -> str:
    return f"{PREFIX}:rocketchat:cursor:{channel}"


# Metrics the workers count for every bot replica to show.
METRICS_DEPLOYS = f"{PREFIX}:metrics:deploys"
METRICS_DURATION = f"{PREFIX}:metrics:duration"
METRICS_PUSH_RETRIES = f"{PREFIX}:metrics:push_retries"
METRICS_ROLLOUTS = f"{PREFIX}:metrics:rollouts"
METRICS_ROLLOUT_DURATION = f"{PREFIX}:metrics:rollout_duration"
METRICS_VERIFICATIONS = f"{PREFIX}:metrics:verifications"
# The delivery figures, by environment and app (fields "env|app" and "env|app|bucket").
METRICS_DELIVERY_DEPLOYS = f"{PREFIX}:metrics:delivery:deploys"
METRICS_DELIVERY_FAILURES = f"{PREFIX}:metrics:delivery:failures"
METRICS_DELIVERY_LEAD_TIME = f"{PREFIX}:metrics:delivery:lead_time"
METRICS_DELIVERY_RESTORE = f"{PREFIX}:metrics:delivery:restore"
METRICS_APPROVAL_WAIT = f"{PREFIX}:metrics:approval_wait"  # by env
METRICS_VERIFICATION_DURATION = f"{PREFIX}:metrics:verification_duration"
