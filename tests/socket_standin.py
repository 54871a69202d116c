"""Slack's end of Socket Mode, over a real WebSocket, for tests.

`apps.connections.open` (answered by `FakeSlack`) hands out this server's URL. On each
link the server says `hello`, sends envelopes and records the acks. Like Slack, it sends
every envelope not yet acked again on the next link. Between the client and the server
sits a TCP relay that can break the link the ways networks do: close it without a close
frame (`drop`), or keep it open and carry nothing (`blackhole`, a half-open link whose
pings go unanswered).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
import threading
import time
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection, serve


class _Relay:
    """A TCP relay from a loopback port to `target`; each side's bytes copied to the other
    unless the link is blackholed."""

    def __init__(self, target: int, delay: float = 0.0) -> None:
        self.target = target
        self.delay = delay  # seconds added to every chunk carried (a slow, far link)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.links: list[tuple[socket.socket, socket.socket, threading.Event]] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            silent = threading.Event()
            with self.lock:
                self.links.append((client, upstream, silent))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._copy, args=(a, b, silent), daemon=True).start()

    def _copy(self, source: socket.socket, sink: socket.socket, silent: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if self.delay:
                    time.sleep(self.delay)
                if not silent.is_set():
                    sink.sendall(data)
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.close()

    def drop(self) -> None:
        """Close every client link at once, no close frame: a proxy or a peer that died."""
        with self.lock:
            links, self.links = self.links, []
        for client, upstream, _silent in links:
            for end in (client, upstream):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    end.close()

    def blackhole(self) -> None:
        """Keep every current link open and carry nothing more on it, either way."""
        with self.lock:
            for _client, _upstream, silent in self.links:
                silent.set()

    def close(self) -> None:
        self.listener.close()
        self.drop()


class SocketModeStandIn:
    def __init__(self) -> None:
        self.links: list[ServerConnection] = []
        self.acks: dict[str, float] = {}  # envelope id -> when its ack arrived
        self.unacked: dict[str, dict[str, Any]] = {}
        self.connected = threading.Condition()
        self._ids = itertools.count(1)
        self.server = serve(self._link, "127.0.0.1", 0)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.relay = _Relay(self.server.socket.getsockname()[1])

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.relay.port}/link"

    def _link(self, link: ServerConnection) -> None:
        link.send(json.dumps({"type": "hello", "num_connections": len(self.links) + 1}))
        for envelope in list(self.unacked.values()):  # Slack retries what was not acked
            link.send(json.dumps(envelope))
        with self.connected:
            self.links.append(link)
            self.connected.notify_all()
        with contextlib.suppress(ConnectionClosed):
            for message in link:
                envelope_id = json.loads(message).get("envelope_id")
                if envelope_id:
                    self.acks.setdefault(str(envelope_id), time.monotonic())
                    self.unacked.pop(str(envelope_id), None)

    def wait_for_link(self, count: int, timeout: float) -> float:
        """Wait until the client has opened `count` links in all; returns when it did."""
        with self.connected:
            if not self.connected.wait_for(lambda: len(self.links) >= count, timeout):
                raise AssertionError(f"the client opened {len(self.links)} link(s), not {count}")
        return time.monotonic()

    def command(self, text: str, user: str = "UALICE", channel: str = "CPRD") -> str:
        """Send a `/deploy TEXT` slash command on the newest link; returns its envelope id."""
        envelope_id = f"env-{next(self._ids)}"
        payload = {
            "command": "/deploy",
            "text": text,
            "user_id": user,
            "user_name": user.lower(),
            "channel_id": channel,
            "team_id": "T1",
            "api_app_id": "A1",
            "trigger_id": f"trigger-{envelope_id}",
            "response_url": "http://127.0.0.1:9/unused",
        }
        envelope = {
            "envelope_id": envelope_id,
            "type": "slash_commands",
            "payload": payload,
            "accepts_response_payload": True,
        }
        self.unacked[envelope_id] = envelope
        with contextlib.suppress(ConnectionClosed):
            self.links[-1].send(json.dumps(envelope))
        return envelope_id

    def refresh(self) -> None:
        """What Slack sends routinely before it retires a link."""
        self.links[-1].send(
            json.dumps({"type": "disconnect", "reason": "refresh_requested", "debug_info": {}})
        )

    def wait_for_ack(self, envelope_id: str, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while envelope_id not in self.acks:
            if time.monotonic() > deadline:
                raise AssertionError(f"{envelope_id} was not acked within {timeout} s")
            time.sleep(0.005)
        return self.acks[envelope_id]

    def close(self) -> None:
        self.relay.close()
        self.server.shutdown()
