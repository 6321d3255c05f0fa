"""LoRS for Python: files on the grid from grid jobs.

>>> import lors
>>> c = lors.Client()                       # the config file and LORS_* as `lors`
>>> c.upload(b"hello", "/vo1/hello.txt")    # or a local path
>>> with c.open("/vo1/hello.txt") as f:      # reads fetch only the blocks needed
...     f.seek(1); f.read(3)
b'ell'
>>> c.download("/vo1/hello.txt")
b'hello'

Everything is in the Rust library `lors` (the same code as the `lors`
command), with the GIL released during every call. See
docs/liblors-python.md.
"""

from ._lors import DEFAULT_BLOCK_SIZE, DEFAULT_TIMEOUT, Client, Reader
from ._file import File
from .errors import (
    ConflictError,
    DataError,
    Error,
    LocalError,
    NoProxyError,
    NotFoundError,
    RateLimitedError,
    RefusedError,
    ReleaseError,
    UnavailableError,
    UsageError,
)

__all__ = [
    "Client",
    "File",
    "Reader",
    "DEFAULT_BLOCK_SIZE",
    "DEFAULT_TIMEOUT",
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
