//! The types a setting can hold, each parsed and checked as it is read (from a flag, an env
//! variable or `chute.toml`): sizes, durations, file modes, lists, the accepted file formats,
//! the serve mode, the storage URL, the handler chain and checksum algorithms.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::checksum::Algorithm;
use crate::events::EventType;

/// A value a setting can hold: parsed from a string (flag, env, TOML string) or a TOML value.
pub trait SettingValue: Sized {
    fn parse_str(s: &str) -> Result<Self, String>;
    fn from_toml(v: &toml::Value) -> Result<Self, String> {
        match v {
            toml::Value::String(s) => Self::parse_str(s),
            toml::Value::Integer(i) => Self::parse_str(&i.to_string()),
            toml::Value::Float(f) => Self::parse_str(&f.to_string()),
            toml::Value::Boolean(b) => Self::parse_str(&b.to_string()),
            other => Err(format!("unexpected value {other}")),
        }
    }
}

/// A byte count. Accepts plain integers and "64MiB", "2.5 MB", "1GiB", "512k" style values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size(pub u64);

impl Size {
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl SettingValue for Size {
    fn parse_str(s: &str) -> Result<Self, String> {
        parse_size(s).map(Size)
    }
}

/// Parses "64MiB" (binary), "64MB" (decimal), "64k"/"64K"/"64KiB" (binary, as in nginx).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: f64 = num.parse().map_err(|_| {
        format!("`{s}` is not a size (try 1048576, \"64KiB\", \"2.5MiB\", \"1GB\")")
    })?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "kb" => 1e3,
        "m" | "mib" => 1024.0 * 1024.0,
        "mb" => 1e6,
        "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "gb" => 1e9,
        "t" | "tib" => 1024f64.powi(4),
        "tb" => 1e12,
        other => return Err(format!("unknown size unit `{other}` in `{s}`")),
    };
    let v = num * mult;
    if !v.is_finite() || v < 0.0 || v > u64::MAX as f64 {
        return Err(format!("`{s}` is out of range"));
    }
    Ok(v.round() as u64)
}

/// An optional size: "none", "unlimited" or "" mean no limit.
impl SettingValue for Option<Size> {
    fn parse_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "none" | "unlimited" => Ok(None),
            _ => Size::parse_str(s).map(Some),
        }
    }
}

/// Networks given as CIDRs or single addresses: "10.0.0.0/8, 127.0.0.1, ::1".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Networks(pub Vec<ipnet::IpNet>);

impl Networks {
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        // An IPv4 peer may arrive as an IPv4-mapped IPv6 address.
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
            v4 => v4,
        };
        self.0.iter().any(|n| n.contains(&ip))
    }
}

impl SettingValue for Networks {
    fn parse_str(s: &str) -> Result<Self, String> {
        Self::from_items(&<Vec<String>>::parse_str(s)?)
    }
    fn from_toml(v: &toml::Value) -> Result<Self, String> {
        Self::from_items(&<Vec<String>>::from_toml(v)?)
    }
}

impl Networks {
    fn from_items(items: &[String]) -> Result<Self, String> {
        items
            .iter()
            .map(|i| {
                i.parse::<ipnet::IpNet>()
                    .or_else(|_| i.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| format!("`{i}` is not an address or a CIDR network"))
            })
            .collect::<Result<_, _>>()
            .map(Networks)
    }
}

/// A duration: "90s", "15m", "2h", "1d", "500ms", or plain seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl SettingValue for Dur {
    fn parse_str(s: &str) -> Result<Self, String> {
        parse_duration(s).map(Dur)
    }
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (try \"90s\", \"15m\", \"1d\")"))?;
    let secs = |m: u64| n.checked_mul(m).map(Duration::from_secs);
    let d = match unit.trim() {
        "" | "s" => secs(1),
        "ms" => Some(Duration::from_millis(n)),
        "m" | "min" => secs(60),
        "h" => secs(3600),
        "d" => secs(86_400),
        "w" => secs(7 * 86_400),
        other => return Err(format!("unknown duration unit `{other}` in `{s}`")),
    };
    d.ok_or_else(|| format!("`{s}` is out of range"))
}

impl SettingValue for String {
    fn parse_str(s: &str) -> Result<Self, String> {
        Ok(s.to_string())
    }
}

impl SettingValue for PathBuf {
    fn parse_str(s: &str) -> Result<Self, String> {
        Ok(PathBuf::from(s))
    }
}

impl SettingValue for bool {
    fn parse_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            _ => Err(format!("`{s}` is not a boolean (true/false)")),
        }
    }
}

impl SettingValue for u64 {
    fn parse_str(s: &str) -> Result<Self, String> {
        s.trim()
            .parse()
            .map_err(|_| format!("`{s}` is not a non-negative integer"))
    }
}

impl SettingValue for i32 {
    fn parse_str(s: &str) -> Result<Self, String> {
        s.trim()
            .parse()
            .map_err(|_| format!("`{s}` is not an integer"))
    }
}

impl SettingValue for i64 {
    fn parse_str(s: &str) -> Result<Self, String> {
        s.trim()
            .parse()
            .map_err(|_| format!("`{s}` is not an integer"))
    }
}

/// Accepted file formats: groups of extensions (upload.views' ACCEPTED_FILE_FORMATS). In TOML a
/// table `{ Document = ["pdf", "docx"], Image = ["png"] }`; in env and flags
/// `Document=pdf,docx;Image=png`. Extensions are kept lower case, without the dot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileFormats(pub BTreeMap<String, Vec<String>>);

impl FileFormats {
    /// The group that accepts `ext` (lower case, no dot), if any.
    pub fn group_of(&self, ext: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(_, exts)| exts.iter().any(|e| e == ext))
            .map(|(g, _)| g.as_str())
    }

    /// Every accepted extension, sorted.
    pub fn extensions(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.0.values().flatten().map(String::as_str).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    fn insert(
        &mut self,
        group: &str,
        exts: impl IntoIterator<Item = String>,
    ) -> Result<(), String> {
        let group = group.trim();
        if group.is_empty() {
            return Err("a format group has no name".into());
        }
        let mut list = Vec::new();
        for e in exts {
            let e = e.trim().trim_start_matches('.').to_ascii_lowercase();
            if e.is_empty() || !e.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(format!("`{e}` in group `{group}` is not a file extension"));
            }
            list.push(e);
        }
        self.0.insert(group.to_string(), list);
        Ok(())
    }
}

impl SettingValue for FileFormats {
    fn parse_str(s: &str) -> Result<Self, String> {
        let mut f = FileFormats(BTreeMap::new());
        for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (group, exts) = part
                .split_once('=')
                .ok_or_else(|| format!("`{part}` is not Group=ext,ext"))?;
            f.insert(group, exts.split(',').map(str::to_string))?;
        }
        Ok(f)
    }
    fn from_toml(v: &toml::Value) -> Result<Self, String> {
        match v {
            toml::Value::Table(t) => {
                let mut f = FileFormats(BTreeMap::new());
                for (group, exts) in t {
                    f.insert(group, Vec::<String>::from_toml(exts)?)?;
                }
                Ok(f)
            }
            toml::Value::String(s) => Self::parse_str(s),
            other => Err(format!(
                "expected a table of groups to extensions, got {other}"
            )),
        }
    }
}

/// How a session file's GET is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServeMode {
    /// chute streams the bytes (with Range).
    Direct,
    /// chute answers headers and `X-Accel-Redirect`; nginx serves the bytes.
    XAccelRedirect,
}

impl SettingValue for ServeMode {
    fn parse_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "direct" => Ok(Self::Direct),
            "x-accel-redirect" | "x_accel_redirect" => Ok(Self::XAccelRedirect),
            _ => Err(format!(
                "`{s}` is not a serve mode (direct, x-accel-redirect)"
            )),
        }
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl SettingValue for LogFormat {
    fn parse_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err(format!("`{s}` is not a log format (text, json)")),
        }
    }
}

/// Unix permission bits, written in octal: "0o644", "644" or "0644".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mode(pub u32);

impl SettingValue for Mode {
    fn parse_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let t = t.strip_prefix("0o").unwrap_or(t);
        u32::from_str_radix(t, 8)
            .ok()
            .filter(|m| *m <= 0o7777)
            .map(Mode)
            .ok_or_else(|| format!("`{s}` is not an octal file mode such as \"0o644\""))
    }
}

/// A list: a TOML array, or a comma-separated string (env and flags).
impl SettingValue for Vec<String> {
    fn parse_str(s: &str) -> Result<Self, String> {
        Ok(s.split(',')
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect())
    }
    fn from_toml(v: &toml::Value) -> Result<Self, String> {
        match v {
            toml::Value::Array(items) => items
                .iter()
                .map(|i| match i {
                    toml::Value::String(s) => Ok(s.clone()),
                    other => Err(format!("list item {other} is not a string")),
                })
                .collect(),
            toml::Value::String(s) => Self::parse_str(s),
            other => Err(format!("expected a list of strings, got {other}")),
        }
    }
}

/// Where files are stored: a folder in `data_dir` (empty), or `s3://bucket[/prefix]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageUrl {
    Local,
    /// A bucket, and a key prefix inside it ("" or ending in '/').
    S3 {
        bucket: String,
        prefix: String,
    },
}

impl SettingValue for StorageUrl {
    fn parse_str(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Ok(Self::Local);
        }
        let bad =
            || "give s3://bucket[/prefix], or leave it empty for files in data_dir".to_string();
        let rest = s.strip_prefix("s3://").ok_or_else(bad)?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad());
        }
        let prefix = prefix.trim_matches('/');
        Ok(Self::S3 {
            bucket: bucket.to_string(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
        })
    }
}

/// A built-in upload handler, by its name in `file_upload_handlers`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandlerName {
    Progress,
    Quota,
    Sniff,
    Checksum,
    Compress,
    Spill,
    Store,
}

impl HandlerName {
    pub const ALL: [HandlerName; 7] = [
        Self::Progress,
        Self::Quota,
        Self::Sniff,
        Self::Checksum,
        Self::Compress,
        Self::Spill,
        Self::Store,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Progress => "progress",
            Self::Quota => "quota",
            Self::Sniff => "sniff",
            Self::Checksum => "checksum",
            Self::Compress => "compress",
            Self::Spill => "spill",
            Self::Store => "store",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|h| h.name() == s)
    }

    /// `spill` or `store`: where a chain's bytes end up.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Spill | Self::Store)
    }
}

/// The built-in handler chain of form uploads, checked as it is read: known names, none
/// twice, one terminal (`spill` or `store`) at the end, and nothing that must see the
/// original bytes after `compress`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandlerChain(pub Vec<HandlerName>);

impl HandlerChain {
    pub fn from_names(names: &[String]) -> Result<Self, String> {
        let mut chain = Vec::with_capacity(names.len());
        for n in names {
            let h = HandlerName::parse(n).ok_or_else(|| {
                let known: Vec<&str> = HandlerName::ALL.iter().map(|h| h.name()).collect();
                format!("unknown handler `{n}` (built in: {})", known.join(", "))
            })?;
            if chain.contains(&h) {
                return Err(format!("handler `{n}` is listed twice"));
            }
            chain.push(h);
        }
        if !chain.last().is_some_and(|h| h.is_terminal()) {
            return Err("the last handler must be `spill` or `store`".into());
        }
        if chain.iter().filter(|h| h.is_terminal()).count() != 1 {
            return Err("use one of `spill` and `store`, not both".into());
        }
        if let Some(c) = chain.iter().position(|h| *h == HandlerName::Compress) {
            for must_precede in [
                HandlerName::Sniff,
                HandlerName::Checksum,
                HandlerName::Quota,
            ] {
                if chain
                    .iter()
                    .position(|h| *h == must_precede)
                    .is_some_and(|p| p > c)
                {
                    return Err(format!(
                        "`{}` must come before `compress`: it needs the original bytes",
                        must_precede.name()
                    ));
                }
            }
        }
        Ok(Self(chain))
    }
}

impl SettingValue for HandlerChain {
    fn parse_str(s: &str) -> Result<Self, String> {
        Self::from_names(&Vec::<String>::parse_str(s)?)
    }
    fn from_toml(v: &toml::Value) -> Result<Self, String> {
        Self::from_names(&Vec::<String>::from_toml(v)?)
    }
}

/// Checksum algorithms by name (md5, sha1, sha256, blake3), checked as they are read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checksums(pub Vec<Algorithm>);

impl Checksums {
    /// These and `extra` (what a protocol needs besides), sorted and without repeats.
    pub fn with(&self, extra: &[Algorithm]) -> Vec<Algorithm> {
        let mut a: Vec<Algorithm> = self.0.iter().chain(extra).copied().collect();
        a.sort();
        a.dedup();
        a
    }

    fn from_names(names: &[String]) -> Result<Self, String> {
        names
            .iter()
            .map(|c| {
                Algorithm::parse(c)
                    .ok_or_else(|| format!("unknown checksum `{c}` (md5, sha1, sha256, blake3)"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }
}

impl SettingValue for Checksums {
    fn parse_str(s: &str) -> Result<Self, String> {
        Self::from_names(&Vec::<String>::parse_str(s)?)
    }
    fn from_toml(v: &toml::Value) -> Result<Self, String> {
        Self::from_names(&Vec::<String>::from_toml(v)?)
    }
}

/// Which events go out (`hooks_events`): a list of event type names, or "all" for every
/// notification (blocking hooks are named one by one: `pre-create`, `pre-finish`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventTypes(pub Vec<EventType>);

impl EventTypes {
    pub fn contains(&self, t: EventType) -> bool {
        self.0.contains(&t)
    }
}

impl SettingValue for EventTypes {
    fn parse_str(s: &str) -> Result<Self, String> {
        let names = <Vec<String>>::parse_str(s)?;
        Self::from_names(&names)
    }
    fn from_toml(v: &toml::Value) -> Result<Self, String> {
        Self::from_names(&<Vec<String>>::from_toml(v)?)
    }
}

impl EventTypes {
    fn from_names(names: &[String]) -> Result<Self, String> {
        let mut out = Vec::new();
        for n in names {
            let add: Vec<EventType> = if n == "all" {
                EventType::NOTIFICATIONS.to_vec()
            } else {
                vec![EventType::parse(n).ok_or_else(|| {
                    format!(
                        "unknown event type `{n}` (known: all, {})",
                        EventType::ALL.map(EventType::as_str).join(", ")
                    )
                })?]
            };
            for t in add {
                if !out.contains(&t) {
                    out.push(t);
                }
            }
        }
        out.sort();
        Ok(Self(out))
    }
}
