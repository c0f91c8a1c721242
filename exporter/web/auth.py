"""HTTP basic authentication against bcrypt hashes, as Prometheus' exporter-toolkit does it."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor


class BasicAuth:
    """Checks ``Authorization: Basic`` against bcrypt hashes.

    bcrypt is slow on purpose (~70 ms at cost 10); a Prometheus scrape every 15 s must not pay that
    each time, nor stall the event loop. A verified password is remembered per user as an HMAC under a
    key that lives only in this process, and compared in constant time; misses run bcrypt on a small
    thread pool. Unknown users are checked against a real hash too, so timing does not reveal names.
    """

    def __init__(self, users: Mapping[str, bytes], workers: int = 2):
        self._users = dict(users)
        self._decoy = next(iter(self._users.values()))
        self._key = os.urandom(32)
        self._verified: dict[str, bytes] = {}
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bcrypt")

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _token(self, user: bytes, password: bytes) -> bytes:
        return hmac.new(self._key, user + b"\0" + password, hashlib.sha256).digest()

    async def verify(self, header: str | None) -> str | None:
        """The authenticated user name, or None."""
        credentials = _basic_credentials(header)
        if credentials is None:
            return None
        user, password = credentials
        token = self._token(user.encode(), password)
        remembered = self._verified.get(user)
        if remembered is not None and hmac.compare_digest(remembered, token):
            return user
        hashed = self._users.get(user, self._decoy)
        matches = await asyncio.get_running_loop().run_in_executor(self._executor, checkpw, password, hashed)
        if matches and user in self._users:
            self._verified[user] = token
            return user
        return None


def checkpw(password: bytes, hashed: bytes) -> bool:
    import bcrypt

    try:
        return bcrypt.checkpw(password, hashed)
    except ValueError:  # longer than bcrypt's 72 bytes, as Go's bcrypt also refuses
        return False


def _basic_credentials(header: str | None) -> tuple[str, bytes] | None:
    if not header:
        return None
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
        user, sep, password = decoded.partition(b":")
        return (user.decode("utf-8"), password) if sep else None
    except (binascii.Error, UnicodeDecodeError):
        return None
