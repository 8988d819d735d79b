//! Settings: one typed struct, layered defaults -> `chute.toml` -> `CHUTE_*` env -> flags.
//!
//! Every setting is declared once, in the `settings!` table (`table.rs`), with its Django-style flat
//! name, type, default and documentation. From that one table come the typed [`Settings`]
//! struct, the `--flag` of each setting (with its help text and default), the `CHUTE_<NAME>`
//! environment variable, the check that `chute.toml` names no unknown key, and
//! `config/chute.example.toml` (see `chute config example`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use thiserror::Error;

mod table;
mod values;
pub use table::{SETTINGS, Settings};
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

/// The settings by topic, in the order `chute serve --help` shows them. Every setting is in
/// exactly one (a unit test holds the two tables together).
pub const TOPICS: &[(&str, &[&str])] = &[
    (
        "Listening",
        &[
            "listen",
            "tls_cert",
            "tls_key",
            "http2_max_concurrent_streams",
            "public_url",
            "trusted_proxies",
            "cors_allowed_origins",
            "cors_allow_credentials",
            "cors_max_age",
            "ui_enabled",
            "shutdown_grace",
        ],
    ),
    (
        "Storage and catalog",
        &[
            "data_dir",
            "database_url",
            "database_max_connections",
            "storage_url",
            "s3_endpoint",
            "s3_region",
            "s3_access_key_id",
            "s3_secret_access_key",
            "s3_path_style",
            "upload_fsync",
            "file_upload_temp_dir",
            "file_upload_permissions",
            "file_upload_directory_permissions",
        ],
    ),
    (
        "Limits",
        &[
            "max_upload_size",
            "user_quota",
            "max_open_uploads_per_user",
            "max_concurrent_uploads_per_user",
            "request_body_idle_timeout",
            "request_body_min_rate",
            "request_max_duration",
            "request_header_timeout",
            "max_request_header_size",
            "file_upload_enabled",
        ],
    ),
    (
        "Form uploads and handlers",
        &[
            "file_upload_handlers",
            "file_upload_max_memory_size",
            "file_upload_checksums",
            "file_upload_chunk_size",
            "file_upload_compression_level",
            "file_upload_reject_type_mismatch",
            "data_upload_max_memory_size",
            "data_upload_max_number_fields",
            "data_upload_max_number_files",
        ],
    ),
    (
        "Resumable protocols",
        &[
            "tus_upload_expiration",
            "tus_max_concat_parts",
            "chunked_upload_expiration_delta",
            "chunked_upload_max_bytes",
            "chunked_upload_field_name",
            "upload_sweep_interval",
            "progress_retention",
        ],
    ),
    (
        "Upload sessions",
        &[
            "max_single_upload_size",
            "max_total_upload_size",
            "max_total_upload_count",
            "accepted_file_formats",
            "upload_session_expire_after_inactive_minutes",
            "serve_mode",
            "x_accel_prefix",
        ],
    ),
    (
        "Scanning",
        &["clamav_enabled", "clamav_address", "clamav_timeout"],
    ),
    (
        "Users and links",
        &[
            "auth_jwt_secret",
            "auth_jwt_public_key",
            "auth_jwt_audience",
            "auth_jwt_issuer",
            "auth_jwt_leeway",
            "auth_jwt_allow_staff",
            "download_link_max_age",
        ],
    ),
    (
        "Hooks and events",
        &[
            "hooks_url",
            "hooks_secret",
            "hooks_events",
            "hooks_timeout",
            "hooks_retry_max_interval",
            "hooks_retry_for",
            "hooks_forward_headers",
            "hooks_progress_interval",
            "events_feed",
            "events_retention",
        ],
    ),
    (
        "Logs and metrics",
        &["log", "log_format", "metrics_token", "metrics_listen"],
    ),
];

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
    fn every_setting_has_exactly_one_topic() {
        let mut seen = std::collections::BTreeMap::new();
        for (topic, names) in TOPICS {
            for name in *names {
                assert!(
                    SETTINGS.iter().any(|d| d.name == *name),
                    "{topic} names `{name}`, which is no setting"
                );
                if let Some(other) = seen.insert(*name, *topic) {
                    panic!("`{name}` is under {other} and {topic}");
                }
            }
        }
        for d in SETTINGS {
            assert!(
                seen.contains_key(d.name),
                "`{}` has no topic in TOPICS",
                d.name
            );
        }
    }

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
