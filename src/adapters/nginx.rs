//! nginx's configuration as de-build reads and rewrites it: the files an
//! `nginx -T` dump names, and the `upstream` blocks pinned to containers by
//! address. Pure text in, text out.
//!
//! Why pin: an nginx without a `resolver` (frappe_docker's frontend
//! template, a door like `examples/demo/door/door.conf`) resolves a server
//! name once, at start and reload, and Docker's DNS names a container until
//! it is gone. A proxy that learns servers by name can therefore only forget
//! a container after its address vanished, and a request sent there in
//! between waits on an address nobody answers. Servers given by address are
//! forgotten at the reload that drops them, while the container still runs.

/// The files of an `nginx -T` dump, in order, each with its text as
/// dumped: nginx prints each as `# configuration file <path>:` and its text
/// (ngx_conf_file.c); its own messages go to stderr before the dump.
pub fn dumped_files(dump: &str) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = Vec::new();
    for line in dump.split_inclusive('\n') {
        let header = line
            .strip_prefix("# configuration file ")
            .and_then(|l| l.trim_end().strip_suffix(':'));
        match (header, files.last_mut()) {
            (Some(path), _) => files.push((path.to_string(), String::new())),
            (None, Some((_, text))) => text.push_str(line),
            (None, None) => {}
        }
    }
    files
}

/// The addresses a service's upstream servers are pinned to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    pub service: String,
    /// IPv4 addresses of the containers that take the traffic.
    pub addresses: Vec<String>,
}

/// What [`pin`] wrote: the new text, and the `address:port` of each server
/// it wrote (a later `nginx -T` must show them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pinned {
    pub text: String,
    pub servers: Vec<String>,
}

/// A `server` line: its address, its parameters, and the service it
/// stands for (the address's host, or the mark a pin left).
struct Server {
    address: String,
    params: Vec<String>,
    service: String,
}

const MARK: &str = "# de-build:";

fn server_line(line: &str) -> Option<Server> {
    let t = line.trim();
    let rest = t.strip_prefix("server")?;
    if !rest.starts_with(char::is_whitespace) {
        return None;
    }
    let (body, comment) = match rest.find('#') {
        Some(i) => (&rest[..i], Some(rest[i..].trim())),
        None => (rest, None),
    };
    let body = body.trim().strip_suffix(';')?;
    let mut words = body.split_whitespace();
    let address = words.next()?.to_string();
    let params: Vec<String> = words.map(str::to_string).collect();
    let marked = comment
        .and_then(|c| c.strip_prefix(MARK))
        .map(|s| s.trim().to_string());
    let host = address
        .rsplit_once(':')
        .map_or(address.as_str(), |(h, _)| h);
    Some(Server {
        service: marked.unwrap_or_else(|| host.to_string()),
        address,
        params,
    })
}

/// Rewrite every `upstream` block of `conf` whose servers stand for one of
/// the pinned services (`server backend:8000`, or a line an earlier pin
/// marked): its servers become the service's containers by address, at the
/// same port and with the same parameters, then the service's name as a
/// `backup` (used only when none of those answers, e.g. after a host
/// restart gave the containers other addresses). None when no block names
/// any of the services (the proxy reaches them another way).
///
/// Only the layout nginx's own examples and frappe_docker use is read: the
/// block's `upstream NAME {` and its closing `}` on lines of their own.
pub fn pin(conf: &str, pins: &[Pin], why: &str) -> Option<Pinned> {
    let mut out = String::with_capacity(conf.len() + 256);
    let mut servers = Vec::new();
    let mut block: Option<Vec<&str>> = None;
    let mut changed = false;
    for line in conf.split_inclusive('\n') {
        let t = line.trim();
        match &mut block {
            None => {
                let opens = t.starts_with("upstream ") && t.ends_with('{') && !t.contains('}');
                if opens {
                    block = Some(Vec::new());
                }
                out.push_str(line);
            }
            Some(lines) if t == "}" => {
                match rewrite_block(lines, pins, why, &mut servers) {
                    Some(text) => {
                        out.push_str(&text);
                        changed = true;
                    }
                    None => lines.iter().for_each(|l| out.push_str(l)),
                }
                out.push_str(line);
                block = None;
            }
            Some(lines) => lines.push(line),
        }
    }
    // An unclosed block is left as it was (nginx -t would refuse it anyway).
    if let Some(lines) = block {
        lines.iter().for_each(|l| out.push_str(l));
    }
    changed.then_some(Pinned { text: out, servers })
}

fn rewrite_block(
    lines: &[&str],
    pins: &[Pin],
    why: &str,
    servers: &mut Vec<String>,
) -> Option<String> {
    let parsed: Vec<Option<Server>> = lines.iter().map(|l| server_line(l)).collect();
    let first = parsed
        .iter()
        .flatten()
        .find(|s| !s.params.iter().any(|p| p == "backup"))?;
    let pin = pins.iter().find(|p| p.service == first.service)?;
    if pin.addresses.is_empty() {
        return None;
    }
    let port = first.address.rsplit_once(':').map(|(_, p)| p)?;
    let indent: String = lines
        .iter()
        .zip(&parsed)
        .find(|(_, s)| s.is_some())
        .map(|(l, _)| l.chars().take_while(|c| c.is_whitespace()).collect())
        .unwrap_or_else(|| "\t".into());
    let params: String = first.params.iter().map(|p| format!(" {p}")).collect();
    let mut text = String::new();
    // What else the block holds (keepalive, a hash method) stays; the
    // servers and an earlier pin's note are replaced.
    for (l, s) in lines.iter().zip(&parsed) {
        if s.is_none() && !l.trim().starts_with(MARK) {
            text.push_str(l);
        }
    }
    text.push_str(&format!(
        "{indent}{MARK} {why}; by address, so a reload forgets a container while it still runs\n"
    ));
    for a in &pin.addresses {
        let server = format!("{a}:{port}");
        text.push_str(&format!(
            "{indent}server {server}{params}; {MARK} {}\n",
            pin.service
        ));
        servers.push(server);
    }
    text.push_str(&format!(
        "{indent}server {}:{port} backup; {MARK} {}\n",
        pin.service, pin.service
    ));
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    // frappe_docker resources/nginx-template.conf as nginx-entrypoint.sh
    // writes it (envsubst of BACKEND=backend:8000, SOCKETIO=websocket:9000).
    const FRAPPE: &str = "upstream backend-server {\n\tserver backend:8000 fail_timeout=0;\n}\n\nupstream socketio-server {\n\tserver websocket:9000 fail_timeout=0;\n}\n\nserver {\n\tlisten 8080;\n}\n";

    fn pins(v: &[(&str, &[&str])]) -> Vec<Pin> {
        v.iter()
            .map(|(s, a)| Pin {
                service: s.to_string(),
                addresses: a.iter().map(|x| x.to_string()).collect(),
            })
            .collect()
    }

    #[test]
    fn the_files_of_a_dump_are_its_headers() {
        let dump = "nginx: the configuration file /etc/nginx/nginx.conf syntax is ok\n# configuration file /etc/nginx/nginx.conf:\nhttp { include conf.d/*.conf; }\n\n# configuration file /etc/nginx/conf.d/frappe.conf:\nupstream a {\n}\n";
        let files = dumped_files(dump);
        let paths: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            ["/etc/nginx/nginx.conf", "/etc/nginx/conf.d/frappe.conf"]
        );
        assert_eq!(files[1].1, "upstream a {\n}\n");
    }

    #[test]
    fn frappe_upstreams_are_pinned_by_address_with_the_name_as_backup() {
        let p = pin(
            FRAPPE,
            &pins(&[
                ("backend", &["172.18.0.7", "172.18.0.8"]),
                ("websocket", &["172.18.0.9"]),
            ]),
            "1.0.1",
        )
        .unwrap();
        assert_eq!(
            p.servers,
            ["172.18.0.7:8000", "172.18.0.8:8000", "172.18.0.9:9000"]
        );
        assert!(p
            .text
            .contains("upstream backend-server {\n\t# de-build: 1.0.1; by address"));
        assert!(p.text.contains("\tserver 172.18.0.7:8000 fail_timeout=0; # de-build: backend\n\tserver 172.18.0.8:8000 fail_timeout=0; # de-build: backend\n\tserver backend:8000 backup; # de-build: backend\n}\n"));
        assert!(p
            .text
            .contains("\tserver 172.18.0.9:9000 fail_timeout=0; # de-build: websocket\n"));
        assert!(
            p.text.ends_with("server {\n\tlisten 8080;\n}\n"),
            "{}",
            p.text
        );
    }

    #[test]
    fn a_pinned_block_is_pinned_again_by_its_mark() {
        let once = pin(FRAPPE, &pins(&[("backend", &["10.0.0.1"])]), "1.0.1").unwrap();
        let twice = pin(&once.text, &pins(&[("backend", &["10.0.0.2"])]), "1.0.2").unwrap();
        assert!(!twice.text.contains("10.0.0.1"), "{}", twice.text);
        assert!(!twice.text.contains("1.0.1"), "{}", twice.text);
        assert_eq!(twice.text.matches("backup").count(), 1, "{}", twice.text);
        assert_eq!(twice.servers, ["10.0.0.2:8000"]);
        // Only the pinned service's block changed.
        assert!(twice
            .text
            .contains("\tserver websocket:9000 fail_timeout=0;\n"));
    }

    #[test]
    fn a_config_naming_no_pinned_service_is_left_alone() {
        assert_eq!(
            pin(FRAPPE, &pins(&[("frontend", &["10.0.0.1"])]), "x"),
            None
        );
        assert_eq!(pin(FRAPPE, &pins(&[("backend", &[])]), "x"), None);
        // A one-line block is not read (no pin: the caller says so).
        let one = "upstream a { server backend:8000; }\n";
        assert_eq!(pin(one, &pins(&[("backend", &["10.0.0.1"])]), "x"), None);
        // `proxy_pass http://backend:8000` without an upstream block.
        let direct = "server {\n\tlocation / { proxy_pass http://backend:8000; }\n}\n";
        assert_eq!(pin(direct, &pins(&[("backend", &["10.0.0.1"])]), "x"), None);
    }

    #[test]
    fn other_directives_of_the_block_stay() {
        let conf = "upstream f {\n    keepalive 8;\n    server frontend:8080 max_fails=0;\n}\n";
        let p = pin(conf, &pins(&[("frontend", &["10.1.0.3"])]), "2.0.0").unwrap();
        assert!(
            p.text
                .starts_with("upstream f {\n    keepalive 8;\n    # de-build"),
            "{}",
            p.text
        );
        assert!(p
            .text
            .contains("    server 10.1.0.3:8080 max_fails=0; # de-build: frontend\n"));
    }
}
