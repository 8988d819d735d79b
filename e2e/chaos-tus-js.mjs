// One upload of the chaos test (crates/chute/tests/it/chaos.rs) with the real tus-js-client,
// resuming through every fault: its own retries (HEAD for the offset, then on) with a delay
// list that starts over whenever the upload moved on, within a time limit.
// Usage: node chaos-tus-js.mjs ENDPOINT TOKEN FILE CHUNK_SIZE NAME LIMIT_SECONDS
// CHUNK_SIZE 0 sends the file in one PATCH (a cut or a crash then ends it midway).
// It also checks what no client checks by itself: that the server never answers a HEAD with
// less than a PATCH it acknowledged (an acknowledged byte lost).
// Prints JSON: {"url", "acked", "requests", "retries", "violations": [...]}.
import fs from "node:fs";
import * as tus from "tus-js-client";

const [endpoint, token, file, chunk, name, limit] = process.argv.slice(2);
const data = fs.readFileSync(file);
let acked = 0, requests = 0, retries = 0;
const violations = [];
const timer = setTimeout(() => {
  console.error(`not finished within ${limit} s (acknowledged ${acked} of ${data.length})`);
  process.exit(1);
}, Number(limit) * 1000);

await new Promise((resolve, reject) => {
  const upload = new tus.Upload(data, {
    endpoint,
    chunkSize: Number(chunk) > 0 ? Number(chunk) : Infinity,
    headers: { Authorization: `Bearer ${token}` },
    metadata: { filename: name, filetype: "application/octet-stream" },
    // Up to 40 attempts 250 ms apart without progress (10 s of outage); any progress resets it.
    retryDelays: Array(40).fill(250),
    storeFingerprintForResuming: false,
    onShouldRetry(err, attempt, options) {
      retries++;
      const status = err.originalResponse ? err.originalResponse.getStatus() : 0;
      // tus-js-client's own rule: network errors, 5xx, 409 and 423 are retried.
      return status === 0 || status >= 500 || status === 409 || status === 423;
    },
    onAfterResponse(req, res) {
      requests++;
      const offset = res.getHeader("Upload-Offset");
      if (offset == null) return;
      const n = Number(offset), m = req.getMethod(), s = res.getStatus();
      if (m === "PATCH" && s === 204) acked = Math.max(acked, n);
      if (m === "HEAD" && s === 200 && n < acked) {
        violations.push(`HEAD answered ${n} after a PATCH acknowledged ${acked}`);
      }
    },
    onSuccess() { resolve(); },
    onError(err) { reject(err); },
  });
  globalThis.upload = upload;
  upload.start();
}).catch((e) => {
  console.error(String(e));
  process.exit(1);
});
clearTimeout(timer);
console.log(JSON.stringify({ url: globalThis.upload.url, acked, requests, retries, violations }));
