//! Who the container's process runs as, and which file it executes: Docker's rules for
//! `--user` (names resolved in the image's `/etc/passwd` and `/etc/group`) and for
//! finding the command in `$PATH`.
//!
//! Pure functions over the files' contents and the file system, so the rules are tested
//! without a container.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The default `PATH` when the environment has none (Docker's).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Errors resolving a user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    /// No such user name.
    #[error("unable to find user {0}: no matching entries in passwd file")]
    NoUser(String),
    /// No such group name.
    #[error("unable to find group {0}: no matching entries in group file")]
    NoGroup(String),
    /// A numeric id out of range.
    #[error("{0} is not a valid uid or gid")]
    BadId(String),
}

/// The identity the process runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecUser {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary group ids.
    pub groups: Vec<u32>,
    /// Home directory (for `HOME` when the environment has none).
    pub home: String,
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

fn lines(s: &str) -> impl Iterator<Item = Vec<&str>> {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split(':').collect())
}

fn passwd_entries(s: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    lines(s).filter_map(|f| {
        Some(PasswdEntry {
            name: f.first()?,
            uid: f.get(2)?.parse().ok()?,
            gid: f.get(3)?.parse().ok()?,
            home: f.get(5).copied().unwrap_or(""),
        })
    })
}

fn group_entries(s: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    lines(s).filter_map(|f| {
        Some(GroupEntry {
            name: f.first()?,
            gid: f.get(2)?.parse().ok()?,
            members: f
                .get(3)
                .map(|m| {
                    m.split(',')
                        .map(str::trim)
                        .filter(|m| !m.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
        })
    })
}

fn parse_id(s: &str) -> Result<Option<u32>, UserError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    match s.parse::<u32>() {
        Ok(n) if n <= i32::MAX as u32 => Ok(Some(n)),
        _ => Err(UserError::BadId(s.to_owned())),
    }
}

/// Resolve Docker's `--user` value `spec` (`""`, `name`, `uid`, `name:group`,
/// `uid:gid`, …) against the image's `/etc/passwd` and `/etc/group` contents (empty
/// when the image has none).
///
/// As runc does: a user is matched by name or uid; a numeric uid need not be in the
/// file (the group is then 0 and the home `/`); a group given is matched by name or gid
/// and then replaces the supplementary groups, which otherwise are the groups that
/// list the user as a member.
pub fn resolve(spec: &str, passwd: &str, group: &str) -> Result<ExecUser, UserError> {
    let (user_arg, group_arg) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user_arg = if user_arg.is_empty() { "0" } else { user_arg };
    let uid_arg = parse_id(user_arg)?;
    let entry = passwd_entries(passwd).find(|e| e.name == user_arg || Some(e.uid) == uid_arg);
    let mut u = match (&entry, uid_arg) {
        (Some(e), _) => ExecUser {
            uid: e.uid,
            gid: e.gid,
            groups: Vec::new(),
            home: if e.home.is_empty() { "/" } else { e.home }.to_owned(),
        },
        (None, Some(uid)) => ExecUser {
            uid,
            gid: 0,
            groups: Vec::new(),
            home: "/".to_owned(),
        },
        (None, None) => return Err(UserError::NoUser(user_arg.to_owned())),
    };
    match group_arg.filter(|g| !g.is_empty()) {
        Some(g) => {
            let gid_arg = parse_id(g)?;
            u.gid = match group_entries(group).find(|e| e.name == g || Some(e.gid) == gid_arg) {
                Some(e) => e.gid,
                None => gid_arg.ok_or_else(|| UserError::NoGroup(g.to_owned()))?,
            };
        }
        None => {
            if let Some(e) = &entry {
                for g in group_entries(group) {
                    if g.members.contains(&e.name) && !u.groups.contains(&g.gid) {
                        u.groups.push(g.gid);
                    }
                }
            }
        }
    }
    Ok(u)
}

/// Why a command cannot be executed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookPathError {
    /// Not found: exit status 127.
    #[error("{0}")]
    NotFound(String),
    /// Found, but not an executable file: exit status 126.
    #[error("{0}")]
    NotExecutable(String),
}

impl LookPathError {
    /// The exit status Docker reports for it.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::NotFound(_) => 127,
            Self::NotExecutable(_) => 126,
        }
    }
}

fn is_executable_file(p: &Path) -> Result<(), std::io::Error> {
    let m = fs::metadata(p)?;
    if m.is_dir() || m.permissions().mode() & 0o111 == 0 {
        return Err(std::io::Error::from_raw_os_error(libc::EACCES));
    }
    Ok(())
}

/// The file to execute for `cmd`, Go's `exec.LookPath` as Docker uses it: a `cmd`
/// with a `/` is taken as it is, otherwise each directory of `path_env` (the
/// environment's `PATH`) is tried in order. Messages are Docker's.
pub fn look_path(cmd: &str, path_env: &str) -> Result<PathBuf, LookPathError> {
    if cmd.is_empty() {
        return Err(LookPathError::NotFound(
            "exec: \"\": executable file not found in $PATH".to_owned(),
        ));
    }
    if cmd.contains('/') {
        return match is_executable_file(Path::new(cmd)) {
            Ok(()) => Ok(PathBuf::from(cmd)),
            Err(e) if e.raw_os_error() == Some(libc::EACCES) => Err(LookPathError::NotExecutable(
                format!("exec: \"{cmd}\": permission denied"),
            )),
            Err(e) => Err(LookPathError::NotFound(format!(
                "exec: \"{cmd}\": stat {cmd}: {}",
                os_message(&e)
            ))),
        };
    }
    for dir in path_env.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let p = Path::new(dir).join(cmd);
        if is_executable_file(&p).is_ok() {
            return Ok(p);
        }
    }
    Err(LookPathError::NotFound(format!(
        "exec: \"{cmd}\": executable file not found in $PATH"
    )))
}

/// An OS error's message the way Go prints it ("no such file or directory").
pub fn os_message(e: &std::io::Error) -> String {
    let s = e.to_string();
    let s = s.split(" (os error").next().unwrap_or(&s).to_owned();
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => s,
    }
}

/// The value of `name` in `env` (`NAME=value` strings; the last one wins).
pub fn env_get<'a>(env: &'a [String], name: &str) -> Option<&'a str> {
    env.iter()
        .rev()
        .find_map(|e| e.strip_prefix(name)?.strip_prefix('='))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        # a comment\n\
        daemon:x:1:1:daemon:/usr/sbin:/bin/false\n\
        nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n\
        web:x:1000:1000::/home/web:/bin/sh\n\
        broken line\n";
    const GROUP: &str = "root:x:0:\n\
        wheel:x:10:root,web\n\
        nogroup:x:65534:\n\
        web:x:1000:\n\
        audio:x:29:web\n";

    fn user(uid: u32, gid: u32, groups: &[u32], home: &str) -> ExecUser {
        ExecUser {
            uid,
            gid,
            groups: groups.to_vec(),
            home: home.to_owned(),
        }
    }

    #[test]
    fn default_is_root_with_its_groups() {
        assert_eq!(
            resolve("", PASSWD, GROUP).unwrap(),
            user(0, 0, &[10], "/root")
        );
        assert_eq!(resolve("", "", "").unwrap(), user(0, 0, &[], "/"));
    }

    #[test]
    fn names_and_ids() {
        assert_eq!(
            resolve("nobody", PASSWD, GROUP).unwrap(),
            user(65534, 65534, &[], "/nonexistent")
        );
        assert_eq!(
            resolve("web", PASSWD, GROUP).unwrap(),
            user(1000, 1000, &[10, 29], "/home/web")
        );
        assert_eq!(
            resolve("1", PASSWD, GROUP).unwrap(),
            user(1, 1, &[], "/usr/sbin")
        );
        // A uid not in the file is fine; its group is 0.
        assert_eq!(
            resolve("4242", PASSWD, GROUP).unwrap(),
            user(4242, 0, &[], "/")
        );
        assert_eq!(
            resolve("4242:99", "", "").unwrap(),
            user(4242, 99, &[], "/")
        );
    }

    #[test]
    fn groups_replace_supplementary_groups() {
        assert_eq!(
            resolve("web:audio", PASSWD, GROUP).unwrap(),
            user(1000, 29, &[], "/home/web")
        );
        assert_eq!(
            resolve("web:7", PASSWD, GROUP).unwrap(),
            user(1000, 7, &[], "/home/web")
        );
        assert_eq!(
            resolve("0:nogroup", PASSWD, GROUP).unwrap(),
            user(0, 65534, &[], "/root")
        );
    }

    #[test]
    fn unknown_names_are_errors() {
        assert_eq!(
            resolve("ghost", PASSWD, GROUP).unwrap_err().to_string(),
            "unable to find user ghost: no matching entries in passwd file"
        );
        assert_eq!(
            resolve("web:ghosts", PASSWD, GROUP)
                .unwrap_err()
                .to_string(),
            "unable to find group ghosts: no matching entries in group file"
        );
        assert!(matches!(
            resolve("99999999999", PASSWD, GROUP),
            Err(UserError::BadId(_))
        ));
    }

    #[test]
    fn look_path_follows_go_and_docker() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        fs::create_dir_all(&a).unwrap();
        fs::create_dir_all(&b).unwrap();
        let write = |p: &Path, mode| {
            fs::write(p, "#!/bin/sh\n").unwrap();
            fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
        };
        write(&a.join("tool"), 0o644); // not executable: skipped in $PATH
        write(&b.join("tool"), 0o755);
        fs::create_dir(a.join("dir")).unwrap();
        let path = format!("{}:{}", a.display(), b.display());
        assert_eq!(look_path("tool", &path).unwrap(), b.join("tool"));

        let e = look_path("nosuch", &path).unwrap_err();
        assert_eq!(
            e.to_string(),
            "exec: \"nosuch\": executable file not found in $PATH"
        );
        assert_eq!(e.exit_code(), 127);

        let abs = a.join("tool").display().to_string();
        let e = look_path(&abs, &path).unwrap_err();
        assert_eq!(e.to_string(), format!("exec: \"{abs}\": permission denied"));
        assert_eq!(e.exit_code(), 126);
        let dir = a.join("dir").display().to_string();
        assert_eq!(look_path(&dir, "").unwrap_err().exit_code(), 126);

        let e = look_path("/nosuch/x", &path).unwrap_err();
        assert_eq!(
            e.to_string(),
            "exec: \"/nosuch/x\": stat /nosuch/x: no such file or directory"
        );
        assert_eq!(e.exit_code(), 127);
    }

    #[test]
    fn env_lookup_takes_the_last_value() {
        let env = vec![
            "PATH=/a".to_owned(),
            "PATHX=1".to_owned(),
            "PATH=/b".to_owned(),
        ];
        assert_eq!(env_get(&env, "PATH"), Some("/b"));
        assert_eq!(env_get(&env, "HOME"), None);
    }
}
