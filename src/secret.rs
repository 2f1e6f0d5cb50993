//! A value that must never be printed: tokens, passwords.
//!
//! `Debug` and `Display` print `***`, `Serialize` is not implemented, and the
//! only way to read the value is the explicitly named [`Secret::expose`].
//! Every secret is also registered with the output redactor so that, should a
//! token reach a log line by another road (e.g. a git error echoing a URL), the
//! sink still masks it.
//!
//! Memory: the value is zeroed when the last copy is dropped ([`zeroize`]),
//! and so are the buffers it passes through on the way in (the `.env` text,
//! the parser's values) and out (the injected apps.json, the BuildKit secret
//! store, the split git credentials). What cannot be zeroed, honestly: the
//! process environment a CI token came from, the redactor's copy (it lives
//! as long as the process, to mask), the bytes tonic encodes into the
//! session's HTTP/2 frames, bollard's registry credentials (a plain
//! `String` inside bollard), and the base64 data of a swarm job's stdin
//! secret on its way into bollard's request. libgit2 zeroes its own credential copy on free.

use std::fmt;
use zeroize::Zeroizing;

#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        let value = Zeroizing::new(value.into());
        crate::ui::output::redact::register(&value);
        Secret(value)
    }

    /// A value built from registered secrets (an injected URL or apps.json):
    /// as unprintable as any, but not registered itself — the secrets inside
    /// are masked already, and registering the whole value would mask plain
    /// text too (a URL that carries no token).
    pub fn derived(value: impl Into<String>) -> Self {
        Secret(Zeroizing::new(value.into()))
    }

    /// The raw value. Call sites are few and greppable on purpose.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A growable buffer that zeroes every allocation it leaves behind: a
/// `Vec` that grows copies its bytes and frees the old block as it was.
#[derive(Default)]
pub struct ZeroBuf(Zeroizing<Vec<u8>>);

impl ZeroBuf {
    pub fn with_capacity(n: usize) -> ZeroBuf {
        ZeroBuf(Zeroizing::new(Vec::with_capacity(n)))
    }

    pub fn push(&mut self, data: &[u8]) {
        if self.0.len() + data.len() > self.0.capacity() {
            let want = (self.0.len() + data.len())
                .max(self.0.capacity() * 2)
                .max(64);
            let mut bigger = Zeroizing::new(Vec::with_capacity(want));
            bigger.extend_from_slice(&self.0);
            // The old block is zeroed when `bigger` replaces it.
            self.0 = bigger;
        }
        self.0.extend_from_slice(data);
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn into_inner(self) -> Zeroizing<Vec<u8>> {
        self.0
    }

    /// The text, if the bytes are UTF-8 (they are, when only `&str` went in).
    pub fn into_secret(self) -> Secret {
        Secret::derived(String::from_utf8_lossy(&self.0).into_owned())
    }
}

impl std::io::Write for ZeroBuf {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.push(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Inputs are small text files. The cap keeps a wrong path (`--env-file
/// /dev/zero`, a log file) from being read until memory runs out.
pub const MAX_INPUT_BYTES: usize = 1 << 20;

/// Read at most [`MAX_INPUT_BYTES`]; more is an `InvalidData` error. The
/// buffer is zeroed when dropped (an env file holds tokens), and so is every
/// smaller block it outgrows.
pub fn read_capped(path: &std::path::Path) -> std::io::Result<zeroize::Zeroizing<Vec<u8>>> {
    use std::io::Read;
    let f = std::fs::File::open(path)?;
    let size = f.metadata().map(|m| m.len() as usize).unwrap_or(0);
    let mut buf = ZeroBuf::with_capacity(size.min(MAX_INPUT_BYTES) + 1);
    let mut chunk = zeroize::Zeroizing::new(vec![0u8; 64 * 1024]);
    let mut limited = f.take(MAX_INPUT_BYTES as u64 + 1);
    loop {
        let n = match limited.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        buf.push(&chunk[..n]);
        if buf.as_bytes().len() > MAX_INPUT_BYTES {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "larger than {}, the limit for an input file",
                    crate::util::human_bytes(MAX_INPUT_BYTES as u64)
                ),
            ));
        }
    }
    Ok(buf.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_formats_its_value() {
        let s = Secret::new("canary-secret-value-42");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(format!("{:?}", Some(&s)), "Some(Secret(***))");
        assert_eq!(s.expose(), "canary-secret-value-42");
    }

    #[test]
    fn zero_buffer_keeps_what_was_written() {
        let mut b = ZeroBuf::with_capacity(2);
        for part in ["ab", "cdef", "g".repeat(100).as_str()] {
            std::io::Write::write_all(&mut b, part.as_bytes()).unwrap();
        }
        assert_eq!(b.as_bytes().len(), 106);
        assert_eq!(&b.as_bytes()[..6], b"abcdef");
    }
}
