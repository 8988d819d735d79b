//! The command-line client, part of the `chute` binary only: `chute upload` and
//! `chute download`, on the chute-client library.
//!
//! Resume is automatic: before an upload sends its first byte, its URL is kept in a state file
//! (`$CHUTE_STATE_DIR`, else `$XDG_STATE_HOME/chute`, else `~/.local/state/chute`), keyed by
//! the server, the file's absolute path, size and modification time. The same command run
//! again, after Ctrl-C, `kill -9`, a lost network or a server restart, asks the server's offset
//! and sends only the rest. A finished upload's entry is removed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chute_client::{Client, Error, Progress, UploadOptions};
use sha2::Digest as _;

/// Where the server is, and who asks.
#[derive(clap::Args)]
pub struct Remote {
    /// The chute server's URL (with any path prefix it is served under).
    #[arg(long, env = "CHUTE_URL", default_value = "http://127.0.0.1:8080")]
    server: String,
    /// An API token (`chute token create`), or the application's signed token.
    #[arg(long, env = "CHUTE_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl Remote {
    fn client(&self) -> anyhow::Result<Client> {
        let c = Client::new(&self.server)?;
        Ok(match &self.token {
            Some(t) => c.token(t.clone()),
            None => c,
        })
    }
}

#[derive(clap::Args)]
pub struct UploadArgs {
    #[command(flatten)]
    remote: Remote,
    /// Files, and directories (uploaded with everything under them).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Bytes per PATCH (`8MiB`); by default each file goes in one streaming PATCH.
    #[arg(long, value_parser = chute::config::parse_size)]
    chunk_size: Option<u64>,
    /// Send each PATCH's sha256; the server keeps nothing of a PATCH that differs.
    #[arg(long)]
    checksum: bool,
    /// Print one JSON object per finished file on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct DownloadArgs {
    #[command(flatten)]
    remote: Remote,
    /// A file's id, or a URL or path the server gave (`/api/files/ID`, a download link).
    file: String,
    /// Where to write it (default: the id, in the current folder). A partial file there is
    /// continued when the server's file is the same.
    #[arg(short, long)]
    output: Option<PathBuf>,
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

/// The files under `paths`, directories walked, in a stable order.
fn files(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut entries: Vec<PathBuf> = match std::fs::read_dir(p) {
                Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
                Err(_) => vec![],
            };
            entries.sort();
            out.extend(files(&entries));
        } else {
            out.push(p.clone());
        }
    }
    out
}

/// A plain progress line every few seconds (stderr), for logs and pipes.
fn reporter(name: String) -> impl FnMut(Progress) {
    let mut last = Instant::now();
    move |p| {
        if last.elapsed() >= Duration::from_secs(2) && p.sent < p.total {
            last = Instant::now();
            eprintln!("{name}: {} of {} bytes", p.sent, p.total);
        }
    }
}

/// `chute upload`: each file in turn; a failed file does not stop the others. Fails (exit
/// 1) when any did.
pub async fn upload(args: UploadArgs) -> anyhow::Result<()> {
    let client = args.remote.client()?;
    let mut state = State::open()?;
    let opts = UploadOptions {
        chunk_size: args.chunk_size,
        checksum: args.checksum,
        ..Default::default()
    };
    let all = files(&args.paths);
    let mut failed = 0;
    for path in &all {
        match upload_one(&client, &args.remote.server, &mut state, path, &opts).await {
            Ok((file_url, size)) => {
                if args.json {
                    let line = serde_json::json!({
                        "path": path, "size": size, "url": file_url,
                    });
                    println!("{line}");
                } else {
                    println!(
                        "{}\t{size}\t{}",
                        path.display(),
                        file_url.unwrap_or_default()
                    );
                }
            }
            Err(e) => {
                failed += 1;
                eprintln!("{}: {e:#}", path.display());
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} file(s) were not uploaded", all.len());
    }
    Ok(())
}

async fn upload_one(
    client: &Client,
    server: &str,
    state: &mut State,
    path: &Path,
    opts: &UploadOptions,
) -> anyhow::Result<(Option<String>, u64)> {
    let k = key(server, path)?;
    let name = path.display().to_string();
    if let Some(url) = state.uploads.get(&k).cloned() {
        match client.offset(&url).await {
            Ok((offset, _)) => {
                eprintln!("{name}: resuming at byte {offset}");
                let up = client.resume_file(&url, path, opts, reporter(name)).await?;
                state.uploads.remove(&k);
                state.save()?;
                return Ok((up.file_url, up.size));
            }
            // Gone from the server (expired, terminated): start again.
            Err(Error::Api {
                status: 404 | 410, ..
            }) => {
                state.uploads.remove(&k);
            }
            Err(e) => return Err(e.into()),
        }
    }
    let (url, file) = client.create_upload(path, opts).await?;
    if let Some(file_url) = file {
        return Ok((Some(file_url), 0));
    }
    // Kept before the first byte goes, so that any end of this process leaves it resumable.
    state.uploads.insert(k.clone(), url.clone());
    state.save()?;
    let up = client.resume_file(&url, path, opts, reporter(name)).await?;
    state.uploads.remove(&k);
    state.save()?;
    Ok((up.file_url, up.size))
}

/// `chute download`
pub async fn download(args: DownloadArgs) -> anyhow::Result<()> {
    let client = args.remote.client()?;
    let url = if args.file.contains('/') {
        args.file.clone()
    } else {
        format!(
            "{}/api/files/{}",
            args.remote.server.trim_end_matches('/'),
            args.file
        )
    };
    let out = args.output.clone().unwrap_or_else(|| {
        PathBuf::from(
            url.rsplit('/')
                .next()
                .unwrap_or("download")
                .split('?')
                .next()
                .unwrap_or("download"),
        )
    });
    let got = client
        .download(&url, &out, reporter(out.display().to_string()))
        .await?;
    if got.resumed_from > 0 {
        eprintln!(
            "{}: continued from byte {}",
            out.display(),
            got.resumed_from
        );
    }
    println!("{}\t{}\t{}", out.display(), got.size, got.digest);
    Ok(())
}
