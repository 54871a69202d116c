"""Redis killed and restarted under load, and Redis gone for twenty seconds."""

from __future__ import annotations

import random
import threading
import time

from tests.faults.world import World, check_invariants
from workers.state.request import RequestState


def test_redis_killed_again_and_again_during_approvals_and_pushes_loses_no_approval(
    world: World,
) -> None:
    """Redis runs with its append-only file synced on every write (as the chart runs it): an
    approval the bot confirmed survives a SIGKILL, and every approved request lands once."""
    stop = threading.Event()
    kills = []

    def chaos() -> None:
        rng = random.Random(7)  # noqa: S311 - a repeatable schedule of kills, not a secret
        while not stop.wait(rng.uniform(0.5, 1.5)):
            world.redis_server.kill()
            kills.append(time.monotonic())
            time.sleep(rng.uniform(0.1, 0.8))
            world.redis_server.start()

    world.start_worker()
    chaos_thread = threading.Thread(target=chaos, daemon=True)
    chaos_thread.start()
    ids = []
    try:
        for n in range(6):
            request_id = world.request(n)
            world.approve_all(request_id)
            ids.append(request_id)
            time.sleep(1.5)  # spread the work over the kills: pushes run while Redis dies
    finally:
        stop.set()
        chaos_thread.join(timeout=30)
    assert len(kills) >= 3, "Redis was hardly killed; the test proved nothing"
    world.wait_ended(ids, timeout=120)
    check_invariants(world, ids, expect=RequestState.PUSHED)
    assert world.workers[0].poll() is None, "the worker died with Redis: " + world.tail()


def test_redis_down_for_twenty_seconds_gets_a_clear_answer_and_the_request_lands_after(
    world: World,
) -> None:
    request_id = world.request(0)
    worker = world.start_worker()
    time.sleep(2)  # the worker is up and waiting for jobs
    world.redis_server.kill()
    down = time.monotonic()
    answer = world.chat.say("bob", "deploy-prd", f"approve {request_id}")
    assert not answer.ok
    assert "cannot reach its Redis" in answer.text, answer.text
    while time.monotonic() - down < 20:
        time.sleep(1)
    world.redis_server.start()
    world.approve_all(request_id)
    world.wait_ended([request_id], timeout=120)
    check_invariants(world, [request_id], expect=RequestState.PUSHED)
    assert worker.poll() is None, "the worker died while Redis was down: " + world.tail()
