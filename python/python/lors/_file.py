"""``lors.File``: a file on the grid opened for reading at any offset
(``Client.open``), a raw binary stream of the ``io`` module."""

import io
import os

__all__ = ["File"]


class File(io.RawIOBase):
    """An open file on the grid, read-only and seekable.

    Usable wherever Python takes a raw binary file:
    ``io.BufferedReader(f)``, ``shutil.copyfileobj(f, out)``,
    ``numpy.frombuffer(f.read(n), dtype)``. Reads fetch only the blocks
    that hold the bytes asked for (verified and decrypted, failing over
    between replicas), with a cache and read-ahead for sequential reads.

    ``read``/``readinto``/``seek``/``tell`` use one position, as any
    Python file: share a File between threads only through
    ``io.BufferedReader`` (which locks) or use ``read_at``/``readinto_at``,
    which take the offset and are safe from any number of threads at once.
    """

    def __init__(self, reader, name):
        super().__init__()
        self._reader = reader
        self._pos = 0
        self.name = name

    def __repr__(self):
        state = "closed" if self.closed else f"size={self.size} pos={self._pos}"
        return f"<lors.File {self.name!r} {state}>"

    @property
    def size(self):
        """The file's size in bytes."""
        return self._reader.size

    @property
    def mode(self):
        return "rb"

    def readable(self):
        self._checkClosed()
        return True

    def seekable(self):
        self._checkClosed()
        return True

    def writable(self):
        self._checkClosed()
        return False

    def tell(self):
        self._checkClosed()
        return self._pos

    def seek(self, offset, whence=os.SEEK_SET):
        """Moves the position (past the end is allowed: reads there return
        nothing); returns the new position."""
        self._checkClosed()
        offset = int(offset)
        if whence == os.SEEK_SET:
            pos = offset
        elif whence == os.SEEK_CUR:
            pos = self._pos + offset
        elif whence == os.SEEK_END:
            pos = self.size + offset
        else:
            raise ValueError(f"invalid whence ({whence!r}, should be 0, 1 or 2)")
        if pos < 0:
            raise ValueError(f"negative seek position {pos}")
        self._pos = pos
        return pos

    def readinto(self, buffer):
        """Fills ``buffer`` (any writable C-contiguous buffer: bytearray,
        memoryview, numpy array) from the position, in place; returns how
        many bytes (fewer only at the end of the file, 0 there)."""
        self._checkClosed()
        n = self._reader.readinto_at(self._pos, buffer)
        self._pos += n
        return n

    def read(self, size=-1):
        """Up to ``size`` bytes from the position (all the rest if
        ``size`` is negative or None); ``b""`` at the end."""
        self._checkClosed()
        if size is None or size < 0:
            size = max(self.size - self._pos, 0)
        data = self._reader.read_at(self._pos, size)
        self._pos += len(data)
        return data

    def readall(self):
        return self.read(-1)

    def read_at(self, offset, size):
        """Up to ``size`` bytes at ``offset``, without moving the position
        (safe from several threads at once)."""
        self._checkClosed()
        if offset < 0 or size < 0:
            raise ValueError("read_at: offset and size must not be negative")
        return self._reader.read_at(offset, size)

    def readinto_at(self, offset, buffer):
        """Fills ``buffer`` with the bytes at ``offset``, without moving the
        position (safe from several threads at once); returns how many."""
        self._checkClosed()
        if offset < 0:
            raise ValueError("readinto_at: offset must not be negative")
        return self._reader.readinto_at(offset, buffer)

    def report(self):
        """Failovers, rebuilds and corrupt mappings met so far (dict)."""
        self._checkClosed()
        return self._reader.report()

    def close(self):
        """Releases the reader and its cache; reads then raise
        ValueError. Closing twice is no error."""
        if not self.closed:
            self._reader.close()
        super().close()
