//! Slow clients against a running chute, with std sockets only: tus PATCHes that trickle a
//! byte at a time, idle keep-alive connections, and meanwhile a normal user's upload and
//! download and `/healthz`. Shared by the integration test (small counts) and
//! `examples/bench_slow_clients.rs` (the counts, for bench/).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// A response: status, headers (lower-case names) and body.
pub type Response = (u16, Vec<(String, String)>, Vec<u8>);

/// One HTTP/1.1 exchange on `s`.
pub fn exchange(s: &mut TcpStream, head: &str, body: &[u8]) -> std::io::Result<Response> {
    s.write_all(head.as_bytes())?;
    for c in body.chunks(1 << 20) {
        s.write_all(c)?;
    }
    let mut r = BufReader::new(s.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line: {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let mut l = String::new();
        if r.read_line(&mut l)? == 0 || l == "\r\n" {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut out = vec![0u8; len];
    r.read_exact(&mut out)?;
    Ok((status, headers, out))
}

fn connect(addr: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    Ok(s)
}

/// Creates a tus upload of `len` bytes; returns its path.
pub fn tus_create(addr: SocketAddr, token: &str, len: u64) -> std::io::Result<String> {
    let mut s = connect(addr, Duration::from_secs(30))?;
    let (st, h, _) = exchange(
        &mut s,
        &format!(
            "POST /tus/ HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n\
             Tus-Resumable: 1.0.0\r\nUpload-Length: {len}\r\nContent-Length: 0\r\n\r\n"
        ),
        &[],
    )?;
    if st != 201 {
        return Err(std::io::Error::other(format!("creation answered {st}")));
    }
    h.into_iter()
        .find(|(k, _)| k == "location")
        .map(|(_, v)| v)
        .ok_or_else(|| std::io::Error::other("no Location"))
}

/// PATCHes that have sent their headers and send one byte each time `trickle` is called.
pub struct Trickles {
    socks: Vec<TcpStream>,
}

impl Trickles {
    /// Starts `n` uploads of `len` bytes and their PATCHes (headers and a first byte).
    pub fn start(addr: SocketAddr, token: &str, n: usize, len: u64) -> std::io::Result<Self> {
        let mut socks = Vec::with_capacity(n);
        for _ in 0..n {
            let loc = tus_create(addr, token, len)?;
            let mut s = connect(addr, Duration::from_secs(30))?;
            s.write_all(
                format!(
                    "PATCH {loc} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n\
                     Tus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n\
                     Content-Type: application/offset+octet-stream\r\nContent-Length: {len}\r\n\r\nx"
                )
                .as_bytes(),
            )?;
            socks.push(s);
        }
        Ok(Self { socks })
    }

    /// `n` more bytes on every PATCH; returns how many connections took them.
    pub fn trickle(&mut self, n: usize) -> usize {
        let piece = vec![b'x'; n];
        let mut ok = 0;
        for s in &mut self.socks {
            if s.write_all(&piece).is_ok() {
                ok += 1;
            }
        }
        ok
    }

    pub fn len(&self) -> usize {
        self.socks.len()
    }
}

/// Connections that made one request (`GET /healthz`) and stay open, idle.
pub fn idle_connections(addr: SocketAddr, n: usize) -> std::io::Result<Vec<TcpStream>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = connect(addr, Duration::from_secs(30))?;
        let (st, _, _) = exchange(&mut s, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n", &[])?;
        if st != 200 {
            return Err(std::io::Error::other(format!("healthz answered {st}")));
        }
        out.push(s);
    }
    Ok(out)
}

/// How long `/healthz` takes on a new connection; an error when it does not answer within
/// `timeout`.
pub fn healthz(addr: SocketAddr, timeout: Duration) -> std::io::Result<Duration> {
    let t = Instant::now();
    let mut s = connect(addr, timeout)?;
    let (st, _, _) = exchange(
        &mut s,
        "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        &[],
    )?;
    if st != 200 {
        return Err(std::io::Error::other(format!("healthz answered {st}")));
    }
    Ok(t.elapsed())
}

/// A normal user's form upload of `data` and its download: the times they took, and whether
/// the bytes came back with the same sha256.
pub fn upload_and_download(
    addr: SocketAddr,
    token: &str,
    data: &[u8],
) -> std::io::Result<(Duration, Duration, bool)> {
    let boundary = "slowloadboundary";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"n.bin\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let t = Instant::now();
    let mut s = connect(addr, Duration::from_secs(120))?;
    let (st, _, res) = exchange(
        &mut s,
        &format!(
            "POST /api/files HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        ),
        &body,
    )?;
    let up = t.elapsed();
    if st != 201 {
        return Err(std::io::Error::other(format!(
            "upload answered {st}: {}",
            String::from_utf8_lossy(&res)
        )));
    }
    let v: serde_json::Value = serde_json::from_slice(&res).map_err(std::io::Error::other)?;
    let id = v["files"][0]["id"]
        .as_str()
        .ok_or_else(|| std::io::Error::other("no file id"))?
        .to_string();
    let t = Instant::now();
    let (st, _, got) = exchange(
        &mut s,
        &format!(
            "GET /api/files/{id} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n\r\n"
        ),
        &[],
    )?;
    let down = t.elapsed();
    if st != 200 {
        return Err(std::io::Error::other(format!("download answered {st}")));
    }
    Ok((up, down, Sha256::digest(&got) == Sha256::digest(data)))
}

/// The peak resident memory of a process, in MiB (VmHWM).
pub fn peak_rss_mib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb / 1024)
}
