//! Settings: one typed struct, layered defaults -> `chute.toml` -> `CHUTE_*` env -> flags.
//!
//! Every setting is declared once, in the `settings!` table below, with its Django-style flat
//! name, type, default and documentation. From that one table come the typed [`Settings`]
//! struct, the `--flag` of each setting (with its help text and default), the `CHUTE_<NAME>`
//! environment variable, the check that `chute.toml` names no unknown key, and
//! `config/chute.example.toml` (see `chute config example`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use thiserror::Error;

mod values;
pub use values::*;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {source}")]
    Toml {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("unknown setting `{0}` (see `chute serve --help` for the list)")]
    Unknown(String),
    #[error("setting `{name}` from {origin}: {message}")]
    Invalid {
        name: String,
        origin: &'static str,
        message: String,
    },
}

/// One setting's documentation, as shown by `--help` and in the example config.
pub struct SettingDef {
    pub name: &'static str,
    pub default: &'static str,
    pub doc: &'static str,
}

impl SettingDef {
    pub fn env_name(&self) -> String {
        format!("CHUTE_{}", self.name.to_ascii_uppercase())
    }
    pub fn flag_name(&self) -> String {
        self.name.replace('_', "-")
    }
}

macro_rules! settings {
    ($( $(#[doc = $doc:literal])+ $name:ident : $ty:ty = $default:literal; )*) => {
        /// Every setting of chute. See the module documentation for how they are layered.
        #[derive(Clone, Debug)]
        pub struct Settings {
            $( $(#[doc = $doc])+ pub $name: $ty, )*
        }

        /// The table every other form of the settings is generated from.
        pub const SETTINGS: &[SettingDef] = &[
            $( SettingDef { name: stringify!($name), default: $default, doc: concat!($($doc, "\n"),+) }, )*
        ];

        impl Settings {
            fn from_layers(layers: &Layers) -> Result<Self, ConfigError> {
                Ok(Self { $( $name: layers.resolve::<$ty>(stringify!($name), $default)?, )* })
            }
        }
    };
}

settings! {
    /// Address and port the server listens on.
    listen: String = "127.0.0.1:8080";
    /// Folder holding all state of the embedded default: the SQLite database and the files.
    data_dir: PathBuf = "./chute-data";
    /// The metadata database. Empty: SQLite at `<data_dir>/chute.db` (one node). A
    /// `postgres://user:password@host:port/db` URL lets several chute nodes share one catalog
    /// (they must also share the storage, e.g. one data_dir on a shared filesystem); uploads
    /// are then locked across nodes.
    database_url: String = "";
    /// Most connections to PostgreSQL per node (with database_url).
    database_max_connections: u64 = "16";
    /// Where files are kept. Empty: `<data_dir>/files`. `s3://bucket/prefix`: an
    /// S3-compatible object store (AWS S3, Garage, MinIO), which several nodes can share
    /// (with database_url); temporary files stay in each node's data_dir.
    storage_url: StorageUrl = "";
    /// The S3 endpoint, e.g. `http://127.0.0.1:3900`; empty for AWS's own.
    s3_endpoint: String = "";
    /// The S3 region (Garage's default is `garage`).
    s3_region: String = "us-east-1";
    /// The S3 access key id (better given as the env variable CHUTE_S3_ACCESS_KEY_ID).
    s3_access_key_id: String = "";
    /// The S3 secret key (better given as the env variable CHUTE_S3_SECRET_ACCESS_KEY).
    s3_secret_access_key: String = "";
    /// Path-style S3 addresses (`endpoint/bucket/key`), which self-hosted servers want.
    s3_path_style: bool = "true";
    /// Largest file kept in memory while it arrives; larger ones spill to a temporary file
    /// (Django's FILE_UPLOAD_MAX_MEMORY_SIZE).
    file_upload_max_memory_size: Size = "2.5MiB";
    /// Folder for spilled uploads; empty means `<data_dir>/tmp`. Keep it on the same
    /// filesystem as data_dir so that finished files are renamed, not copied.
    file_upload_temp_dir: String = "";
    /// Permission bits of stored and temporary files (octal).
    file_upload_permissions: Mode = "0o644";
    /// Permission bits of folders chute creates for files (octal).
    file_upload_directory_permissions: Mode = "0o755";
    /// The upload-handler chain of the file API, in order (Django's FILE_UPLOAD_HANDLERS).
    /// Built in: progress, quota, sniff, checksum, compress, spill, store. The last one must
    /// be spill (memory, then a temp file) or store (straight to storage).
    file_upload_handlers: HandlerChain = "progress,quota,sniff,checksum,spill";
    /// Checksums computed while files stream in: any of md5, sha1, sha256, blake3.
    file_upload_checksums: Checksums = "sha256";
    /// Size of the chunks handed to upload handlers, unless a handler asks for smaller ones.
    file_upload_chunk_size: Size = "64KiB";
    /// zstd level used by the compress handler (1 fastest .. 19 smallest).
    file_upload_compression_level: i32 = "3";
    /// Refuse a file whose magic bytes contradict its name's extension and its declared type.
    file_upload_reject_type_mismatch: bool = "false";
    /// Most bytes of non-file form fields in one request (Django's DATA_UPLOAD_MAX_MEMORY_SIZE).
    data_upload_max_memory_size: Size = "2.5MiB";
    /// Most form fields (files included) in one request (Django's DATA_UPLOAD_MAX_NUMBER_FIELDS).
    data_upload_max_number_fields: u64 = "1000";
    /// Most files in one request (Django's DATA_UPLOAD_MAX_NUMBER_FILES).
    data_upload_max_number_files: u64 = "100";
    /// Largest request body accepted by the upload endpoints; "none" for no limit.
    max_upload_size: Option<Size> = "none";
    /// Bytes each user may store in all; "none" for no quota. Open resumable uploads count
    /// their declared length (or, while it is deferred, what they hold), and the quota is
    /// checked atomically when bytes are kept, so concurrent uploads cannot pass it together.
    user_quota: Option<Size> = "none";
    /// Most resumable uploads (chunked, tus, the IETF draft) one user may have open at once;
    /// past it, creating another answers 429 `too_many_open_uploads`.
    max_open_uploads_per_user: u64 = "1000";
    /// Most upload requests (bodies being received) one user may have in flight on a node;
    /// past it, 429 `too_many_uploads` with Retry-After.
    max_concurrent_uploads_per_user: u64 = "16";
    /// A request body that sends nothing for this long is cut off (slow-client protection).
    request_body_idle_timeout: Dur = "60s";
    /// Slowest request body kept up, in bytes per second averaged over each span of
    /// request_body_idle_timeout: a client trickling bytes just often enough to dodge the idle
    /// timeout is cut off too (what resumable uploads received is kept); 0 for no minimum.
    request_body_min_rate: Size = "512B";
    /// The longest a request body may take in all, however steadily it arrives ("0s": no
    /// bound, the default). Past it the request is cut off with 408 `body_too_long`; what a
    /// resumable upload received is kept.
    request_max_duration: Dur = "0s";
    /// Time a client has to send its request headers.
    request_header_timeout: Dur = "30s";
    /// Most bytes of request line and headers; more is answered 431 (at least 8KiB).
    max_request_header_size: Size = "32KiB";
    /// How long a resumable chunked upload may take, from its first chunk
    /// (django-chunked-upload's CHUNKED_UPLOAD_EXPIRATION_DELTA).
    chunked_upload_expiration_delta: Dur = "1d";
    /// Largest file accepted by the chunked protocol; "none" for no limit
    /// (CHUNKED_UPLOAD_MAX_BYTES).
    chunked_upload_max_bytes: Option<Size> = "none";
    /// The form field that carries each chunk.
    chunked_upload_field_name: String = "file";
    /// How long a tus upload may take from its creation (the expiration extension's
    /// Upload-Expires).
    tus_upload_expiration: Dur = "1d";
    /// Most partial uploads one final upload of a tus concatenation may name.
    tus_max_concat_parts: u64 = "128";
    /// false puts chute in read-only mode: only the GET of one upload-session file is
    /// served; every upload and delete answers 405.
    file_upload_enabled: bool = "true";
    /// Largest single file of an upload session (MAX_SINGLE_UPLOAD_SIZE_MB).
    max_single_upload_size: Size = "64MiB";
    /// Most bytes in one upload session (MAX_TOTAL_UPLOAD_SIZE_MB).
    max_total_upload_size: Size = "256MiB";
    /// Most files in one upload session (MAX_TOTAL_UPLOAD_COUNT).
    max_total_upload_count: u64 = "40";
    /// Extensions an upload session accepts, by group (ACCEPTED_FILE_FORMATS); the content's
    /// magic bytes must agree with the extension.
    accepted_file_formats: FileFormats = "Archive=zip;Audio=mp3,wav,flac,ogg;Document=pdf,docx,odt,rtf,txt,csv,md;Image=jpg,jpeg,png,gif,tif,tiff,webp;Spreadsheet=xlsx,ods;Video=mp4,mov,webm,mkv";
    /// Minutes without an upload interaction after which a session expires and its files are
    /// removed; -1 never (UPLOAD_SESSION_EXPIRE_AFTER_INACTIVE_MINUTES).
    upload_session_expire_after_inactive_minutes: i64 = "1440";
    /// Scan every uploaded file with ClamAV (clamd): form and session files while they arrive,
    /// resumable uploads once, whole, when they complete.
    clamav_enabled: bool = "false";
    /// clamd's address: "host:port" for TCP or "unix:/path/to/clamd.ctl".
    clamav_address: String = "127.0.0.1:3310";
    /// How long to wait for clamd's verdict; no answer is an error (fail closed).
    clamav_timeout: Dur = "60s";
    /// How a session file's GET is answered: "direct" (chute streams it) or
    /// "x-accel-redirect" (nginx serves it from an internal location).
    serve_mode: ServeMode = "direct";
    /// Prefix of the X-Accel-Redirect path; nginx maps it (alias) to `<data_dir>/files/objects/`.
    x_accel_prefix: String = "/protected/";
    /// fsync stored files, staged bytes and the catalog before acknowledging them (an
    /// Upload-Offset or offset in a response is then on disk). false leaves writing to the OS:
    /// faster, and acknowledged bytes survive a crash of chute but not a power loss (an upload
    /// whose staged bytes fell short of its recorded offset then has to start over). With
    /// PostgreSQL, false also sets `synchronous_commit = off` on chute's connections.
    upload_fsync: bool = "true";
    /// Where events are delivered: an http(s) URL that takes Standard Webhooks POSTs. Empty:
    /// no deliveries (and, unless `events_feed` is on, no events are recorded at all).
    hooks_url: String = "";
    /// The Standard Webhooks signing secret: `whsec_` and base64 of 24-64 random bytes.
    /// Required with `hooks_url`.
    hooks_secret: String = "";
    /// The event types delivered and recorded: "all" (every notification) and/or names
    /// (upload.created, upload.progress, upload.finished, upload.terminated, upload.expired,
    /// file.deleted, session.stored, session.expired; the blocking hooks pre-create and
    /// pre-finish only when named).
    hooks_events: EventTypes = "all";
    /// How long one delivery may take before it counts as failed.
    hooks_timeout: Dur = "5s";
    /// The longest wait between two tries of an undelivered event (the waits double from 1s).
    hooks_retry_max_interval: Dur = "1h";
    /// How long an event is retried before it is kept as failed (`chute events retry`).
    hooks_retry_for: Dur = "3d";
    /// Request headers passed to the pre-create and pre-finish hooks in `data.headers` (names,
    /// case-insensitive; e.g. "cookie,x-request-id").
    hooks_forward_headers: Vec<String> = "";
    /// How often upload.progress may be sent for one upload.
    hooks_progress_interval: Dur = "1s";
    /// Record events for the pull feed `GET /api/events` even without `hooks_url`.
    events_feed: bool = "false";
    /// How long delivered (and feed-only) events stay in the catalog for the feed.
    events_retention: Dur = "7d";
    /// The application's HS256 secret for signed tokens (JWTs) as Bearer tokens (better given
    /// as the env variable CHUTE_AUTH_JWT_SECRET; at least 32 bytes). A valid token's `sub`
    /// is the user, created on first sight.
    auth_jwt_secret: String = "";
    /// The application's public key for signed tokens, as PEM text or the path of a PEM
    /// file: RSA (RS256), P-256 (ES256) or Ed25519 (EdDSA).
    auth_jwt_public_key: String = "";
    /// The audience a signed token must name in `aud` (empty: tokens with `aud` are refused).
    auth_jwt_audience: String = "";
    /// The issuer a signed token must name in `iss` (empty: not checked).
    auth_jwt_issuer: String = "";
    /// Clock skew allowed when checking a signed token's `exp` and `nbf`.
    auth_jwt_leeway: Dur = "30s";
    /// Whether a signed token's `staff: true` claim makes its request staff's.
    auth_jwt_allow_staff: bool = "false";
    /// Serve the upload page at `/` (sign in with a token, upload, list, sessions).
    ui_enabled: bool = "true";
    /// The longest a download link (`POST /api/files/{id}/link`) may be valid for.
    download_link_max_age: Dur = "7d";
    /// The address clients reach chute at, when it is not chute's own: a fixed
    /// `https://host[:port][/prefix]`. Every URL chute returns (`Location`, `url` fields)
    /// starts with it. Empty: taken from trusted proxies' headers, else chute's own paths.
    public_url: String = "";
    /// Proxies (addresses or CIDR networks) whose `Forwarded` or `X-Forwarded-For/Proto/Host/
    /// Prefix` headers chute believes: the client's address and the URLs chute returns come
    /// from them. Others' such headers are ignored.
    trusted_proxies: Networks = "";
    /// Origins whose browser pages may call chute (CORS): exact origins such as
    /// `https://app.example`, or `*` for any. Empty: no CORS headers at all.
    cors_allowed_origins: Vec<String> = "";
    /// Whether browsers may send cookies and HTTP authentication to chute (CORS credentials;
    /// not with `*`). Bearer tokens need no credentials.
    cors_allow_credentials: bool = "false";
    /// How long a browser may keep a preflight's answer.
    cors_max_age: Dur = "1h";
    /// How often the server deletes expired uploads (as `chute gc` does); "0s" turns it off.
    upload_sweep_interval: Dur = "10m";
    /// How long a finished upload's progress stays queryable at /api/progress/{id}.
    progress_retention: Dur = "60s";
    /// Log filter, in tracing's EnvFilter syntax (e.g. "info", "chute=debug").
    log: String = "info";
}

/// `*`, or an origin as browsers send it: `scheme://host[:port]`, nothing after.
fn valid_origin(o: &str) -> bool {
    if o == "*" {
        return true;
    }
    let Some((scheme, rest)) = o.split_once("://") else {
        return false;
    };
    !scheme.is_empty()
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        && !rest.is_empty()
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
}

/// Where each layer's values came from, highest priority last.
#[derive(Default)]
pub struct Layers {
    toml: BTreeMap<String, toml::Value>,
    env: BTreeMap<String, String>,
    flags: BTreeMap<String, String>,
}

impl Layers {
    fn resolve<T: SettingValue>(&self, name: &str, default: &str) -> Result<T, ConfigError> {
        let invalid = |origin: &'static str, message: String| ConfigError::Invalid {
            name: name.to_string(),
            origin,
            message,
        };
        if let Some(v) = self.flags.get(name) {
            return T::parse_str(v).map_err(|m| invalid("the command line", m));
        }
        if let Some(v) = self.env.get(name) {
            return T::parse_str(v).map_err(|m| invalid("the environment", m));
        }
        if let Some(v) = self.toml.get(name) {
            return T::from_toml(v).map_err(|m| invalid("chute.toml", m));
        }
        T::parse_str(default).map_err(|m| invalid("the default", m))
    }
}

impl Settings {
    /// Loads the settings: defaults, then the TOML file (`config`, else `./chute.toml` when it
    /// exists), then `CHUTE_*` variables from `env`, then `flags` (name -> value).
    pub fn load(
        config: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: BTreeMap<String, String>,
    ) -> Result<Self, ConfigError> {
        let path = match config {
            Some(p) => Some(p.to_path_buf()),
            None => Some(PathBuf::from("chute.toml")).filter(|p| p.is_file()),
        };
        let text = match path {
            Some(path) => {
                let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                Some((path, text))
            }
            None => None,
        };
        Self::load_text(text, env, flags)
    }

    /// `load` with the configuration file's text already read (the fuzz target's entry).
    pub fn load_text(
        file: Option<(PathBuf, String)>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: BTreeMap<String, String>,
    ) -> Result<Self, ConfigError> {
        let mut layers = Layers::default();
        if let Some((path, text)) = file {
            let table: toml::Table = toml::from_str(&text).map_err(|source| ConfigError::Toml {
                path: path.clone(),
                source: Box::new(source),
            })?;
            for (k, v) in table {
                if !SETTINGS.iter().any(|d| d.name == k) {
                    return Err(ConfigError::Unknown(k));
                }
                layers.toml.insert(k, v);
            }
        }
        let env: BTreeMap<String, String> = env.into_iter().collect();
        for def in SETTINGS {
            if let Some(v) = env.get(&def.env_name()) {
                layers.env.insert(def.name.to_string(), v.clone());
            }
        }
        for k in flags.keys() {
            if !SETTINGS.iter().any(|d| d.name == k) {
                return Err(ConfigError::Unknown(k.clone()));
            }
        }
        layers.flags = flags;
        let s = Self::from_layers(&layers)?;
        s.validate()?;
        Ok(s)
    }

    /// The defaults alone (for tests and the library).
    pub fn defaults() -> Self {
        match Self::from_layers(&Layers::default()) {
            Ok(s) => s,
            Err(e) => panic!("built-in defaults are invalid: {e}"),
        }
    }

    /// Checks what the types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |name: &str, message: String| ConfigError::Invalid {
            name: name.to_string(),
            origin: "validation",
            message,
        };
        if !self.database_url.is_empty()
            && !self.database_url.starts_with("postgres://")
            && !self.database_url.starts_with("postgresql://")
        {
            return Err(bad(
                "database_url",
                "give a postgres:// URL, or leave it empty for SQLite in data_dir".into(),
            ));
        }
        if matches!(self.storage_url, StorageUrl::S3 { .. }) {
            if self.s3_access_key_id.is_empty() || self.s3_secret_access_key.is_empty() {
                return Err(bad(
                    "s3_access_key_id",
                    "S3 storage needs s3_access_key_id and s3_secret_access_key".into(),
                ));
            }
            if self.serve_mode == ServeMode::XAccelRedirect {
                return Err(bad(
                    "serve_mode",
                    "x-accel-redirect serves files from a local folder; with S3 storage use direct"
                        .into(),
                ));
            }
        }
        if self.database_max_connections == 0 {
            return Err(bad("database_max_connections", "must be at least 1".into()));
        }
        if self.file_upload_chunk_size.0 == 0 || self.file_upload_chunk_size.0 > 64 << 20 {
            return Err(bad(
                "file_upload_chunk_size",
                "must be 1 byte to 64MiB".into(),
            ));
        }
        if self.max_request_header_size.0 < 8192 {
            return Err(bad(
                "max_request_header_size",
                "must be at least 8KiB".into(),
            ));
        }
        if !(1..=22).contains(&self.file_upload_compression_level) {
            return Err(bad(
                "file_upload_compression_level",
                "must be 1..=22".into(),
            ));
        }
        if self.upload_session_expire_after_inactive_minutes < -1 {
            return Err(bad(
                "upload_session_expire_after_inactive_minutes",
                "must be -1 (never) or a number of minutes".into(),
            ));
        }
        if self.x_accel_prefix.is_empty() || !self.x_accel_prefix.starts_with('/') {
            return Err(bad("x_accel_prefix", "must start with '/'".into()));
        }
        if self.accepted_file_formats.0.is_empty() {
            return Err(bad(
                "accepted_file_formats",
                "name at least one group of extensions".into(),
            ));
        }
        if !self.public_url.is_empty() {
            let u = self.public_url.to_ascii_lowercase();
            let rest = u
                .strip_prefix("https://")
                .or_else(|| u.strip_prefix("http://"));
            if rest.is_none_or(|r| r.is_empty() || r.starts_with('/') || r.contains(['?', '#'])) {
                return Err(bad(
                    "public_url",
                    "give http(s)://host[:port][/prefix], with no query".into(),
                ));
            }
        }
        for o in &self.cors_allowed_origins {
            if !valid_origin(o) {
                return Err(bad(
                    "cors_allowed_origins",
                    format!("`{o}` is not an origin: give scheme://host[:port], or *"),
                ));
            }
        }
        if self.cors_allow_credentials && self.cors_allowed_origins.iter().any(|o| o == "*") {
            return Err(bad(
                "cors_allow_credentials",
                "cannot be on with `*` among cors_allowed_origins: name the origins".into(),
            ));
        }
        if !self.auth_jwt_secret.is_empty() && self.auth_jwt_secret.len() < 32 {
            return Err(bad(
                "auth_jwt_secret",
                "must be at least 32 bytes (HS256 is only as strong as its secret)".into(),
            ));
        }
        if !self.hooks_url.is_empty() {
            let u = self.hooks_url.to_ascii_lowercase();
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err(bad("hooks_url", "give an http:// or https:// URL".into()));
            }
            if crate::events::secret_key(&self.hooks_secret).is_none() {
                return Err(bad(
                    "hooks_secret",
                    "hooks_url needs a secret: whsec_ and the base64 of 24-64 random bytes \
                     (`chute events secret` makes one)"
                        .into(),
                ));
            }
        }
        if self.hooks_timeout.0.is_zero() || self.hooks_retry_max_interval.0.is_zero() {
            return Err(bad("hooks_timeout", "must be more than 0s".into()));
        }
        Ok(())
    }

    pub fn temp_dir(&self) -> PathBuf {
        if self.file_upload_temp_dir.is_empty() {
            self.data_dir.join("tmp")
        } else {
            PathBuf::from(&self.file_upload_temp_dir)
        }
    }

    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("chute.db")
    }

    pub fn files_dir(&self) -> PathBuf {
        self.data_dir.join("files")
    }
}

/// The commented example configuration, every setting with its default.
pub fn example_toml() -> String {
    let mut out = String::from(
        "# chute.toml: every setting with its default. Each can also be set as the env\n\
         # variable CHUTE_<NAME> (upper case) or the flag --<name-with-dashes>; flags win over\n\
         # env, env over this file. Sizes take \"64MiB\"-style values, durations \"90s\"/\"1d\".\n",
    );
    for d in SETTINGS {
        out.push('\n');
        for line in d.doc.lines() {
            out.push('#');
            if !line.starts_with(' ') {
                out.push(' ');
            }
            out.push_str(line);
            out.push('\n');
        }
        out.push_str(&format!(
            "# {} = {}\n",
            d.name,
            toml_literal(d.name, d.default)
        ));
    }
    out
}

fn toml_literal(name: &str, default: &str) -> String {
    if matches!(name, "file_upload_handlers" | "file_upload_checksums") {
        let items: Vec<String> = default.split(',').map(|s| format!("\"{s}\"")).collect();
        return format!("[{}]", items.join(", "));
    }
    if name == "accepted_file_formats"
        && let Ok(f) = FileFormats::parse_str(default)
    {
        let groups: Vec<String> =
            f.0.iter()
                .map(|(g, exts)| {
                    let exts: Vec<String> = exts.iter().map(|e| format!("\"{e}\"")).collect();
                    format!("{g} = [{}]", exts.join(", "))
                })
                .collect();
        return format!("{{ {} }}", groups.join(", "));
    }
    if default.parse::<i64>().is_ok() || default == "true" || default == "false" {
        return default.to_string();
    }
    format!("\"{default}\"")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::checksum::Algorithm;

    use super::*;

    #[test]
    fn handler_chains_are_checked_as_they_are_read() {
        let chain = |s: &str| HandlerChain::parse_str(s);
        assert!(chain("progress,quota,sniff,checksum,spill").is_ok());
        assert!(chain("checksum,compress,store").is_ok());
        assert!(chain("checksum").is_err());
        assert!(chain("spill,checksum").is_err());
        assert!(chain("checksum,checksum,spill").is_err());
        assert!(chain("compress,checksum,spill").is_err());
        assert!(chain("magic,spill").is_err());
        assert!(chain("spill,store").is_err());
        assert!(Checksums::parse_str("md5,crc32").is_err());
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("2.5MiB"), Ok(2_621_440));
        assert_eq!(parse_size("64KiB"), Ok(65_536));
        assert_eq!(parse_size("64k"), Ok(65_536));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_size("123"), Ok(123));
        assert_eq!(parse_size("1 gib"), Ok(1 << 30));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("-1").is_err());
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("1y").is_err());
    }

    #[test]
    fn layers_flags_over_env_over_file_over_default() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("chute.toml");
        std::fs::write(
            &file,
            "listen = \"0.0.0.0:1\"\nmax_upload_size = \"1MiB\"\nuser_quota = 5\nfile_upload_checksums = [\"md5\", \"sha256\"]\n",
        )
        .expect("write");
        let env = vec![
            ("CHUTE_LISTEN".to_string(), "0.0.0.0:2".to_string()),
            ("CHUTE_USER_QUOTA".to_string(), "7".to_string()),
            ("UNRELATED".to_string(), "x".to_string()),
        ];
        let mut flags = BTreeMap::new();
        flags.insert("listen".to_string(), "0.0.0.0:3".to_string());
        let s = Settings::load(Some(&file), env, flags).expect("load");
        assert_eq!(s.listen, "0.0.0.0:3");
        assert_eq!(s.user_quota, Some(Size(7)));
        assert_eq!(s.max_upload_size, Some(Size(1 << 20)));
        assert_eq!(
            s.file_upload_checksums,
            Checksums(vec![Algorithm::Md5, Algorithm::Sha256])
        );
        assert_eq!(s.file_upload_max_memory_size, Size(2_621_440));
    }

    #[test]
    fn unknown_and_invalid_settings_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("chute.toml");
        std::fs::write(&file, "lisen = \"x\"\n").expect("write");
        let err = Settings::load(Some(&file), vec![], BTreeMap::new()).unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");
        let env = vec![("CHUTE_MAX_UPLOAD_SIZE".to_string(), "big".to_string())];
        let err = Settings::load(
            Some(&dir.path().join("none.toml")),
            env.clone(),
            BTreeMap::new(),
        );
        assert!(err.is_err());
        std::fs::write(&file, "").expect("write");
        let err = Settings::load(Some(&file), env, BTreeMap::new()).unwrap_err();
        assert!(err.to_string().contains("max_upload_size"), "{err}");
        let mut flags = BTreeMap::new();
        flags.insert("file_upload_handlers".into(), "spill,checksum".into());
        assert!(Settings::load(Some(&file), vec![], flags).is_err());
    }

    #[test]
    fn database_and_storage_settings_are_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("chute.toml");
        std::fs::write(&file, "").expect("write");
        let load = |pairs: &[(&str, &str)]| {
            let flags: BTreeMap<String, String> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            Settings::load(Some(&file), vec![], flags)
        };
        let refused = |pairs: &[(&str, &str)], name: &str| {
            let err = load(pairs).expect_err("refused");
            assert!(err.to_string().contains(name), "{err}");
        };
        refused(&[("database_url", "mysql://x/y")], "database_url");
        refused(
            &[("database_max_connections", "0")],
            "database_max_connections",
        );
        refused(&[("storage_url", "s3:///nobucket")], "storage_url");
        refused(&[("storage_url", "/var/files")], "storage_url");
        refused(&[("storage_url", "s3://b")], "s3_access_key_id");
        let s3 = [
            ("storage_url", "s3://b/some/prefix/"),
            ("s3_access_key_id", "k"),
            ("s3_secret_access_key", "s"),
        ];
        refused(
            &[s3[0], s3[1], s3[2], ("serve_mode", "x-accel-redirect")],
            "serve_mode",
        );
        let s = load(&[s3[0], s3[1], s3[2], ("database_url", "postgres://h/db")]).expect("ok");
        assert_eq!(
            s.storage_url,
            StorageUrl::S3 {
                bucket: "b".into(),
                prefix: "some/prefix/".into()
            }
        );
        assert_eq!(load(&[]).expect("defaults").storage_url, StorageUrl::Local);
    }

    #[test]
    fn example_config_parses_back_to_the_defaults() {
        let text = example_toml();
        let uncommented: String = text
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| {
                SETTINGS
                    .iter()
                    .any(|d| l.starts_with(&format!("{} = ", d.name)))
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("chute.toml");
        std::fs::write(&file, &uncommented).expect("write");
        let s = Settings::load(Some(&file), vec![], BTreeMap::new()).expect("example parses");
        let d = Settings::defaults();
        assert_eq!(uncommented.lines().count(), SETTINGS.len());
        assert_eq!(s.file_upload_handlers, d.file_upload_handlers);
        assert_eq!(s.file_upload_max_memory_size, d.file_upload_max_memory_size);
        assert_eq!(s.request_body_idle_timeout, d.request_body_idle_timeout);
    }
}
