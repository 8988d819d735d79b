"""One upload of the chaos test (crates/chute/tests/it/chaos.rs) with the real tuspy client
(sha1 checksum on every PATCH), resuming through every fault as a program using tuspy does:
after a failure it waits, asks for the offset (HEAD) and goes on from there, within a time
limit. It also checks that the server never answers a HEAD with less than a PATCH it
acknowledged (an acknowledged byte lost).
Usage: chaos_tuspy.py ENDPOINT TOKEN FILE CHUNK_SIZE NAME LIMIT_SECONDS
Prints JSON: {"url", "acked", "requests", "retries", "violations": [...]}."""
import json
import sys
import time

from tusclient import client

endpoint, token, path, chunk, name, limit = sys.argv[1:7]
deadline = time.monotonic() + float(limit)
c = client.TusClient(endpoint, headers={"Authorization": f"Bearer {token}"})
up = c.uploader(file_path=path, chunk_size=int(chunk), metadata={"filename": name},
                upload_checksum=True, retries=0)
size = up.get_file_size()
acked = requests = retries = 0
violations = []
resume = False
last_error = None
while True:
    if time.monotonic() > deadline:
        sys.exit(f"not finished within {limit} s (acknowledged {acked} of {size}): {last_error}")
    try:
        requests += 1
        if not up.url:
            up.set_url(up.create_url())
            up.offset = 0
        elif resume:
            offset = up.get_offset()
            if offset < acked:
                violations.append(f"HEAD answered {offset} after a PATCH acknowledged {acked}")
            up.offset = offset
            resume = False
        if up.offset >= size:
            break
        requests += 1
        up.upload_chunk()
        acked = max(acked, up.offset)
    except Exception as e:  # a cut, a refused connection, a 5xx, 409 or 423: resume
        last_error = repr(e)
        retries += 1
        resume = True
        time.sleep(0.25)
print(json.dumps({"url": up.url, "acked": acked, "requests": requests, "retries": retries,
                  "violations": violations}))
