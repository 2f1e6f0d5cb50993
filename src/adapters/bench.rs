//! bench inside the backend container: the command lines de-build runs and
//! how it reads their answers. Formats are those of real Frappe:
//! `frappe/commands/scheduler.py` (`ready-for-migration`, `set-maintenance-mode`),
//! `frappe/commands/site.py` (`backup`, `restore`, `migrate`),
//! `frappe/utils/backups.py` (the "Backup Summary" block).

use crate::record::state::Backup;

/// `bench --site S <tail…>`
pub fn site_args(site: &str, tail: &[&str]) -> Vec<String> {
    let mut a = vec!["bench".to_string(), "--site".into(), site.to_string()];
    a.extend(tail.iter().map(|s| s.to_string()));
    a
}

/// `ready-for-migration` answers by exit code: 0 "READY for migration: site S
/// does not have any background jobs", 1 "NOT READY for migration: site S has
/// pending background jobs". Anything else is a failure of the command itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    NotReady,
    /// The command failed for another reason (e.g. an old Frappe without it).
    Unknown,
}

pub fn readiness(exit_code: i64, output: &str) -> Readiness {
    let o = output.to_ascii_uppercase();
    match exit_code {
        0 if o.contains("READY FOR MIGRATION") && !o.contains("NOT READY") => Readiness::Ready,
        1 if o.contains("NOT READY") => Readiness::NotReady,
        _ => Readiness::Unknown,
    }
}

/// Why `bench restore` failed, when its output says it was about the
/// database root password (`frappe.database.get_root_connection` asks for
/// it with getpass, "MySQL root password: "): rejected when one was given,
/// else missing. One reading for both targets.
pub fn restore_hint(output: &str, gave_password: bool) -> Option<String> {
    if !output.to_ascii_lowercase().contains("password") {
        return None;
    }
    Some(if gave_password {
        "bench rejected the database root password: check DB_PASSWORD".into()
    } else {
        "bench asked for the database root password: set DB_PASSWORD (the MariaDB root password, a @secret key) so a recovery can restore".into()
    })
}

/// The database backup of each site, from `bench --site S backup` output.
/// Real bench prints, per site (`frappe/utils/backups.py`):
///
/// ```text
/// Backup Summary for a.local at 2024-01-01 10:10:10.123456
/// Config  : ./a.local/private/backups/20240101_101010-a_local-site_config_backup.json 94.0B
/// Database: ./a.local/private/backups/20240101_101010-a_local-database.sql.gz         1.1KiB
/// ```
///
/// (`Public`/`Private` lines with `--with-files`). A site that printed no
/// `Database:` line has no backup, whatever else it printed.
pub fn parse_backups(site_arg: &str, output: &str) -> Vec<Backup> {
    let mut out: Vec<Backup> = Vec::new();
    let mut summary_site: Option<String> = None;
    for line in output.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("Backup Summary for ") {
            summary_site = rest.split_whitespace().next().map(str::to_string);
            continue;
        }
        let Some((label, rest)) = t.split_once(':') else {
            continue;
        };
        if label.trim() != "Database" {
            continue;
        }
        let Some(path) = rest.split_whitespace().next() else {
            continue;
        };
        let site = site_of(path)
            .or_else(|| summary_site.clone())
            .unwrap_or_else(|| site_arg.to_string());
        match out.iter_mut().find(|b| b.site == site) {
            Some(b) => b.path = path.to_string(),
            None => out.push(Backup {
                site,
                path: path.to_string(),
            }),
        }
    }
    out
}

/// `./S/private/backups/…` → `S`.
fn site_of(path: &str) -> Option<String> {
    let i = path.find("/private/backups/")?;
    path[..i]
        .rsplit('/')
        .next()
        .filter(|s| !s.is_empty() && *s != ".")
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backups_are_read_from_the_backup_summary() {
        let frappe = "Backup Summary for a.local at 2024-01-01 10:10:10.1\nConfig  : ./a.local/private/backups/20240101-a_local-site_config_backup.json 94.0B\nDatabase: ./a.local/private/backups/20240101-a_local-database.sql.gz 1.1KiB\n";
        assert_eq!(
            parse_backups("a.local", frappe),
            vec![Backup {
                site: "a.local".into(),
                path: "./a.local/private/backups/20240101-a_local-database.sql.gz".into()
            }]
        );
        // Config alone is no backup.
        assert!(parse_backups(
            "a.local",
            "Backup Summary for a.local at x\nConfig  : ./a.local/private/backups/c.json 94.0B\n"
        )
        .is_empty());
        assert!(parse_backups("x", "nothing").is_empty());
    }

    #[test]
    fn readiness_is_read_from_exit_code_and_text() {
        assert_eq!(
            readiness(
                0,
                "READY for migration: site a does not have any background jobs"
            ),
            Readiness::Ready
        );
        assert_eq!(
            readiness(
                1,
                "NOT READY for migration: site a has pending background jobs"
            ),
            Readiness::NotReady
        );
        assert_eq!(
            readiness(1, "No such command \"ready-for-migration\""),
            Readiness::Unknown
        );
    }
}
