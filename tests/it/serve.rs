//! `ipsyncd serve` on loopback: a terminal's HELLO gets a verified WELCOME; a repeated HELLO is
//! answered too (no replay state, DESIGN §4.3); wrong keys and garbage get nothing, and the
//! server keeps serving.

use crate::common::{bin, tmpdir};
use ipsyncd::shell::channel::{hello, Terminal};
use ipsyncd::wire::sig::VerifyKey;
use ipsyncd::wire::Mac;
use std::collections::BTreeMap;
use std::io::Write;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::{Child, Stdio};
use std::time::Duration;

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn serve_answers_hello_and_refuses_the_rest() {
    let d = tmpdir("serve");
    let cfg = d.join("srv.toml");
    std::fs::write(
        &cfg,
        "[[key]]\nid = 1\nsecret = \"0x4242424242424242424242424242424242424242424242424242424242424242\"\n",
    )
    .unwrap();
    let port = free_port();
    let child = bin()
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--config"])
        .arg(&cfg)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _guard = Killed(child);
    let t = Terminal {
        key_id: 1,
        key: vec![0x42; 32],
        keys: BTreeMap::from([(1, VerifyKey::Hmac(vec![0x42; 32]))]),
        mac: Mac([2, 0, 0, 0, 0, 0x10]),
        ip: Ipv4Addr::new(127, 0, 0, 1),
    };
    let lo = Ipv4Addr::LOCALHOST;
    let timeout = Duration::from_secs(2);
    // Wait for the listener (bounded).
    let mut up = false;
    for _ in 0..100 {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(up, "serve did not start listening");

    let w = hello(&t, lo, port, timeout, [7; 16], 1000).expect("WELCOME");
    assert_eq!(w.server_ip, lo);
    // The same sequence again is answered: serve keeps no replay state for HELLO (DESIGN §4.3),
    // so nobody can lock a terminal out by claiming its MAC with a huge sequence. The WELCOME is
    // only good for the nonce of the HELLO a terminal waits on, so answering a replay gives an
    // attacker nothing.
    let again = hello(&t, lo, port, timeout, [8; 16], 1000).expect("WELCOME for a repeated sequence");
    assert!(again.sequence > w.sequence);
    // A wrong key: no answer.
    let evil = Terminal { key: vec![1; 32], ..t.clone() };
    assert!(hello(&evil, lo, port, timeout, [9; 16], 2000).is_err());
    // Garbage, then a valid HELLO: the server is still there.
    let mut g = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let _ = g.write_all(b"GET / HTTP/1.0\r\n\r\n");
    drop(g);
    let w = hello(&t, lo, port, timeout, [10; 16], 1001).expect("still serving");
    assert!(w.sequence > 0);
}
