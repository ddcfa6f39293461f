//! The layering rule of `src/lib.rs`, checked on the source itself: a module
//! imports only from its own layer or below, no two files import each other
//! (directly or round a longer loop), and no source file grows past
//! `LINES_MAX` lines of non-test code.
//!
//! Imports are read from the code's own paths: `crate::a::b`, `super::x`,
//! `self::x` and paths that start at a child module (`state::X` in a
//! `mod.rs`), in `use` lines and in expressions, resolved to the file that
//! defines the module, and through `pub use` re-exports (`super::` ones too)
//! to the file that defines the item. A glob re-export (`pub use a::*`)
//! cannot be followed, so it is refused. `#[cfg(test)]` modules are left out:
//! tests may reach anywhere.
//!
//! `DEBT` lists the violations of today's code that the ongoing redesign
//! (issue 13) removes step by step. The check fails on any violation not in
//! it, and on any entry of it that no longer occurs, so the list only shrinks.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Layers, lowest first. A file's layer is that of its top-level module.
const LAYERS: &[(&str, u32)] = &[
    // Wire format, record batches, codecs; no I/O.
    ("protocol", 0),
    // A registry every layer writes to; renders snapshots handed to it.
    ("metrics", 0),
    // The only syscalls: files, sockets, splice, aligned buffers.
    ("io", 1),
    ("storage", 2),
    // Generic thread-per-core shards, queues, budgets, the clock.
    ("runtime", 3),
    // Kafka state of one node.
    ("metadata", 4),
    ("group", 4),
    ("partition", 4),
    ("txn", 4),
    ("cluster", 4),
    ("node", 4),
    ("config", 4),
    ("server", 5),
    ("broker", 6),
    ("main", 7),
    ("lib", 8),
];

/// Non-test lines a source file may have.
const LINES_MAX: usize = 1_000;

/// Known violations, to be removed (issue 13). Each is "from -> to" (an
/// upward import or an edge of an import loop) or "size file".
const DEBT: &[&str] = &[];

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// `a/b/mod.rs` and `a/b.rs` are module `a::b`; `lib.rs` and `main.rs` the root.
fn module_of(relative: &str) -> Vec<String> {
    let stem = relative.trim_end_matches(".rs");
    let mut parts: Vec<String> = stem.split('/').map(str::to_string).collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    if parts == ["lib"] || parts == ["main"] {
        parts.clear();
    }
    parts
}

fn layer_of(relative: &str) -> u32 {
    let top = relative
        .split('/')
        .next()
        .unwrap_or_default()
        .trim_end_matches(".rs");
    LAYERS
        .iter()
        .find(|(name, _)| *name == top)
        .map(|(_, layer)| *layer)
        .unwrap_or_else(|| panic!("{relative}: module `{top}` has no layer in LAYERS"))
}

/// The code of a file without comments, string literals and `#[cfg(test)]` items.
fn code_of(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if text[i..].starts_with("//") {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
        } else if text[i..].starts_with("/*") {
            let end = text[i + 2..]
                .find("*/")
                .map_or(bytes.len(), |e| i + 2 + e + 2);
            i = end;
        } else if bytes[i] == b'"' {
            // Skip a string literal (escapes included); raw strings hold no paths we need.
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' {
                if bytes[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if bytes[i] == b'\'' && i + 2 < bytes.len() && bytes[i + 2] == b'\'' {
            // A char literal such as '"' or '{'.
            i += 3;
        } else if text[i..].starts_with("#[cfg(test)]") {
            // Skip the attribute and the item it marks (to its closing brace or semicolon).
            i += "#[cfg(test)]".len();
            let mut depth = 0usize;
            while i < bytes.len() {
                match bytes[i] {
                    b'{' => depth += 1,
                    b'}' => {
                        depth -= 1;
                        if depth == 0 {
                            i += 1;
                            break;
                        }
                    }
                    b';' if depth == 0 => {
                        i += 1;
                        break;
                    }
                    _ => {}
                }
                i += 1;
            }
        } else {
            out.push(bytes[i] as char);
            i += 1;
        }
    }
    out
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Expands `a::b::{c, d::{e, f}}` at the start of `text` into full paths.
fn expand_paths(text: &str) -> Vec<Vec<String>> {
    fn parse(text: &str, prefix: &[String], out: &mut Vec<Vec<String>>) {
        let text = text.trim_start();
        let mut path = prefix.to_vec();
        let mut rest = text;
        loop {
            let len = rest.bytes().take_while(|&b| is_ident_byte(b)).count();
            if len == 0 {
                break;
            }
            path.push(rest[..len].to_string());
            rest = &rest[len..];
            if let Some(after) = rest.strip_prefix("::") {
                if let Some(group) = after.strip_prefix('{') {
                    let mut depth = 1;
                    let mut end = 0;
                    for (i, c) in group.char_indices() {
                        match c {
                            '{' => depth += 1,
                            '}' => {
                                depth -= 1;
                                if depth == 0 {
                                    end = i;
                                    break;
                                }
                            }
                            _ => {}
                        }
                    }
                    let inner = &group[..end];
                    let mut depth = 0;
                    let mut start = 0;
                    for (i, c) in inner.char_indices() {
                        match c {
                            '{' => depth += 1,
                            '}' => depth -= 1,
                            ',' if depth == 0 => {
                                parse(&inner[start..i], &path, out);
                                start = i + 1;
                            }
                            _ => {}
                        }
                    }
                    parse(&inner[start..], &path, out);
                    return;
                }
                rest = after;
                continue;
            }
            break;
        }
        if path.len() > prefix.len() {
            out.push(path);
        }
    }
    let mut out = Vec::new();
    parse(text, &[], &mut out);
    out
}

struct Source {
    /// Relative path (`storage/log.rs`) -> code without comments and tests.
    code: BTreeMap<String, String>,
    /// Module path -> relative path.
    files: BTreeMap<Vec<String>, String>,
    /// (module path of a mod.rs, item name) -> module path the item is re-exported from.
    reexports: BTreeMap<(Vec<String>, String), Vec<String>>,
    /// Files with a `pub use a::*`: not followed, so not allowed.
    glob_reexports: BTreeSet<String>,
}

fn read_source() -> Source {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).expect("src dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(&path, root, out);
            } else if path.extension().is_some_and(|e| e == "rs")
                // A test module in a file of its own (`#[cfg(test)] mod tests;`).
                && path.file_name().is_some_and(|n| n != "tests.rs")
            {
                let relative = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .to_string();
                let text = std::fs::read_to_string(&path).expect("read");
                out.insert(relative, text);
            }
        }
    }
    let root = src_dir();
    let mut texts = BTreeMap::new();
    walk(&root, &root, &mut texts);
    source_from(&texts)
}

/// The import graph of source files given as (relative path, text).
fn source_from(texts: &BTreeMap<String, String>) -> Source {
    let code: BTreeMap<String, String> =
        texts.iter().map(|(k, v)| (k.clone(), code_of(v))).collect();
    let files: BTreeMap<Vec<String>, String> = code
        .keys()
        .filter(|f| f.as_str() != "main.rs")
        .map(|f| (module_of(f), f.clone()))
        .collect();
    let mut reexports = BTreeMap::new();
    let mut glob_reexports = BTreeSet::new();
    for (file, text) in &code {
        let module = module_of(file);
        for (at, _) in text.match_indices("pub use ") {
            let statement = &text[at + "pub use ".len()..];
            let statement = &statement[..statement.find(';').unwrap_or(statement.len())];
            if statement.trim_end().ends_with('*') {
                glob_reexports.insert(file.clone());
            }
            for path in expand_paths(statement) {
                let (Some(item), Some(first)) = (path.last(), path.first()) else {
                    continue;
                };
                let target = match first.as_str() {
                    "crate" => path[1..path.len() - 1].to_vec(),
                    "self" => [module.clone(), path[1..path.len() - 1].to_vec()].concat(),
                    "super" => {
                        let supers = path.iter().take_while(|p| *p == "super").count();
                        let mut base = module.clone();
                        for _ in 0..supers {
                            base.pop();
                        }
                        [base, path[supers..path.len() - 1].to_vec()].concat()
                    }
                    _ => [module.clone(), path[..path.len() - 1].to_vec()].concat(),
                };
                reexports.insert((module.clone(), item.clone()), target);
            }
        }
    }
    Source {
        code,
        files,
        reexports,
        glob_reexports,
    }
}

impl Source {
    /// The file an absolute module path (plus an item) refers to.
    fn resolve(&self, path: &[String]) -> Option<String> {
        for len in (1..=path.len()).rev() {
            let module = &path[..len];
            if let Some(file) = self.files.get(module) {
                if let Some(item) = path.get(len) {
                    if let Some(target) = self.reexports.get(&(module.to_vec(), item.clone())) {
                        if target.as_slice() != module {
                            let mut deeper = target.clone();
                            deeper.extend_from_slice(&path[len..]);
                            return self.resolve(&deeper).or_else(|| Some(file.clone()));
                        }
                    }
                }
                return Some(file.clone());
            }
        }
        None
    }

    /// Every file `file` imports.
    fn imports(&self, file: &str) -> BTreeSet<String> {
        let module = module_of(file);
        let code = &self.code[file];
        let mut out = BTreeSet::new();
        for anchor in ["crate::", "super::", "self::"] {
            for (at, _) in code.match_indices(anchor) {
                if at > 0 && is_ident_byte(code.as_bytes()[at - 1]) {
                    continue;
                }
                for path in expand_paths(&code[at..]) {
                    let absolute = match path[0].as_str() {
                        "crate" => path[1..].to_vec(),
                        "self" => [module.clone(), path[1..].to_vec()].concat(),
                        "super" => {
                            let supers = path.iter().take_while(|p| *p == "super").count();
                            let mut base = module.clone();
                            // In a mod.rs, `super` is the parent of the directory's module.
                            for _ in 0..supers {
                                base.pop();
                            }
                            [base, path[supers..].to_vec()].concat()
                        }
                        _ => continue,
                    };
                    if let Some(target) = self.resolve(&absolute) {
                        if target != file {
                            out.insert(target);
                        }
                    }
                }
            }
        }
        // A path that starts at a child module (`state::X` in `log/mod.rs`)
        // names that child's file, in a `use` or in an expression.
        let mut at = 0;
        while at < code.len() {
            let len = code.as_bytes()[at..]
                .iter()
                .take_while(|&&b| is_ident_byte(b))
                .count();
            if len == 0 {
                at += code[at..].chars().next().map_or(1, char::len_utf8);
                continue;
            }
            let preceded = at > 0 && {
                let before = code[..at].trim_end();
                before.ends_with("::") || before.ends_with('.')
            };
            let child = [module.clone(), vec![code[at..at + len].to_string()]].concat();
            if !preceded && code[at + len..].starts_with("::") && self.files.contains_key(&child) {
                for path in expand_paths(&code[at..]) {
                    if let Some(target) = self.resolve(&[module.clone(), path].concat()) {
                        if target != file {
                            out.insert(target);
                        }
                    }
                }
            }
            at += len;
        }
        out
    }
}

/// Files in import loops: each strongly connected component of more than one file.
fn loops(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<BTreeSet<String>> {
    struct Tarjan<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<String, usize>,
        low: BTreeMap<String, usize>,
        stack: Vec<String>,
        on_stack: BTreeSet<String>,
        next: usize,
        out: Vec<BTreeSet<String>>,
    }
    impl Tarjan<'_> {
        fn visit(&mut self, v: &str) {
            self.index.insert(v.to_string(), self.next);
            self.low.insert(v.to_string(), self.next);
            self.next += 1;
            self.stack.push(v.to_string());
            self.on_stack.insert(v.to_string());
            let targets: Vec<String> = self.edges.get(v).into_iter().flatten().cloned().collect();
            for w in targets {
                if !self.index.contains_key(&w) {
                    self.visit(&w);
                    let low = self.low[v].min(self.low[&w]);
                    self.low.insert(v.to_string(), low);
                } else if self.on_stack.contains(&w) {
                    let low = self.low[v].min(self.index[&w]);
                    self.low.insert(v.to_string(), low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = BTreeSet::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(&w);
                    let done = w == v;
                    component.insert(w);
                    if done {
                        break;
                    }
                }
                if component.len() > 1 {
                    self.out.push(component);
                }
            }
        }
    }
    let mut tarjan = Tarjan {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !tarjan.index.contains_key(v) {
            tarjan.visit(v);
        }
    }
    tarjan.out
}

/// Every violation of the rules, as DEBT spells them.
fn violations(source: &Source) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in source.code.keys() {
        let imports = source.imports(file);
        for target in &imports {
            if layer_of(target) > layer_of(file) {
                found.insert(format!("{file} -> {target}"));
            }
        }
        edges.insert(file.clone(), imports);
    }
    for component in loops(&edges) {
        for from in &component {
            for to in edges[from].intersection(&component) {
                found.insert(format!("{from} -> {to}"));
            }
        }
    }
    for file in &source.glob_reexports {
        found.insert(format!("glob re-export {file}"));
    }
    for (file, code) in &source.code {
        let lines = code.lines().filter(|l| !l.trim().is_empty()).count();
        if lines > LINES_MAX {
            found.insert(format!("size {file}"));
        }
    }
    found
}

#[test]
fn layers_run_one_way_and_files_stay_small() {
    let source = read_source();
    let found = violations(&source);
    let debt: BTreeSet<String> = DEBT.iter().map(|s| s.to_string()).collect();
    let new: Vec<&String> = found.difference(&debt).collect();
    let paid: Vec<&String> = debt.difference(&found).collect();
    assert!(
        new.is_empty() && paid.is_empty(),
        "layering check (tests/architecture.rs):\n\
         violations not allowed (an upward import, an import loop, or a file over {LINES_MAX} lines):\n  {}\n\
         DEBT entries that no longer occur (remove them):\n  {}",
        new.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n  "),
        paid.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n  ")
    );
}

#[test]
fn the_checker_sees_what_it_must() {
    // Paths and groups expand.
    let paths = expand_paths("crate::storage::{log::{self, LogRef}, segment};");
    let flat: Vec<String> = paths.iter().map(|p| p.join("::")).collect();
    assert_eq!(
        flat,
        [
            "crate::storage::log::self",
            "crate::storage::log::LogRef",
            "crate::storage::segment"
        ]
    );
    // Comments, strings and test modules are not code.
    let code = code_of(
        "use crate::a; // crate::b\nlet s = \"crate::c\";\n#[cfg(test)]\nmod tests { use crate::d; }\nuse crate::e;",
    );
    assert!(code.contains("crate::a") && code.contains("crate::e"));
    assert!(!code.contains("crate::b") && !code.contains("crate::c") && !code.contains("crate::d"));
    // A loop of three and an edge into it.
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (a, b) in [("x", "y"), ("y", "z"), ("z", "x"), ("w", "x")] {
        edges.entry(a.into()).or_default().insert(b.into());
    }
    let found = loops(&edges);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].len(), 3);
    // On a small tree: an upward import, a loop through a re-export, and a
    // downward import that is fine.
    let texts: BTreeMap<String, String> = [
        ("lib.rs", "pub mod storage; pub mod server;"),
        ("storage/mod.rs", "pub mod log; pub use log::LogRef;"),
        (
            "storage/log.rs",
            "use crate::server::Handler; pub struct LogRef;",
        ),
        (
            "server/mod.rs",
            "use crate::storage::LogRef; pub struct Handler;",
        ),
        ("protocol/mod.rs", "use crate::protocol::batch;"),
    ]
    .into_iter()
    .map(|(path, text)| (path.to_string(), text.to_string()))
    .collect();
    let found = violations(&source_from(&texts));
    assert!(
        found.contains("storage/log.rs -> server/mod.rs"),
        "{found:?}"
    );
    assert!(
        found.contains("server/mod.rs -> storage/log.rs"),
        "the re-export is followed: {found:?}"
    );
    assert_eq!(found.len(), 2, "{found:?}");
    // A parent using its child by a relative path while the child uses the
    // parent (a loop), a `pub use super::` re-export followed to its file,
    // and a glob re-export (which cannot be followed, so is refused).
    let texts: BTreeMap<String, String> = [
        ("lib.rs", "pub mod storage; pub mod server; pub mod io;"),
        (
            "storage/mod.rs",
            "pub mod log; pub struct Config; fn f() { log::open(); }",
        ),
        ("storage/log.rs", "use super::Config; pub fn open() {}"),
        ("io/mod.rs", "pub mod disk; pub use disk::*;"),
        ("io/disk.rs", "pub struct Disk;"),
        ("server/mod.rs", "pub mod handlers; pub struct Handler;"),
        ("server/handlers.rs", "pub use super::super::broker::Start;"),
        ("broker.rs", "pub struct Start;"),
    ]
    .into_iter()
    .map(|(path, text)| (path.to_string(), text.to_string()))
    .collect();
    let found = violations(&source_from(&texts));
    let expected: BTreeSet<String> = [
        "storage/mod.rs -> storage/log.rs",
        "storage/log.rs -> storage/mod.rs",
        "glob re-export io/mod.rs",
        "server/handlers.rs -> broker.rs",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(found, expected);
    // Every source file has a layer.
    let source = read_source();
    assert!(source.code.len() > 40, "{} files", source.code.len());
    for file in source.code.keys() {
        layer_of(file);
    }
}
