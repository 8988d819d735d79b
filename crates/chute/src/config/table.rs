//! The table of every setting: name, type, default and documentation, once. The `settings!`
//! macro turns it into the [`Settings`] struct, the [`SETTINGS`] list that flags, env
//! variables and the example config are made from, and the reading of each from the layers.

use std::path::PathBuf;

use super::*;

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
            pub(super) fn from_layers(layers: &Layers) -> Result<Self, ConfigError> {
                Ok(Self { $( $name: layers.resolve::<$ty>(stringify!($name), $default)?, )* })
            }
        }
    };
}

settings! {
    /// Address and port the server listens on.
    listen: String = "127.0.0.1:8080";
    /// A PEM file with the server's certificate chain: chute then speaks HTTPS on `listen`
    /// (HTTP/2 and HTTP/1.1 by ALPN), for deployments without a proxy in front. Re-read on
    /// SIGHUP and when it changes. Set with tls_key.
    tls_cert: PathBuf = "";
    /// A PEM file with the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    tls_key: PathBuf = "";
    /// Most concurrent requests (streams) on one HTTP/2 connection. Each is held to every
    /// limit a request on its own connection is.
    http2_max_concurrent_streams: u64 = "100";
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
    /// On SIGTERM (or Ctrl-C) the node drains: it stops accepting connections, answers 503
    /// `draining` to new requests on open ones and to /readyz, and gives requests in flight
    /// this long to finish. Then resumable uploads still writing are asked to end, keeping
    /// their durable bytes and releasing their locks, and what is left is cut.
    shutdown_grace: Dur = "30s";
    /// Log filter, in tracing's EnvFilter syntax (e.g. "info", "chute=debug").
    log: String = "info";
    /// `text` (one line per event, coloured only on a terminal) or `json` (one object per
    /// line). Each request logs one line (target `chute::access`).
    log_format: LogFormat = "text";
    /// The bearer token that opens `GET /metrics` on `listen` (API tokens do not). Empty,
    /// with no metrics_listen: /metrics answers 404.
    metrics_token: String = "";
    /// A second address that serves only `GET /metrics`, without a token unless
    /// metrics_token is set (e.g. `127.0.0.1:9090`, for a scraper on the same host or
    /// network). Empty: none.
    metrics_listen: String = "";
}
