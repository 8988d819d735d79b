"""Uploads a file to chute with the real tuspy client (with per-PATCH sha1 checksums).
Usage: tuspy_client.py ENDPOINT TOKEN FILE CHUNK_SIZE NAME [stop_after_chunks]
With stop_after_chunks, the first uploader sends that many chunks and stops; a fresh client
that knows only the upload URL resumes it. Prints the upload URL."""
import sys

from tusclient import client

endpoint, token, path, chunk, name = sys.argv[1:6]
stop_after = int(sys.argv[6]) if len(sys.argv) > 6 else 0
c = client.TusClient(endpoint, headers={"Authorization": f"Bearer {token}"})
up = c.uploader(file_path=path, chunk_size=int(chunk), metadata={"filename": name},
                upload_checksum=True, retries=0)
if stop_after:
    for _ in range(stop_after):
        up.upload_chunk()
    url = up.url
    c2 = client.TusClient(endpoint, headers={"Authorization": f"Bearer {token}"})
    up = c2.uploader(file_path=path, chunk_size=int(chunk), url=url, upload_checksum=True,
                     retries=0)
up.upload()
print(up.url)
