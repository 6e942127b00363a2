//! The crate's top-level modules import each other without a cycle.
//!
//! The test reads every `src/**.rs` file, leaves out comments, string and character literals and
//! `#[cfg(test)]` modules (tests may drive the whole crate), and collects each `crate::<module>`
//! path (`crate::a::b`, `crate::{a, b::c}`) as an edge from the file's top-level module to
//! `<module>`. `lib.rs` and `main.rs` sit above every module and are left out. A cycle fails
//! the test, named module by module, so whoever adds the import that closes it sees where it
//! is; the fix is to move the shared value down (to `model`), not to hide the import.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module → the top-level modules it imports.
type Graph = BTreeMap<String, BTreeSet<String>>;

#[test]
fn no_import_cycle_between_top_level_modules() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = import_graph(&src);
    assert!(
        graph.len() > 10 && graph.values().map(BTreeSet::len).sum::<usize>() > 30,
        "the graph looks empty: {graph:?}"
    );
    assert!(
        graph["pipeline"].contains("validate") && graph["validate"].contains("model"),
        "the reader misses edges: {graph:?}"
    );
    let cycles = cycles(&graph);
    assert!(
        cycles.is_empty(),
        "import cycles between top-level modules of src/: {}",
        cycles
            .iter()
            .map(|c| c.join(" → "))
            .collect::<Vec<_>>()
            .join("; ")
    );
}

#[test]
fn the_cycle_finder_names_every_cycle_and_nothing_else() {
    let graph = |edges: &[(&str, &str)]| -> Graph {
        let mut g = Graph::new();
        for (from, to) in edges {
            g.entry((*from).to_owned())
                .or_default()
                .insert((*to).to_owned());
        }
        g
    };
    let layered = graph(&[("a", "b"), ("a", "c"), ("b", "c"), ("c", "d")]);
    assert!(cycles(&layered).is_empty());
    let two = graph(&[
        ("a", "b"),
        ("b", "c"),
        ("c", "a"),
        ("c", "d"),
        ("d", "e"),
        ("e", "d"),
        ("e", "f"),
    ]);
    assert_eq!(
        cycles(&two),
        [vec!["a", "b", "c", "a"], vec!["d", "e", "d"]]
    );
}

#[test]
fn test_modules_comments_and_strings_make_no_edges() {
    let text = r#"
use crate::model::Decision;
use crate::{finding::Code, period::{self, Period}};
// crate::commented
/* crate::blocked */
const S: &str = "crate::quoted";
const R: &str = r"crate::raw";
const C: char = '{';
fn f<'a>(x: &'a str) -> &'a str { crate::layout::key(x) }
#[cfg(test)]
pub(crate) mod tests {
    use crate::pipeline::check_upload;
    fn g() { let _ = "}"; }
}
fn after() { crate::store::open(); }
"#;
    assert_eq!(
        imports(text),
        ["finding", "layout", "model", "period", "store"]
            .map(String::from)
            .into_iter()
            .collect::<BTreeSet<_>>()
    );
}

/// The import graph of the crate whose sources are under `src`.
fn import_graph(src: &Path) -> Graph {
    let mut graph = Graph::new();
    let mut files = Vec::new();
    rust_files(src, &mut files);
    for file in files {
        let rel = file.strip_prefix(src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        if top == "lib" || top == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let targets = graph.entry(top.clone()).or_default();
        targets.extend(imports(&text).into_iter().filter(|t| *t != top));
    }
    graph
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules a source file names through `crate::`, outside test modules.
fn imports(text: &str) -> BTreeSet<String> {
    let code = without_tests(&code_only(text));
    let mut out = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            out.extend(group_heads(group));
        } else {
            out.insert(identifier(rest).to_owned());
        }
    }
    out.retain(|m| m.starts_with(|c: char| c.is_ascii_lowercase()));
    out
}

/// The first segment of each path in a `{a, b::c, d::{e, f}}` group (`text` starts after `{`).
fn group_heads(text: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut at_start = true;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => at_start = true,
            c if at_start && !c.is_whitespace() => {
                heads.push(identifier(&text[i..]).to_owned());
                at_start = false;
            }
            _ => {}
        }
    }
    heads
}

fn identifier(text: &str) -> &str {
    let end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

/// `text` with comments removed and the contents of string and character literals blanked,
/// so that braces and paths are the code's own.
fn code_only(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        let rest = &text[i..];
        if rest.starts_with("//") {
            i += rest.find('\n').unwrap_or(rest.len());
        } else if rest.starts_with("/*") {
            i += rest.find("*/").map_or(rest.len(), |e| e + 2);
        } else if let Some(hashes) = raw_string_start(rest) {
            let close = format!("\"{}", "#".repeat(hashes));
            let body = 2 + hashes;
            i += body
                + rest[body..]
                    .find(&close)
                    .map_or(rest.len() - body, |e| e + close.len());
            out.push_str("\"\"");
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == b'\'' && char_literal_len(rest).is_some() {
            i += char_literal_len(rest).unwrap();
            out.push_str("' '");
        } else {
            let c = rest.chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// The number of `#` of a raw string starting `text` (`r"`, `r#"`, `br"`...).
fn raw_string_start(text: &str) -> Option<usize> {
    let rest = text.strip_prefix('b').unwrap_or(text).strip_prefix('r')?;
    let hashes = rest.len() - rest.trim_start_matches('#').len();
    rest[hashes..].starts_with('"').then_some(hashes)
}

/// The length of a character literal starting `text` (`'x'`, `'\n'`, `'\u{7f}'`), or `None`
/// for a lifetime (`'a`).
fn char_literal_len(text: &str) -> Option<usize> {
    let body = &text[1..];
    if let Some(escaped) = body.strip_prefix('\\') {
        let after = escaped.chars().next()?.len_utf8();
        return escaped[after..].find('\'').map(|e| e + 3 + after);
    }
    let c = body.chars().next()?;
    body[c.len_utf8()..]
        .starts_with('\'')
        .then(|| 2 + c.len_utf8())
}

/// `code` without the items marked `#[cfg(test)]` that are modules (`mod`, `pub mod`,
/// `pub(crate) mod`...), braces matched.
fn without_tests(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "#[cfg(test)]".len()..];
        let item = after.trim_start();
        let item = match item.strip_prefix("pub") {
            Some(vis) if vis.trim_start().starts_with('(') => {
                let vis = vis.trim_start();
                vis.find(')').map_or(vis, |e| &vis[e + 1..]).trim_start()
            }
            Some(vis) => vis.trim_start(),
            None => item,
        };
        let Some(module) = item.strip_prefix("mod ") else {
            // Some other test-only item: keep it (it is short and rarely imports).
            out.push_str("#[cfg(test)]");
            rest = after;
            continue;
        };
        let Some(open) = module.find('{') else {
            rest = after;
            continue;
        };
        let body_start = code.len() - module.len() + open + 1;
        let mut depth = 1;
        let mut end = code.len();
        for (i, c) in code[body_start..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                _ => {}
            }
            if depth == 0 {
                end = body_start + i + 1;
                break;
            }
        }
        rest = &code[end..];
    }
    out.push_str(rest);
    out
}

/// One cycle of `graph` for each of its strongly connected components of more than one
/// module: a shortest path from the component's first module (by name) back to it.
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    let nodes: BTreeSet<&String> = graph.keys().chain(graph.values().flatten()).collect();
    let reaches = |from: &String| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.clone()];
        while let Some(n) = todo.pop() {
            for next in graph.get(&n).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    todo.push(next.clone());
                }
            }
        }
        seen
    };
    let reach: BTreeMap<&String, BTreeSet<String>> =
        nodes.iter().map(|n| (*n, reaches(n))).collect();
    let mut done = BTreeSet::new();
    let mut out = Vec::new();
    for n in &nodes {
        if done.contains(*n) || !reach[n].contains(*n) {
            continue;
        }
        let component: BTreeSet<String> = nodes
            .iter()
            .filter(|m| reach[n].contains(**m) && reach[*m].contains(*n))
            .map(|m| (**m).clone())
            .collect();
        done.extend(component.iter().cloned());
        out.push(path_through(graph, &component, n));
    }
    out
}

/// A shortest closed path from `start` back to it through the modules of `component`.
fn path_through(graph: &Graph, component: &BTreeSet<String>, start: &str) -> Vec<String> {
    let mut previous: BTreeMap<String, String> = BTreeMap::new();
    let mut todo = std::collections::VecDeque::from([start.to_owned()]);
    while let Some(n) = todo.pop_front() {
        for next in graph.get(&n).into_iter().flatten() {
            if !component.contains(next) {
                continue;
            }
            if next == start {
                let mut path = vec![start.to_owned(), n.clone()];
                let mut at = n.clone();
                while let Some(p) = previous.get(&at) {
                    path.push(p.clone());
                    at = p.clone();
                }
                path.reverse();
                return path;
            }
            if next != start && !previous.contains_key(next) {
                previous.insert(next.clone(), n.clone());
                todo.push_back(next.clone());
            }
        }
    }
    vec![start.to_owned()]
}
