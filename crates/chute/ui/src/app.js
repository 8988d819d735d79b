// chute's upload page. The protocol is Uppy's (Dashboard and Tus, from vendor/, pinned by
// ui/package-lock.json); this file only signs in, lists, and drives upload sessions, with
// plain fetch. Every URL is relative to the page, so chute works the same under a path
// prefix behind a proxy.
"use strict";

const base = new URL(".", location.href);
const api = (path) => new URL(path, base).href;
const $ = (sel) => document.querySelector(sel);
const KEY = "chute-token";

// A token handed over in the address (`/#token=...`) is kept for this tab and removed from
// the address bar, so it is neither bookmarked nor shared by a copied link.
(function takeTokenFromHash() {
  const m = location.hash.match(/(?:^#|&)token=([^&]+)/);
  if (m) {
    sessionStorage.setItem(KEY, decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
})();

function token() { return sessionStorage.getItem(KEY); }
function auth() { return { Authorization: "Bearer " + token() }; }

function showError(message) {
  const e = $("#error");
  e.textContent = message;
  e.hidden = !message;
}

// A request to chute; its JSON, or an Error in chute's words.
async function call(method, path, body) {
  const init = { method, headers: auth() };
  if (body instanceof FormData) init.body = body;
  else if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  let res;
  try {
    res = await fetch(api(path), init);
  } catch (e) {
    throw new Error("chute could not be reached (" + e.message + ")");
  }
  const text = await res.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch (_) { /* not JSON */ }
  if (!res.ok) {
    const why = json && (json.verboseError || json.error);
    const err = new Error(why || `chute answered ${res.status}`);
    err.status = res.status;
    err.body = json;
    throw err;
  }
  return json;
}

function size(n) {
  if (n == null) return "";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return (i ? n.toFixed(1) : n) + " " + units[i];
}

function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  Object.assign(e, props);
  for (const c of children) e.append(c);
  return e;
}

// ---- sign in -------------------------------------------------------------------------

async function signIn() {
  if (!token()) {
    $("#sign-in").hidden = false;
    $("#signed-in").hidden = true;
    $("#sign-out").hidden = true;
    $("#who").textContent = "";
    $("#token").focus();
    return;
  }
  try {
    const me = await call("GET", "api/me");
    $("#who").textContent = `Signed in as ${me.name}` + (me.staff ? " (staff)" : "") +
      (me.quota != null ? ` · ${size(me.usage)} of ${size(me.quota)} used` : ` · ${size(me.usage)} stored`);
    $("#sign-in").hidden = true;
    $("#signed-in").hidden = false;
    $("#sign-out").hidden = false;
    showError("");
    startUppy();
  } catch (e) {
    sessionStorage.removeItem(KEY);
    $("#sign-in").hidden = false;
    $("#signed-in").hidden = true;
    showError(e.status === 401 ? "That token was not accepted: " + e.message : e.message);
  }
}

$("#sign-in-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem(KEY, $("#token").value.trim());
  $("#token").value = "";
  signIn();
});

$("#sign-out").addEventListener("click", () => {
  sessionStorage.removeItem(KEY);
  location.reload();
});

// ---- tabs ----------------------------------------------------------------------------

for (const b of document.querySelectorAll(".tab")) {
  b.addEventListener("click", () => {
    for (const t of document.querySelectorAll(".tab")) {
      const on = t === b;
      t.setAttribute("aria-pressed", String(on));
      $("#" + t.dataset.tab).hidden = !on;
    }
    if (b.dataset.tab === "library") loadFiles();
  });
}

// ---- upload (Uppy) ---------------------------------------------------------------------

let uppy = null;

function startUppy() {
  if (uppy) return;
  uppy = new Uppy.Uppy({ autoProceed: false })
    .use(Uppy.Dashboard, {
      inline: true,
      target: "#uppy",
      width: "100%",
      height: 360,
      proudlyDisplayPoweredByUppy: false,
      showProgressDetails: true,
    })
    .use(Uppy.Tus, {
      endpoint: api("tus/"),
      headers: auth(),
      chunkSize: 8 * 1024 * 1024,
      retryDelays: [0, 1000, 3000, 5000],
      removeFingerprintOnSuccess: true,
    });
  // For an embedding page or a test to follow the uploads.
  window.chuteUppy = uppy;
  uppy.on("upload-success", (file) => {
    $("#uploaded").append(el("li", { className: "done" },
      el("span", { className: "name", textContent: file.name }),
      el("span", { className: "ok", textContent: "uploaded, " + size(file.size) })));
  });
  uppy.on("upload-error", (file, error) => {
    let why = error && error.message ? error.message : String(error);
    // tus-js-client keeps chute's answer: show its words rather than the transport's.
    const body = error && error.originalResponse && error.originalResponse.getBody();
    try { if (body) why = JSON.parse(body).error || why; } catch (_) { /* not JSON */ }
    showError(`${file ? file.name : "A file"} could not be uploaded: ${why}`);
  });
}

// ---- library ---------------------------------------------------------------------------

async function loadFiles() {
  const tbody = $("#files");
  try {
    const page = await call("GET", "api/files?limit=1000");
    tbody.replaceChildren();
    $("#no-files").hidden = page.files.length > 0;
    for (const f of page.files.slice().reverse()) {
      const download = el("button", { type: "button", textContent: "Download" });
      download.setAttribute("aria-label", "Download " + f.name);
      download.addEventListener("click", async () => {
        try {
          // <a href> sends no Authorization header: a short download link does instead.
          const link = await call("POST", `api/files/${f.id}/link`, { expires_in: 300 });
          const a = el("a", { href: new URL(link.url, base).href, download: f.name });
          document.body.append(a);
          a.click();
          a.remove();
        } catch (e) { showError(e.message); }
      });
      const del = el("button", { type: "button", textContent: "Delete" });
      del.setAttribute("aria-label", "Delete " + f.name);
      del.addEventListener("click", async () => {
        if (!confirm(`Delete ${f.name}?`)) return;
        try { await call("DELETE", `api/files/${f.id}`); loadFiles(); }
        catch (e) { showError(e.message); }
      });
      tbody.append(el("tr", { className: "file" },
        el("td", { className: "name", textContent: f.name }),
        el("td", { textContent: size(f.size) }),
        el("td", { textContent: f.created_at ? new Date(f.created_at).toLocaleString() : "" }),
        el("td", { className: "actions" }, download, " ", del)));
    }
  } catch (e) { showError(e.message); }
}

$("#refresh").addEventListener("click", loadFiles);

// ---- upload sessions -------------------------------------------------------------------

let session = null;

async function showSession() {
  const s = await call("GET", `upload-session/${session}/`);
  const limits = s.maxFileCount != null ? ` of ${s.maxFileCount}` : "";
  const total = s.maxTotalSize != null ? ` of ${size(s.maxTotalSize)}` : "";
  $("#session-state").textContent =
    `Session ${s.status.toLowerCase()}: ${s.fileCount}${limits} files, ${size(s.totalSize)}${total}.`;
  const open = s.status !== "STORED" && s.status !== "EXPIRED";
  $("#session-files").disabled = !open;
  $("#store-session").disabled = !open;
}

$("#open-session").addEventListener("click", async () => {
  try {
    const s = await call("POST", "upload-session/");
    session = s.uploadSessionToken;
    $("#session-list").replaceChildren();
    $("#session-body").hidden = false;
    await showSession();
    $("#session-files").focus();
  } catch (e) { showError(e.message); }
});

$("#session-files").addEventListener("change", async (ev) => {
  const files = Array.from(ev.target.files);
  ev.target.value = "";
  for (const file of files) {
    const item = el("li", { className: "pending" },
      el("span", { className: "name", textContent: file.name }),
      el("span", { className: "state", textContent: "checking…" }));
    $("#session-list").append(item);
    const form = new FormData();
    form.append("file", file, file.name);
    try {
      const r = await call("POST", `upload-session/${session}/files/`, form);
      item.className = "accepted";
      item.querySelector(".state").replaceWith(
        el("span", { className: "ok", textContent: "accepted, " + size(file.size) }));
      const remove = el("button", { type: "button", textContent: "Remove" });
      remove.setAttribute("aria-label", "Remove " + r.file);
      remove.addEventListener("click", async () => {
        try {
          await call("DELETE", `upload-session/${session}/files/${encodeURIComponent(r.file)}/`);
          item.remove();
          await showSession();
        } catch (e) { showError(e.message); }
      });
      item.append(remove);
    } catch (e) {
      item.className = "refused";
      item.querySelector(".state").replaceWith(
        el("span", { className: "refused", textContent: "Refused: " + e.message }));
    }
    await showSession().catch((e) => showError(e.message));
  }
});

$("#store-session").addEventListener("click", async () => {
  try {
    await call("POST", `upload-session/${session}/store/`);
    await showSession();
    for (const b of document.querySelectorAll("#session-list button")) b.disabled = true;
  } catch (e) { showError(e.message); }
});

signIn();
