//! The layering rule of ARCHITECTURE.md, checked: the top-level modules of
//! `src/` (non-test code) import each other without cycles, and the agent
//! never reaches the store, Raft, the scheduler, the controller or the
//! server; protobuf types stay in `wire` and the tonic glue. It reads the source text only (no build of its own), so it runs
//! on a clean clone.
//!
//! A module's references are its `crate::X` paths and the first names of
//! `crate::{X, Y::Z}` groups; `#[cfg(test)]` items are dropped first.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Modules the agent must never import: it talks to the control plane only
/// through gRPC.
const AGENT_MUST_NOT_REACH: &[&str] = &["store", "raft", "scheduler", "controller", "server"];

/// Skips a string, raw string, char literal or comment starting at `i`;
/// returns the index after it, or `None` when `i` starts none of them.
fn skip_literal(bytes: &[u8], i: usize) -> Option<usize> {
    let at = |k: usize| bytes.get(k).copied().unwrap_or(0);
    match at(i) {
        b'/' if at(i + 1) == b'/' => {
            let mut k = i;
            while k < bytes.len() && bytes[k] != b'\n' {
                k += 1;
            }
            Some(k)
        }
        b'/' if at(i + 1) == b'*' => {
            let mut k = i + 2;
            let mut depth = 1;
            while k < bytes.len() && depth > 0 {
                if at(k) == b'/' && at(k + 1) == b'*' {
                    depth += 1;
                    k += 2;
                } else if at(k) == b'*' && at(k + 1) == b'/' {
                    depth -= 1;
                    k += 2;
                } else {
                    k += 1;
                }
            }
            Some(k)
        }
        b'r' if (at(i + 1) == b'#' || at(i + 1) == b'"')
            && (i == 0 || !(at(i - 1).is_ascii_alphanumeric() || at(i - 1) == b'_')) =>
        {
            let mut k = i + 1;
            let mut hashes = 0;
            while at(k) == b'#' {
                hashes += 1;
                k += 1;
            }
            if at(k) != b'"' {
                return None;
            }
            k += 1;
            loop {
                if k >= bytes.len() {
                    return Some(k);
                }
                if at(k) == b'"' && (1..=hashes).all(|h| at(k + h) == b'#') {
                    return Some(k + 1 + hashes);
                }
                k += 1;
            }
        }
        b'"' => {
            let mut k = i + 1;
            while k < bytes.len() && at(k) != b'"' {
                k += if at(k) == b'\\' { 2 } else { 1 };
            }
            Some(k + 1)
        }
        // A char literal ('x', '\n', '\u{7f}'), not a lifetime ('a).
        b'\'' if at(i + 1) == b'\\' => {
            let mut k = i + 2;
            while k < bytes.len() && at(k) != b'\'' {
                k += 1;
            }
            Some(k + 1)
        }
        b'\'' if at(i + 2) == b'\'' => Some(i + 3),
        b'\'' => {
            // A multi-byte UTF-8 char literal.
            let rest = std::str::from_utf8(&bytes[i + 1..]).ok()?;
            let c = rest.chars().next()?;
            (at(i + 1 + c.len_utf8()) == b'\'').then_some(i + 2 + c.len_utf8())
        }
        _ => None,
    }
}

/// The text without its `#[cfg(test)]` items: a braced item is dropped up to
/// its matching brace, any other item up to its `;`.
fn strip_test_items(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::new();
    let mut copied = 0;
    let mut search = 0;
    while let Some(found) = text[search..].find("#[cfg(test)]") {
        let start = search + found;
        let line_start = text[..start].rfind('\n').map_or(0, |k| k + 1);
        if !text[line_start..start].trim().is_empty() {
            search = start + 1; // mentioned in a comment or a string, not an attribute
            continue;
        }
        out.push_str(&text[copied..start]);
        let mut k = start + "#[cfg(test)]".len();
        let mut depth = 0usize;
        while k < bytes.len() {
            if let Some(next) = skip_literal(bytes, k) {
                k = next;
                continue;
            }
            match bytes[k] {
                b';' if depth == 0 => {
                    k += 1;
                    break;
                }
                b'{' => depth += 1,
                b'}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        k += 1;
                        break;
                    }
                }
                _ => {}
            }
            k += 1;
        }
        copied = k.min(bytes.len());
        search = copied;
    }
    out.push_str(&text[copied..]);
    out
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The leading identifier of `text` (after whitespace), if any.
fn leading_ident(text: &str) -> Option<&str> {
    let text = text.trim_start();
    let end = text
        .bytes()
        .position(|b| !is_ident_byte(b))
        .unwrap_or(text.len());
    (end > 0).then(|| &text[..end])
}

/// The top-level module names a piece of code refers to through `crate::`.
fn crate_references(code: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = code;
    while let Some(found) = rest.find("crate::") {
        let before = rest[..found].bytes().last();
        rest = &rest[found + "crate::".len()..];
        if before.is_some_and(is_ident_byte) {
            continue; // e.g. `$crate::` or `my_crate::`
        }
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a, b::c, d::{e, f}}`: the first name of each item.
            let mut depth = 0;
            let mut item_start = 0;
            for (k, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        names.extend(leading_ident(&group[item_start..k]).map(str::to_string));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        names.extend(leading_ident(&group[item_start..k]).map(str::to_string));
                        item_start = k + 1;
                    }
                    _ => {}
                }
            }
        } else if let Some(name) = leading_ident(rest) {
            names.insert(name.to_string());
        }
    }
    names
}

/// The import graph between top-level modules. `files` are paths relative
/// to `src/` with their text.
fn module_graph(files: &[(String, String)]) -> BTreeMap<String, BTreeSet<String>> {
    let modules: BTreeSet<String> = files
        .iter()
        .map(|(path, _)| top_level_module(path))
        .filter(|m| m != "main" && m != "lib")
        .collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, text) in files {
        let module = top_level_module(path);
        if !modules.contains(&module) {
            continue;
        }
        let targets = crate_references(&strip_test_items(text))
            .into_iter()
            .filter(|target| *target != module && modules.contains(target))
            .collect::<Vec<_>>();
        edges.entry(module).or_default().extend(targets);
    }
    edges
}

fn top_level_module(path: &str) -> String {
    let first = path.split('/').next().unwrap_or(path);
    first.strip_suffix(".rs").unwrap_or(first).to_string()
}

/// The groups of two or more modules that import each other, directly or
/// through others (strongly connected components).
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let reach = |from: &str| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.to_string()];
        while let Some(module) = stack.pop() {
            for next in edges.get(&module).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
        seen
    };
    let reachable: BTreeMap<&String, BTreeSet<String>> =
        edges.keys().map(|m| (m, reach(m))).collect();
    let mut groups: Vec<Vec<String>> = Vec::new();
    let mut placed = BTreeSet::new();
    for module in edges.keys() {
        if placed.contains(module) || !reachable[module].contains(module) {
            continue;
        }
        let group: Vec<String> = edges
            .keys()
            .filter(|other| {
                reachable[module].contains(*other) && reachable[*other].contains(module)
            })
            .cloned()
            .collect();
        placed.extend(group.iter().cloned());
        if group.len() > 1 {
            groups.push(group);
        }
    }
    groups
}

fn read_sources(dir: &Path, prefix: &str, out: &mut Vec<(String, String)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let relative = format!("{prefix}{name}");
        if path.is_dir() {
            read_sources(&path, &format!("{relative}/"), out);
        } else if name.ends_with(".rs") {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            out.push((relative, text));
        }
    }
}

#[test]
fn top_level_modules_import_without_cycles() {
    let mut files = Vec::new();
    read_sources(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        "",
        &mut files,
    );
    let edges = module_graph(&files);
    assert!(
        edges.len() > 10,
        "expected the crate's top-level modules, found {:?}",
        edges.keys()
    );
    let found = cycles(&edges);
    assert!(
        found.is_empty(),
        "import cycles between top-level modules of src/ (a module imports only from the layers below it, see ARCHITECTURE.md): {}",
        found
            .iter()
            .map(|group| group.join(" <-> "))
            .collect::<Vec<_>>()
            .join("; ")
    );
    let agent_reaches: Vec<&String> = edges
        .get("agent")
        .into_iter()
        .flatten()
        .filter(|m| AGENT_MUST_NOT_REACH.contains(&m.as_str()))
        .collect();
    assert!(
        agent_reaches.is_empty(),
        "the agent imports {agent_reaches:?}; it must reach the control plane only through gRPC"
    );
}

/// The files outside `wire` allowed to name protobuf types: the tonic glue
/// (service trait impls and their registration, calls of a generated
/// client). See the `wire` invariant in ARCHITECTURE.md.
const PROTOBUF_GLUE: &[&str] = &[
    "api/mod.rs",
    "api/agent.rs",
    "client.rs",
    "agent/worker.rs",
    "raft/transport.rs",
    // The log session: relays LogRequest/LogChunk streams between an
    // agent's ServeLogs call and readers' TaskLogs calls (no domain type
    // stands behind a chunk of output lines).
    "api/logs.rs",
    "agent/logs.rs",
];

#[test]
fn protobuf_stays_in_wire_and_the_tonic_glue() {
    let mut files = Vec::new();
    read_sources(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        "",
        &mut files,
    );
    let leaks: Vec<&String> = files
        .iter()
        .filter(|(path, _)| !path.starts_with("wire/") && !PROTOBUF_GLUE.contains(&path.as_str()))
        .filter(|(_, text)| {
            let code = strip_test_items(text);
            code.contains("wire::proto") || code.contains("crate::proto")
        })
        .map(|(path, _)| path)
        .collect();
    assert!(
        leaks.is_empty(),
        "protobuf types are named outside wire and the tonic glue in {leaks:?}: convert with wire::convert at the gRPC boundary instead"
    );
}

fn file(path: &str, text: &str) -> (String, String) {
    (path.to_string(), text.to_string())
}

#[test]
fn a_cycle_through_three_modules_is_found() {
    let files = [
        file("a.rs", "use crate::b::Thing;\n"),
        file("b/mod.rs", "pub mod inner;\n"),
        file("b/inner.rs", "use crate::{error, c::More};\n"),
        file("c.rs", "fn f() { crate::a::g() }\n"),
        file("error.rs", "pub struct Error;\n"),
    ];
    assert_eq!(
        cycles(&module_graph(&files)),
        vec![vec!["a".to_string(), "b".to_string(), "c".to_string()]]
    );
}

#[test]
fn test_items_comments_and_strings_do_not_confuse_it() {
    let files = [
        file(
            "low.rs",
            r##"
pub fn f() -> &'static str { "}{" }
const BRACE: char = '{';
#[cfg(test)]
mod tests {
    use crate::high::H;
    const RAW: &str = r#"} { }"#;
    fn g<'a>(x: &'a str) -> &'a str { x }
}
#[cfg(test)]
use crate::high::Other;
pub fn after() {}
"##,
        ),
        file("high.rs", "use crate::low::{self, f};\n"),
    ];
    let edges = module_graph(&files);
    assert!(cycles(&edges).is_empty(), "{edges:?}");
    assert_eq!(edges["high"], BTreeSet::from(["low".to_string()]));
    assert!(edges["low"].is_empty(), "{edges:?}");
    // The code after the test items is still read.
    let with_cycle = [files[0].clone(), files[1].clone(), file("low2.rs", "")];
    let mut altered = with_cycle.to_vec();
    altered[0].1.push_str("fn late() { crate::high::h() }\n");
    assert_eq!(
        cycles(&module_graph(&altered)),
        vec![vec!["high".to_string(), "low".to_string()]]
    );
}
