//! The slow-client load of issue 12, against a running chute: TRICKLES tus PATCHes sending
//! 1 KiB/s each (512 bytes every 500 ms, of a declared 1 GiB), IDLE keep-alive connections,
//! and meanwhile `/healthz` every 500 ms and a normal user's 64 MiB upload and download, for
//! SECONDS. Loopback only; bounded in count and time.
//!
//! Usage: `bench_slow_clients ADDR TOKEN NORMAL_TOKEN TRICKLES IDLE SECONDS`
//! Prints one line of figures; exits non-zero if anything failed.

#[path = "../tests/it/slow_load.rs"]
#[allow(dead_code)]
mod slow_load;

use std::time::{Duration, Instant};

use slow_load::*;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, token, normal, trickles, idle, seconds] = args.as_slice() else {
        return Err(
            "usage: bench_slow_clients ADDR TOKEN NORMAL_TOKEN TRICKLES IDLE SECONDS".into(),
        );
    };
    let addr = addr.parse()?;
    let (n_trickles, n_idle, seconds): (usize, usize, u64) =
        (trickles.parse()?, idle.parse()?, seconds.parse()?);
    rlimit::increase_nofile_limit(u64::MAX)?;
    let t = Instant::now();
    let mut trickles = Trickles::start(addr, token, n_trickles, 1 << 30)?;
    let idle = idle_connections(addr, n_idle)?;
    let setup = t.elapsed();
    let data: Vec<u8> = (0..64u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let started = Instant::now();
    let (mut worst, mut sum, mut n) = (Duration::ZERO, Duration::ZERO, 0u32);
    let mut transfer = None;
    let mut open = trickles.len();
    while started.elapsed() < Duration::from_secs(seconds) {
        open = trickles.trickle(512);
        let took = healthz(addr, Duration::from_secs(10))?;
        worst = worst.max(took);
        sum += took;
        n += 1;
        if transfer.is_none() {
            transfer = Some(upload_and_download(addr, normal, &data)?);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(idle);
    let (up, down, same) = transfer.ok_or("no transfer ran")?;
    println!(
        "trickles={n_trickles} open_at_end={open} idle={n_idle} setup_s={:.1} healthz_n={n} \
         healthz_mean_ms={:.1} healthz_worst_ms={:.1} up64_s={:.2} down64_s={:.2} same_sha256={same}",
        setup.as_secs_f64(),
        sum.as_secs_f64() * 1e3 / f64::from(n.max(1)),
        worst.as_secs_f64() * 1e3,
        up.as_secs_f64(),
        down.as_secs_f64(),
    );
    if !same {
        return Err("the 64 MiB came back different".into());
    }
    Ok(())
}
