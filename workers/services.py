"""What every job starts from: its settings, Redis, the request store and the policy, and
the checkouts and push lanes it works with."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from redis import Redis

from config.policy import Policy, load_policy
from config.settings import Settings
from workers.git.checkout import Checkout
from workers.git.signing import HeadCheck, signer_and_check
from workers.rules.plan import checkout_paths
from workers.state.connection import connect
from workers.state.lane import Lane, lane_name
from workers.state.store import RequestStore


@dataclass(frozen=True)
class Services:
    """What every job starts from: its settings, Redis, the request store and the policy."""

    settings: Settings
    redis: Redis
    store: RequestStore
    policy: Policy

    @classmethod
    def load(cls) -> Services:
        settings = Settings()
        redis = connect(settings)
        store = RequestStore(redis, settings.retention, durable=True)
        return cls(settings, redis, store, load_policy(settings.policy))

    def checkout(self, name: str) -> tuple[Checkout, HeadCheck]:
        """The worker's checkout of repository `name` (signing when a key is set), and the
        check of the head it builds on."""
        policy, settings = self.policy, self.settings
        repository = policy.repositories[name]
        signer, verify_head = signer_and_check(
            repository, settings.git_signing_key, lambda: Path(checkout.path)
        )
        checkout = Checkout(
            repository,
            settings.workdir,
            access=repository.access(settings.git_access()),
            paths=checkout_paths(policy, name),
            signer=signer,
        )
        return checkout, verify_head

    def lanes(self, names: Sequence[str]) -> list[Lane]:
        """The push lanes of repositories `names`, in the policy's order."""
        ordered = [name for name in self.policy.repositories if name in names]
        return [Lane(self.redis, lane_name(self.policy.repositories[n])) for n in ordered]
