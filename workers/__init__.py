"""Everything behind the chat: state in Redis, the release rules the bot shares, Git, the
landing of approved requests, and the following of rollouts.

    state/     everything kept in Redis (requests, approvals, the outbox, lanes, the queue)
    rules/     release rules the bot and the worker both decide with
    git/       Git only: the worker's checkout, the bot's mirror, signing, trailers
    landing/   worker-only: approved requests become commits (batches, merge requests)
    rollout/   following Argo CD and Flux after a push
    pins/      reading and writing a version in a pinned file, one module per kind
    jobs.py    the RQ job entry points (the only module that queued jobs name)
    runner.py  `releasegate worker`; logs.py and supervisor.py serve every process

Dependencies point one way: `bot` → `workers` → `config`; nothing here imports `bot`.
"""
