//! The command-line client, part of the `chute` binary only, on the chute-client library:
//! `chute upload` ([`upload`]), `download`, `ls`, `rm`, `link`, `login` and `logout`.
//!
//! Which server and token: `--server` / `CHUTE_URL`, else the server `chute login` saved,
//! else `http://127.0.0.1:8080`; `--token` / `CHUTE_TOKEN`, else the token `chute login`
//! saved for that server. Logins are kept in `login.json` under `$XDG_CONFIG_HOME/chute`
//! (else `~/.config/chute`), readable by the user only.

mod progress;
mod upload;

use std::collections::BTreeMap;
use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::PathBuf;

use anyhow::{Context, bail};
use chute_client::Client;

pub use upload::{UploadArgs, upload};

/// The client's commands.
#[derive(clap::Subcommand)]
pub enum ClientCmd {
    /// Upload files and directories to a chute server (tus; resumed by running it again).
    Upload(UploadArgs),
    /// Download a file from a chute server (a partial file is continued; its digest checked).
    Download(DownloadArgs),
    /// List your files on a chute server: id, size, stored at, name.
    Ls(LsArgs),
    /// Delete files from a chute server.
    Rm(RmArgs),
    /// Make a download link to one of your files, usable without a token until it expires.
    Link(LinkArgs),
    /// Check an API token with a chute server, and save it (and the server) for the other
    /// client commands.
    Login(LoginArgs),
    /// Forget a saved token.
    Logout(LogoutArgs),
}

impl ClientCmd {
    /// Runs the command until it ends, or until Ctrl-C: then [`Interrupted`], with what was
    /// sent kept on the server and the state file left for the same command to resume.
    pub async fn run(self) -> anyhow::Result<()> {
        let work = async move {
            match self {
                ClientCmd::Upload(a) => upload(a).await,
                ClientCmd::Download(a) => download(a).await,
                ClientCmd::Ls(a) => ls(a).await,
                ClientCmd::Rm(a) => rm(a).await,
                ClientCmd::Link(a) => link(a).await,
                ClientCmd::Login(a) => login(a).await,
                ClientCmd::Logout(a) => logout(a).await,
            }
        };
        // Handled rather than left to SIGINT's default: a command started where SIGINT is
        // ignored (a background job of a script inherits it so) still stops on Ctrl-C, and
        // it says how to go on.
        tokio::select! {
            r = work => r,
            Ok(()) = tokio::signal::ctrl_c() => Err(Interrupted.into()),
        }
    }
}

/// Ctrl-C ended a client command (exit code 130, as a shell reports SIGINT).
#[derive(Debug)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted: what was sent is kept; the same command goes on from there")
    }
}

impl std::error::Error for Interrupted {}

/// The server when nothing names one: `chute serve`'s default address.
const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// Where the server is, and who asks.
#[derive(clap::Args)]
pub struct Remote {
    /// The chute server's URL, with any path prefix it is served under [default: the server
    /// of `chute login`, else http://127.0.0.1:8080].
    #[arg(long, env = "CHUTE_URL")]
    server: Option<String>,
    /// An API token (`chute token create`), or the application's signed token [default: the
    /// token `chute login` saved for the server].
    #[arg(long, env = "CHUTE_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl Remote {
    /// The server's URL, and the token to send it.
    fn resolve(&self) -> anyhow::Result<(String, Option<String>)> {
        // Read only when something is left to find in it.
        let logins = if self.server.is_some() && self.token.is_some() {
            Logins::default()
        } else {
            Logins::load()?
        };
        let server = self
            .server
            .clone()
            .or_else(|| logins.server.clone())
            .unwrap_or_else(|| DEFAULT_SERVER.to_string());
        let server = server.trim_end_matches('/').to_string();
        let token = self
            .token
            .clone()
            .or_else(|| logins.tokens.get(&server).cloned());
        Ok((server, token))
    }

    fn client(&self) -> anyhow::Result<(Client, String)> {
        let (server, token) = self.resolve()?;
        let c = Client::new(&server)?;
        Ok((
            match token {
                Some(t) => c.token(t),
                None => c,
            },
            server,
        ))
    }
}

/// The logins file: the last server logged in to, and a token per server.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Logins {
    server: Option<String>,
    #[serde(default)]
    tokens: BTreeMap<String, String>,
}

impl Logins {
    fn path() -> anyhow::Result<PathBuf> {
        std::env::var_os("XDG_CONFIG_HOME")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
            .map(|d| d.join("chute").join("login.json"))
            .context("no config folder: set XDG_CONFIG_HOME or HOME")
    }

    /// The saved logins; none when there is no file (or no folder to look in).
    fn load() -> anyhow::Result<Self> {
        let Ok(path) = Self::path() else {
            return Ok(Self::default());
        };
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .with_context(|| format!("{} is not a chute login file", path.display())),
            // None there, or none this user may read (a HOME that is not theirs).
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
                ) =>
            {
                Ok(Self::default())
            }
            Err(e) => Err(e).with_context(|| format!("{}", path.display())),
        }
    }

    /// Written to a new file readable by the user only, then renamed over the old one.
    fn save(&self) -> anyhow::Result<PathBuf> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = Self::path()?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
        }
        let tmp = path.with_extension("json.tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("{}", tmp.display()))?;
        f.write_all(&serde_json::to_vec_pretty(self)?)
            .and_then(|()| f.sync_all())
            .with_context(|| format!("{}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("{}", path.display()))?;
        Ok(path)
    }
}

#[derive(clap::Args)]
pub struct LoginArgs {
    /// The chute server's URL.
    #[arg(long, env = "CHUTE_URL", default_value = DEFAULT_SERVER)]
    server: String,
    /// The API token; without it, it is read from stdin (asked for on a terminal).
    #[arg(long, env = "CHUTE_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// `chute login`: checks the token with the server (`/api/me`), then saves it and makes the
/// server the default.
pub async fn login(args: LoginArgs) -> anyhow::Result<()> {
    let server = args.server.trim_end_matches('/').to_string();
    let token = match args.token {
        Some(t) => t,
        None => {
            if std::io::stdin().is_terminal() {
                eprint!("API token for {server}: ");
            }
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            line.trim().to_string()
        }
    };
    if token.is_empty() {
        bail!("no token given");
    }
    let me = Client::new(&server)?.token(token.clone()).me().await?;
    let mut logins = Logins::load()?;
    logins.tokens.insert(server.clone(), token);
    logins.server = Some(server.clone());
    let path = logins.save()?;
    eprintln!(
        "logged in to {server} as {} (saved in {})",
        me["name"].as_str().unwrap_or("?"),
        path.display()
    );
    Ok(())
}

#[derive(clap::Args)]
pub struct LogoutArgs {
    /// The server to forget the token of [default: the server of `chute login`].
    #[arg(long, env = "CHUTE_URL")]
    server: Option<String>,
}

/// `chute logout`: forgets the saved token (the token stays valid on the server).
pub async fn logout(args: LogoutArgs) -> anyhow::Result<()> {
    let mut logins = Logins::load()?;
    let Some(server) = args.server.or_else(|| logins.server.clone()) else {
        bail!("not logged in");
    };
    let server = server.trim_end_matches('/').to_string();
    if logins.tokens.remove(&server).is_none() {
        bail!("not logged in to {server}");
    }
    if logins.server.as_deref() == Some(server.as_str()) {
        logins.server = None;
    }
    logins.save()?;
    eprintln!("forgot the token for {server}");
    Ok(())
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
    /// How progress is shown.
    #[arg(long, value_enum, default_value_t = progress::Mode::Auto)]
    progress: progress::Mode,
}

/// `chute download`
pub async fn download(args: DownloadArgs) -> anyhow::Result<()> {
    let (client, server) = args.remote.client()?;
    let url = if args.file.contains('/') {
        args.file.clone()
    } else {
        format!("{server}/api/files/{}", args.file)
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
    let display = progress::Display::new(args.progress, 1, 0);
    let file = display.file(&out.display().to_string(), 0);
    let got = client.download(&url, &out, file.callback()).await;
    file.clear();
    display.finish();
    let got = got?;
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

#[derive(clap::Args)]
pub struct LsArgs {
    #[command(flatten)]
    remote: Remote,
    /// One JSON object per file, as the server describes it.
    #[arg(long)]
    json: bool,
}

/// `chute ls`: the caller's files, oldest first: id, size, when, name.
pub async fn ls(args: LsArgs) -> anyhow::Result<()> {
    let (client, _) = args.remote.client()?;
    let mut out = std::io::stdout().lock();
    for f in client.list_files().await? {
        if args.json {
            let line = serde_json::json!({
                "id": f.id, "name": f.name, "size": f.size, "content_type": f.content_type,
                "checksums": f.checksums, "url": client.url(&f.url), "created_at": f.created_at,
            });
            writeln!(out, "{line}")?;
        } else {
            writeln!(
                out,
                "{}\t{}\t{}\t{}",
                f.id,
                f.size,
                f.created_at.as_deref().unwrap_or("-"),
                f.name
            )?;
        }
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct RmArgs {
    #[command(flatten)]
    remote: Remote,
    /// The files' ids (`chute ls`).
    #[arg(required = true)]
    ids: Vec<String>,
}

/// `chute rm`: deletes each file; one that fails does not stop the others.
pub async fn rm(args: RmArgs) -> anyhow::Result<()> {
    let (client, _) = args.remote.client()?;
    let mut failed = 0;
    for id in &args.ids {
        match client.delete_file(id).await {
            Ok(()) => println!("{id}"),
            Err(e) => {
                failed += 1;
                eprintln!("{id}: {e}");
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} file(s) were not removed", args.ids.len());
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct LinkArgs {
    #[command(flatten)]
    remote: Remote,
    /// The file's id (`chute ls`).
    id: String,
    /// How long the link works (`90s`, `1h`, `7d`; at most the server's
    /// download_link_max_age).
    #[arg(long, default_value = "1h", value_parser = chute::config::parse_duration)]
    expires: std::time::Duration,
}

/// `chute link`: prints a download link anyone may use until it expires.
pub async fn link(args: LinkArgs) -> anyhow::Result<()> {
    let (client, _) = args.remote.client()?;
    let link = client
        .create_link(&args.id, args.expires.as_secs().max(1))
        .await?;
    println!("{}", link.url);
    if let Some(at) = link.expires_at {
        eprintln!("expires at {at}");
    }
    Ok(())
}
