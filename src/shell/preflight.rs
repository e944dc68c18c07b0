//! What `ipsyncd check` reports and `run` refuses at start (DESIGN §6): every problem of a
//! config, including those only the machine can tell (the interface, the state directory and
//! its state file, the hook), each with its file, line and key.
//!
//! Contract: reads and stats only; creates, writes and runs nothing (the state directory's
//! writability is asked with access(2), not by writing). Errors are what `run` refuses with exit
//! 2; warnings are accepted and logged. The config's own problems come from
//! [`Config::problems`], so `check` and loading can never disagree.

use super::state_file;
use crate::config::{self, Config, IpsyncKey};
use crate::engine::Mode;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One finding: "line N: key: what is wrong and what was expected".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub severity: Severity,
    pub text: String,
}

/// Which command the config is checked for: the terminal daemon needs an interface and keys
/// that let it follow; the server tools need neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Terminal,
    Server,
}

impl Role {
    /// `check` with no `interface` checks for the server tools (DESIGN §6).
    pub fn of(cfg: &Config) -> Role {
        if cfg.interface.is_some() {
            Role::Terminal
        } else {
            Role::Server
        }
    }
}

/// Reads, parses and checks the config at `path`, as `run` (with `interface` overriding the
/// config's) or the server tools would use it. `role` defaults to [`Role::of`]. A config that
/// does not load is the `Err`, with every problem it has.
pub fn load_and_check(
    path: &Path,
    interface: Option<&str>,
    role: Option<Role>,
) -> Result<(Config, Vec<Problem>), config::ConfigError> {
    let err = |message: String| config::ConfigError { file: path.to_path_buf(), message };
    let text = config::read_text(path, config::MAX_CONFIG_BYTES).map_err(err)?;
    let (mut cfg, refused) = Config::parse_all(&text).map_err(err)?;
    if let Some(i) = interface {
        cfg.interface = Some(i.to_string());
    }
    let role = role.unwrap_or_else(|| Role::of(&cfg));
    let problems = check(&cfg, &text, path, role);
    if refused.is_empty() {
        return Ok((cfg, problems));
    }
    // The file itself is wrong: the `Err`, as for any command that loads it, but listing also
    // what the machine says of the rest, so one `check` shows every problem. `check` itself
    // repeats the config's own (`Config::problems`); the lines the parser refused come first.
    let rest = problems.into_iter().filter(|p| p.severity == Severity::Error).map(|p| p.text);
    let mut all: Vec<String> = Vec::new();
    for t in refused.into_iter().chain(rest) {
        if !all.contains(&t) {
            all.push(t);
        }
    }
    Err(err(all.join("\n")))
}

/// `path: error: …` / `path: warning: …`, one line each, for `check`'s output and `run`'s log.
pub fn render(path: &Path, p: &Problem) -> String {
    let kind = match p.severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
    };
    format!("{}: {kind}: {}", path.display(), p.text)
}

/// Every problem of `cfg`, read from `path` as `text`, for `role`.
pub fn check(cfg: &Config, text: &str, path: &Path, role: Role) -> Vec<Problem> {
    let mut out = Vec::new();
    let line =
        |table: &str, key: &str| config::locate(text, table, 0, key).map(|l| format!("line {l}: ")).unwrap_or_default();
    let mut error = |t: String| out.push(Problem { severity: Severity::Error, text: t });
    for p in cfg.problems(text) {
        error(p);
    }
    if role == Role::Terminal {
        if let Some(ifname) = &cfg.interface {
            if !interface_exists(ifname) {
                error(format!("{}interface: no network interface {ifname:?} on this machine", line("", "interface")));
            }
        }
        if cfg.mode == Mode::Follow && cfg.key.is_empty() {
            error("[[key]]: follow mode needs at least one key to authenticate the server".into());
        }
    }
    if let Some(hook) = &cfg.hook {
        if let Err(why) = hook_problem(hook) {
            error(format!("{}hook: {}: {why}", line("", "hook"), hook.display()));
        }
    }
    if let Err(why) = state_dir_problem(&cfg.state_dir) {
        error(format!("{}state_dir: {}: {why}", line("", "state_dir"), cfg.state_dir.display()));
    } else if let Err(v) = state_file::check_version(&cfg.state_dir) {
        error(format!("state_dir: {}: {v}", state_file::path(&cfg.state_dir).display()));
    }
    // A terminal trusting a key anyone can sign with follows whoever read the example.
    for (t, signable) in cfg.example_keys(text) {
        let severity = if signable && role == Role::Terminal { Severity::Error } else { Severity::Warning };
        out.push(Problem { severity, text: t });
    }
    let mut warn = |t: String| out.push(Problem { severity: Severity::Warning, text: t });
    for w in cfg.warnings(text) {
        warn(w);
    }
    if let Some(hook) = &cfg.hook {
        for w in hook_dir_warnings(hook) {
            warn(format!("{}hook: {w}", line("", "hook")));
        }
    }
    if role == Role::Terminal {
        if cfg.mode == Mode::Dhcp && cfg.key.is_empty() {
            warn("[[key]]: none: the lease is kept, but no server can be followed or confirmed".into());
        }
        for (i, k) in cfg.key.iter().enumerate() {
            if k.signing_key.is_some() {
                let l =
                    config::locate(text, "key", i, "signing_key").map(|l| format!("line {l}: ")).unwrap_or_default();
                warn(format!(
                    "{l}[[key]] id {} signing_key: a terminal needs only public_key; whoever takes this terminal could move the fleet",
                    k.id
                ));
            }
        }
    }
    let holds_secrets = cfg.key.iter().any(|k| k.secret.is_some() || k.signing_key.is_some())
        || !cfg.dhcp_key.is_empty()
        || cfg.forcerenew.as_ref().is_some_and(|f| f.reconfigure_key.is_some());
    if holds_secrets {
        if let Ok(m) = std::fs::metadata(path) {
            if m.permissions().mode() & 0o004 != 0 {
                warn(format!(
                    "{} holds secrets and every user can read it (mode {:o}); make it 0600, owned by the daemon's user (ipsyncd)",
                    path.display(),
                    m.permissions().mode() & 0o7777
                ));
            }
        }
    }
    // The engine takes a key by id; a terminal with Ed25519 keys only has no channel: say so.
    if role == Role::Terminal
        && !cfg.key.is_empty()
        && cfg.ipsync_keys().values().all(|k| matches!(k, IpsyncKey::Ed25519 { .. }))
    {
        out.push(Problem {
            severity: Severity::Warning,
            text: "[[key]]: no shared secret: no HELLO is sent, so a move completes on its announcement without the server's \"connection success\"".into(),
        });
    }
    out
}

/// Asked of the kernel in our own network namespace (sysfs may show another one's).
fn interface_exists(name: &str) -> bool {
    match std::ffi::CString::new(name) {
        // SAFETY: a NUL-terminated name that outlives the call.
        Ok(c) => (unsafe { libc::if_nametoindex(c.as_ptr()) }) != 0,
        Err(_) => false,
    }
}

/// A hook is an executable regular file, or a directory (its executables run in name order).
fn hook_problem(hook: &Path) -> Result<(), String> {
    let m = std::fs::metadata(hook).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => "does not exist".to_string(),
        _ => e.to_string(),
    })?;
    if m.is_dir() {
        return std::fs::read_dir(hook).map(|_| ()).map_err(|e| format!("directory cannot be read: {e}"));
    }
    if !m.is_file() {
        return Err("is neither a regular file nor a directory".into());
    }
    if m.mode() & 0o111 == 0 {
        return Err(format!("is not executable (mode {:o}); chmod +x it", m.mode() & 0o7777));
    }
    Ok(())
}

/// For a hook directory: each entry that `run` would pass over although its name says it is a
/// hook (not an executable regular file: copied with `cp`, not `install -m 0755`), and a
/// directory where nothing would run at all. Names the hook runner skips on purpose (backups,
/// `.dpkg-*`, hidden files) are not mentioned.
fn hook_dir_warnings(hook: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(hook) else { return Vec::new() };
    let mut out = Vec::new();
    let mut named = 0usize;
    for e in entries.filter_map(Result::ok) {
        if !super::hooks::runs_in_dir(std::os::unix::ffi::OsStrExt::as_bytes(e.file_name().as_os_str())) {
            continue;
        }
        named += 1;
        let p = e.path();
        match std::fs::metadata(&p) {
            Ok(m) if m.is_file() && m.mode() & 0o111 != 0 => {}
            Ok(m) if m.is_file() => out.push(format!(
                "{}: is not executable (mode {:o}) and will not run; chmod +x it",
                p.display(),
                m.mode() & 0o7777
            )),
            Ok(_) => out.push(format!("{}: is not a regular file and will not run", p.display())),
            Err(e) => out.push(format!("{}: {e}; it will not run", p.display())),
        }
    }
    if named == out.len() {
        out.push(format!("{}: no executable hook in this directory; none will run", hook.display()));
    }
    out
}

/// The state directory is a directory we can write, or can be created (its nearest existing
/// ancestor is writable).
fn state_dir_problem(dir: &Path) -> Result<(), String> {
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => Err("is not a directory".into()),
        Ok(_) => writable(dir).map_err(|e| format!("cannot be written: {e}")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let parent = dir.ancestors().skip(1).find(|a| a.exists()).unwrap_or(Path::new("/"));
            writable(parent).map_err(|e| format!("does not exist and {} cannot be written: {e}", parent.display()))
        }
        Err(e) => Err(e.to_string()),
    }
}

fn writable(dir: &Path) -> Result<(), std::io::Error> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    // SAFETY: a NUL-terminated path that outlives the call.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("ipsyncd-preflight-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_hook_directory_names_what_will_not_run() {
        let d = dir("hookdir");
        let exe = |name: &str, mode: u32| {
            std::fs::write(d.join(name), "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(d.join(name), std::fs::Permissions::from_mode(mode)).unwrap();
        };
        assert_eq!(
            hook_dir_warnings(&d),
            vec![format!("{}: no executable hook in this directory; none will run", d.display())]
        );
        exe("50-copied", 0o644);
        exe("60-installed", 0o755);
        exe("50-copied.dpkg-dist", 0o644);
        let w = hook_dir_warnings(&d);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].ends_with("50-copied: is not executable (mode 644) and will not run; chmod +x it"), "{w:?}");
        std::fs::remove_file(d.join("60-installed")).unwrap();
        assert_eq!(hook_dir_warnings(&d).len(), 2, "and nothing runs");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_missing_or_plain_hook_and_a_file_as_state_dir_are_errors() {
        let d = dir("hook");
        let plain = d.join("plain");
        std::fs::write(&plain, "#!/bin/sh\n").unwrap();
        let text = format!(
            "mode = \"follow\"\nhook = \"{}\"\nstate_dir = \"{}\"\n[[key]]\nid = 1\nsecret = \"0123456789abcdef\"\n",
            plain.display(),
            plain.display()
        );
        let cfg = Config::parse(&text).unwrap();
        let p = check(&cfg, &text, &d.join("x.toml"), Role::Server);
        let errors: Vec<&str> = p.iter().filter(|p| p.severity == Severity::Error).map(|p| p.text.as_str()).collect();
        assert_eq!(errors.len(), 2, "{p:?}");
        assert!(errors[0].starts_with("line 2: hook:") && errors[0].contains("not executable"), "{errors:?}");
        assert!(errors[1].starts_with("line 3: state_dir:") && errors[1].contains("not a directory"), "{errors:?}");
        let w: Vec<&str> = p.iter().filter(|p| p.severity == Severity::Warning).map(|p| p.text.as_str()).collect();
        assert!(w.iter().any(|w| w.contains("32 or more")), "{w:?}");
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o755)).unwrap();
        let missing = text.replace(&format!("hook = \"{}\"", plain.display()), "hook = \"/nonexistent/hook\"");
        let cfg = Config::parse(&missing).unwrap();
        let p = check(&cfg, &missing, &d.join("x.toml"), Role::Server);
        assert!(p.iter().any(|p| p.text.contains("/nonexistent/hook: does not exist")), "{p:?}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_state_of_another_version_is_an_error() {
        let d = dir("version");
        std::fs::write(d.join("state.json"), "{\"version\":9}").unwrap();
        let text = format!("state_dir = \"{}\"\n", d.display());
        let cfg = Config::parse(&text).unwrap();
        let p = check(&cfg, &text, &d.join("x.toml"), Role::Server);
        assert!(p.iter().any(|p| p.severity == Severity::Error && p.text.contains("state version 9")), "{p:?}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
