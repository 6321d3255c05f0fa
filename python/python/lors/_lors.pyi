# Type stubs of the Rust extension lors._lors (python/src/).
import os
from typing import Any, Optional, Union

from typing_extensions import Buffer

from ._file import File

DEFAULT_BLOCK_SIZE: int
DEFAULT_TIMEOUT: float

_Path = Union[str, os.PathLike[str]]

class Reader:
    @property
    def size(self) -> int: ...
    @property
    def closed(self) -> bool: ...
    def read_at(self, offset: int, n: int) -> bytes: ...
    def readinto_at(self, offset: int, buffer: Buffer) -> int: ...
    def close(self) -> None: ...
    def report(self) -> dict[str, Any]: ...

class Client:
    def __init__(
        self,
        lbone: Optional[str] = None,
        metadata: Optional[str] = None,
        trust: Optional[_Path] = None,
        proxy: Optional[_Path] = None,
        key: Optional[_Path] = None,
        timeout: Optional[float] = None,
    ) -> None: ...
    def upload(
        self,
        src: Union[_Path, Buffer],
        path: str,
        *,
        copies: Optional[int] = None,
        ec: Union[str, tuple[int, int], None] = None,
        block_size: Union[int, str, None] = None,
        security: Optional[str] = None,
        encrypt: Optional[bool] = None,
        threads: Optional[int] = None,
    ) -> dict[str, Any]: ...
    def download(
        self, path: str, local_path: Optional[_Path] = None, *, version: Optional[int] = None
    ) -> Optional[bytes]: ...
    def open(
        self,
        path: str,
        *,
        version: Optional[int] = None,
        cache_bytes: Optional[int] = None,
        read_ahead: Optional[int] = None,
    ) -> File: ...
    def stat(self, path: str) -> dict[str, Any]: ...
    def ls(self, path: str) -> list[dict[str, Any]]: ...
    def mkdir(self, path: str, parents: bool = False) -> dict[str, Any]: ...
    def mv(self, src: str, dst: str) -> dict[str, str]: ...
    def rm(self, path: str, version: Optional[int] = None) -> dict[str, Any]: ...
    def usage(self, vo: Optional[str] = None) -> dict[str, Any]: ...
    def whoami(self) -> dict[str, Any]: ...
