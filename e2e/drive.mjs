// Drives Debian's headless Chromium (through playwright-core) to a page, sets a file in an
// <input type=file>, and waits until the page's #status says "done" or "fail".
// Usage: node drive.mjs URL INPUT_SELECTOR FILE [TIMEOUT_MS]. Prints the final status.
import { chromium } from "playwright-core";

const [url, selector, file, timeout = "180000"] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", "--disable-quic"],
});
try {
  const page = await browser.newPage();
  page.on("pageerror", (e) => console.error("page error:", e.message));
  await page.goto(url);
  await page.setInputFiles(selector, file);
  await page.waitForFunction(() => {
    const s = document.querySelector("#status").textContent;
    return s.startsWith("done") || s.startsWith("fail");
  }, null, { timeout: Number(timeout) });
  console.log(await page.textContent("#status"));
} finally {
  await browser.close();
}
