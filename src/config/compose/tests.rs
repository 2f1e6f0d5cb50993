use super::*;

/// A base file in frappe_docker's shape: one anchored image line shared by
/// every app service through merge keys, a one-shot configurator the others
/// wait for.
const BASE: &str = "\
x-app: &app
  image: ${CUSTOM_IMAGE:-frappe/erpnext}:${CUSTOM_TAG:-$ERPNEXT_VERSION}
  restart: ${RESTART_POLICY:-unless-stopped}

x-waits: &waits
  depends_on:
    configurator:
      condition: service_completed_successfully

x-bench: &bench
  <<: [*waits, *app]
  volumes:
    - sites:/home/frappe/frappe-bench/sites

services:
  configurator:
    <<: *bench
    entrypoint: [bash, -c]
    command:
      - >
        bench set-config -g db_host $$DB_HOST;
        bench set-config -g redis_cache redis://$$REDIS_CACHE;
    depends_on: {}
    restart: on-failure
  backend:
    <<: *bench
  frontend:
    <<: *app
    command: [nginx-entrypoint.sh]
    depends_on: [backend]
  queue-short:
    <<: *bench
    command: bench worker --queue short,default
volumes:
  sites:
";

const DB: &str = "\
services:
  configurator:
    depends_on:
      db:
        condition: service_healthy
  db:
    image: mariadb:11.8
    environment:
      MYSQL_ROOT_PASSWORD: ${DB_PASSWORD:-123}
";

const REDIS: &str = "\
services:
  configurator:
    depends_on:
      - redis-cache
  redis-cache:
    image: redis:8-alpine
";

const MIGRATOR: &str = "\
services:
  migrator:
    image: ${CUSTOM_IMAGE}:${CUSTOM_TAG}
    entrypoint: [bash, -c]
    command:
      - >
        echo migrating;
        bench --site all migrate;
    restart: on-failure:5
";

fn env(pairs: &[(&str, &str)]) -> EnvValues {
    let mut e = EnvValues::default();
    for (k, v) in [
        ("DE_IMAGE", "acme/erp"),
        ("DE_BACKEND_SERVICE", "backend"),
        ("DE_HEALTH_URL", "http://127.0.0.1:8080/api/method/ping"),
    ] {
        e.insert_plain(k, v);
    }
    for (k, v) in pairs {
        e.insert_plain(k, v);
    }
    e
}

fn no_process(_: &str) -> Option<String> {
    None
}

struct Dir(tempfile::TempDir);

impl Dir {
    fn new(files: &[(&str, &str)]) -> Dir {
        let d = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let p = d.path().join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        Dir(d)
    }

    fn run(&self, e: &EnvValues) -> (Option<ComposeSet>, Vec<Problem>) {
        load_and_check(self.0.path(), e, ".env", &no_process)
    }

    fn problems(&self, e: &EnvValues) -> Vec<Problem> {
        self.run(e).1
    }
}

fn codes(p: &[Problem]) -> Vec<&'static str> {
    p.iter().map(|p| p.code).collect()
}

fn frappe_docker_layout() -> Dir {
    Dir::new(&[
        ("compose.yaml", BASE),
        ("overrides/compose.mariadb.yaml", DB),
        ("overrides/compose.redis.yaml", REDIS),
        ("overrides/compose.migrator.yaml", MIGRATOR),
    ])
}

const LIST: &str = "compose.yaml, overrides/compose.mariadb.yaml,overrides/compose.redis.yaml";

#[test]
fn a_frappe_docker_file_list_passes_and_merges_in_order() {
    let d = frappe_docker_layout();
    let (set, problems) = d.run(&env(&[("DE_COMPOSE_FILE", LIST)]));
    assert!(problems.is_empty(), "{problems:#?}");
    let set = set.unwrap();
    assert_eq!(
        set.files
            .iter()
            .map(|f| f.path.strip_prefix(d.0.path()).unwrap().to_str().unwrap())
            .collect::<Vec<_>>(),
        [
            "compose.yaml",
            "overrides/compose.mariadb.yaml",
            "overrides/compose.redis.yaml"
        ]
    );
    assert_eq!(
        set.services.keys().collect::<Vec<_>>(),
        [
            "backend",
            "configurator",
            "db",
            "frontend",
            "queue-short",
            "redis-cache"
        ]
    );
    // `depends_on: {}` in the base, a mapping in one override, a list in the other.
    let mut deps = set.services["configurator"].depends_on.clone();
    deps.sort();
    assert_eq!(
        deps,
        [
            ("db".to_string(), "service_healthy".to_string()),
            ("redis-cache".to_string(), "service_started".to_string())
        ]
    );
    let backend = &set.services["backend"];
    assert_eq!(backend.restart.as_deref(), Some("unless-stopped"));
    let img = backend.image.as_ref().unwrap();
    assert_eq!((img.file, img.line), (0, 2), "the anchor's line");
    assert_eq!(set.one_shot_services(), ["configurator"]);
}

#[test]
fn a_single_file_and_the_demo_form_pass() {
    let d = Dir::new(&[(
        "stack.yaml",
        "services:\n  backend:\n    image: ${DE_IMAGE:?}:${CUSTOM_TAG:?}\n  db:\n    image: mariadb:11.8\n",
    )]);
    let p = d.problems(&env(&[("DE_COMPOSE_FILE", "stack.yaml")]));
    assert!(p.is_empty(), "{p:#?}");
}

#[test]
fn a_merged_file_with_the_tag_written_in_is_refused_and_db_is_not_an_app_service() {
    let merged = "\
name: erp
services:
  backend:
    image: acme/erp:1.0.0
  queue-long:
    image: docker.io/acme/erp:1.0.0
  frontend:
    image: registry.local:5000/acme/erp:1.0.0
  db:
    image: mariadb:11.8
  redis-cache:
    image: redis:8-alpine
";
    let d = Dir::new(&[("merged.yaml", merged)]);
    let p = d.problems(&env(&[("DE_COMPOSE_FILE", "merged.yaml")]));
    assert_eq!(codes(&p), ["image-not-release"; 3], "{p:#?}");
    let lines: Vec<_> = p.iter().map(|p| p.line.unwrap()).collect();
    assert_eq!(lines, [4, 6, 8], "in file order");
    assert!(
        p[0].message.contains("`backend`") && p[0].message.contains("written in"),
        "{}",
        p[0].message
    );
    assert!(p[0]
        .hint
        .as_deref()
        .unwrap()
        .contains("${CUSTOM_IMAGE}:${CUSTOM_TAG}"));
    assert!(p.iter().all(|p| p.file.ends_with("merged.yaml")));
}

#[test]
fn an_anchored_wrong_image_is_one_problem_naming_every_service() {
    let text = BASE.replace(
        "${CUSTOM_IMAGE:-frappe/erpnext}:${CUSTOM_TAG:-$ERPNEXT_VERSION}",
        "${CUSTOM_IMAGE}:${ERPNEXT_VERSION}",
    );
    let d = Dir::new(&[("compose.yaml", &text)]);
    let p = d.problems(&env(&[("DE_COMPOSE_FILE", "compose.yaml")]));
    assert_eq!(codes(&p), ["image-not-release"], "{p:#?}");
    assert_eq!(p[0].line, Some(2));
    assert!(
        p[0].message
            .contains("`backend`, `configurator`, `frontend`, `queue-short`"),
        "{}",
        p[0].message
    );
    assert!(p[0].message.contains("not its tag"), "{}", p[0].message);
}

#[test]
fn a_written_in_repository_with_the_release_tag_is_refused() {
    let d = Dir::new(&[(
        "c.yaml",
        "services:\n  backend:\n    image: acme/erp:${CUSTOM_TAG}\n",
    )]);
    let p = d.problems(&env(&[("DE_COMPOSE_FILE", "c.yaml")]));
    assert_eq!(codes(&p), ["image-not-release"]);
    assert!(
        p[0].message.contains("not its repository"),
        "{}",
        p[0].message
    );
}

#[test]
fn pwd_yml_shape_backend_on_a_public_image_is_refused_and_create_site_is_one_shot() {
    let text = "\
services:
  backend:
    image: frappe/erpnext:v16.0.0
    depends_on:
      configurator:
        condition: service_completed_successfully
  configurator:
    image: frappe/erpnext:v16.0.0
    command: [bash, -c, ls]
    deploy:
      restart_policy:
        condition: none
  create-site:
    image: frappe/erpnext:v16.0.0
    entrypoint: [bash, -c]
    command: [bench new-site x]
    deploy:
      restart_policy:
        condition: none
  scheduler:
    image: frappe/erpnext:v16.0.0
    command: [bench, schedule]
    deploy:
      restart_policy:
        condition: on-failure
  db:
    image: mariadb:11.8
";
    let d = Dir::new(&[("pwd.yml", text)]);
    let (set, p) = d.run(&env(&[("DE_COMPOSE_FILE", "pwd.yml")]));
    // The backend's image is the release's by definition; services running
    // exactly that image are app services too.
    assert_eq!(codes(&p), ["image-not-release"; 4], "{p:#?}");
    assert!(!p.iter().any(|p| p.message.contains("`db`")));
    assert_eq!(
        set.unwrap().one_shot_services(),
        ["configurator", "create-site"]
    );
}

#[test]
fn one_shot_needs_an_explicit_no_restart_and_a_command_or_a_waiter() {
    let text = "\
services:
  a:
    image: x
    restart: \"no\"
    command: run-once
  b:
    image: x
  c:
    image: x
    restart: \"no\"
  d:
    image: x
    restart: on-failure
    command: long-running
  e:
    image: x
    restart: ${NOPE:-no}
    entrypoint: [sh, -c, true]
";
    let d = Dir::new(&[("c.yaml", text)]);
    let mut e = env(&[("DE_COMPOSE_FILE", "c.yaml")]);
    e.insert_plain("DE_BACKEND_SERVICE", "d");
    let (set, _) = d.run(&e);
    assert_eq!(set.unwrap().one_shot_services(), ["a", "e"]);
}

#[test]
fn yaml_errors_name_file_and_line_and_stop_the_other_checks() {
    let d = Dir::new(&[
        ("compose.yaml", BASE),
        (
            "overrides/bad.yaml",
            "services:\n  backend:\n    image: [x\n  db:\n",
        ),
    ]);
    let p = d.problems(&env(&[(
        "DE_COMPOSE_FILE",
        "compose.yaml,overrides/bad.yaml",
    )]));
    assert_eq!(codes(&p), ["yaml"], "{p:#?}");
    assert!(p[0].file.ends_with("overrides/bad.yaml"), "{}", p[0].file);
    assert!(p[0].line.unwrap() >= 3, "{p:#?}");
    let d = Dir::new(&[(
        "c.yaml",
        "services:\n  backend:\n    image: a\n    image: b\n",
    )]);
    let p = d.problems(&env(&[("DE_COMPOSE_FILE", "c.yaml")]));
    assert_eq!(codes(&p), ["yaml"]);
    assert_eq!(p[0].line, Some(4));
}

#[test]
fn missing_files_and_bad_shapes() {
    let d = Dir::new(&[("compose.yaml", BASE)]);
    let p = d.problems(&env(&[(
        "DE_COMPOSE_FILE",
        "compose.yaml,overrides/nope.yaml",
    )]));
    assert_eq!(codes(&p), ["missing-file"]);
    assert!(p[0].file.ends_with("overrides/nope.yaml"));
    let d = Dir::new(&[
        ("c.yaml", "- a\n- b\n"),
        ("s.yaml", "services:\n  backend: 5\n"),
    ]);
    assert_eq!(
        codes(&d.problems(&env(&[("DE_COMPOSE_FILE", "c.yaml")]))),
        ["compose-shape"]
    );
    let p = d.problems(&env(&[("DE_COMPOSE_FILE", "s.yaml")]));
    assert_eq!(codes(&p), ["compose-shape"]);
    assert_eq!(p[0].line, Some(2));
}

#[test]
fn the_backend_service_must_exist_and_started_by_up() {
    let d = frappe_docker_layout();
    let mut e = env(&[("DE_COMPOSE_FILE", LIST)]);
    e.insert_plain("DE_BACKEND_SERVICE", "backnd");
    let p = d.problems(&e);
    assert_eq!(codes(&p), ["backend-service"], "{p:#?}");
    assert_eq!(p[0].key.as_deref(), Some("DE_BACKEND_SERVICE"));
    assert!(
        p[0].message.contains("compose.yaml, ")
            && p[0].message.contains("overrides/compose.redis.yaml"),
        "{}",
        p[0].message
    );
    assert!(p[0]
        .hint
        .as_deref()
        .unwrap()
        .contains("did you mean `backend`"));

    let d = Dir::new(&[(
        "c.yaml",
        "services:\n  backend:\n    image: ${CUSTOM_IMAGE}:${CUSTOM_TAG}\n    profiles: [later]\n",
    )]);
    let p = d.problems(&env(&[("DE_COMPOSE_FILE", "c.yaml")]));
    assert_eq!(codes(&p), ["backend-service"]);
    assert!(p[0].message.contains("profile"), "{}", p[0].message);
}

#[test]
fn https_health_url_is_refused_with_the_reason() {
    let d = frappe_docker_layout();
    let p = d.problems(&env(&[
        ("DE_COMPOSE_FILE", LIST),
        ("DE_HEALTH_URL", "https://erp.example.com/api/method/ping"),
    ]));
    assert_eq!(codes(&p), ["health-url-scheme"]);
    assert!(p[0].message.contains("plain HTTP"));
    assert!(p[0].hint.as_deref().unwrap().contains("http://127.0.0.1"));
}

#[test]
fn a_service_that_migrates_on_up_is_refused() {
    let d = frappe_docker_layout();
    let list = format!("{LIST},overrides/compose.migrator.yaml");
    let p = d.problems(&env(&[("DE_COMPOSE_FILE", &list)]));
    assert_eq!(codes(&p), ["migrates-on-up"], "{p:#?}");
    assert!(p[0].file.ends_with("overrides/compose.migrator.yaml"));
    assert_eq!(p[0].line, Some(6), "the command's first line");
    assert!(p[0].message.contains("twice") && p[0].message.contains("rollback"));

    // Behind a profile nobody activates, `up` does not start it.
    let gated = MIGRATOR.replace("    restart: on-failure:5\n", "    profiles: [migrate]\n");
    let d = Dir::new(&[("compose.yaml", BASE), ("m.yaml", &gated)]);
    let p = d.problems(&env(&[("DE_COMPOSE_FILE", "compose.yaml,m.yaml")]));
    assert!(p.is_empty(), "{p:#?}");
    let p = d.problems(&env(&[
        ("DE_COMPOSE_FILE", "compose.yaml,m.yaml"),
        ("COMPOSE_PROFILES", "migrate"),
    ]));
    assert_eq!(codes(&p), ["migrates-on-up"]);
}

#[test]
fn which_commands_migrate() {
    let v = |s: &[&str]| runs_migrate(&s.iter().map(|x| x.to_string()).collect::<Vec<_>>());
    assert!(v(&["bench", "migrate"]));
    assert!(v(&["bench", "--site", "all", "migrate"]));
    assert!(v(&[
        "bash",
        "-c",
        "cd x && bench --site=a.local migrate --skip-failing"
    ]));
    assert!(v(&["if true; then bench --site all migrate; fi"]));
    assert!(!v(&["bench", "worker", "--queue", "short"]));
    assert!(!v(&["echo migrate"]));
    assert!(!v(&["bench --site all ready-for-migration"]));
    assert!(!v(&["bench", "migrate-to", "x"]));
}

#[test]
fn reset_removes_what_an_earlier_file_set() {
    let d = Dir::new(&[
        ("compose.yaml", BASE),
        ("overrides/compose.migrator.yaml", MIGRATOR),
        ("no-migrate.yaml", "services:\n  migrator:\n    command: !reset null\n    entrypoint: !override [echo, skipped]\n"),
    ]);
    let p = d.problems(&env(&[(
        "DE_COMPOSE_FILE",
        "compose.yaml,overrides/compose.migrator.yaml,no-migrate.yaml",
    )]));
    assert!(p.is_empty(), "{p:#?}");
}

#[test]
fn required_variables_compose_would_miss_are_reported() {
    let d = Dir::new(&[
        ("compose.yaml", BASE),
        ("secrets.yaml", "services:\n  db:\n    image: mariadb\nsecrets:\n  db_password:\n    file: ${DB_PASSWORD_SECRETS_FILE:?No db secret file set}\n"),
    ]);
    let p = d.problems(&env(&[("DE_COMPOSE_FILE", "compose.yaml,secrets.yaml")]));
    assert_eq!(codes(&p), ["missing-variable"]);
    assert_eq!(
        (p[0].file.ends_with("secrets.yaml"), p[0].line),
        (true, Some(6))
    );
    assert!(p[0].message.contains("DB_PASSWORD_SECRETS_FILE"));
    let p = d.problems(&env(&[
        ("DE_COMPOSE_FILE", "compose.yaml,secrets.yaml"),
        ("DB_PASSWORD_SECRETS_FILE", "/run/pw"),
    ]));
    assert!(p.is_empty(), "{p:#?}");
}

#[test]
fn repositories_of_references() {
    assert_eq!(repository("acme/erp:1.0.0"), "acme/erp");
    assert_eq!(
        repository("registry.local:5000/acme/erp:1.0.0"),
        "registry.local:5000/acme/erp"
    );
    assert_eq!(
        repository("registry.local:5000/acme/erp"),
        "registry.local:5000/acme/erp"
    );
    assert_eq!(repository("docker.io/library/redis:8"), "redis");
    assert_eq!(repository("acme/erp@sha256:abc"), "acme/erp");
}

#[test]
fn snapshots_keep_the_layout_below_the_common_directory() {
    let files: Vec<PathBuf> = ["/p/compose.yaml", "/p/overrides/compose.redis.yaml"]
        .iter()
        .map(PathBuf::from)
        .collect();
    assert_eq!(
        snapshot_layout(&files, Path::new("/s/7")),
        [
            PathBuf::from("/s/7/compose.yaml"),
            PathBuf::from("/s/7/overrides/compose.redis.yaml")
        ]
    );
    // An override outside the first file's directory moves the base up.
    let files: Vec<PathBuf> = ["/p/app/compose.yaml", "/p/shared/db.yaml"]
        .iter()
        .map(PathBuf::from)
        .collect();
    assert_eq!(
        snapshot_layout(&files, Path::new("/s/7")),
        [
            PathBuf::from("/s/7/app/compose.yaml"),
            PathBuf::from("/s/7/shared/db.yaml")
        ]
    );
    // A rollback copies an older single-file snapshot.
    assert_eq!(
        snapshot_layout(
            &[PathBuf::from("/p/.de-build/compose/6.yaml")],
            Path::new("/s/7")
        ),
        [PathBuf::from("/s/7/6.yaml")]
    );
}

#[test]
fn the_list_form() {
    assert_eq!(list(" a.yaml , b/c.yaml,,"), ["a.yaml", "b/c.yaml"]);
    assert_eq!(list("compose.yaml"), ["compose.yaml"]);
}

fn swarm_env(pairs: &[(&str, &str)]) -> EnvValues {
    let mut e = env(&[
        ("DE_TARGET", "swarm"),
        ("DE_REGISTRY", "r.example.com:5000"),
    ]);
    for (k, v) in pairs {
        e.insert_plain(k, v);
    }
    e
}

fn swarm_codes(p: &[Problem]) -> Vec<&'static str> {
    p.iter()
        .map(|p| p.code)
        .filter(|c| c.starts_with("swarm-"))
        .collect()
}

#[test]
fn on_a_swarm_frappe_dockers_configurator_must_be_a_job_said_at_its_line() {
    let d = frappe_docker_layout();
    let p = d.problems(&swarm_env(&[("DE_COMPOSE_FILE", LIST)]));
    assert_eq!(swarm_codes(&p), ["swarm-one-shot"], "{p:#?}");
    let one = p.iter().find(|p| p.code == "swarm-one-shot").unwrap();
    assert!(one.file.ends_with("compose.yaml"), "{one:?}");
    assert_eq!(one.line, Some(16), "the line of `configurator:`");
    assert!(one.message.contains("waits for it to complete"), "{one:?}");
    // The same files for one host: compose waits for it itself.
    let p = d.problems(&env(&[("DE_COMPOSE_FILE", LIST)]));
    assert_eq!(swarm_codes(&p), Vec::<&str>::new(), "{p:#?}");
    // Made a job in an override for the swarm: accepted.
    let d = Dir::new(&[
        ("compose.yaml", BASE),
        (
            "swarm.yaml",
            "services:\n  configurator:\n    deploy:\n      mode: replicated-job\n",
        ),
    ]);
    let p = d.problems(&swarm_env(&[(
        "DE_COMPOSE_FILE",
        "compose.yaml,swarm.yaml",
    )]));
    assert_eq!(swarm_codes(&p), Vec::<&str>::new(), "{p:#?}");
}

#[test]
fn on_a_swarm_each_problem_names_the_file_and_line_that_causes_it() {
    let d = Dir::new(&[
        (
            "stack.yaml",
            "services:\n  backend:\n    image: ${DE_IMAGE:?}:${CUSTOM_TAG:?}\n    ports:\n      - target: 8000\n        published: ${PORT:-18080}\n        mode: host\n  tool:\n    build: ./tool\n    profiles: [debug]\n",
        ),
        (
            "one-host.yaml",
            "services:\n  backend:\n    container_name: erp-backend\n    privileged: true\n    deploy:\n      resources:\n        limits: {memory: 1G}\n",
        ),
    ]);
    let p = d.problems(&swarm_env(&[(
        "DE_COMPOSE_FILE",
        "stack.yaml,one-host.yaml",
    )]));
    let got: Vec<(&str, &str, Option<usize>)> = p
        .iter()
        .map(|p| (p.code, p.file.rsplit('/').next().unwrap(), p.line))
        .collect();
    // `tool` (build only) is in a profile `up` does not start: not judged.
    assert_eq!(
        got,
        [
            ("swarm-container-name", "one-host.yaml", Some(3)),
            ("swarm-unsupported", "one-host.yaml", Some(4)),
            ("swarm-unsupported", "one-host.yaml", Some(6)),
        ],
        "{p:#?}"
    );
    assert!(p.iter().all(|p| p.hint.is_some()), "{p:#?}");
    // Started by its profile: now it is judged.
    let mut e = swarm_env(&[("DE_COMPOSE_FILE", "stack.yaml")]);
    e.insert_plain("COMPOSE_PROFILES", "debug");
    let p = d.problems(&e);
    assert_eq!(swarm_codes(&p), ["swarm-build-only"], "{p:#?}");
    assert_eq!(p[0].line, Some(9));
}

#[test]
fn on_a_swarm_web_services_are_checked_at_their_env_key() {
    let d = Dir::new(&[(
        "stack.yaml",
        "services:\n  backend:\n    image: ${DE_IMAGE:?}:${CUSTOM_TAG:?}\n  frontend:\n    image: nginx\n",
    )]);
    let p = d.problems(&swarm_env(&[
        ("DE_COMPOSE_FILE", "stack.yaml"),
        ("DE_SWARM_WEB_SERVICES", "backend,frontnd"),
    ]));
    assert_eq!(swarm_codes(&p), ["swarm-web-service"], "{p:#?}");
    assert_eq!(p[0].file, ".env");
    assert_eq!(p[0].key.as_deref(), Some("DE_SWARM_WEB_SERVICES"));
    assert!(p[0].hint.as_deref().unwrap().contains("`frontend`"));
    // A missing backend is said once (by the compose checks), not twice.
    let p = d.problems(&swarm_env(&[
        ("DE_COMPOSE_FILE", "stack.yaml"),
        ("DE_BACKEND_SERVICE", "bakend"),
        ("DE_SWARM_WEB_SERVICES", "frontend"),
    ]));
    assert_eq!(codes(&p), ["backend-service"], "{p:#?}");
}

#[test]
fn on_a_swarm_a_service_using_extends_is_not_judged_by_what_it_inherits() {
    let d = Dir::new(&[(
        "stack.yaml",
        "services:\n  backend:\n    image: ${DE_IMAGE:?}:${CUSTOM_TAG:?}\n  worker:\n    extends: {file: base.yaml, service: worker}\n",
    )]);
    let p = d.problems(&swarm_env(&[("DE_COMPOSE_FILE", "stack.yaml")]));
    assert_eq!(swarm_codes(&p), Vec::<&str>::new(), "{p:#?}");
}

#[test]
fn the_demo_swarm_stack_passes() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo/compose.swarm.yaml"),
    )
    .unwrap();
    let d = Dir::new(&[("compose.swarm.yaml", &text)]);
    let p = d.problems(&swarm_env(&[("DE_COMPOSE_FILE", "compose.swarm.yaml")]));
    assert!(p.is_empty(), "{p:#?}");
}
