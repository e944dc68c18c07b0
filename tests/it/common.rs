//! Shared helpers: fixture discovery and the ipsyncd binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ipsyncd"))
}

/// (name, capture, config) for every fixture in pcap-fixtures/.
pub fn fixtures() -> Vec<(String, PathBuf, PathBuf)> {
    let dir = root().join("pcap-fixtures");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).expect("pcap-fixtures/") {
        let p = e.expect("entry").path();
        if p.extension().and_then(|x| x.to_str()) != Some("toml") {
            continue;
        }
        let name = p.file_stem().and_then(|s| s.to_str()).expect("name").to_string();
        let cap = ["pcap", "pcapng"].iter().map(|x| dir.join(format!("{name}.{x}"))).find(|c| c.exists());
        out.push((name.clone(), cap.unwrap_or_else(|| panic!("{name}: no capture")), p));
    }
    out.sort();
    out
}

pub fn replay(cap: &Path, cfg: &Path, extra: &[&str]) -> Output {
    bin().arg("replay").arg(cap).arg("--config").arg(cfg).args(extra).output().expect("run ipsyncd")
}

/// Every record of a capture, in order.
pub fn records(cap: &Path) -> Vec<(u64, Vec<u8>)> {
    let mut r = ipsyncd::shell::pcap::Reader::new(std::fs::read(cap).expect("read")).expect("pcap");
    let mut out = Vec::new();
    while let Some(rec) = r.next_record().expect("record") {
        out.push((rec.ts_us, rec.data.to_vec()));
    }
    out
}

pub fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ipsyncd-it-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("tmpdir");
    d
}
