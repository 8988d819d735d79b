//! Streaming digests. Each algorithm is computed once, while the bytes pass, never by reading
//! the file back.
//!
//! SHA-256 and SHA-1 use RustCrypto's implementation where the CPU has the SHA extensions
//! (it is the fastest there, ~1 GiB/s) and ring's assembly elsewhere: on a CPU without them
//! RustCrypto falls back to portable code at about half ring's speed (measured here: 176 vs
//! 316 MiB/s for SHA-256). The choice is made once, at run time.

use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Algorithm {
    Md5,
    Sha1,
    Sha256,
    Blake3,
}

impl Algorithm {
    pub const ALL: [Algorithm; 4] = [
        Algorithm::Md5,
        Algorithm::Sha1,
        Algorithm::Sha256,
        Algorithm::Blake3,
    ];

    pub fn parse(name: &str) -> Option<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "md5" => Some(Algorithm::Md5),
            "sha1" => Some(Algorithm::Sha1),
            "sha256" => Some(Algorithm::Sha256),
            "blake3" => Some(Algorithm::Blake3),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "md5",
            Algorithm::Sha1 => "sha1",
            Algorithm::Sha256 => "sha256",
            Algorithm::Blake3 => "blake3",
        }
    }
}

/// One running digest.
#[derive(Clone)]
pub enum Hasher {
    Md5(Md5),
    Sha1(Sha1),
    Sha256(Sha256),
    Ring(Algorithm, ring::digest::Context),
    Blake3(Box<blake3::Hasher>),
}

/// True when the CPU has the SHA extensions RustCrypto's fast path needs.
fn cpu_has_sha_extensions() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("sha") && std::is_x86_feature_detected!("sse4.1")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("sha2")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

fn use_ring() -> bool {
    static USE_RING: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *USE_RING.get_or_init(|| !cpu_has_sha_extensions())
}

impl Hasher {
    pub fn new(alg: Algorithm) -> Self {
        Self::with_backend(alg, use_ring())
    }

    fn with_backend(alg: Algorithm, ring: bool) -> Self {
        match alg {
            Algorithm::Md5 => Hasher::Md5(Md5::new()),
            Algorithm::Sha1 if ring => Hasher::Ring(
                alg,
                ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY),
            ),
            Algorithm::Sha1 => Hasher::Sha1(Sha1::new()),
            Algorithm::Sha256 if ring => {
                Hasher::Ring(alg, ring::digest::Context::new(&ring::digest::SHA256))
            }
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            Algorithm::Blake3 => Hasher::Blake3(Box::default()),
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        match self {
            Hasher::Md5(_) => Algorithm::Md5,
            Hasher::Sha1(_) => Algorithm::Sha1,
            Hasher::Sha256(_) => Algorithm::Sha256,
            Hasher::Ring(a, _) => *a,
            Hasher::Blake3(_) => Algorithm::Blake3,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Md5(h) => h.update(data),
            Hasher::Sha1(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
            Hasher::Ring(_, h) => h.update(data),
            Hasher::Blake3(h) => {
                h.update(data);
            }
        }
    }

    /// The digest as lowercase hex.
    pub fn finish_hex(self) -> String {
        hex::encode(self.finish_bytes())
    }

    /// The digest's bytes.
    pub fn finish_bytes(self) -> Vec<u8> {
        match self {
            Hasher::Md5(h) => h.finalize().to_vec(),
            Hasher::Sha1(h) => h.finalize().to_vec(),
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::Ring(_, h) => h.finish().as_ref().to_vec(),
            Hasher::Blake3(h) => h.finalize().as_bytes().to_vec(),
        }
    }
}

/// Hex digest of `data` in one go (tests and small payloads).
pub fn digest_hex(alg: Algorithm, data: &[u8]) -> String {
    let mut h = Hasher::new(alg);
    h.update(data);
    h.finish_hex()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        assert_eq!(
            digest_hex(Algorithm::Md5, b"abc"),
            "900150983cd24fb0d6963f7d28e17f72"
        );
        assert_eq!(
            digest_hex(Algorithm::Sha1, b"abc"),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(
            digest_hex(Algorithm::Sha256, b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            digest_hex(Algorithm::Blake3, b"abc"),
            "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
        );
        for a in Algorithm::ALL {
            assert_eq!(Algorithm::parse(a.name()), Some(a));
            // Both backends agree, whichever this CPU uses.
            let data: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
            let mut r = Hasher::with_backend(a, true);
            let mut c = Hasher::with_backend(a, false);
            r.update(&data);
            c.update(&data);
            assert_eq!(r.finish_hex(), c.finish_hex(), "{a:?}");
        }
        assert_eq!(Algorithm::parse("crc32"), None);
    }
}
