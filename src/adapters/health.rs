//! The health gate: an HTTP GET that must answer 2xx within a bounded time.
//! Plain HTTP on purpose: the gate probes the stack from the host it runs on.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// One probe: the status code, or why there was none. `host` is the Host
/// header to send instead of the URL's: Frappe picks the site by it (or by
/// X-Frappe-Site-Name, which frappe_docker's nginx sets from it), so a
/// probe of `http://127.0.0.1:8080/` must name the site to reach it.
pub fn probe(url: &str, host_header: Option<&str>, timeout: Duration) -> Result<u16, String> {
    let u = url::Url::parse(url).map_err(|e| format!("bad URL {url}: {e}"))?;
    if u.scheme() != "http" {
        return Err(format!(
            "{url}: only http:// is supported for the health gate"
        ));
    }
    let host = u.host_str().ok_or("URL has no host")?;
    let port = u.port_or_known_default().unwrap_or(80);
    let addr = (host, port)
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or("no address")?;
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout)).ok();
    s.set_write_timeout(Some(timeout)).ok();
    let path = match u.query() {
        Some(q) => format!("{}?{q}", u.path()),
        None => u.path().to_string(),
    };
    let host = match host_header {
        Some(h) => h.to_string(),
        None => format!("{host}:{port}"),
    };
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: de-build\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 64];
    let mut got = Vec::new();
    while !got.contains(&b'\n') && got.len() < 64 {
        let n = s.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&got);
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| "no HTTP status line".to_string())
}

/// Poll until a 2xx answer or `within` passes; Err carries the last answer.
pub fn wait_healthy(url: &str, host: Option<&str>, within: Duration) -> Result<Duration, String> {
    wait_until(url, host, within, |c| (200..300).contains(&c), "2xx")
}

/// Poll until `accept(status)` or `within` passes; `what` names the accepted
/// answers in the error, which carries the last answer.
pub fn wait_until(
    url: &str,
    host: Option<&str>,
    within: Duration,
    accept: impl Fn(u16) -> bool,
    what: &str,
) -> Result<Duration, String> {
    let started = Instant::now();
    let mut last;
    loop {
        match probe(url, host, Duration::from_secs(2)) {
            Ok(code) if accept(code) => return Ok(started.elapsed()),
            Ok(code) => last = format!("HTTP {code}"),
            Err(e) => last = e,
        }
        if started.elapsed() >= within {
            let as_host = host.map(|h| format!(" (Host: {h})")).unwrap_or_default();
            return Err(format!(
                "{url}{as_host} did not answer {what} within {}s (last: {last})",
                within.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn reads_the_status_of_a_real_socket() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            let mut hosts = Vec::new();
            for code in ["503 Service Unavailable", "200 OK"] {
                let (mut c, _) = l.accept().unwrap();
                // Read the whole request, or closing would reset the connection.
                let mut req = Vec::new();
                let mut b = [0u8; 512];
                while !req.ends_with(b"\r\n\r\n") {
                    match c.read(&mut b) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&b[..n]),
                    }
                }
                let req = String::from_utf8_lossy(&req).to_string();
                hosts.extend(
                    req.lines()
                        .filter_map(|l| l.strip_prefix("Host: "))
                        .map(str::to_string),
                );
                let _ = write!(c, "HTTP/1.1 {code}\r\nContent-Length: 0\r\n\r\n");
            }
            hosts
        });
        let url = format!("http://127.0.0.1:{port}/api/method/ping");
        assert_eq!(probe(&url, None, Duration::from_secs(2)), Ok(503));
        assert_eq!(
            probe(&url, Some("demo.localhost"), Duration::from_secs(2)),
            Ok(200)
        );
        let hosts = t.join().unwrap();
        assert_eq!(
            hosts,
            [format!("127.0.0.1:{port}"), "demo.localhost".into()]
        );
        assert!(probe("https://x/", None, Duration::from_secs(1)).is_err());
    }
}
