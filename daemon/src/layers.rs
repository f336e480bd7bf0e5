//! The dependency rules of `docs/ARCHITECTURE.md` ("Dependency rules"),
//! checked: every top-level module has a layer, and a module imports only
//! from its own layer or below — which also means no two modules import
//! each other. A new module, or a new `use crate::…` that points up, fails
//! this test; put the code where it belongs instead (or, for a pure
//! function, in `pithead-core`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Layers, lowest first. Within a layer, imports may go either way as long
/// as they do not form a cycle (checked too).
const LAYERS: &[&[&str]] = &[
    // Leaves: no imports from the crate.
    &[
        "time",
        "heartbeat",
        "kiosk_keys",
        "tls",
        "signing",
        "photos",
        "lifecycle",
    ],
    &["config"],
    &["logging", "store"],
    // Services over the store, and acquisition.
    &["acquisition", "auth", "hazards", "roster", "simulator"],
    &["alarm", "reports"],
    &["sync", "light"],
    &["web"],
    &["app"],
    &["cli"],
];

/// Test-only helpers, free to use anything.
const EXEMPT: &[&str] = &["testing", "layers"];

/// The crate's top-level modules a line of code imports from: `crate::x`
/// and the names directly inside `crate::{…}`.
fn imports(line: &str) -> Vec<String> {
    let code = line.split("//").next().unwrap_or("");
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            let mut depth = 0;
            let mut name = String::new();
            let mut at_start = true;
            for c in group[..end].chars() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        at_start = true;
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 && at_start {
                    if c.is_alphanumeric() || c == '_' {
                        name.push(c);
                    } else if !name.is_empty() {
                        out.push(std::mem::take(&mut name));
                        at_start = false;
                    }
                }
            }
            if !name.is_empty() {
                out.push(name);
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.push(name);
            }
        }
    }
    out
}

/// Module → the modules it imports, from the sources under `src`.
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap_or(&path);
            let first = rel
                .components()
                .next()
                .map(|c| {
                    c.as_os_str()
                        .to_string_lossy()
                        .trim_end_matches(".rs")
                        .to_owned()
                })
                .unwrap_or_default();
            if first == "lib" || first == "main" {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let deps = g.entry(first.clone()).or_default();
            for line in text.lines() {
                for m in imports(line) {
                    if m != first && !EXEMPT.contains(&m.as_str()) {
                        deps.insert(m);
                    }
                }
            }
        }
    }
    g
}

fn layer_of(m: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&m))
}

/// Every violation: modules without a layer, imports that point up, cycles.
fn violations(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut out = Vec::new();
    for (m, deps) in g {
        if EXEMPT.contains(&m.as_str()) {
            continue;
        }
        let Some(lm) = layer_of(m) else {
            out.push(format!("module `{m}` has no layer in LAYERS"));
            continue;
        };
        for d in deps {
            match layer_of(d) {
                Some(ld) if ld > lm => out.push(format!(
                    "`{m}` (layer {lm}) imports `{d}` (layer {ld}): a back-edge"
                )),
                _ => {}
            }
        }
    }
    // Cycles within a layer: a depth-first search for a path back.
    for (m, deps) in g {
        for d in deps {
            let mut seen = BTreeSet::new();
            let mut todo = vec![d.clone()];
            while let Some(n) = todo.pop() {
                if n == *m {
                    out.push(format!("`{m}` and `{d}` import each other (a cycle)"));
                    break;
                }
                if seen.insert(n.clone()) {
                    todo.extend(g.get(&n).into_iter().flatten().cloned());
                }
            }
        }
    }
    out
}

#[test]
fn imports_follow_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let g = graph(&src);
    assert!(
        g.contains_key("alarm") && g["web"].contains("store"),
        "{g:?}"
    );
    let v = violations(&g);
    assert!(v.is_empty(), "dependency rules broken:\n{}", v.join("\n"));
}

#[test]
fn the_check_sees_back_edges_and_cycles() {
    assert_eq!(imports("use crate::store::{self, Store};"), ["store"]);
    assert_eq!(
        imports("use crate::{config::Config, store::{Durability, Store}};"),
        ["config", "store"]
    );
    assert_eq!(
        imports("let x = crate::time::now(); // crate::web"),
        ["time"]
    );
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.entry("store".into()).or_default().insert("web".into());
    g.entry("photos".into()).or_default().insert("time".into());
    g.entry("time".into()).or_default().insert("photos".into());
    g.entry("newthing".into()).or_default();
    let v = violations(&g).join("\n");
    assert!(v.contains("`store` (layer 2) imports `web`"), "{v}");
    assert!(v.contains("import each other"), "{v}");
    assert!(v.contains("`newthing` has no layer"), "{v}");
}
