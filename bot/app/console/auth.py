"""Who may use the console: one shared token logs in; a login is a random session id in an
HttpOnly, SameSite=Strict cookie, and every POST carries the session's CSRF token."""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass

__all__ = ["COOKIE", "Session", "Sessions"]

COOKIE = "parley_console"


@dataclass
class Session:
    csrf: str
    expires: float
    #: Personal data shown unmasked (the admin turned masking off for this session).
    unmasked: bool = False
    #: What the last action did, shown once on the next page.
    notice: str = ""


class Sessions:
    """The logins of one console process (a restart logs everyone out, which is cheap here)."""

    def __init__(self, token: str, hours: float) -> None:
        self._token = token.encode()
        self._lifetime = hours * 3600
        self._sessions: dict[str, Session] = {}

    def login(self, offered: str) -> str | None:
        """A new session id when ``offered`` is the token, else None."""
        # compare_digest: a wrong token takes as long to refuse whatever its first bytes.
        if not hmac.compare_digest(offered.encode(), self._token):
            return None
        now = time.monotonic()
        self._sessions = {k: s for k, s in self._sessions.items() if s.expires > now}
        session_id = secrets.token_urlsafe(32)
        self._sessions[session_id] = Session(secrets.token_urlsafe(32), now + self._lifetime)
        return session_id

    def get(self, session_id: str | None) -> Session | None:
        session = self._sessions.get(session_id or "")
        if session is None or session.expires <= time.monotonic():
            return None
        return session

    def logout(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    @staticmethod
    def csrf_ok(session: Session, offered: str) -> bool:
        return hmac.compare_digest(offered.encode(), session.csrf.encode())
