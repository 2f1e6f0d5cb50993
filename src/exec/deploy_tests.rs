//! The executor against a scripted fake world: every step × failure ×
//! recovery outcome, in milliseconds. The fake keeps a small model of a
//! stack (which image each project runs, maintenance, the applied patches)
//! so each case asserts what is left, not only what was called.

use super::*;
use crate::adapters::engine::RunOutput;
use crate::exec::ports::{ComposeCall, Records, World};
use crate::plan::deploy::{plan, Action, DeployRequest, Gate, Sites, Target};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

#[derive(Default)]
struct Model {
    /// How many more `nginx -T` in a frontend exit 1 with no config yet
    /// (its entrypoint still renders the template).
    unrendered: u32,
    /// version -> image id
    images: BTreeMap<String, String>,
    /// project -> (version, image id) running; None = nothing up.
    running: BTreeMap<String, (String, String)>,
    maintenance: bool,
    /// Patches applied to the database, and backups by path.
    db: Vec<String>,
    backups: BTreeMap<String, Vec<String>>,
    calls: Vec<String>,
    /// Calls (by prefix) that fail, each once per listed occurrence.
    fail: Vec<String>,
    /// `compose up` runs this image instead (a fixed tag in the file).
    pinned: Option<(String, String)>,
    seq: u32,
    /// `ready-for-migration` answers NOT READY this many times (the queue
    /// a worker drains), or always with `u32::MAX`.
    pending: u32,
    /// The stack has a door and frappe_docker's web tier (frontend,
    /// websocket); its containers are modelled one by one.
    door: bool,
    cs: Vec<ContainerInfo>,
    /// The frontend containers the door resolved at its last reload.
    door_targets: Vec<String>,
    /// Calls after which the door had no running frontend to send a
    /// request to: a failed request for a user.
    outages: Vec<String>,
    /// Containers whose restart policy was set to `no`.
    no_restart: Vec<String>,
    /// Image of the container each `bench migrate` ran in.
    migrated_in: Vec<String>,
    /// App containers of another image that were running when maintenance
    /// went off (old code serving or working on a migrated database).
    mixed_at_open: Vec<String>,
    /// Each frontend's backends, resolved when it started or reloaded
    /// (nginx without a resolver, as frappe_docker's template).
    front_targets: BTreeMap<String, Vec<String>>,
    /// Releases differ in schema: a user request (maintenance off) must be
    /// served by the code of the release that migrated the database last.
    strict_schema: bool,
    /// Calls after which a user request could reach code of another schema
    /// than the database's.
    wrong_code: Vec<String>,
    /// Containers whose logs were carried into a successor.
    carried: Vec<String>,
    /// The nginx configuration file of a door or frontend container, once
    /// written (before: the one its image starts with, `default_conf`).
    confs: BTreeMap<String, String>,
    /// The door's config proxies to `frontend:8080` directly, without an
    /// upstream block (nothing to pin: it resolves by name).
    door_direct: bool,
    /// Containers sent SIGTERM that the engine still lists as running
    /// (it reports an exit ~0.3 s later), with how many more listings show
    /// them so; an exec into one fails as the engine's 409 does.
    ending: BTreeMap<String, u32>,
    /// `nginx -s reload` only signals the master: the container's new
    /// config takes effect after this many more calls (or a pause).
    reloading: BTreeMap<String, u32>,
    /// Calls after which a request could be sent to an address that
    /// vanished (a proxy still routing to a container that stopped or was
    /// removed): not refused, it waits until the connection times out.
    hangs: Vec<String>,
}

/// Where the fake's nginx keeps its one configuration file.
const CONF: &str = "/etc/nginx/conf.d/default.conf";

const DOOR_IMAGE: &str = "sha256:door";

impl Model {
    fn services(&self) -> Vec<&'static str> {
        if self.door {
            vec!["backend", "websocket", "frontend", "queue-short", "door"]
        } else {
            vec!["backend", "queue-short"]
        }
    }

    fn container(&self, svc: &str, v: &str, image_id: &str, n: usize) -> ContainerInfo {
        ContainerInfo {
            id: format!("{svc}-{v}-{}-{n}", self.seq),
            name: format!("p-{svc}-{n}"),
            service: svc.to_string(),
            image: if svc == "door" {
                "door:1".into()
            } else {
                format!("demo/erpnext:{v}")
            },
            image_id: if svc == "door" {
                DOOR_IMAGE.into()
            } else {
                image_id.into()
            },
            state: "running".into(),
        }
    }

    /// compose up: one container per service running (v, id); one that
    /// already does is kept (compose leaves a matching container alone).
    fn converge(&mut self, v: &str, id: &str) {
        let mut next = Vec::new();
        for svc in self.services() {
            let want = if svc == "door" { DOOR_IMAGE } else { id };
            match self
                .cs
                .iter()
                // A paused container is running to the engine: compose
                // leaves one of the same config as it is, paused.
                .find(|c| {
                    c.service == svc
                        && c.image_id == want
                        && (c.state == "running" || c.state == "paused")
                }) {
                Some(c) => next.push(c.clone()),
                None => {
                    let n = self.cs.iter().filter(|c| c.service == svc).count() + 1;
                    next.push(self.container(svc, v, id, n));
                }
            }
        }
        self.cs = next;
        // compose starts a frontend after the backends it depends on.
        let fresh: Vec<String> = self
            .cs
            .iter()
            .filter(|c| c.service == "frontend" && !self.front_targets.contains_key(&c.id))
            .map(|c| c.id.clone())
            .collect();
        for f in fresh {
            self.resolve_front(&f);
        }
    }

    fn resolve_front(&mut self, id: &str) {
        let backs = self.resolve(id, "backend");
        self.front_targets.insert(id.to_string(), backs);
    }

    fn resolve_door(&mut self) {
        let Some(door) = self.cs.iter().find(|c| c.service == "door") else {
            return;
        };
        let id = door.id.clone();
        self.door_targets = self.resolve(&id, "frontend");
    }

    /// The config a container's nginx starts with: frappe_docker's
    /// template as its entrypoint writes it, or the door's.
    fn default_conf(&self, id: &str) -> String {
        let svc = self
            .cs
            .iter()
            .find(|c| c.id == id)
            .map(|c| c.service.as_str());
        match svc {
            Some("door") if self.door_direct => {
                "server {\n\tlocation / { proxy_pass http://frontend:8080; }\n}\n".into()
            }
            Some("door") => "upstream frontend-server {\n\tserver frontend:8080 fail_timeout=0;\n}\n".into(),
            _ => "upstream backend-server {\n\tserver backend:8000 fail_timeout=0;\n}\nupstream socketio-server {\n\tserver websocket:9000 fail_timeout=0;\n}\n".into(),
        }
    }

    fn conf(&self, id: &str) -> String {
        self.confs
            .get(id)
            .cloned()
            .unwrap_or_else(|| self.default_conf(id))
    }

    /// What nginx in `id` sends `service`'s requests to, as it would
    /// resolve its config now: servers by address are those containers
    /// (running or not: nginx cannot know), a name is every running
    /// container of the service (Docker's DNS). Backups are not counted.
    fn resolve(&self, id: &str, service: &str) -> Vec<String> {
        let conf = self.conf(id);
        if conf.contains(&format!("proxy_pass http://{service}:")) {
            return self.running_ids(service);
        }
        let mut out = Vec::new();
        for line in conf.lines() {
            let Some(rest) = line.trim().strip_prefix("server ") else {
                continue;
            };
            let body = rest
                .split('#')
                .next()
                .unwrap_or("")
                .trim()
                .trim_end_matches(';');
            let mut words = body.split_whitespace();
            let Some(addr) = words.next() else { continue };
            if words.any(|w| w == "backup") {
                continue;
            }
            let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
            match host.strip_prefix("ip-of-") {
                Some(c) if c.starts_with(&format!("{service}-")) => out.push(c.to_string()),
                Some(_) => {}
                None if host == service => out.extend(self.running_ids(service)),
                None => {}
            }
        }
        out
    }

    /// Time moves on by one call (or a pause, `all`): reloads that were
    /// signalled take effect when their count runs out. What a request
    /// would meet is checked first, in the state before.
    fn tick(&mut self, next: &str, all: bool) {
        if self.reloading.is_empty() {
            return;
        }
        self.check_door(&format!("before {next}"));
        let due: Vec<String> = self
            .reloading
            .iter_mut()
            .filter_map(|(id, left)| {
                *left = if all { 0 } else { left.saturating_sub(1) };
                (*left == 0).then(|| id.clone())
            })
            .collect();
        for id in due {
            self.reloading.remove(&id);
            match self
                .cs
                .iter()
                .find(|c| c.id == id)
                .map(|c| c.service.clone())
            {
                Some(s) if s == "door" => self.resolve_door(),
                Some(_) => self.resolve_front(&id),
                None => {}
            }
        }
    }

    /// Web containers a request through the door can reach now: the
    /// frontends it sends to, and the backends and websockets they do.
    fn reachable(&self) -> Vec<String> {
        let mut out = self.door_targets.clone();
        for f in &self.door_targets {
            out.extend(self.front_targets.get(f).cloned().unwrap_or_default());
            out.extend(self.resolve(f, "websocket"));
        }
        out
    }

    fn running_ids(&self, service: &str) -> Vec<String> {
        self.cs
            .iter()
            .filter(|c| c.service == service && c.state == "running")
            .map(|c| c.id.clone())
            .collect()
    }

    /// The schema the database has now: the release that migrated it last.
    fn schema(&self) -> String {
        let last = self.db.last().cloned().unwrap_or_default();
        format!("sha256:{}", last.trim_start_matches("patches-of-"))
    }

    /// A request through the door now: does a frontend it knows run?
    fn check_door(&mut self, after: &str) {
        if !self.door || self.door_targets.is_empty() {
            return;
        }
        let live: Vec<String> = self
            .cs
            .iter()
            .filter(|c| self.door_targets.contains(&c.id) && c.state == "running")
            .map(|c| c.id.clone())
            .collect();
        if live.is_empty() {
            self.outages.push(after.to_string());
            return;
        }
        let running = |id: &String| self.cs.iter().any(|c| &c.id == id && c.state == "running");
        // One told to stop refuses new connections (the proxy tries the
        // next server), though the engine still lists it as running.
        let answers = |id: &String| running(id) && !self.ending.contains_key(id);
        let mut hangs: Vec<String> = self
            .door_targets
            .iter()
            .filter(|t| !running(t))
            .map(|t| format!("{after}: door -> {t}"))
            .collect();
        for f in &live {
            for b in self.front_targets.get(f).into_iter().flatten() {
                if !running(b) {
                    hangs.push(format!("{after}: {f} -> {b}"));
                }
            }
        }
        self.hangs.extend(hangs);
        // Through each live frontend, the backends its nginx knows that
        // answer: none is a 502.
        let reachable: Vec<ContainerInfo> = self
            .cs
            .iter()
            .filter(|c| answers(&c.id))
            .filter(|c| {
                live.iter().any(|f| {
                    self.front_targets
                        .get(f)
                        .is_some_and(|bs| bs.contains(&c.id))
                })
            })
            .cloned()
            .collect();
        if reachable.is_empty() {
            self.outages.push(format!("{after}: no backend"));
        }
        if self.strict_schema && !self.maintenance {
            let schema = self.schema();
            for b in reachable.iter().filter(|b| b.image_id != schema) {
                self.wrong_code.push(format!("{after}: {}", b.id));
            }
        }
    }
}

struct Fake(Mutex<Model>);

impl Fake {
    fn new() -> Fake {
        let mut m = Model::default();
        for v in ["1.0.0", "2.0.0"] {
            m.images.insert(v.into(), format!("sha256:{v}"));
        }
        Fake(Mutex::new(m))
    }

    fn running(self, v: &str) -> Fake {
        {
            let mut m = self.0.lock().unwrap();
            m.running
                .insert("p".into(), (v.into(), format!("sha256:{v}")));
            m.db.push(format!("patches-of-{v}"));
            m.converge(v, &format!("sha256:{v}"));
            m.resolve_door();
        }
        self
    }

    /// Its releases differ in schema (a migrating release).
    fn strict(self) -> Fake {
        self.0.lock().unwrap().strict_schema = true;
        self
    }

    /// A stack with a door in front of its frontend.
    fn with_door(self) -> Fake {
        self.0.lock().unwrap().door = true;
        self
    }

    fn fail(self, prefix: &str) -> Fake {
        self.0.lock().unwrap().fail.push(prefix.into());
        self
    }

    fn m(&self) -> std::sync::MutexGuard<'_, Model> {
        self.0.lock().unwrap()
    }

    /// Record a call; Err if it is scripted to fail.
    fn call(&self, what: String) -> Result<()> {
        let mut m = self.m();
        m.tick(&what, false);
        m.calls.push(what.clone());
        if let Some(i) = m.fail.iter().position(|f| what.starts_with(f.as_str())) {
            m.fail.remove(i);
            return Err(Error::failed(format!("scripted failure of `{what}`")));
        }
        Ok(())
    }
}

impl World for Fake {
    async fn containers(&self, project: &str) -> Result<Vec<ContainerInfo>> {
        self.call(format!("containers {project}"))?;
        let mut m = self.m();
        // The engine's report of an exit lags the signal.
        let done: Vec<String> = m
            .ending
            .iter_mut()
            .filter_map(|(id, left)| {
                *left = left.saturating_sub(1);
                (*left == 0).then(|| id.clone())
            })
            .collect();
        for id in done {
            m.ending.remove(&id);
            if let Some(c) = m.cs.iter_mut().find(|c| c.id == id) {
                c.state = "exited".into();
            }
        }
        Ok(if project == "p" { m.cs.clone() } else { vec![] })
    }

    async fn exec(
        &self,
        _container: &str,
        cmd: &[String],
        _stdin: Option<&crate::secret::Secret>,
        on_line: &mut (dyn FnMut(&str) + Send),
    ) -> Result<RunOutput> {
        let line = cmd.join(" ");
        if self.m().ending.contains_key(_container) {
            self.call(format!("exec {line} in an ending container"))?;
            return Err(Error::failed(format!(
                "exec `{line}`: container {_container} is not running (HTTP 409)"
            )));
        }
        if self
            .m()
            .cs
            .iter()
            .any(|c| c.id == _container && c.state == "paused")
        {
            self.call(format!("exec {line} in a paused container"))?;
            return Err(Error::failed(format!(
                "exec `{line}`: container {_container} is paused (HTTP 409)"
            )));
        }
        if cmd[0] != "bench" {
            let svc = self
                .m()
                .cs
                .iter()
                .find(|c| c.id == _container)
                .map(|c| c.service.clone())
                .unwrap_or_default();
            self.call(format!("exec {svc} {line}"))?;
            let mut m = self.m();
            match line.as_str() {
                "nginx -s quit" => {
                    // `restart: unless-stopped` starts a container whose
                    // process exited by itself again: a frontend that
                    // answers requests it will not finish once removed.
                    if !m.no_restart.iter().any(|i| i == _container) {
                        m.outages.push(format!("{_container} restarted after quit"));
                    }
                    if let Some(c) = m.cs.iter_mut().find(|c| c.id == _container) {
                        c.state = "exited".into();
                    }
                }
                "nginx -s reload" => {
                    m.reloading.insert(_container.to_string(), 2);
                }
                "nginx -T" if svc == "frontend" && m.unrendered > 0 => {
                    m.unrendered -= 1;
                    return Ok(RunOutput {
                        exit_code: 1,
                        output: format!("nginx: [emerg] open() \"{CONF}\" failed (2: No such file or directory)"),
                    });
                }
                "nginx -T" => {
                    // nginx -T: the test's messages, then each file.
                    let output = format!(
                        "nginx: configuration file /etc/nginx/nginx.conf test is successful\n# configuration file /etc/nginx/nginx.conf:\nhttp {{ include conf.d/*.conf; }}\n\n# configuration file {CONF}:\n{}",
                        m.conf(_container)
                    );
                    return Ok(RunOutput {
                        exit_code: 0,
                        output,
                    });
                }
                _ => {}
            }
            m.check_door(&format!("exec {svc} {line}"));
            return Ok(RunOutput {
                exit_code: 0,
                output: String::new(),
            });
        }
        self.call(format!("bench {}", cmd[3..].join(" ")))?;
        let mut m = self.m();
        // The code that runs is the container's: a migrating switch runs
        // bench in the new backend while the old release is still "up".
        let image =
            m.cs.iter()
                .find(|c| c.id == _container)
                .map(|c| c.image_id.clone());
        let version = match &image {
            Some(i) => i.trim_start_matches("sha256:").to_string(),
            None => m.running.get("p").map(|r| r.0.clone()).unwrap_or_default(),
        };
        let (code, out) = match &cmd[3..] {
            [a, b] if a == "set-maintenance-mode" => {
                m.maintenance = b == "on";
                if b == "off" {
                    let latest = m.migrated_in.last().cloned().unwrap_or_default();
                    // Old code that can run on the migrated schema: a worker
                    // or scheduler (they work on their own), or a web
                    // container a request through the door can reach.
                    let reachable = m.reachable();
                    let web = ["frontend", "backend", "websocket"];
                    let mixed: Vec<String> = m
                        .cs
                        .iter()
                        .filter(|c| c.state == "running" && c.service != "door")
                        // One told to stop (SIGTERM) takes no job or request
                        // any more, though the engine still lists it.
                        .filter(|c| !m.ending.contains_key(&c.id))
                        .filter(|c| !latest.is_empty() && c.image_id != latest)
                        .filter(|c| !web.contains(&c.service.as_str()) || reachable.contains(&c.id))
                        .map(|c| c.id.clone())
                        .collect();
                    m.mixed_at_open.extend(mixed);
                    m.check_door("maintenance off");
                }
                (0, String::new())
            }
            // frappe/commands/scheduler.py `ready-for-migration`.
            [a] if a == "ready-for-migration" && m.pending > 0 => {
                if m.pending != u32::MAX {
                    m.pending -= 1;
                }
                (
                    1,
                    format!(
                        "NOT READY for migration: site {} has pending background jobs",
                        cmd[2]
                    ),
                )
            }
            [a] if a == "ready-for-migration" => (
                0,
                format!(
                    "READY for migration: site {} does not have any background jobs",
                    cmd[2]
                ),
            ),
            [a] if a == "backup" => {
                m.seq += 1;
                let path = format!(
                    "./{s}/private/backups/{}-database.sql.gz",
                    m.seq,
                    s = cmd[2]
                );
                let db = m.db.clone();
                m.backups.insert(path.clone(), db);
                (
                    0,
                    format!(
                        "Backup Summary for {s} at now\nDatabase: {path} 1.1KiB\n",
                        s = cmd[2]
                    ),
                )
            }
            [a] if a == "migrate" => {
                m.db.push(format!("patches-of-{version}"));
                m.migrated_in.push(format!("sha256:{version}"));
                (0, format!("Migrating {}", cmd[2]))
            }
            [a, p] if a == "restore" => match m.backups.get(p).cloned() {
                Some(db) => {
                    m.db = db;
                    (0, String::new())
                }
                None => (1, format!("no backup {p}")),
            },
            _ => (2, format!("unknown: {line}")),
        };
        drop(m);
        on_line(&out);
        Ok(RunOutput {
            exit_code: code,
            output: out,
        })
    }

    async fn compose(&self, call: &ComposeCall, env: &BTreeMap<String, String>) -> Result<()> {
        let v = env.get("CUSTOM_TAG").cloned().unwrap_or_default();
        let (verb, project) = match call {
            ComposeCall::Up(t) => ("up", &t.project),
            ComposeCall::Replace(t) => ("replace", &t.project),
            ComposeCall::Down(t) => ("down", &t.project),
            ComposeCall::Beside(t, _) => ("beside", &t.project),
        };
        let what = match call {
            ComposeCall::Beside(_, scale) => {
                let svcs: Vec<&str> = scale.iter().map(|(s, _)| s.as_str()).collect();
                format!(" {}", svcs.join(","))
            }
            _ => String::new(),
        };
        self.call(format!("compose {verb} {v}{what}"))?;
        let mut m = self.m();
        if let ComposeCall::Beside(_, scale) = call {
            let id = m.images[&v].clone();
            for (svc, n) in scale {
                let have = m.cs.iter().filter(|c| &c.service == svc).count();
                for k in have..*n {
                    let c = m.container(svc, &v, &id, k + 1);
                    if svc == "frontend" {
                        m.cs.push(c.clone());
                        m.resolve_front(&c.id);
                    } else {
                        m.cs.push(c);
                    }
                }
            }
            m.check_door(&format!("compose beside {v}"));
            return Ok(());
        }
        m.seq += 1;
        if verb == "down" {
            m.running.remove(project);
            m.cs.clear();
        } else {
            let run = match &m.pinned {
                Some(p) => p.clone(),
                None => (v.clone(), m.images[&v].clone()),
            };
            m.running.insert(project.clone(), run.clone());
            m.converge(&run.0, &run.1);
        }
        m.check_door(&format!("compose {verb} {v}"));
        Ok(())
    }

    async fn service_states(
        &self,
        project: &str,
        services: &[String],
    ) -> Result<Vec<crate::adapters::engine::Oneshot>> {
        self.call(format!("oneshots {project}"))?;
        let up = self.m().running.contains_key(project);
        Ok(services
            .iter()
            .filter(|_| up)
            .map(|s| crate::adapters::engine::Oneshot {
                name: format!("{project}-{s}-1"),
                service: s.clone(),
                running: false,
                exit_code: 0,
            })
            .collect())
    }

    async fn anonymous_volumes(&self, _c: &[String]) -> Result<Vec<String>> {
        Ok(vec![])
    }

    async fn remove_container(&self, id: &str) -> Result<()> {
        self.call(format!("remove {id}"))?;
        let mut m = self.m();
        m.cs.retain(|c| c.id != id);
        m.check_door(&format!("remove {id}"));
        Ok(())
    }

    async fn no_restart(&self, id: &str) -> Result<()> {
        self.call(format!("no-restart {id}"))?;
        self.m().no_restart.push(id.to_string());
        Ok(())
    }

    async fn stop_container(&self, id: &str, _grace: Duration) -> Result<()> {
        self.call(format!("stop {id}"))?;
        let mut m = self.m();
        if let Some(c) = m.cs.iter_mut().find(|c| c.id == id) {
            c.state = "exited".into();
        }
        m.check_door(&format!("stop {id}"));
        Ok(())
    }

    async fn pause(&self, id: &str, pause: bool) -> Result<()> {
        let what = if pause { "pause" } else { "unpause" };
        self.call(format!("{what} {id}"))?;
        let mut m = self.m();
        let latest = m.migrated_in.last().cloned().unwrap_or_default();
        let open = !m.maintenance;
        let Some(c) = m.cs.iter_mut().find(|c| c.id == id) else {
            return Err(Error::failed(format!("no such container: {id}")));
        };
        match (pause, c.state.as_str()) {
            (true, "running") => c.state = "paused".into(),
            (true, s) => {
                return Err(Error::failed(format!(
                    "pause {id}: container is {s} (HTTP 409)"
                )))
            }
            (false, "paused") => {
                c.state = "running".into();
                // Thawed old code with users let in on a migrated database.
                if open && !latest.is_empty() && c.image_id != latest {
                    let id = c.id.clone();
                    m.mixed_at_open.push(id);
                }
            }
            // The engine answers 409 "not paused"; the adapter takes it.
            (false, _) => {}
        }
        Ok(())
    }

    async fn signal(&self, id: &str, signal: &str) -> Result<()> {
        self.call(format!("signal {signal} {id}"))?;
        let mut m = self.m();
        // The engine thaws a paused container it sends its stop signal;
        // the signal is handled first (daemon/kill.go).
        if let Some(c) = m.cs.iter_mut().find(|c| c.id == id && c.state == "paused") {
            c.state = "running".into();
        }
        // A drained worker or scheduler ends on SIGTERM, its stop signal:
        // the engine restarts no container it sent that (as `docker stop`).
        // It takes no request and no job from here on, but the engine
        // lists it as running for two more listings.
        m.ending.insert(id.to_string(), 2);
        m.check_door(&format!("signal {id}"));
        Ok(())
    }

    async fn address(&self, id: &str) -> Result<Option<String>> {
        Ok(Some(format!("ip-of-{id}")))
    }

    async fn copy_dist(&self, from: &str, to: &str, _dir: &str) -> Result<usize> {
        self.call(format!("copy-dist {from} {to}"))?;
        Ok(1)
    }

    async fn carry_files(&self, from: &str, to: &str, _dir: &str, _into: &str) -> Result<usize> {
        self.call(format!("carry {from} {to}"))?;
        self.m().carried.push(from.to_string());
        Ok(1)
    }

    async fn remove_volume(&self, name: &str) -> Result<()> {
        self.call(format!("remove volume {name}"))
    }

    async fn read_file(
        &self,
        container: &str,
        path: &str,
    ) -> Result<Option<crate::adapters::engine::ContainerFile>> {
        let m = self.m();
        Ok(
            (path == CONF && m.cs.iter().any(|c| c.id == container)).then(|| {
                crate::adapters::engine::ContainerFile {
                    text: m.conf(container),
                    mode: 0o644,
                    uid: 1000,
                    gid: 1000,
                }
            }),
        )
    }

    async fn write_file(
        &self,
        container: &str,
        path: &str,
        file: &crate::adapters::engine::ContainerFile,
    ) -> Result<()> {
        let svc = self
            .m()
            .cs
            .iter()
            .find(|c| c.id == container)
            .map(|c| c.service.clone())
            .unwrap_or_default();
        self.call(format!("write {svc} {path}"))?;
        // The container's user owns its config: a rewrite keeps it so.
        assert_eq!((file.uid, file.gid, file.mode), (1000, 1000, 0o644));
        self.m()
            .confs
            .insert(container.to_string(), file.text.clone());
        Ok(())
    }

    async fn wait_healthy(&self, url: &str, _t: Duration, gate: Gate) -> Result<Duration> {
        if let Some(rest) = url.strip_prefix("http://ip-of-") {
            // A direct probe of one container: "probe <service>".
            let id = rest.split(':').next().unwrap_or_default();
            let svc = self
                .m()
                .cs
                .iter()
                .find(|c| c.id == id)
                .map(|c| c.service.clone())
                .unwrap_or_default();
            self.call(format!("probe {svc}"))?;
            return Ok(Duration::from_millis(5));
        }
        let g = match gate {
            Gate::Sealed => "sealed",
            Gate::Open => "open",
        };
        self.call(format!("health {g}"))?;
        let m = self.m();
        let up = m.running.contains_key("p");
        let ok = match gate {
            Gate::Sealed => up,
            Gate::Open => up && !m.maintenance,
        };
        if ok {
            Ok(Duration::from_millis(5))
        } else {
            Err(Error::failed(format!("health {g}: no answer")))
        }
    }

    async fn sleep(&self, _d: Duration) {
        // Time passes: every pending reload has taken effect.
        self.m().tick("a pause", true);
    }

    fn snapshot(&self, _from: &Path, _to: &Path) -> Result<()> {
        self.call("snapshot".into())
    }
}

/// Records in memory; optionally failing from the nth save on.
#[derive(Default)]
struct Mem {
    saved: Mutex<Vec<Deployment>>,
    fail_from: Option<usize>,
}

impl Records for Mem {
    fn save(&self, d: &Deployment) -> Result<()> {
        let mut s = self.saved.lock().unwrap();
        if self.fail_from.is_some_and(|n| s.len() >= n) {
            return Err(Error::failed("No space left on device (os error 28)"));
        }
        s.push(d.clone());
        Ok(())
    }
}

#[derive(Default)]
struct Lines(Vec<String>);

impl Sink for Lines {
    fn step(&mut self, i: usize, n: usize, s: &str) {
        self.0.push(format!("[{i}/{n}] {s}"));
    }
    fn step_done(&mut self, _s: f64, _ok: bool) {}
    fn line(&mut self, t: &str) {
        self.0.push(t.to_string());
    }
    fn note(&mut self, t: &str) {
        self.0.push(t.to_string());
    }
}

fn stack(v: &str) -> StackSpec {
    let mut env = BTreeMap::new();
    env.insert("CUSTOM_TAG".to_string(), v.to_string());
    env.insert("CUSTOM_IMAGE".to_string(), "demo/erpnext".to_string());
    StackSpec {
        version: v.into(),
        image_id: format!("sha256:{v}"),
        target: Target {
            project: "p".into(),
            files: vec![format!("/s/{v}.yaml").into()],
            project_dir: "/p".into(),
            empty_env_file: "/s/compose.env".into(),
        },
        env,
    }
}

fn upgrade() -> DeployPlan {
    plan(DeployRequest {
        id: "d2".into(),
        action: Action::Deploy,
        version: "2.0.0".into(),
        image_id: "sha256:2.0.0".into(),
        new: stack("2.0.0"),
        compose_sources: vec!["/p/compose.yaml".into()],
        previous: Some(stack("1.0.0")),
        previous_running: true,
        sites: Sites::parse("a.local"),
        backend_service: "backend".into(),
        health_url: "http://x/ping".into(),
        drain_timeout_secs: 1,
        drain_on_timeout: OnDrainTimeout::Abort,
        health_timeout_secs: 1,
        migrate: true,
        migrate_reason: String::new(),
        restore: vec![],
        full_down: false,
        oneshots: vec!["create-site".into()],
        door: None,
        web: None,
    })
}

fn first_deploy() -> DeployPlan {
    let mut p = upgrade();
    p = plan(DeployRequest {
        previous: None,
        previous_running: false,
        ..request_of(&p)
    });
    p
}

fn request_of(p: &DeployPlan) -> DeployRequest {
    DeployRequest {
        id: p.id.clone(),
        action: p.action,
        version: p.version.clone(),
        image_id: p.image_id.clone(),
        new: p.new.clone(),
        compose_sources: p.compose_sources.clone(),
        previous: p.previous.clone(),
        previous_running: p.previous_running,
        sites: p.sites.clone(),
        backend_service: p.backend_service.clone(),
        health_url: "http://x/ping".into(),
        drain_timeout_secs: 1,
        drain_on_timeout: p
            .steps
            .iter()
            .find_map(|s| match s.step {
                Step::Drain { on_timeout, .. } => Some(on_timeout),
                _ => None,
            })
            .unwrap_or_default(),
        health_timeout_secs: 1,
        migrate: true,
        migrate_reason: String::new(),
        restore: vec![],
        full_down: false,
        oneshots: vec!["create-site".into()],
        door: None,
        web: None,
    }
}

fn run(world: &Fake, records: &Mem, plan: &DeployPlan) -> (Finished, Vec<String>) {
    let mut sink = Lines::default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let f = rt.block_on(async {
        Executor {
            world,
            records,
            sink: &mut sink,
            interrupted: Arc::new(AtomicBool::new(false)),
            db_root_password: None,
            sites: None,
            listing: Default::default(),
        }
        .run(plan)
        .await
    });
    (f, sink.0)
}

fn code(f: &Finished) -> i32 {
    f.error.as_ref().map(|e| e.exit_code()).unwrap_or(0)
}

#[test]
fn an_upgrade_succeeds_and_runs_the_new_image_migrated_once() {
    let w = Fake::new().running("1.0.0");
    let r = Mem::default();
    let (f, _) = run(&w, &r, &upgrade());
    assert_eq!(code(&f), 0, "{:?}", f.error.map(|e| e.to_string()));
    let m = w.m();
    assert_eq!(m.running["p"].0, "2.0.0");
    assert!(!m.maintenance);
    assert_eq!(m.db, vec!["patches-of-1.0.0", "patches-of-2.0.0"]);
    assert_eq!(f.record.result, Outcome::Succeeded);
    assert_eq!(f.record.backups.len(), 1);
    // maintenance stays on until the sealed gate passed
    let calls: Vec<&str> = m.calls.iter().map(|s| s.as_str()).collect();
    let sealed = calls.iter().position(|c| *c == "health sealed").unwrap();
    let off = calls
        .iter()
        .position(|c| *c == "bench set-maintenance-mode off")
        .unwrap();
    assert!(sealed < off);
    // the record was saved before anything changed, and at the end
    let saved = r.saved.lock().unwrap();
    assert_eq!(saved[0].result, Outcome::Running);
    assert_eq!(saved.last().unwrap().result, Outcome::Succeeded);
}

/// The calls that each step of the upgrade makes first, to fail it.
fn failing_call(step: &str) -> &'static str {
    match step {
        "snapshot" => "snapshot",
        "maintenance-on" => "bench set-maintenance-mode on",
        "drain" => "bench ready-for-migration",
        "backup" => "bench backup",
        "replace" => "compose replace 2.0.0",
        "up" => "compose up 2.0.0",
        "verify-image" => "VERIFY",
        "wait-oneshots" => "oneshots p",
        "migrate" => "bench migrate",
        "health-gate-sealed" => "health sealed",
        "maintenance-off" => "bench set-maintenance-mode off",
        "health-gate" => "health open",
        other => panic!("no failing call for {other}"),
    }
}

#[test]
fn every_step_of_an_upgrade_that_fails_leaves_a_serving_consistent_stack() {
    let p = upgrade();
    let mut cases = 0;
    for (i, s) in p.steps.iter().enumerate() {
        let name = s.step.name();
        let w = if name == "verify-image" {
            let w = Fake::new().running("1.0.0");
            w.m().pinned = Some(("1.0.0".into(), "sha256:1.0.0".into()));
            w
        } else {
            Fake::new().running("1.0.0").fail(failing_call(name))
        };
        let r = Mem::default();
        let (f, lines) = run(&w, &r, &p);
        let m = w.m();
        let ctx = format!(
            "step {i} {name}: {:?}\n{}",
            f.error.as_ref().map(|e| e.to_string()),
            lines.join("\n")
        );
        // Whatever failed: 1.0.0 serves, maintenance is off, nothing half-up.
        assert_eq!(
            m.running.get("p").map(|r| r.0.as_str()),
            Some("1.0.0"),
            "{ctx}"
        );
        assert_eq!(m.running["p"].1, "sha256:1.0.0", "{ctx}");
        assert!(!m.maintenance, "{ctx}");
        assert!(!f.record.progress.maintenance_on, "{ctx}");
        let touched = s
            .on_failure
            .steps
            .iter()
            .any(|x| matches!(x, RecoveryStep::TakeDown { .. }));
        let expected_code = if touched { 3 } else { 1 };
        assert_eq!(code(&f), expected_code, "{ctx}");
        assert_eq!(
            f.record.result,
            if touched {
                Outcome::Recovered
            } else {
                Outcome::Aborted
            },
            "{ctx}"
        );
        // The database: restored after a migrate while sealed; after users
        // were let in, not restored, and said so.
        let migrated = m.db.contains(&"patches-of-2.0.0".to_string());
        match name {
            // From maintenance off on, users may have written: no silent restore.
            "maintenance-off" | "health-gate" => {
                assert!(migrated, "{ctx}");
                assert!(
                    f.record
                        .data_note
                        .as_deref()
                        .unwrap_or("")
                        .contains("--restore-backup d2"),
                    "{ctx}"
                );
                let msg = f.error.as_ref().unwrap().to_string();
                assert!(msg.contains("database NOT restored"), "{ctx}");
            }
            _ => {
                assert!(!migrated, "{ctx}");
                assert!(f.record.data_note.is_none(), "{ctx}");
            }
        }
        let rec = r.saved.lock().unwrap();
        assert_eq!(
            rec.last().unwrap().result,
            f.record.result,
            "{ctx}: the last save is the final record"
        );
        cases += 1;
    }
    assert_eq!(cases, p.steps.len());
}

#[test]
fn every_step_of_a_first_deploy_that_fails_takes_the_stack_down() {
    let p = first_deploy();
    for s in &p.steps {
        let name = s.step.name();
        if name == "verify-image" {
            continue;
        }
        let w = Fake::new().fail(failing_call(name));
        let r = Mem::default();
        let (f, _) = run(&w, &r, &p);
        let m = w.m();
        assert!(!m.running.contains_key("p"), "{name}: left up");
        assert_eq!(code(&f), 1, "{name}");
        assert_eq!(f.record.result, Outcome::Aborted, "{name}");
        let hint = f.error.as_ref().unwrap().hint().unwrap_or_default();
        if name == "snapshot" {
            assert_eq!(hint, "nothing was changed", "{name}");
        } else {
            assert!(hint.contains("taken down"), "{name}: {hint}");
        }
    }
}

#[test]
fn when_a_recovery_step_fails_too_the_rest_is_said_as_commands() {
    // migrate fails, then bringing 1.0.0 back fails: exit 4, left to do names
    // the compose up of 1.0.0, the restore and maintenance off.
    let w = Fake::new()
        .running("1.0.0")
        .fail("bench migrate")
        .fail("compose up 1.0.0");
    let r = Mem::default();
    let (f, _) = run(&w, &r, &upgrade());
    assert_eq!(code(&f), 4);
    assert_eq!(f.record.result, Outcome::Fatal);
    let left = f.record.left.unwrap();
    assert!(left.starts_with("bring 1.0.0 back up failed"), "{left}");
    assert!(left.contains("CUSTOM_TAG=1.0.0"), "{left}");
    assert!(
        left.contains("restore ./a.local/private/backups/"),
        "{left}"
    );
    assert!(left.contains("set-maintenance-mode off"), "{left}");
    assert!(left.contains("de-build recover"), "{left}");
    // maintenance is still on and the record says so
    assert!(w.m().maintenance);
    assert!(f.record.progress.maintenance_on);
}

#[test]
fn maintenance_that_cannot_be_turned_off_is_not_called_off() {
    // backup fails, then maintenance off fails: exit 4, never "maintenance is off again".
    let w = Fake::new()
        .running("1.0.0")
        .fail("bench backup")
        .fail("bench set-maintenance-mode off");
    let r = Mem::default();
    let (f, _) = run(&w, &r, &upgrade());
    assert_eq!(code(&f), 4);
    let e = f.error.unwrap();
    assert!(!e.to_string().contains("off again"));
    assert!(e.hint().unwrap().contains("set-maintenance-mode off"));
    assert!(w.m().maintenance);
}

#[test]
fn a_record_that_cannot_be_written_stops_before_anything_changes() {
    let w = Fake::new().running("1.0.0");
    let r = Mem {
        fail_from: Some(0),
        ..Default::default()
    };
    let (f, _) = run(&w, &r, &upgrade());
    assert_eq!(code(&f), 1);
    assert!(f
        .error
        .unwrap()
        .hint()
        .unwrap()
        .contains("nothing was changed"));
    assert!(w.m().calls.is_empty());
}

#[test]
fn a_record_write_failing_mid_deploy_recovers() {
    // The 4th save (after maintenance on) fails: the deployment stops and
    // turns maintenance off again; it never claims success.
    let w = Fake::new().running("1.0.0");
    let r = Mem {
        fail_from: Some(4),
        ..Default::default()
    };
    let (f, _) = run(&w, &r, &upgrade());
    assert_ne!(code(&f), 0);
    assert!(f
        .error
        .unwrap()
        .to_string()
        .contains("record could not be written"));
    let m = w.m();
    assert!(!m.maintenance);
    assert_eq!(m.running["p"].0, "1.0.0");
}

#[test]
fn a_signal_stops_after_the_step_and_recovers() {
    let w = Fake::new().running("1.0.0");
    let r = Mem::default();
    let p = upgrade();
    let flag = Arc::new(AtomicBool::new(false));
    let mut sink = Lines::default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    // Raise the flag once the replace has run: the next step does not start.
    struct Raise<'a>(&'a Fake, Arc<AtomicBool>);
    impl World for Raise<'_> {
        async fn containers(&self, p: &str) -> Result<Vec<ContainerInfo>> {
            self.0.containers(p).await
        }
        async fn exec(
            &self,
            c: &str,
            cmd: &[String],
            i: Option<&crate::secret::Secret>,
            l: &mut (dyn FnMut(&str) + Send),
        ) -> Result<RunOutput> {
            self.0.exec(c, cmd, i, l).await
        }
        async fn service_states(
            &self,
            p: &str,
            s: &[String],
        ) -> Result<Vec<crate::adapters::engine::Oneshot>> {
            self.0.service_states(p, s).await
        }
        async fn compose(&self, call: &ComposeCall, env: &BTreeMap<String, String>) -> Result<()> {
            let r = self.0.compose(call, env).await;
            if matches!(call, ComposeCall::Replace(_)) {
                self.1.store(true, Ordering::SeqCst);
            }
            r
        }
        async fn anonymous_volumes(&self, c: &[String]) -> Result<Vec<String>> {
            self.0.anonymous_volumes(c).await
        }
        async fn remove_container(&self, id: &str) -> Result<()> {
            self.0.remove_container(id).await
        }
        async fn remove_volume(&self, n: &str) -> Result<()> {
            self.0.remove_volume(n).await
        }
        async fn read_file(
            &self,
            c: &str,
            p: &str,
        ) -> Result<Option<crate::adapters::engine::ContainerFile>> {
            self.0.read_file(c, p).await
        }
        async fn write_file(
            &self,
            c: &str,
            p: &str,
            f: &crate::adapters::engine::ContainerFile,
        ) -> Result<()> {
            self.0.write_file(c, p, f).await
        }
        async fn no_restart(&self, id: &str) -> Result<()> {
            self.0.no_restart(id).await
        }
        async fn stop_container(&self, id: &str, g: Duration) -> Result<()> {
            self.0.stop_container(id, g).await
        }
        async fn signal(&self, id: &str, s: &str) -> Result<()> {
            self.0.signal(id, s).await
        }
        async fn pause(&self, id: &str, p: bool) -> Result<()> {
            self.0.pause(id, p).await
        }
        async fn address(&self, id: &str) -> Result<Option<String>> {
            self.0.address(id).await
        }
        async fn copy_dist(&self, a: &str, b: &str, d: &str) -> Result<usize> {
            self.0.copy_dist(a, b, d).await
        }
        async fn carry_files(&self, a: &str, b: &str, d: &str, i: &str) -> Result<usize> {
            self.0.carry_files(a, b, d, i).await
        }
        async fn wait_healthy(&self, u: &str, t: Duration, g: Gate) -> Result<Duration> {
            self.0.wait_healthy(u, t, g).await
        }
        async fn sleep(&self, _d: Duration) {}
        fn snapshot(&self, a: &Path, b: &Path) -> Result<()> {
            self.0.snapshot(a, b)
        }
    }
    let world = Raise(&w, flag.clone());
    let f = rt.block_on(async {
        Executor {
            world: &world,
            records: &r,
            sink: &mut sink,
            interrupted: flag.clone(),
            db_root_password: None,
            sites: None,
            listing: Default::default(),
        }
        .run(&p)
        .await
    });
    assert_eq!(code(&f), 3);
    assert!(f.error.unwrap().to_string().contains("interrupted"));
    let m = w.m();
    assert!(!m.calls.iter().any(|c| c == "bench migrate"));
    assert_eq!(m.running["p"].0, "1.0.0");
    assert!(!m.maintenance);
}

#[test]
fn an_interrupted_record_recovers_from_its_progress() {
    // A process killed during migrate left this record behind.
    let p = upgrade();
    let mut rec = new_record(&p);
    for s in &p.steps {
        planner::starting(&mut rec.progress, &s.step);
        if s.step.name() == "migrate" {
            break;
        }
        planner::finished(&mut rec.progress, &s.step);
        if s.step.name() == "backup" {
            rec.progress.backups.push(Backup {
                site: "a.local".into(),
                path: "./a.local/private/backups/1-database.sql.gz".into(),
            });
        }
    }
    let (_, r) = recovery_of(&rec).unwrap();
    assert_eq!(r.outcome, Outcome::Recovered);
    assert!(r
        .steps
        .iter()
        .any(|s| matches!(s, RecoveryStep::Restore { .. })));
    assert!(matches!(
        r.steps.last(),
        Some(RecoveryStep::MaintenanceOff { .. })
    ));
}

/// A process killed in any step, before or after that step took effect:
/// `recover` (from the record alone) leaves 1.0.0 serving, maintenance off,
/// and the database restored exactly when no user could have written.
#[test]
fn a_deploy_killed_in_any_step_is_recovered_from_its_record() {
    let p = upgrade();
    let cases = killed_in_each_step(
        &p,
        || Fake::new().running("1.0.0"),
        |m, rec, err, ctx| {
            assert_eq!(
                m.running.get("p").map(|r| r.0.as_str()),
                Some("1.0.0"),
                "{ctx}"
            );
            assert!(!m.maintenance, "{ctx}");
            let migrated = m.db.contains(&"patches-of-2.0.0".to_string());
            let users_in = rec.progress.users_let_in;
            assert_eq!(migrated, users_in && rec.progress.migrate_started, "{ctx}");
            assert!(matches!(err.exit_code(), 1 | 3), "{ctx}: {err}");
        },
    );
    assert_eq!(cases, 2 * p.steps.len());
}

/// Run `p` in a fresh fake from `fake` up to each step in turn, stop there
/// as a kill would (before the step took effect, or after), then recover
/// from what the record on disk says; `check` judges the world, the record
/// as it was at the kill and the recovery's error. How many cases ran.
fn killed_in_each_step(
    p: &DeployPlan,
    fake: impl Fn() -> Fake,
    check: impl Fn(&Model, &Deployment, &Error, &str),
) -> usize {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut cases = 0;
    for k in 0..p.steps.len() {
        for took_effect in [false, true] {
            let w = fake();
            let r = Mem::default();
            let mut sink = Lines::default();
            let mut rec = new_record(p);
            let name = p.steps[k].step.name();
            let ctx = format!("killed in step {k} {name} (took effect: {took_effect})");
            let err = rt.block_on(async {
                let mut ex = Executor {
                    world: &w,
                    records: &r,
                    sink: &mut sink,
                    interrupted: Arc::new(AtomicBool::new(false)),
                    db_root_password: None,
                    sites: None,
                    listing: Default::default(),
                };
                for (i, s) in p.steps.iter().enumerate() {
                    planner::starting(&mut rec.progress, &s.step);
                    if i == k {
                        if took_effect {
                            ex.step(p, &s.step, &mut rec).await.unwrap();
                        }
                        break;
                    }
                    ex.step(p, &s.step, &mut rec).await.unwrap();
                    planner::finished(&mut rec.progress, &s.step);
                }
                // What the record on disk says after the kill:
                let mut on_disk: Deployment =
                    serde_json::from_str(&serde_json::to_string(&rec).unwrap()).unwrap();
                let (plan, recovery) = recovery_of(&on_disk).unwrap();
                ex.recover(&plan, &mut on_disk, recovery, Error::failed("killed"))
                    .await
            });
            check(&w.m(), &rec, &err, &ctx);
            cases += 1;
        }
    }
    cases
}

#[test]
fn the_drain_waits_while_jobs_are_queued() {
    let world = Fake::new().running("1.0.0");
    world.m().pending = 3;
    let records = Mem::default();
    let p = plan(DeployRequest {
        drain_timeout_secs: 10,
        ..request_of(&upgrade())
    });
    let (f, _) = run(&world, &records, &p);
    assert_eq!(code(&f), 0, "{:?}", f.error);
    let calls = world.m().calls.clone();
    let asked = calls
        .iter()
        .filter(|c| c.ends_with("ready-for-migration"))
        .count();
    assert_eq!(asked, 4, "three NOT READY, then READY: {calls:?}");
    let first_backup = calls.iter().position(|c| c.ends_with("backup")).unwrap();
    let last_ask = calls
        .iter()
        .rposition(|c| c.ends_with("ready-for-migration"))
        .unwrap();
    assert!(last_ask < first_backup, "the backup waits for the drain");
}

#[test]
fn a_drain_that_times_out_aborts_with_nothing_changed_by_default() {
    let world = Fake::new().running("1.0.0");
    world.m().pending = u32::MAX;
    let records = Mem::default();
    let (f, _) = run(&world, &records, &upgrade());
    // Nothing but maintenance changed, and it is off again: a plain failure.
    assert_eq!(code(&f), crate::error::EXIT_FAILURE);
    let e = f.error.unwrap();
    assert!(
        e.to_string().contains("pending background jobs after 1s"),
        "{e}"
    );
    assert!(e.to_string().contains("DE_DRAIN_ON_TIMEOUT=proceed"), "{e}");
    let m = world.m();
    assert!(!m.maintenance, "maintenance went off again");
    assert_eq!(m.running["p"].0, "1.0.0");
    assert!(!m
        .calls
        .iter()
        .any(|c| c.ends_with("backup") || c.starts_with("compose up")));
}

#[test]
fn a_drain_that_times_out_goes_on_when_told_to_and_says_so() {
    let world = Fake::new().running("1.0.0");
    world.m().pending = u32::MAX;
    let records = Mem::default();
    let p = plan(DeployRequest {
        drain_on_timeout: OnDrainTimeout::Proceed,
        ..request_of(&upgrade())
    });
    let (f, lines) = run(&world, &records, &p);
    assert_eq!(code(&f), 0, "{:?}", f.error);
    assert_eq!(world.m().running["p"].0, "2.0.0");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("a.local still had queued jobs after 1s")),
        "{lines:?}"
    );
}

fn switch_plan() -> DeployPlan {
    plan(DeployRequest {
        migrate: false,
        oneshots: vec![],
        door: Some(Door {
            service: "door".into(),
            reload: vec!["nginx".into(), "-s".into(), "reload".into()],
            frontend: "frontend".into(),
        }),
        web: Some(WebTier {
            upstream: vec!["backend".into(), "websocket".into()],
            frontend: "frontend".into(),
        }),
        ..request_of(&upgrade())
    })
}

fn versions_by_service(m: &Model) -> Vec<(String, String, String)> {
    let mut v: Vec<(String, String, String)> =
        m.cs.iter()
            .map(|c| (c.service.clone(), c.image_id.clone(), c.state.clone()))
            .collect();
    v.sort();
    v
}

#[test]
fn a_release_without_migrate_switches_beside_the_old_one_and_the_door_never_lacks_a_frontend() {
    let p = switch_plan();
    let names: Vec<&str> = p.steps.iter().map(|s| s.step.name()).collect();
    assert!(!names.contains(&"maintenance-on"), "{names:?}");
    assert!(!names.contains(&"migrate"), "{names:?}");
    let w = Fake::new().with_door().running("1.0.0");
    let door_before: Vec<String> = w
        .m()
        .cs
        .iter()
        .filter(|c| c.service == "door")
        .map(|c| c.id.clone())
        .collect();
    let r = Mem::default();
    let (f, lines) = run(&w, &r, &p);
    assert_eq!(
        code(&f),
        0,
        "{:?}\n{}",
        f.error.map(|e| e.to_string()),
        lines.join("\n")
    );
    let m = w.m();
    assert!(
        m.outages.is_empty(),
        "requests failed after {:?}",
        m.outages
    );
    // Nothing retired while a proxy still routed to it: the door and the
    // new frontends were pinned to the new containers before.
    assert!(
        m.hangs.is_empty(),
        "a proxy routed to a container that was gone: {:?}",
        m.hangs
    );
    // One container per service, every app one on 2.0.0; the door is the same container.
    let all = versions_by_service(&m);
    for (svc, image, state) in &all {
        assert_eq!(state, "running", "{all:?}");
        if svc != "door" {
            assert_eq!(image, "sha256:2.0.0", "{all:?}");
        }
    }
    assert_eq!(all.len(), 5, "{all:?}");
    let door_after: Vec<&String> =
        m.cs.iter()
            .filter(|c| c.service == "door")
            .map(|c| &c.id)
            .collect();
    assert_eq!(door_after, door_before.iter().collect::<Vec<_>>());
    assert!(!m.maintenance);
    assert_eq!(m.db, vec!["patches-of-1.0.0"], "no migrate");
    // Order: asked directly before the door heard of them; old frontends
    // quit before their backends stopped.
    let at = |what: &str| {
        m.calls
            .iter()
            .position(|c| c.starts_with(what))
            .unwrap_or_else(|| panic!("no call {what}: {:?}", m.calls))
    };
    assert!(at("probe backend") < at("probe frontend"));
    // The new frontend is probed as it will serve: pinned to the new backends.
    assert!(at("write frontend") < at("probe frontend"));
    assert!(at("probe frontend") < at("write door"));
    assert!(at("write door") < at("exec door nginx -s reload"));
    assert!(at("copy-dist") < at("exec door nginx -s reload"));
    assert!(at("exec frontend nginx -s quit") < at("stop backend-1.0.0"));
    // A frontend that quits is not restarted by its restart policy.
    assert!(at("no-restart frontend-1.0.0") < at("exec frontend nginx -s quit"));
    assert!(!m
        .calls
        .iter()
        .any(|c| c.starts_with("bench set-maintenance-mode on")));
}

/// A door whose nginx names the frontend only in `proxy_pass` has no
/// upstream to pin: the switch goes on, resolving by name, and says so;
/// the door still never lacks a frontend. (What it cannot avoid, a request
/// sent to an old frontend's address after it vanished and before the
/// reload, is what the pinned door is for.)
#[test]
fn a_door_without_an_upstream_block_is_reloaded_by_name_and_said() {
    let w = Fake::new().with_door().running("1.0.0");
    w.m().door_direct = true;
    let r = Mem::default();
    let (f, lines) = run(&w, &r, &switch_plan());
    assert_eq!(code(&f), 0, "{}", lines.join("\n"));
    let text = lines.join("\n");
    assert!(
        text.contains("names frontend in no upstream block; it resolves the frontends by name"),
        "{text}"
    );
    let m = w.m();
    assert!(m.outages.is_empty(), "{:?}", m.outages);
    assert!(
        !m.calls.iter().any(|c| c.starts_with("write door")),
        "{:?}",
        m.calls
    );
    // The frontends themselves were pinned all the same.
    assert!(
        m.calls.iter().any(|c| c.starts_with("write frontend")),
        "{:?}",
        m.calls
    );
}

#[test]
fn a_new_release_that_fails_its_direct_probe_never_takes_traffic() {
    let w = Fake::new()
        .with_door()
        .running("1.0.0")
        .fail("probe frontend");
    let r = Mem::default();
    let before = versions_by_service(&w.m());
    let (f, lines) = run(&w, &r, &switch_plan());
    assert_eq!(code(&f), 3, "{}", lines.join("\n"));
    let m = w.m();
    assert!(m.outages.is_empty(), "{:?}", m.outages);
    assert_eq!(
        versions_by_service(&m),
        before,
        "the old release is as it was"
    );
    assert!(
        !m.calls.iter().any(|c| c.starts_with("exec door")),
        "{:?}",
        m.calls
    );
    assert!(
        !m.calls.iter().any(|c| c.starts_with("stop ")),
        "{:?}",
        m.calls
    );
    assert_eq!(f.record.result, Outcome::Recovered);
    let msg = f.error.unwrap().to_string();
    assert!(msg.contains("1.0.0 is serving again"), "{msg}");
}

#[test]
fn every_step_of_a_switch_that_fails_leaves_the_old_release_serving() {
    let p = switch_plan();
    let mut cases = 0;
    for (i, s) in p.steps.iter().enumerate() {
        let name = s.step.name();
        let fail = match name {
            "start-beside" => "compose beside",
            "probe-beside" => "probe backend",
            "share-assets" => "copy-dist",
            "reload-door" => "exec door",
            "retire-old" => "stop backend-1.0.0",
            "replace" => "compose replace 2.0.0",
            "health-gate" => "health open",
            // No migrate: the plan never touches maintenance.
            "health-gate-sealed" | "maintenance-off" | "maintenance-on" => {
                panic!("a switch without migrate plans {name}")
            }
            _ => continue,
        };
        let w = Fake::new().with_door().running("1.0.0").fail(fail);
        let r = Mem::default();
        let (f, lines) = run(&w, &r, &p);
        let ctx = format!("step {i} {name}: {}", lines.join("\n"));
        assert_eq!(code(&f), 3, "{ctx}");
        let m = w.m();
        for (svc, image, state) in versions_by_service(&m) {
            assert_eq!(state, "running", "{svc} {ctx}");
            if svc != "door" {
                assert_eq!(image, "sha256:1.0.0", "{svc} {ctx}");
            }
        }
        // The door knows a running 1.0.0 frontend.
        let fronts: Vec<&ContainerInfo> = m.cs.iter().filter(|c| c.service == "frontend").collect();
        assert_eq!(fronts.len(), 1, "{ctx}");
        assert!(m.door_targets.contains(&fronts[0].id), "{ctx}");
        // Before the door was reloaded, the old release never stopped serving.
        if ["start-beside", "probe-beside", "share-assets"].contains(&name) {
            assert!(m.outages.is_empty(), "{ctx} {:?}", m.outages);
        }
        assert_eq!(m.db, vec!["patches-of-1.0.0"], "{ctx}");
        cases += 1;
    }
    assert_eq!(cases, 7);
}

fn migrating_switch_plan() -> DeployPlan {
    let p = switch_plan();
    plan(DeployRequest {
        migrate: true,
        door: p.door.clone(),
        web: p.steps.iter().find_map(|s| match &s.step {
            Step::StartBeside { web, .. } => Some(web.clone()),
            _ => None,
        }),
        ..request_of(&p)
    })
}

#[test]
fn a_migrating_release_starts_beside_before_maintenance_and_opens_on_new_code_only() {
    let p = migrating_switch_plan();
    let names: Vec<&str> = p.steps.iter().map(|s| s.step.name()).collect();
    let at = |n: &str| {
        names
            .iter()
            .position(|x| *x == n)
            .unwrap_or_else(|| panic!("no step {n}: {names:?}"))
    };
    // Everything that needs nothing stopped comes before maintenance:
    // the frontends move first, then the new backends start ...
    let last = |n: &str| names.iter().rposition(|x| *x == n).unwrap();
    for early in [
        "start-beside",
        "probe-beside",
        "share-assets",
        "reload-door",
        "retire-old",
    ] {
        assert!(last(early) < at("maintenance-on"), "{names:?}");
    }
    // ... and maintenance covers drain, backup, migrate and the cut-over.
    assert!(at("backup") < at("migrate"), "{names:?}");
    assert!(at("migrate") < at("cutover"), "{names:?}");
    assert!(at("cutover") < at("maintenance-off"), "{names:?}");
    assert!(at("maintenance-off") < at("replace"), "{names:?}");
    assert_eq!(names.iter().filter(|n| **n == "migrate").count(), 1);

    let w = Fake::new().with_door().running("1.0.0").strict();
    let r = Mem::default();
    let (f, lines) = run(&w, &r, &p);
    assert_eq!(
        code(&f),
        0,
        "{:?}\n{}",
        f.error.map(|e| e.to_string()),
        lines.join("\n")
    );
    let m = w.m();
    assert!(
        m.outages.is_empty(),
        "requests failed after {:?}",
        m.outages
    );
    assert!(
        m.wrong_code.is_empty(),
        "users reached code of another schema: {:?}",
        m.wrong_code
    );
    assert!(
        m.hangs.is_empty(),
        "a proxy routed to a container that was gone: {:?}",
        m.hangs
    );
    assert_eq!(m.db, vec!["patches-of-1.0.0", "patches-of-2.0.0"]);
    assert_eq!(m.migrated_in, vec!["sha256:2.0.0"], "in the new backend");
    assert!(
        m.mixed_at_open.is_empty(),
        "old containers ran when maintenance went off: {:?}",
        m.mixed_at_open
    );
    assert!(!m.maintenance);
    for (svc, image, state) in versions_by_service(&m) {
        assert_eq!(state, "running", "{svc}");
        if svc != "door" {
            assert_eq!(image, "sha256:2.0.0", "{svc}");
        }
    }
    // The backup was taken by the release whose code made the database.
    assert_eq!(f.record.backups.len(), 1);
    // The removed web containers' logs live on in their successors.
    for svc in ["frontend-1.0.0", "backend-1.0.0", "websocket-1.0.0"] {
        assert!(
            m.carried.iter().any(|c| c.starts_with(svc)),
            "{svc}: {:?}",
            m.carried
        );
    }
}

#[test]
fn every_step_of_a_migrating_switch_that_fails_leaves_the_old_release_and_its_data() {
    let p = migrating_switch_plan();
    let mut cases = 0;
    for (i, s) in p.steps.iter().enumerate() {
        let name = s.step.name();
        let fail = match name {
            "start-beside" if at_or_before(&p, i, "share-assets") => {
                "compose beside 2.0.0 frontend"
            }
            "start-beside" => "compose beside 2.0.0 backend",
            "probe-beside" if at_or_before(&p, i, "share-assets") => "probe frontend",
            "probe-beside" => "probe backend",
            "share-assets" => "copy-dist",
            "maintenance-on" => "bench set-maintenance-mode on",
            "drain" => "bench ready-for-migration",
            "backup" => "bench backup",
            "migrate" => "bench migrate",
            "reload-door" => "exec door",
            "retire-old" => "remove frontend-1.0.0",
            // Frozen, else told to stop: the step fails when both fail.
            "cutover" => "pause queue-short-1.0.0",
            "health-gate-sealed" => "health sealed",
            "maintenance-off" => "bench set-maintenance-mode off",
            "replace" => "compose replace 2.0.0",
            "health-gate" => "health open",
            _ => continue,
        };
        let mut w = Fake::new().with_door().running("1.0.0").strict().fail(fail);
        if name == "cutover" {
            w = w.fail("signal SIGTERM queue-short-1.0.0");
        }
        let r = Mem::default();
        let (f, lines) = run(&w, &r, &p);
        let ctx = format!("step {i} {name}: {}", lines.join("\n"));
        assert_eq!(code(&f), 3, "{ctx}");
        assert_eq!(f.record.result, Outcome::Recovered, "{ctx}");
        // Old code on the migrated database only where the recovery says so
        // (users were let in: the data is kept, see the data note below).
        if f.record.data_note.is_none() {
            assert!(w.m().wrong_code.is_empty(), "{ctx} {:?}", w.m().wrong_code);
        }
        let m = w.m();
        for (svc, image, state) in versions_by_service(&m) {
            assert_eq!(state, "running", "{svc} {ctx}");
            if svc != "door" {
                assert_eq!(image, "sha256:1.0.0", "{svc} {ctx}");
            }
        }
        let fronts: Vec<&ContainerInfo> = m.cs.iter().filter(|c| c.service == "frontend").collect();
        assert_eq!(fronts.len(), 1, "{ctx}");
        assert!(m.door_targets.contains(&fronts[0].id), "{ctx}");
        assert!(!m.maintenance, "{ctx}");
        // Until the door moved, the old release never stopped answering
        // (a recovery after it may leave a gap while 1.0.0 comes back).
        if i < p
            .steps
            .iter()
            .position(|s| s.step.name() == "reload-door")
            .unwrap()
        {
            assert!(m.outages.is_empty(), "{ctx} {:?}", m.outages);
        }
        let migrated = m.db.contains(&"patches-of-2.0.0".to_string());
        let let_in = p.steps[..i]
            .iter()
            .any(|s| s.step.name() == "maintenance-off")
            || name == "maintenance-off";
        if let_in {
            // Users may have written to the migrated database: kept, and said.
            assert!(migrated, "{ctx}");
            let note = f.record.data_note.as_deref().unwrap_or("");
            assert!(note.contains("--restore-backup d2"), "{ctx}");
        } else {
            assert!(!migrated, "restored: {ctx}");
            assert!(f.record.data_note.is_none(), "{ctx}");
        }
        cases += 1;
    }
    assert_eq!(cases, 16);
}

/// A frontend just started may not have written its nginx config yet:
/// de-build asks again for a while, and fails (old release serving) only
/// when it never appears.
#[test]
fn a_frontend_still_rendering_its_config_is_asked_again() {
    let p = switch_plan();
    let w = Fake::new().with_door().running("1.0.0");
    w.m().unrendered = 3;
    let (f, lines) = run(&w, &Mem::default(), &p);
    assert_eq!(code(&f), 0, "{}", lines.join("\n"));
    assert_eq!(w.m().unrendered, 0);

    let w = Fake::new().with_door().running("1.0.0");
    w.m().unrendered = u32::MAX;
    let (f, lines) = run(&w, &Mem::default(), &p);
    assert_eq!(code(&f), 3, "{}", lines.join("\n"));
    let e = f.error.map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("`nginx -T` exited with 1 (for 10 s)"), "{e}");
    let m = w.m();
    for (svc, image, state) in versions_by_service(&m) {
        assert_eq!(state, "running", "{svc}");
        if svc != "door" {
            assert_eq!(image, "sha256:1.0.0", "{svc}");
        }
    }
}

#[test]
fn the_cutover_freezes_the_old_workers_and_ends_them_after_the_window() {
    let p = migrating_switch_plan();
    let w = Fake::new().with_door().running("1.0.0").strict();
    let r = Mem::default();
    let (f, lines) = run(&w, &r, &p);
    assert_eq!(code(&f), 0, "{}", lines.join("\n"));
    let m = w.m();
    let at = |call: &str| {
        m.calls
            .iter()
            .position(|c| c.starts_with(call))
            .unwrap_or_else(|| panic!("no call {call}: {:?}", m.calls))
    };
    let off = at("bench set-maintenance-mode off");
    // Frozen inside the window, no signal there; SIGTERM after it.
    assert!(at("pause queue-short-1.0.0") < off, "{:?}", m.calls);
    assert!(
        at("signal SIGTERM queue-short-1.0.0") > off,
        "{:?}",
        m.calls
    );
    assert!(m.mixed_at_open.is_empty(), "{:?}", m.mixed_at_open);
    assert!(f.record.progress.paused.is_empty());
    drop(m);

    // One that cannot be frozen is told to stop in the window instead.
    let w = Fake::new()
        .with_door()
        .running("1.0.0")
        .strict()
        .fail("pause queue-short-1.0.0");
    let (f, lines) = run(&w, &Mem::default(), &p);
    assert_eq!(code(&f), 0, "{}", lines.join("\n"));
    assert!(
        lines.iter().any(|l| l.contains("could not be frozen")),
        "{}",
        lines.join("\n")
    );
    let m = w.m();
    let off = m
        .calls
        .iter()
        .position(|c| c.starts_with("bench set-maintenance-mode off"))
        .unwrap();
    let term = m
        .calls
        .iter()
        .position(|c| c.starts_with("signal SIGTERM queue-short-1.0.0"))
        .unwrap();
    assert!(term < off, "{:?}", m.calls);
    assert!(m.mixed_at_open.is_empty(), "{:?}", m.mixed_at_open);
}

#[test]
fn a_migrating_switch_killed_in_any_step_is_recovered_from_its_record() {
    // As a kill -9: the record on disk is all a later `recover` has; frozen
    // workers must be thawed, never left paused beside the previous release.
    let p = migrating_switch_plan();
    let cases = killed_in_each_step(
        &p,
        || Fake::new().with_door().running("1.0.0").strict(),
        |m, rec, err, ctx| {
            assert!(matches!(err.exit_code(), 1 | 3), "{ctx}: {err}");
            assert!(!m.maintenance, "{ctx}");
            for (svc, image, state) in versions_by_service(m) {
                assert_eq!(state, "running", "{svc} {ctx}");
                if svc != "door" {
                    assert_eq!(image, "sha256:1.0.0", "{svc} {ctx}");
                }
            }
            let migrated = m.db.contains(&"patches-of-2.0.0".to_string());
            assert_eq!(
                migrated,
                rec.progress.users_let_in && rec.progress.migrate_started,
                "{ctx}"
            );
        },
    );
    assert_eq!(cases, 2 * p.steps.len());
}

/// Step `i` of `p` is `name` or comes before it.
fn at_or_before(p: &DeployPlan, i: usize, name: &str) -> bool {
    p.steps
        .iter()
        .position(|s| s.step.name() == name)
        .is_some_and(|j| i <= j)
}
