//! Small helpers with no home in a layer: identifiers and sizes as shown to people.

use sha2::{Digest, Sha256};

/// The 12 hex digits the docker CLI shows for an image or container ID.
pub fn short_id(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    &hex[..hex.len().min(12)]
}

pub fn sha256_hex(data: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(data);
    format!("{:x}", h.finalize())
}

pub fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

/// Characters that change a URL's meaning when they appear unencoded inside
/// the userinfo part (`https://TOKEN@host/...`).
pub fn breaks_userinfo(c: char) -> bool {
    matches!(c, '@' | '/' | '?' | '#' | '\\' | '%' | '[' | ']')
        || c.is_whitespace()
        || c.is_control()
}

/// Percent-encode what [`breaks_userinfo`] flags; used by the redactor too, so
/// an encoded token is masked as well.
pub fn percent_encode_userinfo(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if breaks_userinfo(c) {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `registry/image`: the repository an image is pushed to.
pub fn registry_repository(registry: &str, image: &str) -> String {
    format!("{}/{}", registry.trim_end_matches('/'), image)
}
