"""The exceptions of the lors package: one class per exit class of the
``lors`` command, each with ``code``, the exit code ``lors`` ends with for
the same failure (lors/src/exit.rs). The library sets ``code`` on every
instance it raises; the class attribute documents it.

Classes that mean what a built-in OSError subclass means also derive from
it, so ``except FileNotFoundError`` or ``except PermissionError`` catch
them too.
"""

__all__ = [
    "Error",
    "NoProxyError",
    "UsageError",
    "RefusedError",
    "UnavailableError",
    "RateLimitedError",
    "LocalError",
    "NotFoundError",
    "ConflictError",
    "ReleaseError",
    "DataError",
]


class Error(Exception):
    """Base class of every error the lors package raises."""

    code: int = 0


class NoProxyError(Error):
    """No proxy, or not a usable one (missing, expired, fails
    verification): renew it with ``lors login`` or ``lors proxy-init``."""

    code = 1


class UsageError(Error, ValueError):
    """Bad arguments or configuration, or a request a service refused as
    malformed (HTTP 400, 413)."""

    code = 2


class RefusedError(Error, PermissionError):
    """Refused: credentials (HTTP 401, a certificate refused at TLS level)
    or a right missing on the entry (HTTP 403)."""

    code = 3


class UnavailableError(Error, ConnectionError):
    """A service is unreachable, timed out, failed TLS or answered badly;
    or too few depots for an upload."""

    code = 4


class RateLimitedError(Error):
    """Rate limited (HTTP 429); ``retry_after`` is seconds, or None."""

    code = 5
    retry_after = None


class LocalError(Error, OSError):
    """A local failure: a file that cannot be read or written, a key that
    cannot be read."""

    code = 6


class NotFoundError(Error, FileNotFoundError):
    """No such file, directory, version, member or key (HTTP 404)."""

    code = 7


class ConflictError(Error, FileExistsError):
    """The path exists, or the file changed since the version the request
    was based on (HTTP 409)."""

    code = 8


class ReleaseError(Error):
    """``Client.rm``: the entry is deleted in the metadata manager, but
    some allocations were not freed on their depots (they expire at the end
    of their duration). ``removal`` is what ``rm`` returns otherwise."""

    code = 9
    removal = None


class DataError(Error):
    """File data could not be read back intact: every replica (or too many
    erasure-coded shares) of a range lost or corrupt, an unusable exNode, or
    a data key that cannot be unwrapped."""

    code = 10
