//! The `chute` command: serve, manage users and tokens, print the example config.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Arg, ArgMatches, Args, Command, FromArgMatches, Parser, Subcommand};

use chute::config::{SETTINGS, Settings};

mod client_cmd;

#[derive(Parser)]
#[command(
    name = "chute",
    version,
    about = "A file-upload server: streaming form uploads, resumable uploads, upload sessions",
    after_help = "Server settings are listed by `chute serve --help`. Every command takes them, \
        as flags (before or after the command), as CHUTE_* environment variables, or in the \
        --config file."
)]
struct Cli {
    /// The TOML config file (default: ./chute.toml when it exists). Hidden like the settings
    /// it holds: the client commands read neither, and `chute serve --help` names it.
    #[arg(
        long,
        global = true,
        env = "CHUTE_CONFIG",
        value_name = "FILE",
        hide = true
    )]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: SettingsArgs,
    #[command(subcommand)]
    command: Cmd,
}

/// The client's commands, which talk to a server, then the server's, which read its settings.
#[derive(Subcommand)]
enum Cmd {
    #[command(flatten)]
    Client(client_cmd::ClientCmd),
    #[command(flatten)]
    Server(ServerCmd),
}

#[derive(Subcommand)]
enum ServerCmd {
    /// Start the server (on the embedded default: SQLite and a folder under data_dir).
    #[command(
        after_help = serve_settings_help(false),
        after_long_help = serve_settings_help(true)
    )]
    Serve,
    /// Manage users.
    #[command(subcommand)]
    User(UserCmd),
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Delete expired resumable uploads (their staged bytes and records) and expire idle
    /// upload sessions (their temporary files).
    Gc {
        /// Only list what would be deleted.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print the example configuration with every setting and its default.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// The recorded events and their delivery to hooks_url.
    #[command(subcommand)]
    Events(EventsCmd),
    /// Download links (`POST /api/files/{id}/link`).
    #[command(subcommand)]
    Links(LinksCmd),
}

#[derive(Subcommand)]
enum LinksCmd {
    /// Replace the key links are signed with: every link made so far stops working (on every
    /// node within seconds).
    Rotate,
}

#[derive(Subcommand)]
enum EventsCmd {
    /// List the newest events: seq, id, type, state, tries, subject, last error.
    List {
        /// Only the events kept as failed.
        #[arg(long)]
        failed: bool,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Send failed events again (from now on, for another hooks_retry_for).
    Retry {
        /// The event's id (evt_...).
        id: Option<String>,
        /// Every failed event.
        #[arg(long, conflicts_with = "id")]
        failed: bool,
    },
    /// Print a new random hooks_secret.
    Secret,
}

#[derive(Subcommand)]
enum UserCmd {
    /// Create a user.
    Add {
        name: String,
        /// Staff users may read every upload session's files.
        #[arg(long)]
        staff: bool,
    },
    /// List users: name, staff, created, bytes used.
    List,
    /// Remove a user with their tokens and upload sessions (refused while they have files
    /// or open uploads, unless --delete-files).
    Remove {
        name: String,
        /// Delete their files and open uploads too (each reported as file.deleted or
        /// upload.terminated).
        #[arg(long)]
        delete_files: bool,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Create an API token for a user and print it (alone, on stdout).
    Create {
        #[arg(long)]
        user: String,
        #[arg(long, default_value = "")]
        label: String,
    },
    /// List a user's API tokens: id, label, created, last used (never the token itself).
    List {
        #[arg(long)]
        user: String,
    },
    /// Revoke an API token by its id (refused at once, on every node).
    Revoke { id: i64 },
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Print config/chute.example.toml.
    Example,
}

/// One `--flag` per setting, generated from the settings table.
#[derive(Default)]
struct SettingsArgs {
    values: BTreeMap<String, String>,
}

impl FromArgMatches for SettingsArgs {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let mut values = BTreeMap::new();
        for d in SETTINGS {
            if let Some(v) = m.get_one::<String>(d.name) {
                values.insert(d.name.to_string(), v.clone());
            }
        }
        Ok(Self { values })
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl Args for SettingsArgs {
    fn augment_args(mut cmd: Command) -> Command {
        for d in SETTINGS {
            let summary = d.doc.lines().next().unwrap_or("").trim();
            let long = format!(
                "{}\n[default: {}] [env: {}]",
                d.doc.trim_end(),
                d.default,
                d.env_name()
            );
            cmd = cmd.arg(
                Arg::new(d.name)
                    .long(d.flag_name())
                    .value_name("VALUE")
                    .help(format!(
                        "{summary} [default: {}] [env: {}]",
                        d.default,
                        d.env_name()
                    ))
                    .long_help(long)
                    .global(true)
                    // Listed once, by topic, in `chute serve --help` (serve_settings_help):
                    // 81 settings in every command's help drowned each command's own options.
                    .hide(true),
            );
        }
        cmd
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

/// The settings, by topic (`config::TOPICS`), as `chute serve -h` lists them (each flag with
/// its first sentence, default and environment variable) and `--help` (with its whole text).
fn serve_settings_help(long: bool) -> String {
    let mut out = String::from(
        "Settings (each also CHUTE_<NAME> in the environment, or `name = value` in the TOML \
         file of --config <FILE> (env CHUTE_CONFIG; default ./chute.toml when it exists); \
         flags win over env, env over the file):\n",
    );
    for (topic, names) in chute::config::TOPICS {
        out.push_str(&format!("\n{topic}:\n"));
        for d in names
            .iter()
            .filter_map(|n| SETTINGS.iter().find(|d| d.name == *n))
        {
            let text = d.doc.split_whitespace().collect::<Vec<_>>().join(" ");
            let text = match text.find(". ") {
                Some(end) if !long => text[..=end].to_string(),
                _ => text,
            };
            out.push_str(&format!(
                "  --{} <VALUE>\n          {text} [default: {}] [env: {}]\n",
                d.flag_name(),
                if d.default.is_empty() {
                    "none"
                } else {
                    d.default
                },
                d.env_name()
            ));
        }
    }
    out
}

/// Keeps glibc from mapping and unmapping the upload buffers (hyper's reads, the parser's
/// buffer, the pipeline's chunks, all 64 KiB to 1 MiB) on every request: by default glibc serves
/// such sizes with fresh mmaps or trims them off the heap top, and the page faults of touching
/// new pages again cost an upload in 1 MiB chunks a fifth of its speed (bench/README.md). With
/// buffers up to 1 MiB kept on the heap and 4 MiB of free heap kept before trimming, memory is
/// reused instead. Arenas are capped at one per core (glibc allows eight per core), each of
/// which would keep its own free memory: 64 concurrent uploads peak at 90 MiB instead of 150.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn tune_allocator() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let arenas = libc::c_int::try_from(cores).unwrap_or(libc::c_int::MAX);
    // SAFETY: mallopt only sets allocator parameters; it is called before any other thread
    // exists, and an unsupported parameter is reported by its return value, not by UB.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_ARENA_MAX, arenas);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("chute: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chute: {e:#}");
            if e.is::<client_cmd::Interrupted>() {
                ExitCode::from(130)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // The client commands talk to a server; they read no server settings.
    let command = match cli.command {
        Cmd::Client(c) => return c.run().await,
        Cmd::Server(c) => c,
    };
    if let ServerCmd::Config(ConfigCmd::Example) = command {
        print!("{}", chute::config::example_toml());
        return Ok(());
    }
    if let ServerCmd::Events(EventsCmd::Secret) = command {
        return print_secret();
    }
    let settings = Settings::load(cli.config.as_deref(), std::env::vars(), cli.settings.values)?;
    match command {
        ServerCmd::Serve => serve(settings).await,
        ServerCmd::User(UserCmd::Add { name, staff }) => {
            let meta = chute::app::open_meta(&settings).await?;
            let user = meta.create_user(&name, staff).await?;
            eprintln!(
                "created user `{}`{}",
                user.name,
                if user.is_staff { " (staff)" } else { "" }
            );
            Ok(())
        }
        ServerCmd::Token(TokenCmd::Create { user, label }) => {
            let meta = chute::app::open_meta(&settings).await?;
            let u = named_user(meta.as_ref(), &user).await?;
            let token = chute::auth::issue_token(meta.as_ref(), &u, &label).await?;
            println!("{token}");
            Ok(())
        }
        ServerCmd::Token(TokenCmd::List { user }) => {
            let meta = chute::app::open_meta(&settings).await?;
            let u = named_user(meta.as_ref(), &user).await?;
            for t in meta.list_tokens(u.id).await? {
                let used = t.last_used_at.map(date).unwrap_or_else(|| "never".into());
                println!("{}\t{}\t{}\t{}", t.id, t.label, date(t.created_at), used);
            }
            Ok(())
        }
        ServerCmd::Token(TokenCmd::Revoke { id }) => {
            let meta = chute::app::open_meta(&settings).await?;
            if !meta.revoke_token(id).await? {
                bail!("no token with id {id} (`chute token list --user NAME` shows them)");
            }
            eprintln!("revoked token {id}");
            Ok(())
        }
        ServerCmd::User(UserCmd::List) => {
            let meta = chute::app::open_meta(&settings).await?;
            for u in meta.list_users().await? {
                let used = meta.usage_bytes(u.id).await?;
                let staff = if u.is_staff { "staff" } else { "-" };
                println!("{}\t{staff}\t{}\t{used}", u.name, date(u.created_at));
            }
            Ok(())
        }
        ServerCmd::User(UserCmd::Remove { name, delete_files }) => {
            let state = chute::app::open_state(settings).await?;
            let u = named_user(state.engine.meta.as_ref(), &name).await?;
            match state.engine.remove_user(&u, delete_files).await {
                Ok(r) => {
                    eprintln!(
                        "removed user `{name}` with {} file(s), {} open upload(s) and {} session file(s)",
                        r.files, r.uploads, r.session_files
                    );
                    Ok(())
                }
                Err(chute::upload::UploadError::Meta(chute::meta::MetaError::Conflict(why))) => {
                    bail!(
                        "`{name}` was not removed: {why} (give --delete-files to delete them too)"
                    )
                }
                Err(e) => Err(e.into()),
            }
        }
        ServerCmd::Gc { dry_run } => {
            let state = chute::app::open_state(settings).await?;
            let gone = state.engine.sweep_expired(dry_run).await?;
            for up in &gone {
                println!("{}\t{}\t{} bytes", up.id, up.name, up.offset);
            }
            eprintln!(
                "{} {} expired upload(s)",
                if dry_run { "would delete" } else { "deleted" },
                gone.len()
            );
            let sessions = state.engine.sweep_sessions(dry_run).await?;
            for token in &sessions {
                println!("session\t{token}");
            }
            eprintln!(
                "{} {} idle upload session(s)",
                if dry_run { "would expire" } else { "expired" },
                sessions.len()
            );
            Ok(())
        }
        ServerCmd::Events(cmd) => events(&settings, cmd).await,
        ServerCmd::Links(LinksCmd::Rotate) => {
            let meta = chute::app::open_meta(&settings).await?;
            let secret = chute::upload::links::new_link_secret()?;
            let id = meta.rotate_link_key(&secret).await?;
            eprintln!("links are now signed with key {id}; older links no longer work");
            Ok(())
        }
        ServerCmd::Config(_) => Ok(()),
    }
}

async fn named_user(
    meta: &dyn chute::meta::MetaStore,
    name: &str,
) -> anyhow::Result<chute::meta::User> {
    match meta.user_by_name(name).await? {
        Some(u) => Ok(u),
        None => bail!("no user named `{name}` (create it with `chute user add {name}`)"),
    }
}

/// A unix time as RFC 3339 (UTC).
fn date(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

fn print_secret() -> anyhow::Result<()> {
    let secret =
        chute::events::new_secret().map_err(|e| anyhow::anyhow!("no random bytes: {e}"))?;
    println!("{secret}");
    Ok(())
}

async fn events(settings: &Settings, cmd: EventsCmd) -> anyhow::Result<()> {
    use chute::events::DeliveryState;
    let meta = chute::app::open_meta(settings).await?;
    match cmd {
        EventsCmd::List { failed, limit } => {
            let state = failed.then_some(DeliveryState::Failed);
            for e in meta.list_events(state, limit).await? {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    e.seq,
                    e.id,
                    e.kind,
                    e.state.as_str(),
                    e.attempts,
                    e.subject,
                    e.last_error.unwrap_or_default()
                );
            }
        }
        EventsCmd::Retry { id, failed } => {
            if id.is_none() && !failed {
                bail!("name an event id, or give --failed for every failed event");
            }
            let n = meta
                .retry_events(id.as_deref(), chute::events::now_ms())
                .await?;
            if n == 0 && id.is_some() {
                bail!("no failed event with that id");
            }
            eprintln!("{n} event(s) will be sent again");
        }
        EventsCmd::Secret => print_secret()?,
    }
    Ok(())
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    init_logs(&settings)?;
    raise_open_files_limit();
    keep_running_on_sighup();
    let listen = settings.listen.clone();
    let state = chute::app::open_state(settings).await?;
    if let Some(token) = chute::app::bootstrap_admin(state.engine.meta.as_ref()).await? {
        println!("Created the staff user `admin`. Its API token, shown this once:");
        println!("{token}");
    }
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let addr = listener.local_addr()?;
    println!("chute listening on http://{addr}");
    tracing::info!(%addr, data_dir = %state.engine.settings.data_dir.display(), "chute started");
    chute::app::serve(listener, state, shutdown_signal()).await?;
    tracing::info!("chute stopped");
    Ok(())
}

/// Logs go to stderr as text (coloured only on a terminal: a file or a pipe gets no escape
/// sequences) or as one JSON object per line.
fn init_logs(settings: &Settings) -> anyhow::Result<()> {
    use std::io::IsTerminal as _;
    let filter =
        tracing_subscriber::EnvFilter::try_new(&settings.log).context("the `log` setting")?;
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match settings.log_format {
        chute::config::LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        chute::config::LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
    Ok(())
}

/// SIGHUP is an operator's "reload": with TLS the certificate is re-read (`chute::tls`);
/// without, there is nothing to reload, and the signal must not end the server (its default).
fn keep_running_on_sighup() {
    #[cfg(unix)]
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut hup) => {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    tracing::info!("SIGHUP: the TLS certificate, if any, is read again");
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "SIGHUP cannot be caught"),
    }
}

/// Every connection and upload takes file descriptors, and the usual soft limit (1024) is
/// far below what a server with thousands of clients needs: it is raised to the hard limit.
fn raise_open_files_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::info!(limit = n, "open files limit raised to the hard limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open files limit"),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
