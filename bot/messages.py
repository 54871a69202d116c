"""Every sentence the bot says in chat, in one place, so all platforms word things alike."""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence

from bot.grammar import USAGE
from config.policy import SINGLE
from config.text import inert, inert_block
from workers.state.request import Change, DeployRequest, RequestState, Result
from workers.state.verdicts import Failure

SAFE_URL = re.compile(r"https?://[A-Za-z0-9.-]+(:\d+)?(/[A-Za-z0-9._~/%+-]*)?")

# How a request's card says where it stands.
STATE_LINES = {
    RequestState.PENDING: "⏳ waiting for approval",
    RequestState.APPROVED: "✅ approved; queued",
    RequestState.RUNNING: "⚙️ deploying",
    RequestState.PUSHED: "🚀 pushed",
    RequestState.MERGED: "🔀 merged",
    RequestState.NOOP: "✔️ nothing to do",
    RequestState.FAILED: "❌ failed",
    RequestState.REJECTED: "🚫 rejected",
    RequestState.CANCELLED: "🚫 cancelled",
    RequestState.EXPIRED: "⌛ expired before it was approved",
    RequestState.SUPERSEDED: "↩️ superseded: another request changed the same pin first",
}


def names(values: Sequence[str]) -> str:
    return ", ".join(values) if values else "none"


def help_text(verb: str = "") -> str:
    if verb:
        return f"usage: {USAGE[verb]}"
    lines = "\n".join(f"  {usage}" for usage in USAGE.values())
    return f"releasegate understands:\n{lines}\nApprove with a ✅ reaction, or `approve ID`."


def _did_you_mean(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name.lower(), [k.lower() for k in known], n=1, cutoff=0.7)
    return f"did you mean `{close[0]}`? " if close else ""


def unknown_app(app: str, known: Sequence[str]) -> str:
    return f"unknown app '{inert(app)}'; {_did_you_mean(app, known)}known apps: {names(known)}"


def unknown_env(env: str, known: Sequence[str]) -> str:
    hint = _did_you_mean(env, known)
    return f"unknown environment '{inert(env)}'; {hint}known environments: {names(known)}"


def not_pinned(app: str, env: str, envs: Sequence[str]) -> str:
    return f"{app} is not deployed to {env}; it is pinned in: {names(envs)}"


def wrong_channel(env: str, channels: Sequence[str]) -> str:
    return f"deploys to {env} are requested in {names(channels)}, not here"


def not_deployer(who: str, env: str, deployers: Sequence[str]) -> str:
    return f"{who} may not deploy to {env}; who may: {names(deployers)}"


def not_approver(who: str, env: str, approvers: Sequence[str]) -> str:
    return f"{who} may not approve deploys to {env}; approvers: {names(approvers)}"


def not_locker(who: str, env: str, lockers: Sequence[str]) -> str:
    return f"{who} may not lock or unlock {env}; who may: {names(lockers)}"


def unlocked(env: str, who: str, reason: str) -> str:
    return f"🔓 {env} unlocked by {who}" + (f": {inert(reason)}" if reason else "")


def cleared(failure: Failure, who: str) -> str:
    return (
        f"🧹 {failure.app} {failure.version} cleared in {failure.env} by {who}: it may deploy "
        f"there and downstream again (it failed verification in {failure.request})"
    )


def already_asked(other: DeployRequest, state: RequestState) -> str:
    where = "already waits for approval" if state is RequestState.PENDING else "is already queued"
    return (
        f"the same change {where} as {other.id} (asked by {other.requester_name}): "
        f"approve or cancel it there; `status {other.id}` shows it"
    )


def too_many_open(env: str, limit: int, open_ids: Sequence[str]) -> str:
    return (
        f"you already have {len(open_ids)} open requests for {env} (the limit is {limit} per "
        f"person): {names(open_ids)}; cancel one or let them finish first"
    )


def too_fast(env: str, limit: int) -> str:
    return (
        f"you asked for more than {limit} deploys to {env} in the last minute (the limit per "
        "person); wait a moment and ask again"
    )


def already_running(app: str, version: str, env: str) -> str:
    return f"{app} already runs {version} in {env}; nothing to do"


def not_run_upstream(app: str, version: str, upstream: str, history: Sequence[str]) -> str:
    shown = names(list(history)[:5]) + (", …" if len(history) > 5 else "")
    return f"{app} {version} has not run in {upstream} yet; {upstream} has run: {shown}"


def no_upstream(env: str) -> str:
    return f"{env} has no promote_from; say `deploy APP VERSION to {env}`"


def nothing_to_promote(env: str, upstream: str) -> str:
    return f"nothing to promote: every app in {env} already runs what {upstream} runs"


def no_previous(app: str, env: str) -> str:
    return (
        f"Git history shows no earlier version of {app} in {env} to roll back to (versions "
        "that were rolled back from are skipped); deploy the version you want instead"
    )


def locked(description: str) -> str:
    return f"🔒 {description}; requests and approvals for it are refused until `unlock`"


def locked_all(taken: Sequence[str], held: Sequence[str], who: str, reason: str) -> str:
    why = f": {inert(reason)}" if reason else ""
    lines = [f"🔒 {', '.join(taken)} locked by {who}{why}" if taken else "🔒 nothing newly locked"]
    lines += [f"(already: {h})" for h in held]
    return "\n".join(lines) + "\nrequests and approvals there are refused until `unlock all`"


def approval_withdrawn(request_id: str, who: str) -> str:
    return f"{who} withdrew their approval of {request_id}"


def changes_text(changes: Sequence[Change]) -> str:
    return "; ".join(change.line() for change in changes)


def artifact_lines(request: DeployRequest) -> list[str]:
    """What each change's version is in its store: digest (short), built when, from where.
    The registry's labels are anyone's text: said inert."""
    lines = []
    for built in request.artifacts:
        line = f"📦 {built.app} {inert(built.tag, 60)} is {built.digest[:19]}"
        if built.created:
            line += f", built {inert(built.created, 40)}"
        if built.source or built.revision:
            line += f", from {source_text(built.source, built.revision)}"
        lines.append(line)
        if built.signed_by:
            lines.append(f"✓ {built.app} {inert(built.tag, 60)} signed by key {built.signed_by}")
        if built.by_tag:
            lines.append(
                f"⚠️ {built.app} is pinned by tag: the registry can move it (artifact.pin_digest)"
            )
        if built.upstream:
            env, _, digest = built.upstream.partition(" ")
            lines.append(
                f"⚠️ {env} runs {built.app} {inert(built.tag, 60)} as {digest[:19]}: the tag "
                "names another image now"
            )
    return lines


def source_text(source: str, revision: str) -> str:
    """`https://github.com/acme/app/commit/3f3fc76…` where the source is GitHub or GitLab."""
    repo = source.removesuffix(".git").rstrip("/")
    if revision and re.fullmatch(r"[0-9a-f]{7,64}", revision):
        if re.fullmatch(r"https://(github\.com|gitlab\.[A-Za-z0-9.-]+)/[\w.-]+/[\w./-]+", repo):
            sep = "/-/commit/" if "gitlab" in repo else "/commit/"
            return f"{repo}{sep}{revision}"
        return f"{inert(repo, 200)} at {revision[:12]}"
    return inert(repo, 200) or inert(revision, 40)


def request_created(request: DeployRequest, approvers: Sequence[str]) -> str:
    need = request.approvals_needed
    plural = "approval" if need == 1 else "approvals"
    kind = {"rollback": "rollback ", "train": "release train ", "promote": "promotion "}
    built = "".join(f"{line}\n" for line in [*artifact_lines(request), *request.evidence])
    return (
        f"{kind.get(request.verb, '')}request {request.id} by {request.requester_name}: "
        f"{changes_text(request.changes)}\n{built}"
        f"needs {need} {plural} from {names(approvers)}: "
        f"say `approve {request.id}` or react with ✅ (`reject {request.id} REASON` to refuse)\n"
        f"```\n{inert_block(request.diff)}\n```"
    )


def not_break_glass(who: str, env: str, allowed: Sequence[str]) -> str:
    named = ", ".join(allowed) if allowed else "nobody"
    return f"{who} may not break glass in {env} (break_glass: {named})"


def break_glass_filed(request: DeployRequest, reviewers: Sequence[str]) -> str:
    built = "".join(f"{line}\n" for line in artifact_lines(request))
    return (
        f"🚨 break-glass {request.id} by {request.requester_name}: "
        f"{changes_text(request.changes)}, reason: {inert(request.break_glass, 200)}\n{built}"
        "queued without approvals, windows, freezes, locks, alerts or checks. "
        f"{names(reviewers)}: review it with `review {request.id}` or react with ✅"
    )


def reviewed(request_id: str, who: str) -> str:
    return f"✅ break-glass {request_id} reviewed by {who}"


def break_glass_unreviewed(request_id: str, what: str, reason: str) -> str:
    return f"🚨 unreviewed break-glass {request_id}: {what}, reason: {inert(reason, 120)}"


def queued(request: DeployRequest) -> str:
    kind = "rollback " if request.verb == "rollback" else ""
    return f"{request.id} {kind}queued: {changes_text(request.changes)}"


def approved(request: DeployRequest, who: str, count: int) -> str:
    return f"{request.id} approved by {who} ({count}/{request.approvals_needed}); queued"


def approval_counted(request: DeployRequest, who: str, count: int) -> str:
    missing = request.approvals_needed - count
    return (
        f"{request.id}: approval {count}/{request.approvals_needed} by {who}; {missing} more needed"
    )


def own_request(request_id: str) -> str:
    return f"the requester cannot approve their own request {request_id}"


def bot_approver(who: str, request_id: str) -> str:
    return (
        f"{who} is a bot or an app, and bots never approve; {request_id} still waits for a person"
    )


def already_approved(request_id: str, who: str) -> str:
    return f"{who} already approved {request_id}"


def not_pending(request_id: str, state: RequestState) -> str:
    return f"{request_id} is {state.value}; it cannot be changed any more"


def not_approved_in_time(request: DeployRequest) -> str:
    when = request.expires_at.strftime("%Y-%m-%d %H:%M UTC") if request.expires_at else "its time"
    return f"not approved before {when}; ask again with a new request if it is still wanted"


def expired(request_id: str) -> str:
    return f"{request_id} expired before it was approved; ask again with a new request"


def nothing_pending() -> str:
    return "no request is waiting here; name one by its id"


def several_pending(ids: Sequence[str]) -> str:
    return f"several requests are waiting here ({names(ids)}); name one by its id"


def rejected(request_id: str, who: str, reason: str) -> str:
    return f"{request_id} rejected by {who}" + (f": {inert(reason, 200)}" if reason else "")


def cancelled(request_id: str, who: str) -> str:
    return f"{request_id} cancelled by {who}"


def may_not_cancel(request_id: str) -> str:
    return f"only the requester or an approver may cancel {request_id}"


def request_status(
    request: DeployRequest,
    state: RequestState,
    approvers: Sequence[str],
    result_message: str | None,
) -> str:
    line = f"{request.id} ({state.value}): {changes_text(request.changes)}; "
    line += f"requested by {request.requester_name}; approved by {names(approvers)}"
    return line + (f"\n{result_message}" if result_message else "")


def result_text(request: DeployRequest, result: Result) -> str:
    """Why a request ended as it did: the worker's reason worded, or its message."""
    facts = result.facts
    match result.reason:
        case "already_there":
            return "; ".join(f"{c.app} already runs {c.new} in {c.env}" for c in request.changes)
        case "superseded":
            return (
                f"{facts.get('by')} landed first, so {facts.get('app')} in {facts.get('env')} "
                f"is now {facts.get('now')}, not {facts.get('was')}; ask again if still "
                "wanted"
            )
        case "crashed":
            return f"the worker crashed ({facts.get('error')}); see the worker's log"
        case "moved":
            return (
                f"{facts.get('app')} in {facts.get('env')} is now {facts.get('now')}, but "
                f"the request approved {facts.get('old')} -> {facts.get('new')}; ask again "
                "with a new request"
            )
        case "diff_changed":
            return (
                "the files changed since the request was made, so the change would not be "
                "the one shown and approved; ask again with a new request"
            )
        case "kept_moving":
            return (
                f"gave up after {facts.get('attempts')} attempts: the branch kept moving "
                "under us; try again"
            )
        case "artifact_moved":
            return (
                f"tag {facts.get('tag')} of {facts.get('app')} now points to "
                f"{facts.get('now', '')[:19]}…, approved {facts.get('approved', '')[:19]}…; "
                "nothing was committed: ask again"
            )
        case "artifact_gone":
            return (
                f"{facts.get('app')} {facts.get('tag')} is no longer in its store; nothing was "
                "committed: ask again"
            )
        case "partly_landed":
            why = Result(
                state=result.state,
                reason=facts.get("why_reason", ""),
                message=facts.get("why", ""),
                facts=facts,
            )
            return (
                f"landed in {facts.get('landed')}; not in {facts.get('missing')}: "
                f"{result_text(request, why)}. Nothing was reverted: ask again to land the "
                "rest (what landed gets no second commit)"
            )
    # An error's own words may carry outside text (a remote's hook, a forge, a validator).
    return inert_block(result.message, 4000)


def commits_text(result: Result) -> str:
    """The request's commit (`3f3fc76`), or each repository's by name where the policy names
    its repositories (`apps 3f3fc76, infra 9a1b2c3`)."""
    if len(result.commits) > 1 or any(name != SINGLE for name in result.commits):
        return ", ".join(f"{name} {sha[:7]}" for name, sha in result.commits.items())
    return (result.commit or "")[:7]


def outcome(request: DeployRequest, result: Result, commit_urls: Sequence[str] = ()) -> str:
    """How a request ended, as its thread is told (with where to see each commit, if known)."""
    if result.state.landed and result.commit:
        verb, links = result.state.value, "".join(f"\n{url}" for url in commit_urls)
        held = result.facts.get("unchanged")
        where = f"{commits_text(result)} ({held} already held it)" if held else commits_text(result)
        return f"{request.id}: {verb} {where}: {changes_text(request.changes)}{links}"
    if result.state is RequestState.NOOP:
        return f"{request.id}: nothing to do: {result_text(request, result)}"
    return f"{request.id}: {result.state.value}: {result_text(request, result)}"


def busy() -> str:
    return "releasegate is busy right now; try again in a moment"


def internal_error(ref: str) -> str:
    return (
        f"something went wrong on releasegate's side (reference {ref}); `status` shows where "
        "things stand. Try again, or give the reference to whoever runs releasegate"
    )


def not_confirmed(request_id: str | None) -> str:
    """A write Redis did not confirm on a replica in time: never said to have happened."""
    check = f"`status {request_id}`" if request_id else "`status`"
    return (
        "⚠️ this may not have been recorded: Redis did not confirm it on a replica in time "
        f"(a failover would lose it). Check with {check} before asking again"
    )


def store_unreachable(ref: str) -> str:
    return (
        f"releasegate cannot reach its Redis right now (reference {ref}), so this may not have "
        "been recorded. Try again in a minute; `status` shows where things stand once it is back"
    )


def note(request_id: str, fields: dict[str, str]) -> str:
    """A worker's news for a request's thread that is not its end, worded from its data."""
    about, why = fields.get("about", ""), inert(fields.get("why", ""), 600)
    # The forge's address for the merge request, shown as a link only when it is plainly one;
    # named as its forge names it (a note queued by an earlier release has no noun: GitHub's).
    url = fields.get("url", "")
    noun = inert(fields.get("noun", "pull request"), 20)
    url = url if SAFE_URL.fullmatch(url) else inert(url, 200)
    match about:
        case "pr_opened":
            return (
                f"{request_id}: {noun} opened: {url} (its checks run while people "
                "approve; releasegate merges it on approval)"
            )
        case "pr_not_opened":
            return (
                f"{request_id}: could not open a {noun} yet ({why}); it is opened "
                "when the request is approved"
            )
        case "merge_refused":
            return (
                f"{request_id}: {why}; releasegate tries again every few seconds until the "
                "request expires"
            )
        case "checks":
            return f"{request_id}: checks {inert(fields.get('state', ''), 20)}: {url}"
        case "break_glass_unreviewed":
            return (
                f"⏰ break-glass {request_id} is still unreviewed "
                f"(reason: {inert(fields.get('reason', ''), 200)}): an approver, please look "
                f"and say `review {request_id}`"
            )
    return inert(fields.get("text", ""), 2000)  # a note queued by an earlier release's worker
