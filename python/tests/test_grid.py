"""The lors Python package against a real grid.

Run by tests/liblors_python.rs (the root package) as a user of a running
local grid: the environment holds LORS_METADATA_URL, LORS_LBONE_URL,
LORS_TRUST_DIR, X509_USER_PROXY and LORS_KEY_FILE, as for `lors`.

    python test_grid.py DIR WORKDIR

DIR is a directory in the metadata manager to work under (created),
WORKDIR a local scratch directory. Each check prints `ok NAME` or `FAIL
NAME` with its traceback; the last line is `python: N passed, M failed`;
the exit code is 1 if any failed. Checks run in order and share state (the
first uploads what the others read).
"""

import concurrent.futures
import io
import os
import signal
import sys
import threading
import time
import traceback
import zipfile

import numpy as np

import lors

DIR, WORK = sys.argv[1], sys.argv[2]
BLOCK = 1 << 20
# Four extents and a partial one: reads cross extent boundaries.
SIZE = 4 * BLOCK + 12345


def pseudo_random(n, seed):
    """Deterministic bytes, different per seed."""
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


DATA = pseudo_random(SIZE, 7)
PATH = f"{DIR}/data.bin"
client = lors.Client()
checks = []


def check(f):
    checks.append(f)
    return f


@check
def mkdir_and_conflict():
    e = client.mkdir(DIR, parents=True)
    assert e["kind"] == "dir", e
    # Again with parents: no error; without: the path exists.
    client.mkdir(DIR, parents=True)
    try:
        client.mkdir(DIR)
    except lors.ConflictError as err:
        assert err.code == 8, err.code
        assert isinstance(err, FileExistsError)
    else:
        raise AssertionError("mkdir of an existing directory did not raise ConflictError")


@check
def upload_bytes():
    s = client.upload(DATA, PATH, copies=2, block_size=BLOCK)
    assert s["size"] == SIZE, s
    assert s["version"] == 1, s
    assert s["dest"] == PATH, s
    assert s["encrypted"] is True, s
    assert s["redundancy"] == "2 copies", s
    assert s["mappings"] == 2 * 5, s


@check
def stat_and_ls():
    st = client.stat(PATH)
    assert st["kind"] == "file", st
    assert st["size"] == SIZE, st
    assert st["version"] == 1, st
    assert st["path"] == PATH, st
    names = {e["path"].rsplit("/", 1)[-1]: e for e in client.ls(DIR)}
    assert "data.bin" in names, names
    assert names["data.bin"]["size"] == SIZE, names


@check
def ranged_reads_with_seek():
    with client.open(PATH) as f:
        assert f.size == SIZE
        assert f.readable() and f.seekable() and not f.writable()
        for off, n in [
            (0, 10),
            (BLOCK - 5, 10),  # across the first extent boundary
            (3 * BLOCK + 17, 2 * BLOCK),  # into the last, short extent
            (SIZE - 3, 100),  # the end: fewer bytes
            (123457, 1),
        ]:
            assert f.seek(off) == off
            got = f.read(n)
            assert got == DATA[off : off + n], (off, n, len(got))
            assert f.tell() == off + len(got)
        assert f.seek(-100, os.SEEK_END) == SIZE - 100
        assert f.read() == DATA[-100:]
        assert f.read(10) == b"", "a read at the end returns b''"
        f.seek(SIZE + 1000)
        assert f.read(10) == b"", "a read past the end returns b''"
        assert f.read_at(BLOCK * 2 - 1, 3) == DATA[BLOCK * 2 - 1 : BLOCK * 2 + 2]
        assert f.tell() == SIZE + 1000, "read_at does not move the position"
        rep = f.report()
        assert rep["failovers"] == 0 and rep["corrupt"] == [], rep
        for bad in (lambda: f.seek(-1), lambda: f.seek(0, 7), lambda: f.read_at(-1, 5)):
            try:
                bad()
            except ValueError:
                pass
            else:
                raise AssertionError("a negative position or bad whence did not raise ValueError")
        try:
            f.readinto_at(0, np.zeros(64, dtype=np.uint8)[::2])
        except TypeError:
            pass
        else:
            raise AssertionError("a non-contiguous buffer did not raise TypeError")
        assert f.readinto_at(0, bytearray()) == 0
        assert f.read(0) == b""


@check
def readinto_bytearray_and_numpy():
    with client.open(PATH) as f:
        off = BLOCK - 4096
        buf = bytearray(3 * 4096)
        f.seek(off)
        assert f.readinto(buf) == len(buf)
        assert bytes(buf) == DATA[off : off + len(buf)]
        # A memoryview slice of a bigger buffer: filled in place.
        big = bytearray(b"\xee" * 100)
        assert f.readinto_at(5, memoryview(big)[10:20]) == 10
        assert big[10:20] == DATA[5:15] and big[:10] == b"\xee" * 10 and big[20:] == b"\xee" * 80
        # numpy arrays of any dtype: their bytes.
        arr = np.zeros(BLOCK + 3, dtype=np.uint8)
        f.seek(2 * BLOCK - 1)
        assert f.readinto(arr) == arr.nbytes
        assert arr.tobytes() == DATA[2 * BLOCK - 1 : 3 * BLOCK + 2]
        floats = np.zeros(1000, dtype=np.float64)
        assert f.readinto_at(8, floats) == 8000
        assert np.array_equal(floats, np.frombuffer(DATA[8:8008], dtype=np.float64), equal_nan=True)
        # Short at the end of the file.
        tail = np.zeros(50, dtype=np.uint8)
        assert f.readinto_at(SIZE - 20, tail) == 20
        assert tail[:20].tobytes() == DATA[-20:]
        # numpy.frombuffer over read().
        f.seek(4)
        v = np.frombuffer(f.read(4 * 256), dtype="<u4")
        assert np.array_equal(v, np.frombuffer(DATA[4 : 4 + 1024], dtype="<u4"))
        # A read-only buffer is refused.
        try:
            f.readinto(b"immutable")
        except TypeError:
            pass
        else:
            raise AssertionError("readinto(bytes) did not raise TypeError")


@check
def binding_costs_microseconds_per_call():
    # Reads at the end of the file fetch nothing: what is left is the
    # binding (buffer export, GIL released and taken back, block_on). It
    # is ~5 us in a debug build; waiting for a timer tick on every call
    # once made it 1 ms, a tenth of an 8 MiB read.
    with client.open(PATH) as f:
        buf = bytearray(4096)
        n = 2000
        t0 = time.perf_counter()
        for _ in range(n):
            assert f.readinto_at(SIZE, buf) == 0
        per_call = (time.perf_counter() - t0) / n
    assert per_call < 200e-6, f"{per_call * 1e6:.0f} us per call"


@check
def buffered_reader_sequential():
    raw = client.open(PATH)
    with io.BufferedReader(raw, buffer_size=256 * 1024) as b:
        parts = []
        sizes = [1, 4095, 100000, 3 * BLOCK, 7]
        i = 0
        while True:
            chunk = b.read(sizes[i % len(sizes)])
            if not chunk:
                break
            parts.append(chunk)
            i += 1
        assert b"".join(parts) == DATA
        b.seek(BLOCK + 1)
        assert b.read(5) == DATA[BLOCK + 1 : BLOCK + 6]
        assert b.peek(1)[:1] == DATA[BLOCK + 6 : BLOCK + 7]
        b.seek(0)
        assert b.readline(64) == DATA[: min(64, DATA.index(b"\n") + 1)]
    assert raw.closed, "closing the BufferedReader closes the File"
    try:
        raw.read(1)
    except ValueError:
        pass
    else:
        raise AssertionError("a read on a closed File did not raise ValueError")


@check
def concurrent_read_at_on_one_file():
    with client.open(PATH) as f:
        ranges = [(i * 333_333 % (SIZE - 70_000), 65_536) for i in range(24)]
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            got = list(pool.map(lambda r: f.read_at(*r), ranges))
        for (off, n), g in zip(ranges, got):
            assert g == DATA[off : off + n], (off, n)


@check
def download_bytes_and_file():
    assert client.download(PATH) == DATA
    out = os.path.join(WORK, "out.bin")
    assert client.download(PATH, out) is None
    with open(out, "rb") as fh:
        assert fh.read() == DATA
    assert not os.path.exists(os.path.join(WORK, ".out.bin.lors-part"))


@check
def gil_released_during_calls():
    # A Python thread keeps running while the main thread is inside the
    # library: its longest pause stays far below the call's duration.
    stop = threading.Event()
    gaps = [0.0]

    def ticker():
        last = time.perf_counter()
        while not stop.is_set():
            now = time.perf_counter()
            gaps[0] = max(gaps[0], now - last)
            last = now

    t = threading.Thread(target=ticker)
    t.start()
    try:
        spent = 0.0
        calls = 0
        while spent < 0.5 and calls < 20:
            t0 = time.perf_counter()
            assert len(client.download(PATH)) == SIZE
            spent += time.perf_counter() - t0
            calls += 1
    finally:
        stop.set()
        t.join()
    longest = spent / calls
    assert gaps[0] < longest / 2, f"the ticker stalled {gaps[0]:.3f} s during calls of {longest:.3f} s"


@check
def ctrl_c_interrupts_a_blocked_call():
    # An upload from a FIFO nobody writes blocks in the library; SIGINT
    # (what Ctrl-C sends) must stop it with KeyboardInterrupt within the
    # library's signal check (0.1 s), not when the call returns. A timer
    # opens the FIFO after 10 s, so a call that ignores the signal ends
    # (and this check fails) instead of hanging.
    fifo = os.path.join(WORK, "fifo")
    os.mkfifo(fifo)

    def unblock():
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass  # no reader left

    opener = threading.Timer(10, unblock)
    opener.start()
    sigint = threading.Timer(0.2, lambda: os.kill(os.getpid(), signal.SIGINT))
    t0 = time.perf_counter()
    try:
        sigint.start()
        client.upload(fifo, f"{DIR}/from-fifo")
    except KeyboardInterrupt:
        elapsed = time.perf_counter() - t0
    else:
        raise AssertionError("the blocked upload was not interrupted")
    finally:
        opener.cancel()
        unblock()  # the library's open(2) of the FIFO, left behind, returns
    assert 0.2 <= elapsed < 2, f"interrupted after {elapsed:.2f} s"


@check
def zipfile_over_file():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("a.txt", "first member")
        z.writestr("b.bin", DATA[:70000])
    client.upload(buf.getvalue(), f"{DIR}/archive.zip")
    with zipfile.ZipFile(client.open(f"{DIR}/archive.zip")) as z:
        assert z.namelist() == ["a.txt", "b.bin"], z.namelist()
        assert z.read("b.bin") == DATA[:70000]
        assert z.read("a.txt") == b"first member"
    client.rm(f"{DIR}/archive.zip")


@check
def upload_file_with_erasure_coding():
    src = os.path.join(WORK, "ec-src.bin")
    data = pseudo_random(BLOCK + 999, 8)
    with open(src, "wb") as fh:
        fh.write(data)
    s = client.upload(src, f"{DIR}/ec.bin", ec="2+1", block_size="512KiB")
    assert s["size"] == len(data) and s["redundancy"] == "erasure coding 2+1", s
    with client.open(f"{DIR}/ec.bin") as f:
        assert f.read_at(BLOCK - 10, 100) == data[BLOCK - 10 : BLOCK + 90]
    # A second version; the first is still readable by number.
    s2 = client.upload(data[:100], f"{DIR}/ec.bin", copies=1)
    assert s2["version"] == 2, s2
    assert client.download(f"{DIR}/ec.bin") == data[:100]
    assert client.download(f"{DIR}/ec.bin", version=1) == data


@check
def not_found_raises_with_code_7():
    missing = f"{DIR}/no-such-file"
    for call in (
        lambda: client.stat(missing),
        lambda: client.open(missing),
        lambda: client.download(missing),
        lambda: client.ls(f"{DIR}/no-such-dir"),
    ):
        try:
            call()
        except lors.NotFoundError as e:
            assert e.code == 7, e.code
            assert isinstance(e, FileNotFoundError) and isinstance(e, lors.Error)
            assert "no-such" in str(e), str(e)
        else:
            raise AssertionError("no NotFoundError")
    try:
        client.stat(missing)
    except FileNotFoundError:
        pass


@check
def usage_errors_with_code_2():
    for kwargs in (
        {"copies": 0},
        {"copies": 1, "ec": "2+1"},
        {"ec": "two"},
        {"security": "bogus"},
        {"block_size": 0},
        {"block_size": "lots"},
        {"threads": 0},
    ):
        try:
            client.upload(b"x", f"{DIR}/never", **kwargs)
        except lors.UsageError as e:
            assert e.code == 2, (kwargs, e.code)
            assert isinstance(e, ValueError)
        else:
            raise AssertionError(f"upload with {kwargs} did not raise UsageError")
    try:
        client.upload(12345, f"{DIR}/never")
    except TypeError:
        pass
    else:
        raise AssertionError("upload(int) did not raise TypeError")
    try:
        client.stat(f"{DIR}/never")
    except lors.NotFoundError:
        pass


@check
def missing_proxy_raises_no_proxy_error_then_recovers():
    proxy = os.path.join(WORK, "later-proxy.pem")
    c = lors.Client(proxy=proxy)
    try:
        c.stat(DIR)
    except lors.NoProxyError as e:
        assert e.code == 1, e.code
        assert "later-proxy.pem" in str(e), str(e)
    else:
        raise AssertionError("no NoProxyError without a proxy")
    # The proxy appears (as after `lors login`): the same client works.
    with open(os.environ["X509_USER_PROXY"], "rb") as src:
        fd = os.open(proxy, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as dst:
            dst.write(src.read())
    assert c.stat(PATH)["size"] == SIZE


@check
def mv_then_rm():
    m = client.mv(PATH, f"{DIR}/moved.bin")
    assert m == {"from": PATH, "to": f"{DIR}/moved.bin"}, m
    assert client.stat(f"{DIR}/moved.bin")["size"] == SIZE
    r = client.rm(f"{DIR}/moved.bin")
    assert r["all_freed"] is True, r
    assert len(r["releases"]) == 2 * 5 and all(x["freed"] for x in r["releases"]), r
    try:
        client.stat(f"{DIR}/moved.bin")
    except lors.NotFoundError:
        pass
    else:
        raise AssertionError("the removed file is still there")
    client.rm(f"{DIR}/ec.bin")
    assert client.ls(DIR) == [], client.ls(DIR)
    client.rm(DIR)


passed = failed = 0
for f in checks:
    t0 = time.perf_counter()
    try:
        f()
    except Exception:
        failed += 1
        print(f"FAIL {f.__name__}", flush=True)
        traceback.print_exc(file=sys.stdout)
    else:
        passed += 1
        print(f"ok {f.__name__} ({time.perf_counter() - t0:.2f} s)", flush=True)
print(f"python: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
