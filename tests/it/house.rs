//! The house rules of DESIGN §3, checked on the source: imports point one way (wire ← engine ←
//! config ← shell ← server ← main), no two files import each other directly or in a loop, and
//! the engine reads no clock, socket or random source.

use crate::common::root;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every source file under src/, by its module path (`["engine", "core"]`).
fn sources() -> BTreeMap<Vec<String>, (String, String)> {
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).expect("src/") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let src = root().join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    let mut out = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(&src).expect("under src").with_extension("");
        let mut parts: Vec<String> = rel.iter().map(|s| s.to_string_lossy().into_owned()).collect();
        // main.rs is the binary's own crate root: it keeps the key ["main"], apart from lib.rs.
        if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
            parts.pop();
        }
        let text = std::fs::read_to_string(&f).expect("read");
        out.insert(parts, (rel.display().to_string(), code_of(&text)));
    }
    out
}

/// The code without comments and without the unit-test module at the end.
fn code_of(text: &str) -> String {
    let mut code = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("#[cfg(test)]") {
            break;
        }
        let l = match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        };
        code.push_str(l);
        code.push('\n');
    }
    code
}

/// Paths in `code` that start with crate::, super:: or self:: (and, in a mod.rs, a child's name),
/// with `use x::{a, b}` groups expanded.
fn paths(code: &str, is_mod: bool, children: &BTreeSet<String>) -> Vec<Vec<String>> {
    let word = |c: char| c.is_alphanumeric() || c == '_';
    let mut out = Vec::new();
    let bytes: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        if !word(bytes[i]) || (i > 0 && (word(bytes[i - 1]) || bytes[i - 1] == ':')) {
            i += 1;
            continue;
        }
        // Read a::b::c, stopping at a `{` group.
        let mut segs = Vec::new();
        let mut j = i;
        loop {
            let start = j;
            while j < bytes.len() && word(bytes[j]) {
                j += 1;
            }
            segs.push(bytes[start..j].iter().collect::<String>());
            if j + 2 < bytes.len()
                && bytes[j] == ':'
                && bytes[j + 1] == ':'
                && (word(bytes[j + 2]) || bytes[j + 2] == '{')
            {
                j += 2;
                if bytes[j] == '{' {
                    let end = bytes[j..].iter().position(|&c| c == '}').map_or(bytes.len(), |p| j + p);
                    let group: String = bytes[j + 1..end].iter().collect();
                    for item in group.split(',') {
                        let first = item.trim().split("::").next().unwrap_or("").split(' ').next().unwrap_or("");
                        if !first.is_empty() && first != "self" {
                            let mut p = segs.clone();
                            p.push(first.to_string());
                            out.push(p);
                        }
                    }
                    segs.clear();
                    j = end;
                    break;
                }
                continue;
            }
            break;
        }
        let head = segs.first().map(String::as_str).unwrap_or("");
        if segs.len() > 1 && (["crate", "super", "self"].contains(&head) || (is_mod && children.contains(head))) {
            out.push(segs);
        }
        i = j.max(i + 1);
    }
    out
}

/// The file a path lands in: the deepest module that exists.
fn resolve(cur: &[String], path: &[String], mods: &BTreeMap<Vec<String>, (String, String)>) -> Option<Vec<String>> {
    let (mut base, mut rest): (Vec<String>, &[String]) = match path[0].as_str() {
        "crate" => (Vec::new(), &path[1..]),
        "self" => (cur.to_vec(), &path[1..]),
        "super" => (cur.to_vec(), path),
        _ => (cur.to_vec(), path),
    };
    while rest.first().is_some_and(|s| s == "super") {
        base.pop();
        rest = &rest[1..];
    }
    let mut best = None;
    for n in 0..=rest.len() {
        let mut m = base.clone();
        m.extend_from_slice(&rest[..n]);
        if mods.contains_key(&m) {
            best = Some(m);
        }
    }
    best
}

fn graph() -> (BTreeMap<Vec<String>, BTreeSet<Vec<String>>>, BTreeMap<Vec<String>, (String, String)>) {
    let mods = sources();
    let mut edges = BTreeMap::new();
    for (m, (file, code)) in &mods {
        let is_mod = file.ends_with("mod") || file == "lib" || file == "main";
        let children: BTreeSet<String> =
            mods.keys().filter(|k| k.len() == m.len() + 1 && k.starts_with(m)).map(|k| k[m.len()].clone()).collect();
        let mut to = BTreeSet::new();
        for p in paths(code, is_mod, &children) {
            if let Some(t) = resolve(m, &p, &mods).filter(|t| t != m) {
                to.insert(t);
            }
        }
        edges.insert(m.clone(), to);
    }
    (edges, mods)
}

#[test]
fn r6_no_file_imports_one_that_imports_it_back() {
    let (edges, mods) = graph();
    assert!(edges.len() > 30, "only {} files", edges.len());
    // Depth-first search for a cycle.
    fn dfs(
        u: &Vec<String>,
        edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        color: &mut BTreeMap<Vec<String>, u8>,
        stack: &mut Vec<Vec<String>>,
        found: &mut Vec<String>,
    ) {
        color.insert(u.clone(), 1);
        stack.push(u.clone());
        for v in edges.get(u).into_iter().flatten() {
            match color.get(v) {
                Some(1) => {
                    let at = stack.iter().position(|s| s == v).unwrap_or(0);
                    let cyc: Vec<String> =
                        stack[at..].iter().chain([v]).map(|m| format!("src/{}", m.join("/"))).collect();
                    found.push(cyc.join(" → "));
                }
                None => dfs(v, edges, color, stack, found),
                _ => {}
            }
        }
        stack.pop();
        color.insert(u.clone(), 2);
    }
    let (mut color, mut found) = (BTreeMap::new(), Vec::new());
    for u in edges.keys() {
        if !color.contains_key(u) {
            dfs(u, &edges, &mut color, &mut Vec::new(), &mut found);
        }
    }
    let _ = mods;
    assert!(found.is_empty(), "import circles:\n{}", found.join("\n"));
}

#[test]
fn r6_imports_point_one_way_and_the_engine_reads_no_clock() {
    let (edges, mods) = graph();
    let layer = |m: &Vec<String>| match m.first().map(String::as_str) {
        Some("wire") => 0,
        Some("engine") => 1,
        Some("config") => 2,
        Some("shell") => 3,
        Some("server") => 4,
        _ => 5,
    };
    let mut wrong = Vec::new();
    for (from, tos) in &edges {
        for to in tos {
            if layer(to) > layer(from) && !from.is_empty() {
                wrong.push(format!("{} imports {}", from.join("/"), to.join("/")));
            }
        }
    }
    assert!(wrong.is_empty(), "imports against DESIGN §3's order:\n{}", wrong.join("\n"));
    for (m, (file, code)) in &mods {
        if matches!(m.first().map(String::as_str), Some("engine" | "wire")) {
            for banned in [
                "SystemTime",
                "Instant::now",
                "getrandom",
                "crossbeam",
                "netlink",
                "pnet_datalink",
                "std::net::TcpStream",
                "std::fs",
                "libc::",
            ] {
                assert!(
                    !code.contains(banned),
                    "src/{file}.rs uses {banned}: the sans-IO core reads no clock, socket or random source"
                );
            }
        }
    }
}
