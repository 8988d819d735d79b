// Uploads a file to chute with the real tus-js-client under Node.
// Usage: node tus-js.mjs ENDPOINT TOKEN FILE CHUNK_SIZE NAME [abort_after_bytes]
// With abort_after_bytes, the first client aborts once that many bytes were sent, and a
// fresh client (new process state, same fingerprint-free upload URL) resumes the upload.
// TUS_PARALLEL=N splits the file into N partial uploads sent in parallel (concatenation).
// TUS_DEFER=1 creates the upload with a deferred length (Upload-Defer-Length) and lets the
// client declare it with its last PATCH. (From a Node stream, tus-js-client 4.3.1 sometimes
// sends the last chunk with a wrong Content-Length, or hangs (its issue #779): so the source
// stays the file's bytes.)
// TUS_RETRY=1 lets the client retry (a connection cut mid-PATCH is resumed via HEAD);
// TUS_RETRY=default keeps tus-js-client's own retry delays (0, 1, 3 and 5 s).
// TUS_TERMINATE=1 terminates the upload (DELETE) once it has finished.
// Prints JSON: {"url": ..., "resumed": bool, "terminated": bool}.
import fs from "node:fs";
import * as tus from "tus-js-client";

const [endpoint, token, file, chunk, name, abortAfter] = process.argv.slice(2);
const deferred = process.env.TUS_DEFER === "1";
const data = fs.readFileSync(file);
const headers = { Authorization: `Bearer ${token}` };

function start(options) {
  return new Promise((resolve, reject) => {
    const upload = new tus.Upload(data, {
      endpoint,
      chunkSize: Number(chunk) > 0 ? Number(chunk) : Infinity,
      uploadLengthDeferred: deferred,
      headers,
      metadata: { filename: name, filetype: "application/octet-stream" },
      ...(process.env.TUS_RETRY === "default"
        ? {}
        : { retryDelays: process.env.TUS_RETRY === "1" ? [0, 200, 500, 1000] : [] }),
      parallelUploads: Number(process.env.TUS_PARALLEL || 1),
      storeFingerprintForResuming: false,
      ...options,
      onProgress(sent) {
        if (options.abortAt && sent >= options.abortAt) {
          upload.abort(false).then(() => resolve({ aborted: true, url: upload.url }));
        }
      },
      onSuccess() { resolve({ aborted: false, url: upload.url }); },
      onError(err) { reject(err); },
    });
    upload.start();
  });
}

try {
  let r = await start({ abortAt: abortAfter ? Number(abortAfter) : 0 });
  let resumed = false;
  if (r.aborted) {
    // A fresh client that only knows the upload URL.
    r = await start({ uploadUrl: r.url });
    resumed = true;
  }
  let terminated = false;
  if (process.env.TUS_TERMINATE === "1") {
    await tus.Upload.terminate(r.url, { headers });
    terminated = true;
  }
  console.log(JSON.stringify({ url: r.url, resumed, terminated }));
} catch (e) {
  console.error(String(e));
  process.exit(1);
}
