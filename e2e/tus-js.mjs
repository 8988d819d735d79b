// Uploads a file to chute with the real tus-js-client under Node.
// Usage: node tus-js.mjs ENDPOINT TOKEN FILE CHUNK_SIZE NAME [abort_after_bytes]
// With abort_after_bytes, the first client aborts once that many bytes were sent, and a
// fresh client (new process state, same fingerprint-free upload URL) resumes the upload.
// TUS_PARALLEL=N splits the file into N partial uploads sent in parallel (concatenation).
// Prints JSON: {"url": ..., "resumed": bool}.
import fs from "node:fs";
import * as tus from "tus-js-client";

const [endpoint, token, file, chunk, name, abortAfter] = process.argv.slice(2);
const data = fs.readFileSync(file);

function start(options) {
  return new Promise((resolve, reject) => {
    const upload = new tus.Upload(data, {
      endpoint,
      chunkSize: Number(chunk) > 0 ? Number(chunk) : Infinity,
      headers: { Authorization: `Bearer ${token}` },
      metadata: { filename: name, filetype: "application/octet-stream" },
      retryDelays: [],
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
  console.log(JSON.stringify({ url: r.url, resumed }));
} catch (e) {
  console.error(String(e));
  process.exit(1);
}
