"""Slack's Socket Mode, on websocket-client, through every way a link ends.

Slack retires each link routinely: it sends `disconnect` (refresh_requested) and expects
the app on a new one at once. Networks end links less politely: a proxy drops an idle
connection without a close frame, or keeps it open and carries nothing (a half-open link).
Bolt's websocket-client adapter replaces a link as soon as the old one is closed; here it
also gives every ping a deadline, so a half-open link is found and replaced within
PING_INTERVAL + PING_TIMEOUT seconds (and a watchdog of its own closes one whose pongs
stopped, whatever websocket-client's timing) instead of never, and starts reading a new
link at once instead of after a half-second pause.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time

from slack_bolt import App
from slack_bolt.adapter.socket_mode.websocket_client import SocketModeHandler
from slack_sdk.socket_mode.websocket_client import SocketModeClient

log = logging.getLogger(__name__)

PING_INTERVAL = 6.0  # seconds between our pings on an idle link
# A pong later than this ends the link (it is replaced at once). websocket-client checks it
# only when its read wakes up (every PING_TIMEOUT seconds), and only until the next ping
# resets the clock: with a timeout of 4 s and pings every 5 s, most wake-ups missed that
# one-second window and a dead link lived ~25 s. At half the interval, the first wake-up
# after the deadline sees it: a half-open link ends within about 12 s.
PING_TIMEOUT = 3.0
NEXT_LINK_WAIT = 0.01  # seconds before the reader turns to a newly opened link


def _cut(session: object) -> None:
    """Shut a link's socket down both ways, so a reader blocked in `recv` on a half-open link
    wakes at once. Closing alone did not always wake it (seen under load: the reader stayed
    in the dead link while every new link went unread), and first waits 3 s for a close
    frame that never comes."""
    raw = getattr(getattr(session, "sock", None), "sock", None)
    if isinstance(raw, socket.socket):
        with contextlib.suppress(OSError):
            raw.shutdown(socket.SHUT_RDWR)


class _Client(SocketModeClient):
    """websocket-client's Socket Mode client, with pings that must be answered."""

    def __init__(self, app_token: str, app: App) -> None:
        super().__init__(
            app_token=app_token,
            logger=app.logger,
            web_client=app.client,
            ping_interval=PING_INTERVAL,
        )
        # The reader thread starts a new link's loop this long after the old one ended
        # (0.5 s by default: a command sent right after a refresh would wait for it).
        self.current_session_runner.interval_seconds = NEXT_LINK_WAIT
        self._reading: object | None = None  # the link the reader thread is in now
        self._opened_at = 0.0
        self._opened_wall = time.time()

    def connect(self) -> None:
        self._opened_at = time.monotonic()
        self._opened_wall = time.time()
        super().connect()

    def _unanswered(self, session: object) -> bool:
        """Whether the link has answered no ping for longer than a ping and its deadline.
        websocket-client checks its own deadline only when its read wakes, in a window the
        next ping closes: a wake-up that misses it lets a half-open link live for a whole
        further round (seen up to 28 s). This watchdog needs no such luck."""
        pong = float(getattr(session, "last_pong_tm", 0.0) or 0.0)
        return time.time() - max(pong, self._opened_wall) > PING_INTERVAL + PING_TIMEOUT

    def _monitor_current_session(self) -> None:
        """The library's watchdog opens a new link when the current one has no socket; a link
        just opened has none until its reader connects it, and replacing it then races the
        reader (which may go on reading the replaced link while the new one is never read).
        A link being read, or opened moments ago, is left to its reader, unless it has
        answered no ping for too long: then it is closed and the next one opened at once (not
        a watchdog round later)."""
        session = self.current_session
        if session is not None and session is self._reading and self._unanswered(session):
            log.warning("the Socket Mode link answers no pings: replacing it")
            _cut(session)
            session.close()  # its socket is gone: the library's check below opens a new link
            super()._monitor_current_session()  # type: ignore[no-untyped-call]  # slack_sdk: untyped
            return
        young = time.monotonic() - self._opened_at < PING_INTERVAL
        if session is not None and (session is self._reading or young):
            return
        super()._monitor_current_session()  # type: ignore[no-untyped-call]  # slack_sdk: untyped

    def _run_current_session(self) -> None:
        """Read the current link until it ends; what the library does, with a ping deadline
        (a link whose pongs stop is closed, and `on_close` opens the next one)."""
        session = self.current_session
        if session is None:
            return
        self._reading = session
        log.info("reading a new Socket Mode link")
        try:
            session.run_forever(
                ping_interval=self.ping_interval,
                ping_timeout=PING_TIMEOUT,
                http_proxy_host=self.http_proxy_host,
                http_proxy_port=self.http_proxy_port,
                http_proxy_auth=self.http_proxy_auth,
                proxy_type=self.proxy_type,
            )
        except Exception as exc:  # the library's own reader does the same: close, go on
            log.warning("the Socket Mode link failed: %s", exc)
            session.close()
        finally:
            self._reading = None


class _Handler(SocketModeHandler):
    """Bolt's websocket-client adapter (its dispatch and its acks), on our client."""

    def __init__(self, app: App, app_token: str) -> None:
        # Not the parent's __init__: it would start a client of its own, threads and all.
        self.app = app
        self.app_token = app_token
        self.client = _Client(app_token, app)
        self.client.socket_mode_request_listeners.append(self.handle)  # type: ignore[arg-type]  # Bolt's own line does the same


def socket_mode_handler(app: App, app_token: str) -> SocketModeHandler:
    return _Handler(app, app_token)
