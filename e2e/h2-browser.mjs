// Drives chute's upload page over HTTPS in Debian's headless Chromium, which speaks HTTP/2
// when ALPN offers it: one file through the Dashboard (Uppy's tus uploader, 1 MiB chunks
// and the rest of its defaults) and one form upload by fetch from the page. Prints JSON:
// {"uploaded": [names], "form": status, "protocols": {"path": "h2", ...}}.
// The test's certificate is self-signed, so the browser is told to accept it.
// Usage: node h2-browser.mjs BASE_URL TOKEN FILE
import { chromium } from "playwright-core";

const [base, token, file] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", "--disable-quic", "--ignore-certificate-errors"],
});
try {
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  await page.goto(`${base}/#token=${encodeURIComponent(token)}`);
  await page.waitForFunction(() => document.querySelector("#who").textContent.startsWith("Signed in"));
  await page.setInputFiles(".uppy-Dashboard-input", [file]);
  await page.click(".uppy-StatusBar-actionBtn--upload");
  await page.waitForFunction(() => document.querySelectorAll("#uploaded li").length >= 1,
    null, { timeout: 120000 });
  const uploaded = await page.$$eval("#uploaded li .name", (els) => els.map((e) => e.textContent));
  const form = await page.evaluate(async (token) => {
    const fd = new FormData();
    fd.append("file", new Blob([new Uint8Array(100000).fill(7)]), "page-form.bin");
    const r = await fetch("/api/files", { method: "POST", headers: { Authorization: `Bearer ${token}` }, body: fd });
    return r.status;
  }, token);
  const protocols = await page.evaluate(() => {
    const out = {};
    for (const e of [...performance.getEntriesByType("navigation"), ...performance.getEntriesByType("resource")]) {
      out[new URL(e.name).pathname] = e.nextHopProtocol;
    }
    return out;
  });
  console.log(JSON.stringify({ uploaded, form, protocols, errors }));
} finally {
  await browser.close();
}
