// Drives chute's upload page (GET /) in Debian's headless Chromium, as a person would, and
// prints what happened as JSON. Usage: node ui.mjs BASE_URL TOKEN DIR
// DIR holds: one.txt, two.bin, big.bin (three files for the Dashboard), again.bin (uploaded
// across a reload), good.pdf and bad.exe (for an upload session); screenshots go there too.
import { chromium } from "playwright-core";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";

const [base, token, dir, jwt] = process.argv.slice(2);
const f = (name) => `${dir}/${name}`;
const out = {};
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", "--disable-quic"],
});
const errors = [];
try {
  const context = await browser.newContext({ acceptDownloads: true, viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.on("pageerror", (e) => errors.push(e.message));
  // Uploads at 40 MB/s, so that a 64 MiB file is still going when it is paused or reloaded.
  const cdp = await context.newCDPSession(page);
  await cdp.send("Network.enable");
  await cdp.send("Network.emulateNetworkConditions",
    { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: 40 * 1024 * 1024 });

  // Signed in by the application's link; the token leaves the address bar.
  await page.goto(`${base}/#token=${encodeURIComponent(token)}`);
  await page.waitForFunction(() => document.querySelector("#who").textContent.startsWith("Signed in"));
  out.who = await page.textContent("#who");
  out.hash = await page.evaluate(() => location.hash);

  const progress = () => page.evaluate(() => window.chuteUppy.getState().totalProgress);
  const uploadAll = () => page.click(".uppy-StatusBar-actionBtn--upload");
  const waitDone = (n) => page.waitForFunction((n) => document.querySelectorAll("#uploaded li").length >= n,
    n, { timeout: 120000 });

  // Three files; the big one is paused mid-way, stays put, and resumes.
  await page.setInputFiles(".uppy-Dashboard-input", [f("one.txt"), f("two.bin"), f("big.bin")]);
  await uploadAll();
  await page.waitForFunction(() => window.chuteUppy.getState().totalProgress >= 15, null, { timeout: 60000 });
  await page.click("button.uppy-StatusBar-actionCircleBtn[aria-label='Pause']");
  // Progress events of bytes already on their way may still come in; then nothing moves.
  await page.waitForTimeout(700);
  const pausedAt = await progress();
  await page.waitForTimeout(1500);
  out.paused = { at: pausedAt, after: await progress() };
  await page.click("button.uppy-StatusBar-actionCircleBtn[aria-label='Resume']");
  await waitDone(3);
  out.uploaded = await page.$$eval("#uploaded li .name", (els) => els.map((e) => e.textContent));

  // A reload in the middle of an upload; picking the same file again goes on from there.
  await page.evaluate(() => window.chuteUppy.cancelAll());
  await page.setInputFiles(".uppy-Dashboard-input", [f("again.bin")]);
  await uploadAll();
  await page.waitForFunction(() => window.chuteUppy.getState().totalProgress >= 30, null, { timeout: 60000 });
  out.reloadedAt = await progress();
  await page.reload();
  await page.waitForFunction(() => document.querySelector("#who").textContent.startsWith("Signed in"));
  await page.setInputFiles(".uppy-Dashboard-input", [f("again.bin")]);
  await uploadAll();
  await waitDone(1);
  out.afterReload = await page.$$eval("#uploaded li .name", (els) => els.map((e) => e.textContent));

  // An upload session: a good file is accepted, an .exe is refused in the server's words,
  // and the session is stored.
  await page.click(".tab[data-tab=session]");
  await page.click("#open-session");
  await page.waitForFunction(() => !document.querySelector("#session-body").hidden);
  await page.setInputFiles("#session-files", [f("good.pdf"), f("bad.exe")]);
  await page.waitForFunction(() => document.querySelectorAll("#session-list li.pending").length === 0
    && document.querySelectorAll("#session-list li").length === 2);
  out.refused = await page.textContent("#session-list li.refused .refused");
  out.accepted = await page.$$eval("#session-list li.accepted .name", (els) => els.map((e) => e.textContent));
  await page.click("#store-session");
  await page.waitForFunction(() => document.querySelector("#session-state").textContent.includes("stored"));
  out.sessionState = await page.textContent("#session-state");

  // The library, reached by keyboard: download one file by its link, delete another.
  await page.focus(".tab[data-tab=library]");
  await page.keyboard.press("Enter");
  await page.waitForFunction(() => document.querySelectorAll("#files tr.file").length >= 5);
  out.listed = await page.$$eval("#files tr.file td.name", (els) => els.map((e) => e.textContent));
  const [download] = await Promise.all([
    page.waitForEvent("download"),
    page.click("button[aria-label='Download two.bin']"),
  ]);
  out.downloadUrl = download.url();
  const saved = f("downloaded.bin");
  await download.saveAs(saved);
  out.downloadSha256 = createHash("sha256").update(readFileSync(saved)).digest("hex");
  page.once("dialog", (d) => d.accept());
  await page.click("button[aria-label='Delete one.txt']");
  await page.waitForFunction(() => ![...document.querySelectorAll("#files td.name")].some((e) => e.textContent === "one.txt"));
  out.afterDelete = await page.$$eval("#files tr.file td.name", (els) => els.map((e) => e.textContent));

  // Screenshots, and nothing wider than a phone at a phone's width.
  await page.click(".tab[data-tab=upload]");
  await page.screenshot({ path: f("desktop.png") });
  await page.setViewportSize({ width: 390, height: 844 });
  await page.click(".tab[data-tab=session]");
  await page.waitForTimeout(300);
  out.phoneOverflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  await page.screenshot({ path: f("phone.png"), fullPage: true });

  // A wrong token is refused in words.
  const other = await context.newPage();
  await other.goto(`${base}/#token=not-a-token`);
  await other.waitForFunction(() => !document.querySelector("#error").hidden);
  out.badToken = await other.textContent("#error");
  // A token the application signed: its user is signed in, created on first sight.
  if (jwt) {
    const signed = await context.newPage();
    await signed.goto(`${base}/#token=${encodeURIComponent(jwt)}`);
    await signed.waitForFunction(() => document.querySelector("#who").textContent.startsWith("Signed in"));
    out.jwtWho = await signed.textContent("#who");
  }
} catch (e) {
  out.failure = String(e && e.stack || e);
} finally {
  out.pageErrors = errors;
  console.log(JSON.stringify(out));
  await browser.close();
}
