"""A django-chunked-upload client for bench/run.sh: uploads FILE in CHUNK-byte chunks over one
keep-alive connection, then completes with the md5 (computed beforehand, not timed), checks
the answer, and prints the seconds the upload took. Usage:
    chunked_client.py BASE_URL FILE CHUNK [TOKEN]
"""
import hashlib
import http.client
import json
import mmap
import sys
import time
import urllib.parse

base, path, chunk = sys.argv[1], sys.argv[2], int(sys.argv[3])
token = sys.argv[4] if len(sys.argv) > 4 else None
u = urllib.parse.urlsplit(base)
with open(path, "rb") as f:
    data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
total = len(data)
md5 = hashlib.md5(data).hexdigest()
conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
auth = {"Authorization": f"Bearer {token}"} if token else {}
boundary = "benchboundary0123456789"


def post(url, body, headers):
    conn.request("POST", url, body=body, headers={**auth, **headers})
    res = conn.getresponse()
    payload = res.read()
    if res.status != 200:
        sys.exit(f"{url}: {res.status} {payload[:300]!r}")
    return json.loads(payload)


t0 = time.perf_counter()
upload_id = None
for start in range(0, total, chunk):
    end = min(start + chunk, total)
    head = b""
    if upload_id:
        head += (f'--{boundary}\r\nContent-Disposition: form-data; name="upload_id"\r\n\r\n'
                 f"{upload_id}\r\n").encode()
    head += (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n'
             "Content-Type: application/octet-stream\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    body = [head, memoryview(data)[start:end], tail]
    r = post("/api/chunked_upload/", body, {
        "Content-Type": f"multipart/form-data; boundary={boundary}",
        "Content-Range": f"bytes {start}-{end - 1}/{total}",
        "Content-Length": str(len(head) + end - start + len(tail)),
    })
    upload_id = r["upload_id"]
    assert r["offset"] == end, r
form = urllib.parse.urlencode({"upload_id": upload_id, "md5": md5})
post("/api/chunked_upload_complete/", form, {"Content-Type": "application/x-www-form-urlencoded"})
print(f"{time.perf_counter() - t0:.3f}")
