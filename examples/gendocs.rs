//! Renders the generated documents from the clap definition (`ipsyncd::cli::Cli`), so that they
//! can never disagree with `--help`:
//!
//! ```text
//! cargo run --release --locked --example gendocs -- OUTDIR
//!   OUTDIR/man/ipsyncd.8                 the command, its subcommands, SEE ALSO the hand-written pages
//!   OUTDIR/man/ipsyncd-SUBCOMMAND.8      one page per subcommand (ipsyncd-run.8, ipsyncd-check.8, ...)
//!   OUTDIR/completions/ipsyncd.bash      bash
//!   OUTDIR/completions/_ipsyncd          zsh
//!   OUTDIR/completions/ipsyncd.fish      fish
//! ```
//!
//! Contract: writes only under OUTDIR (created if missing), overwriting the files above and
//! nothing else; the output depends on the clap definition alone (no date, no host name), so
//! two runs give the same bytes and the package is reproducible. Exit 0 when every file was
//! written, 2 on a usage error, 1 when a file could not be written (each naming the path).
//! The hand-written pages ipsyncd.toml(5) and ipsyncd-hooks(7) live in man/ and are not
//! touched here.

use clap::CommandFactory;
use clap_complete::Shell;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Where the other pages are, named in every generated page's SEE ALSO.
const SEE_ALSO_TOP: &[(&str, &str)] =
    &[("ipsyncd.toml", "5"), ("ipsyncd-hooks", "7"), ("systemd.service", "5"), ("systemd-analyze", "1")];
/// systemd's and Debian's convention for daemons and the tools that run them.
const SECTION: &str = "8";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = match args.as_slice() {
        [dir] if !dir.starts_with('-') => PathBuf::from(dir),
        _ => {
            eprintln!("usage: cargo run --release --locked --example gendocs -- OUTDIR");
            return ExitCode::from(2);
        }
    };
    match generate(&out) {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gendocs: {e}");
            ExitCode::from(1)
        }
    }
}

fn generate(out: &Path) -> Result<Vec<PathBuf>, String> {
    let man_dir = out.join("man");
    let comp_dir = out.join("completions");
    for d in [&man_dir, &comp_dir] {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: cannot create: {e}", d.display()))?;
    }
    let mut written = Vec::new();

    // build() gives each subcommand its display name ("ipsyncd-run"), which names its page.
    // The pages leave out clap's `help` subcommand (it has no page of its own, and `--help`
    // says the same); the completions keep it, as the shell should offer what the binary takes.
    let cmd = ipsyncd::cli::Cli::command();
    let mut docs = cmd.clone().disable_help_subcommand(true);
    docs.build();

    let subs: Vec<clap::Command> =
        docs.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help").cloned().collect();
    let sub_pages: Vec<(String, &str)> =
        subs.iter().map(|s| (s.get_display_name().unwrap_or(s.get_name()).to_string(), SECTION)).collect();

    let mut top_see_also: Vec<(&str, &str)> = sub_pages.iter().map(|(n, s)| (n.as_str(), *s)).collect();
    top_see_also.extend_from_slice(SEE_ALSO_TOP);
    written.push(write_page(&man_dir, docs.clone(), Some(&files_section()), &top_see_also)?);

    for sub in subs {
        written.push(write_page(&man_dir, sub, None, &[("ipsyncd", SECTION), ("ipsyncd.toml", "5")])?);
    }

    for (shell, name) in [(Shell::Bash, "ipsyncd.bash"), (Shell::Zsh, "_ipsyncd"), (Shell::Fish, "ipsyncd.fish")] {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut cmd.clone(), "ipsyncd", &mut buf);
        written.push(write_file(&comp_dir.join(name), &buf)?);
    }
    Ok(written)
}

/// One page in section 8: clap_mangen's sections, then (clap_mangen has no hook for them)
/// FILES where given and SEE ALSO, then the version.
fn write_page(
    dir: &Path,
    cmd: clap::Command,
    files: Option<&str>,
    see_also: &[(&str, &str)],
) -> Result<PathBuf, String> {
    // Subcommands carry no version of their own; an empty VERSION heading would be noise.
    let has_version = cmd.get_version().is_some();
    let man = clap_mangen::Man::new(cmd)
        .section(SECTION)
        .manual("System Manager's Manual")
        .source(format!("ipsyncd {}", env!("CARGO_PKG_VERSION")));
    let path = dir.join(man.get_filename());
    let mut buf: Vec<u8> = Vec::new();
    let render = |buf: &mut Vec<u8>| -> std::io::Result<()> {
        man.render_title(buf)?;
        man.render_name_section(buf)?;
        man.render_synopsis_section(buf)?;
        man.render_description_section(buf)?;
        man.render_options_section(buf)?;
        // Only the top page has subcommands; an empty SUBCOMMANDS heading would be noise.
        if !see_also.iter().any(|(n, _)| *n == "ipsyncd") {
            man.render_subcommands_section(buf)?;
        }
        if let Some(f) = files {
            buf.write_all(f.as_bytes())?;
        }
        buf.write_all(see_also_section(see_also).as_bytes())?;
        if has_version {
            man.render_version_section(buf)?;
        }
        Ok(())
    };
    render(&mut buf).map_err(|e| format!("{}: cannot render: {e}", path.display()))?;
    write_file(&path, &buf)
}

/// Where the daemon's files are and where the rest of the documentation is, for the top page.
fn files_section() -> String {
    let mut s = String::from(".SH FILES\n");
    for (path, what) in [
        ("/etc/ipsyncd/ipsyncd.toml", "the default config; see ipsyncd.toml(5)"),
        ("/var/lib/ipsyncd/state.json", "the persisted state (server, lease, replay counters)"),
        ("/var/lib/ipsyncd/status.json", "what ipsyncd status reads; readable by group ipsyncd"),
        ("/usr/share/doc/ipsyncd/README.md", "setup, keys, logs (journald, RUST_LOG) and the server side"),
        ("/usr/share/doc/ipsyncd/examples/", "example configs and VDI hooks"),
    ] {
        s.push_str(&format!(".TP\n.I {path}\n{what}\n"));
    }
    s
}

fn see_also_section(pages: &[(&str, &str)]) -> String {
    let mut s = String::from(".SH \"SEE ALSO\"\n");
    for (i, (name, section)) in pages.iter().enumerate() {
        let sep = if i + 1 < pages.len() { "," } else { "" };
        s.push_str(&format!(".BR {} ({}){sep}\n", name.replace('-', "\\-"), section));
    }
    s
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<PathBuf, String> {
    std::fs::write(path, bytes).map_err(|e| format!("{}: cannot write: {e}", path.display()))?;
    Ok(path.to_path_buf())
}
