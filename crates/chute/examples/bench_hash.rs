//! The benchmark's hashing-limit probe: hashes a file with chute's own hashers, one algorithm
//! at a time, and prints MB/s (10^6 bytes/s) for each. Usage: `bench_hash FILE`.

use std::io::Read;
use std::time::Instant;

use chute::checksum::{Algorithm, Hasher};

fn main() -> std::io::Result<()> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/dev/stdin".into());
    let mut data = Vec::new();
    std::fs::File::open(&path)?.read_to_end(&mut data)?;
    for alg in [Algorithm::Sha256, Algorithm::Md5, Algorithm::Blake3] {
        let t = Instant::now();
        let mut h = Hasher::new(alg);
        for chunk in data.chunks(64 * 1024) {
            h.update(chunk);
        }
        let _ = h.finish_hex();
        let mbps = data.len() as f64 / t.elapsed().as_secs_f64() / 1e6;
        println!("{} {:.0}", alg.name(), mbps);
    }
    Ok(())
}
