"""The benchmark's second tus client, in Python: a plain loop of PATCH requests over one
keep-alive connection per upload, as a script or an application server would upload. Same
arguments and output as examples/bench_tus.rs, so that bench/tus.sh runs either:

    tus_client.py ENDPOINT TOKEN CHUNK_BYTES FILE...   ->   <bytes> <seconds> <MB/s>

Each FILE is one upload, all run at once (a thread each); CHUNK_BYTES 0 sends a file in one
PATCH. TOKEN "-" sends no Authorization. Files are read into memory first, so the client's
disk is not measured.

It speaks through the standard library's http.client, with TCP_NODELAY as urllib3 sets it,
and sends each body as a memoryview of the file: no copy. A `requests` loop was tried first:
store-sink, which does nothing but append, took 1 MiB PATCHes from it at 652 MB/s and from
this loop at 1393 (about 0.9 ms more per request), so it measured itself rather than the
servers; and on a two-core machine the server shares, a costly client leaves it less.
"""

import http.client
import socket
import sys
import threading
import time
from urllib.parse import urljoin, urlsplit


def connect(url):
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port or 80)
    conn.connect()
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


def path_of(url):
    u = urlsplit(url)
    return u.path + (f"?{u.query}" if u.query else "")


def upload(endpoint, token, chunk, data, failures):
    head = {"Tus-Resumable": "1.0.0"}
    if token != "-":
        head["Authorization"] = f"Bearer {token}"
    conn = connect(endpoint)
    try:
        conn.request(
            "POST",
            path_of(endpoint),
            headers={**head, "Upload-Length": str(len(data)), "Upload-Metadata": "filename YmVuY2guYmlu"},
        )
        r = conn.getresponse()
        r.read()
        if r.status != 201:
            failures.append(f"creation answered {r.status}")
            return
        url = urljoin(endpoint, r.getheader("Location"))
        target = path_of(url)
        view = memoryview(data)
        step = chunk or max(len(data), 1)
        patch = {**head, "Content-Type": "application/offset+octet-stream"}
        offset = 0
        while offset < len(data):
            end = min(offset + step, len(data))
            patch["Upload-Offset"] = str(offset)
            conn.request("PATCH", target, body=view[offset:end], headers=patch)
            r = conn.getresponse()
            r.read()
            if r.status != 204:
                failures.append(f"PATCH at {offset} answered {r.status}")
                return
            offset = end
    finally:
        conn.close()


def main():
    if len(sys.argv) < 5:
        sys.exit("usage: tus_client.py ENDPOINT TOKEN CHUNK_BYTES FILE...")
    endpoint, token, chunk = sys.argv[1], sys.argv[2], int(sys.argv[3])
    files = []
    for f in sys.argv[4:]:
        with open(f, "rb") as fh:
            files.append(fh.read())
    total = sum(len(f) for f in files)
    failures = []
    t0 = time.monotonic()
    threads = [threading.Thread(target=upload, args=(endpoint, token, chunk, d, failures)) for d in files]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    secs = time.monotonic() - t0
    if failures:
        sys.exit("; ".join(failures))
    print(f"{total} {secs:.3f} {total / secs / 1e6:.0f}")


if __name__ == "__main__":
    main()
