"""Sequential read of a file on the grid through the lors package, to
compare with the Rust FileReader (python/examples/seq_read.rs) on the same
file: `lors.File.readinto` into one reused buffer (what a job streaming a
file does), then `io.BufferedReader.read` in the same chunks, then
`Client.download` into bytes.

    python seq_read.py PATH [--upload MIB] [--chunk BYTES] [--runs N]

--upload first stores MIB MiB of random data at PATH (block size 8 MiB,
one copy). Run it in the environment `lors` works in (LORS_*,
X509_USER_PROXY).
"""

import argparse
import io
import os
import time

import lors

ap = argparse.ArgumentParser()
ap.add_argument("path")
ap.add_argument("--upload", type=int, metavar="MIB")
ap.add_argument("--chunk", type=int, default=8 << 20)
ap.add_argument("--runs", type=int, default=3)
a = ap.parse_args()

c = lors.Client()
if a.upload:
    c.mkdir(a.path.rsplit("/", 1)[0], parents=True)
    s = c.upload(os.urandom(a.upload << 20), a.path, copies=1, block_size="8MiB")
    print(f"uploaded {s['size'] >> 20} MiB at {s['mib_per_s']:.1f} MiB/s")


def rate(what, size, secs):
    print(f"python {what}: {size >> 20} MiB in {secs:.2f} s: {size / (1 << 20) / secs:.1f} MiB/s (chunk {a.chunk})")


buf = bytearray(a.chunk)
for _ in range(a.runs):
    t = time.perf_counter()
    with c.open(a.path) as f:
        total = 0
        while n := f.readinto(buf):
            total += n
    rate("File.readinto", total, time.perf_counter() - t)
for _ in range(a.runs):
    t = time.perf_counter()
    with io.BufferedReader(c.open(a.path)) as b:
        total = 0
        while chunk := b.read(a.chunk):
            total += len(chunk)
    rate("BufferedReader.read", total, time.perf_counter() - t)
t = time.perf_counter()
total = len(c.download(a.path))
rate("Client.download (bytes)", total, time.perf_counter() - t)
