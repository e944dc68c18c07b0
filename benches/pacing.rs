//! `forcerenew --leases` at fleet scale on a real interface (DESIGN §12 "Fleet", issue 9): the
//! time until every one of 10,000 leases got its first FORCERENEW (goal < 1 s), and whether every
//! frame reached the wire (no drops on the sender), at the default pacing beside the same run
//! unpaced (`--rate 1000000`: as fast as the socket takes them) as its peer.
//!
//! In namespaces (root): the lab's `srv` sends to 10,000 leases of clients that do not exist
//! (unicast to unknown MACs, flooded by the bridge inside its own namespace, answered by no
//! one), with `--retries 0`, so each run sends exactly one frame per lease. The frames are counted
//! on srv's bridge port by the lab's sniffer. FLEET_LEASES sets the number of leases.

#[path = "../tests/it/lab.rs"]
mod lab;

use lab::{Lab, Sniffer, DHCP_SECRET, SRV_MAC};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

struct Run {
    first_sends_ms: f64,
    frames: u64,
    wall_s: f64,
    seen: usize,
}

fn run(lab: &Lab, leases: &str, rate: Option<&str>) -> Option<Run> {
    let cfg = lab.dir.join("fr.toml").display().to_string();
    let sniff = Sniffer::on_port(lab, "srv");
    let mut args =
        vec!["forcerenew", "--interface", "srv0", "--leases", leases, "--config", &cfg, "--retries", "0", "--json"];
    if let Some(r) = rate {
        args.extend(["--rate", r]);
    }
    let t = Instant::now();
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.ns("srv"), env!("CARGO_BIN_EXE_ipsyncd")])
        .args(&args)
        .output()
        .ok()?;
    let wall_s = t.elapsed().as_secs_f64();
    if !out.status.success() {
        eprintln!("forcerenew failed: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    // Let the sniffer catch up with what is still queued.
    std::thread::sleep(Duration::from_millis(500));
    let seen = sniff
        .frames()
        .iter()
        .filter(|f| {
            f.bytes.len() > 42 && f.bytes[6..12] == SRV_MAC.0 && f.bytes[12..14] == [8, 0] && f.bytes[36..38] == [0, 68]
        })
        .count();
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    Some(Run { first_sends_ms: r["first_sends_ms"].as_f64()?, frames: r["frames"].as_u64()?, wall_s, seen })
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n: u32 = std::env::var("FLEET_LEASES").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000).clamp(1, 60_000);
    let Some(lab) = Lab::new("pace") else {
        println!("fleet pacing: SKIP (needs root for network namespaces)");
        return;
    };
    lab.write_sender("fr", 1, DHCP_SECRET, None);
    let expiry = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) + 3600;
    let text: String = (0..n)
        .map(|i| {
            let (hi, lo) = ((i / 250) as u8, (i % 250) as u8);
            format!("{expiry} 02:fb:00:00:{hi:02x}:{lo:02x} 10.79.{hi}.{} * *\n", lo + 1)
        })
        .collect();
    let leases = lab.dir.join("leases");
    std::fs::write(&leases, text).expect("lease file");
    let src = leases.display().to_string();
    let paced = run(&lab, &src, None);
    let unpaced = run(&lab, &src, Some("1000000"));
    match (paced, unpaced) {
        (Some(p), Some(u)) => {
            println!(
                "fleet pacing: {n} leases, first FORCERENEW to every one after {:.3} s at the default 20,000/s (goal < 1 s); {} frames sent, {} seen on the wire ({} lost); tool wall time {:.2} s",
                p.first_sends_ms / 1000.0,
                p.frames,
                p.seen,
                p.frames.saturating_sub(p.seen as u64),
                p.wall_s
            );
            println!(
                "fleet pacing, peer unpaced (--rate 1000000): first sends after {:.3} s; {} frames sent, {} seen on the wire ({} lost); tool wall time {:.2} s",
                u.first_sends_ms / 1000.0,
                u.frames,
                u.seen,
                u.frames.saturating_sub(u.seen as u64),
                u.wall_s
            );
        }
        _ => println!("fleet pacing: FAILED (see above)"),
    }
}
