//! `chute upload`: files and directory trees, by tus with automatic resume, or into an upload
//! session that is then stored.
//!
//! Resume is automatic: before an upload sends its first byte, its URL is kept in a state file
//! (`$CHUTE_STATE_DIR`, else `$XDG_STATE_HOME/chute`, else `~/.local/state/chute`), keyed by
//! the server, the file's absolute path, size and modification time. The same command run
//! again, after Ctrl-C, `kill -9`, a lost network or a server restart, asks the server's offset
//! and sends only the rest. A finished upload's entry is removed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use chute_client::{Checksum, Client, Error, ErrorCode, Protocol, UploadOptions};
use futures::StreamExt as _;
use sha2::Digest as _;

use super::Remote;
use super::progress::{Display, Mode};

#[derive(clap::Args)]
pub struct UploadArgs {
    #[command(flatten)]
    remote: Remote,
    /// Files, and directories (uploaded with everything under them).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Files sent at once.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    parallel: u16,
    /// Bytes per PATCH (`8MiB`); by default each file goes in one streaming PATCH.
    #[arg(long, value_parser = chute::config::parse_size, conflicts_with = "session")]
    chunk_size: Option<u64>,
    /// Send each PATCH's digest (`--checksum=sha1`: sha256, sha1, md5 or none; `--checksum`
    /// alone: sha256). The
    /// server keeps nothing of a PATCH whose bytes differ.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "sha256",
          default_value = "none", value_enum, conflicts_with = "session")]
    checksum: ChecksumArg,
    /// Metadata for every file, as KEY=VALUE (repeatable): tus's `Upload-Metadata`, which
    /// the server hands to hooks and keeps with the upload.
    #[arg(long, value_parser = parse_metadata, conflicts_with = "session")]
    metadata: Vec<(String, String)>,
    /// Speak the IETF resumable-upload draft instead of tus (no checksums).
    #[arg(long, conflicts_with_all = ["session", "checksum"])]
    draft: bool,
    /// Upload into a new upload session (each file validated, perhaps scanned), then store
    /// it: the refused files are reported with the server's reason, the others kept.
    #[arg(long)]
    session: bool,
    /// Skip the check, after each upload, that the stored file's digest (its ETag) is the
    /// local file's (hashed as the bytes go; read again only for a resumed upload).
    #[arg(long)]
    no_verify: bool,
    /// Print one JSON object per finished file on stdout.
    #[arg(long)]
    json: bool,
    /// How progress is shown (on stderr).
    #[arg(long, value_enum, default_value_t = Mode::Auto)]
    progress: Mode,
}

/// `--checksum`'s values.
#[derive(Clone, Copy, clap::ValueEnum)]
enum ChecksumArg {
    Sha256,
    Sha1,
    Md5,
    None,
}

impl From<ChecksumArg> for Option<Checksum> {
    fn from(c: ChecksumArg) -> Self {
        match c {
            ChecksumArg::Sha256 => Some(Checksum::Sha256),
            ChecksumArg::Sha1 => Some(Checksum::Sha1),
            ChecksumArg::Md5 => Some(Checksum::Md5),
            ChecksumArg::None => None,
        }
    }
}

fn parse_metadata(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or("expected KEY=VALUE")?;
    let key_ok = !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_graphic() && b != b',' && b != b'=');
    if !key_ok {
        return Err(format!(
            "`{k}` is not a metadata key (ASCII, no space, comma or =)"
        ));
    }
    if matches!(k, "filename" | "filetype") {
        return Err(format!("`{k}` is set from the file"));
    }
    Ok((k.to_string(), v.to_string()))
}

/// The state file: upload URLs by file.
struct State {
    path: PathBuf,
    uploads: BTreeMap<String, String>,
}

impl State {
    fn open() -> anyhow::Result<Self> {
        let dir = std::env::var_os("CHUTE_STATE_DIR")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("XDG_STATE_HOME").map(|d| PathBuf::from(d).join("chute")))
            .or_else(|| {
                std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state/chute"))
            })
            .context("no state folder: set CHUTE_STATE_DIR or HOME")?;
        std::fs::create_dir_all(&dir).with_context(|| format!("{}", dir.display()))?;
        let path = dir.join("uploads.json");
        let uploads = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_default(),
            Err(_) => BTreeMap::new(),
        };
        Ok(Self { path, uploads })
    }

    /// Written whole to a temporary file, then renamed over the old one.
    fn save(&self) -> anyhow::Result<()> {
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&self.uploads)?)
            .with_context(|| format!("{}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path).with_context(|| format!("{}", self.path.display()))
    }
}

/// The state, shared by the files sent at once.
#[derive(Clone)]
struct Shared(Arc<Mutex<State>>);

impl Shared {
    fn get(&self, key: &str) -> Option<String> {
        self.0.lock().ok()?.uploads.get(key).cloned()
    }

    fn set(&self, key: &str, url: Option<String>) -> anyhow::Result<()> {
        let mut s = self
            .0
            .lock()
            .map_err(|_| anyhow::anyhow!("the state was poisoned"))?;
        match url {
            Some(u) => s.uploads.insert(key.to_string(), u),
            None => s.uploads.remove(key),
        };
        s.save()
    }
}

/// The state key of a file: the server, its absolute path, size and modification time.
fn key(server: &str, path: &Path) -> anyhow::Result<String> {
    let abs = std::fs::canonicalize(path).with_context(|| format!("{}", path.display()))?;
    let m = std::fs::metadata(&abs).with_context(|| format!("{}", abs.display()))?;
    let mtime = m
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let id = format!("{server}\n{}\n{}\n{mtime}", abs.display(), m.len());
    Ok(hex::encode(sha2::Sha256::digest(id.as_bytes())))
}

/// The files under `paths`, directories walked, in a stable order; and the folders that
/// could not be read, with why.
fn files(paths: &[PathBuf]) -> (Vec<PathBuf>, Vec<(PathBuf, std::io::Error)>) {
    let mut out = Vec::new();
    let mut unreadable = Vec::new();
    for p in paths {
        if p.is_dir() {
            match std::fs::read_dir(p).and_then(|rd| rd.map(|e| e.map(|e| e.path())).collect()) {
                Ok(mut entries) => {
                    let entries: &mut Vec<PathBuf> = &mut entries;
                    entries.sort();
                    let (f, u) = files(entries);
                    out.extend(f);
                    unreadable.extend(u);
                }
                Err(e) => unreadable.push((p.clone(), e)),
            }
        } else {
            out.push(p.clone());
        }
    }
    (out, unreadable)
}

/// A file sent: what `--json` and the plain result line say of it.
struct Sent {
    size: u64,
    /// The stored file (`/api/files/ID`), or its place in the session.
    url: Option<String>,
    /// The tus upload it went by.
    upload: Option<String>,
    /// The digest the stored file was checked against, when it was.
    verified: Option<String>,
    /// The sha256 of the bytes as they went, when this run sent them all.
    sha256: Option<String>,
}

impl Sent {
    /// What is printed of the file at `path`: a JSON object, or path, size and URL.
    fn line(&self, path: &Path, json: bool, session: Option<&str>) -> String {
        let url = self.url.clone().unwrap_or_default();
        if json {
            serde_json::json!({
                "path": path, "size": self.size, "url": url, "upload": self.upload,
                "session": session, "verified": self.verified,
            })
            .to_string()
        } else {
            let verified = self.verified.as_deref().unwrap_or("-");
            format!("{}\t{}\t{url}\t{verified}", path.display(), self.size)
        }
    }
}

/// `chute upload`: the files, `--parallel` at a time; a failed file does not stop the others.
/// Fails (exit 1) when any failed or was refused.
pub async fn upload(args: UploadArgs) -> anyhow::Result<()> {
    let (client, server) = args.remote.client()?;
    let (all, unreadable) = files(&args.paths);
    let bytes = all
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    let display = Display::new(args.progress, all.len(), bytes);
    let mut failed = unreadable.len();
    for (dir, e) in &unreadable {
        display.note(&format!("{}: {e}", dir.display()));
    }
    let session = if args.session {
        let s = client.open_session().await?;
        display.note(&format!("upload session {}", s.upload_session_token));
        Some(s.upload_session_token)
    } else {
        None
    };
    let state = Shared(Arc::new(Mutex::new(State::open()?)));
    let opts = UploadOptions {
        chunk_size: args.chunk_size,
        checksum: args.checksum.into(),
        metadata: args.metadata.clone(),
        protocol: if args.draft {
            Protocol::Draft
        } else {
            Protocol::Tus
        },
        skip_digest: args.no_verify,
        ..Default::default()
    };
    let (json, no_verify) = (args.json, args.no_verify);
    let results: Vec<(PathBuf, anyhow::Result<Sent>)> = futures::stream::iter(&all)
        .map(|path| {
            let (client, display, state, opts) = (&client, &display, &state, &opts);
            let (server, session) = (&server, &session);
            async move {
                let r = match session {
                    Some(token) => to_session(client, display, token, path).await,
                    None => {
                        let sent = resumable(client, display, state, server, path, opts).await;
                        match sent {
                            Ok(s) if !no_verify => verified(client, path, s).await,
                            other => other,
                        }
                    }
                };
                display.file_over();
                match &r {
                    Err(e) => {
                        // A file error names its path already.
                        let (name, msg) = (path.display().to_string(), format!("{e:#}"));
                        display.note(&if msg.starts_with(&name) {
                            msg
                        } else {
                            format!("{name}: {msg}")
                        });
                    }
                    // A file sent by tus is stored: said at once. A session's files are
                    // stored together, at the end.
                    Ok(s) if session.is_none() => display.result(&s.line(path, json, None)),
                    Ok(_) => {}
                }
                (path.clone(), r)
            }
        })
        .buffer_unordered(usize::from(args.parallel))
        .collect()
        .await;
    let sent: Vec<(PathBuf, Sent)> = results
        .into_iter()
        .filter_map(|(p, r)| match r {
            Ok(s) => Some((p, s)),
            Err(_) => {
                failed += 1;
                None
            }
        })
        .collect();
    if let Some(token) = &session {
        if sent.is_empty() {
            display.finish();
            bail!("no file was accepted: the upload session {token} was not stored");
        }
        let s = client.store_session(token).await?;
        display.note(&format!(
            "upload session {token}: {} ({} files, {} bytes)",
            s.status, s.file_count, s.total_size
        ));
        for (path, s) in &sent {
            display.result(&s.line(path, json, Some(token)));
        }
    }
    display.finish();
    if failed > 0 {
        bail!(
            "{failed} of {} file(s) were not uploaded",
            all.len() + unreadable.len()
        );
    }
    Ok(())
}

/// One file by tus or the draft: resumed from the state file's URL when the server still has it.
async fn resumable(
    client: &Client,
    display: &Display,
    state: &Shared,
    server: &str,
    path: &Path,
    opts: &UploadOptions,
) -> anyhow::Result<Sent> {
    let k = key(server, path)?;
    let name = path.display().to_string();
    let size = std::fs::metadata(path).with_context(|| name.clone())?.len();
    let bar = display.file(&name, size);
    let url = match state.get(&k) {
        Some(url) => match client.offset(&url).await {
            Ok((offset, _)) => {
                display.note(&format!("{name}: resuming at byte {offset}"));
                Some(url)
            }
            // Gone from the server (expired, terminated): start again.
            Err(Error::Api {
                status: 404 | 410, ..
            }) => None,
            Err(e) => return Err(e.into()),
        },
        None => None,
    };
    let url = match url {
        Some(u) => u,
        None => {
            let (url, file) = client.create_upload(path, opts).await?;
            if let Some(file_url) = file {
                state.set(&k, None)?;
                return Ok(Sent {
                    size: 0,
                    url: Some(file_url),
                    upload: Some(url),
                    verified: None,
                    sha256: None,
                });
            }
            // Kept before the first byte goes, so that any end of this process leaves it
            // resumable.
            state.set(&k, Some(url.clone()))?;
            url
        }
    };
    let up = client.resume_file(&url, path, opts, bar.callback()).await;
    bar.clear();
    let up = up?;
    state.set(&k, None)?;
    Ok(Sent {
        size: up.size,
        url: up.file_url,
        upload: Some(up.upload_url),
        verified: None,
        sha256: up.sha256,
    })
}

/// Checks the stored file against the local one (its ETag, sha256 or blake3): against the
/// sha256 hashed as the bytes went, or else by reading the file again.
async fn verified(client: &Client, path: &Path, mut sent: Sent) -> anyhow::Result<Sent> {
    let Some(url) = &sent.url else {
        bail!("the server did not name the stored file: it cannot be checked (--no-verify)");
    };
    match client
        .verify_upload(url, path, sent.sha256.as_deref())
        .await
    {
        Ok(digest) => {
            sent.verified = Some(digest);
            Ok(sent)
        }
        // A stored file that is not the local one must not stay as if it were.
        Err(e @ Error::Integrity { .. }) => {
            let id = url.rsplit('/').next().unwrap_or_default();
            match client.delete_file(id).await {
                Ok(()) => bail!("{e}: the stored copy was deleted"),
                Err(d) => bail!("{e}; deleting the stored copy failed too: {d}"),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// One file into the session `token`; a refusal says the server's reason.
async fn to_session(
    client: &Client,
    display: &Display,
    token: &str,
    path: &Path,
) -> anyhow::Result<Sent> {
    let name = path.display().to_string();
    let size = std::fs::metadata(path).with_context(|| name.clone())?.len();
    let bar = display.file(&name, size);
    let r = client.add_to_session(token, path, bar.callback()).await;
    bar.clear();
    match r {
        Ok(a) => Ok(Sent {
            size,
            url: Some(client.url(&a.url)),
            upload: None,
            verified: None,
            sha256: None,
        }),
        Err(Error::Api {
            code: ErrorCode::InvalidFile,
            message,
            detail,
            ..
        }) => bail!("refused: {}", detail.unwrap_or(message)),
        Err(e) => Err(e.into()),
    }
}
