"""What a worker's clone must be before it is built on, and what a commit must hold before it
is pushed.

The repository's content is hostile (its `validate` script, its files), and so is anything
that could have written into a slot while we were not looking. So:

- a slot's `.git` must be the pointer file we wrote, its clone's config must hold only the
  settings we write, and no borrowed objects (`alternates`) or grafts may be there; a slot
  that is not exactly as we left it is thrown away and made again (`slot_problem`,
  `store_problem`);
- a commit is built from the planned bytes, and before a push the commits between the
  fetched head and ours must be exactly ours, one after the other, each changing exactly the
  planned files to exactly the planned blobs, modes unchanged (`diff_problem`); otherwise
  nothing is pushed (`TamperedCommit`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

from config.errors import GitOpsError
from workers.git.run import run_git

# Every setting our own git calls write into a clone (git init, remote add, a blobless
# fetch, sparse checkout, worktrees), as `git config --list --name-only` prints them.
STORE_KEYS = frozenset(
    {
        "core.repositoryformatversion",
        "core.filemode",
        "core.bare",
        "core.ignorecase",
        "core.precomposeunicode",
        "core.symlinks",
        "core.logallrefupdates",
        "gc.auto",
        "remote.origin.url",
        "remote.origin.fetch",
        "remote.origin.promisor",
        "remote.origin.partialclonefilter",
        "extensions.partialclone",
        "extensions.worktreeconfig",
        "extensions.objectformat",
        "core.sparsecheckout",
        "core.sparsecheckoutcone",
        "index.sparse",
    }
)
WORKTREE_KEYS = frozenset({"core.sparsecheckout", "core.sparsecheckoutcone", "index.sparse"})
# Files in a clone that would change what its objects or history are.
FOREIGN_FILES = ("objects/info/alternates", "objects/info/http-alternates", "info/grafts")


class TamperedCommit(GitOpsError):
    """A commit about to be pushed is not exactly the approved change."""


def blob_id(data: bytes, object_format_length: int = 40) -> str:
    """The id git gives a blob of `data` (SHA-1, or SHA-256 in a repository of that format)."""
    header = b"blob %d\0" % len(data)
    digest = hashlib.sha1 if object_format_length == 40 else hashlib.sha256
    return digest(header + data).hexdigest()


def _config_keys(path: Path) -> list[str]:
    if not path.exists():
        return []
    done = run_git("config", "--file", str(path), "--list", "--name-only", timeout=30)
    if done.returncode != 0:
        return [f"(unreadable: {done.stderr.decode('utf-8', 'replace').strip()[:100]})"]
    listed = done.stdout.decode("utf-8", "replace")
    return [line.strip().lower() for line in listed.splitlines() if line.strip()]


def store_problem(store: Path) -> str | None:
    """What of the host's shared clone we did not make, if anything."""
    foreign = [key for key in _config_keys(store / "config") if key not in STORE_KEYS]
    if foreign:
        return f"its config holds settings releasegate never writes: {', '.join(foreign[:5])}"
    for name in FOREIGN_FILES:
        if (store / name).exists():
            return f"it has {name}, which releasegate never writes"
    return None


def slot_problem(store: Path, slot: Path) -> str | None:
    """What of a slot's working tree is not as we left it, if anything: its `.git` must be a
    file pointing at its own worktree entry in `store`, with only our settings there."""
    pointer = slot / ".git"
    admin = store / "worktrees" / slot.name
    try:
        if pointer.is_symlink() or not pointer.is_file():
            return ".git is not the pointer file releasegate wrote"
        said = pointer.read_text(encoding="utf-8", errors="replace").strip()
    except OSError as exc:
        return f".git cannot be read: {exc.strerror}"
    if said != f"gitdir: {admin}":
        return ".git points somewhere releasegate did not make"
    if not admin.is_dir():
        return "its worktree entry in the clone is gone"
    foreign = [k for k in _config_keys(admin / "config.worktree") if k not in WORKTREE_KEYS]
    if foreign:
        return f"its worktree config holds settings releasegate never writes: {foreign[0]}"
    return None


def diff_problem(
    entries: list[tuple[str, str, str, str]], planned: Mapping[str, str]
) -> str | None:
    """Why a commit's diff against its parent is not exactly `planned` (path -> blob id), if
    it is not. `entries` are (old mode, new mode, new blob, path) from `git diff-tree --raw`."""
    changed = {path: (old, new, blob) for old, new, blob, path in entries}
    extra = sorted(set(changed) - set(planned))
    if extra:
        return f"it also changes {', '.join(extra[:5])}"
    missing = sorted(set(planned) - set(changed))
    if missing:
        return f"it does not change {', '.join(missing[:5])}"
    for path, (old, new, blob) in changed.items():
        if old != new:
            return f"it changes the mode of {path} ({old} -> {new})"
        if blob != planned[path]:
            return f"{path} does not hold the planned bytes"
    return None


def parse_diff_tree(raw: str) -> dict[str, list[tuple[str, str, str, str]]]:
    """`git diff-tree --stdin -r -z --raw --no-renames` output, by commit."""
    found: dict[str, list[tuple[str, str, str, str]]] = {}
    current: list[tuple[str, str, str, str]] | None = None
    tokens = raw.split("\0")
    i = 0
    while i < len(tokens):
        token = tokens[i].strip("\n")
        if token.startswith(":") and current is not None and i + 1 < len(tokens):
            old, new, _old_blob, blob, _status = token[1:].split(" ", 4)
            current.append((old, new, blob, tokens[i + 1]))
            i += 2
            continue
        if token:
            current = found.setdefault(token, [])
        i += 1
    return found
