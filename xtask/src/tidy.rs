//! `cargo xtask tidy` (also the first step of `cargo xtask test`): rules of the tree that keep it
//! easy to find one's way in, checked on the source itself.
//!
//! - Every crate's root file opens with a crate doc (`//!`).
//! - No Rust file is over [`MAX_FILE_LINES`] lines unless a `// tidy: long file — REASON` line
//!   near its top says why.
//! - No function outside tests (`#[test]` functions and `#[cfg(test)]` modules; integration test
//!   files count as tests) is over [`MAX_FN_LINES`] lines.
//! - The leaves do not depend on libtorch, and `gear-data` and `gear-metrics` carry no HTTP
//!   client ([`LEAVES`], checked with `cargo tree`).
//! - The crate graph is the one `docs/architecture.md` draws: its table of edges equals the
//!   gear crates every crate's `Cargo.toml` declares under `[dependencies]`.
//!
//! What broke the length rules when the check arrived (22 files and functions) was paid down by
//! 2026-12-01; there is no list of exceptions, so anything that breaks a rule fails the check.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use syn::visit::Visit;

/// Longest file without a stated reason.
pub const MAX_FILE_LINES: usize = 500;
/// Longest function outside tests.
pub const MAX_FN_LINES: usize = 100;
/// How a long file states its reason (within its first 20 lines).
const LONG_FILE_MARK: &str = "// tidy: long file — ";

/// Checks the rules (see the module docs); every problem found is reported at once.
pub fn run() -> Result<()> {
    let root = crate::workspace_root();
    let mut problems = Vec::new();
    let mut files = Vec::new();
    for top in ["crates", "xtask"] {
        collect_rs(&root.join(top), &mut files)?;
    }
    files.sort();
    for file in &files {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let shown = file
            .strip_prefix(&root)
            .unwrap_or(file)
            .display()
            .to_string();
        problems.extend(check_file(&shown, &text)?);
    }
    for krate in crate_roots(&root)? {
        let text = std::fs::read_to_string(&krate)
            .with_context(|| format!("reading {}", krate.display()))?;
        if !text.trim_start().starts_with("//!") {
            let shown = krate.strip_prefix(&root).unwrap_or(&krate).display();
            problems.push(format!(
                "{shown}: the crate has no crate doc (`//!` at the top)"
            ));
        }
    }
    check_leaf_layers()?;
    problems.extend(check_crate_graph(&root)?);
    if !problems.is_empty() {
        bail!(
            "tidy: {} problem(s):\n  {}",
            problems.len(),
            problems.join("\n  ")
        );
    }
    eprintln!(
        "[xtask] tidy: {} Rust files; crate docs, file lengths (≤ {MAX_FILE_LINES} or a stated \
         reason), functions outside tests ≤ {MAX_FN_LINES} lines, leaf layering, the crate graph of \
         docs/architecture.md",
        files.len()
    );
    Ok(())
}

/// The problems of one file (`shown`: its path for messages).
fn check_file(shown: &str, text: &str) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let lines = text.lines().count();
    let stated = text.lines().take(20).any(|l| {
        l.trim_start().starts_with(LONG_FILE_MARK) && l.trim().len() > LONG_FILE_MARK.len() + 8
    });
    if lines > MAX_FILE_LINES && !stated {
        problems.push(format!(
            "{shown}: {lines} lines (over {MAX_FILE_LINES}): split it, or say why near the top \
             with `{LONG_FILE_MARK}REASON`"
        ));
    }
    let in_tests = shown.contains("/tests/") || shown.contains("/benches/");
    if !in_tests {
        let ast = syn::parse_file(text).with_context(|| format!("parsing {shown}"))?;
        let mut long = LongFunctions::default();
        long.visit_file(&ast);
        for (name, line, len) in long.found {
            problems.push(format!(
                "{shown}:{line}: fn {name} is {len} lines (over {MAX_FN_LINES}): split it"
            ));
        }
    }
    Ok(problems)
}

/// Functions over the limit, outside `#[test]` functions and `#[cfg(test)]` modules.
#[derive(Default)]
struct LongFunctions {
    found: Vec<(String, usize, usize)>,
}

fn is_test_attr(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        let path = a.path();
        path.is_ident("test")
            || (path.is_ident("cfg")
                && a.meta
                    .require_list()
                    .is_ok_and(|l| l.tokens.to_string().split_whitespace().any(|t| t == "test")))
    })
}

impl LongFunctions {
    fn check(&mut self, name: &syn::Ident, block: &syn::Block, sig_line: usize) {
        let end = block.brace_token.span.close().end().line;
        let len = end + 1 - sig_line;
        if len > MAX_FN_LINES {
            self.found.push((name.to_string(), sig_line, len));
        }
    }
}

impl LongFunctions {
    /// Checks a function unless it is a test; whether to look inside it.
    fn check_fn(
        &mut self,
        attrs: &[syn::Attribute],
        sig: &syn::Signature,
        block: &syn::Block,
    ) -> bool {
        if is_test_attr(attrs) {
            return false;
        }
        self.check(&sig.ident, block, sig.fn_token.span.start().line);
        true
    }
}

impl<'ast> Visit<'ast> for LongFunctions {
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        if !is_test_attr(&m.attrs) {
            syn::visit::visit_item_mod(self, m);
        }
    }

    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        if self.check_fn(&f.attrs, &f.sig, &f.block) {
            syn::visit::visit_item_fn(self, f);
        }
    }

    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        if self.check_fn(&f.attrs, &f.sig, &f.block) {
            syn::visit::visit_impl_item_fn(self, f);
        }
    }

    fn visit_trait_item_fn(&mut self, f: &'ast syn::TraitItemFn) {
        if let Some(block) = &f.default {
            let line = f.sig.fn_token.span.start().line;
            self.check(&f.sig.ident, block, line);
        }
        syn::visit::visit_trait_item_fn(self, f);
    }
}

/// Every `.rs` file under `dir` (build output and fixtures skipped).
fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if path.is_dir() {
            if !matches!(name, "target" | "node_modules" | "fixtures") && !name.starts_with('.') {
                collect_rs(&path, out)?;
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// The root file (`src/lib.rs`, else `src/main.rs`) of every crate under `crates/`, and xtask's.
fn crate_roots(root: &Path) -> Result<Vec<PathBuf>> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root.join("crates"))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    dirs.push(root.join("xtask"));
    dirs.sort();
    Ok(dirs
        .into_iter()
        .filter_map(|d| {
            ["src/lib.rs", "src/main.rs"]
                .iter()
                .map(|f| d.join(f))
                .find(|p| p.is_file())
        })
        .collect())
}

/// The leaves — `gear-data`, `gear-metrics`, `gear-synth` — must stay usable without libtorch, and
/// the two that every user of the formats and measures pays for carry no HTTP client either.
const LEAVES: &[(&str, &[&str])] = &[
    ("gear-data", &["tch ", "torch-sys ", "ureq ", "rustls "]),
    ("gear-metrics", &["tch ", "torch-sys ", "ureq ", "rustls "]),
    ("gear-synth", &["tch ", "torch-sys "]),
];

/// Checks [`LEAVES`] against `cargo tree`.
fn check_leaf_layers() -> Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    for &(leaf, forbidden) in LEAVES {
        let out = Command::new(&cargo)
            .args([
                "tree",
                "--package",
                leaf,
                "--edges",
                "normal",
                "--prefix",
                "none",
            ])
            .output()
            .context("cannot run cargo tree")?;
        if !out.status.success() {
            bail!(
                "cargo tree -p {leaf} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let tree = String::from_utf8_lossy(&out.stdout);
        if let Some(dep) = tree
            .lines()
            .find(|l| forbidden.iter().any(|f| l.starts_with(f)))
        {
            bail!(
                "{leaf} must not depend on any of {forbidden:?} (libtorch, or an HTTP client in a \
                 leaf), but its tree has `{dep}`"
            );
        }
    }
    Ok(())
}

/// The header of `docs/architecture.md`'s table of edges.
const GRAPH_HEADER: &str = "| crate | depends on |";

/// `crate → gear crates it depends on`, from the rows after [`GRAPH_HEADER`] in `doc`.
fn documented_graph(doc: &str) -> Result<BTreeMap<String, BTreeSet<String>>> {
    let mut lines = doc.lines().skip_while(|l| l.trim() != GRAPH_HEADER);
    if lines.next().is_none() {
        bail!("docs/architecture.md has no table headed `{GRAPH_HEADER}`");
    }
    let names = |cell: &str| -> BTreeSet<String> {
        cell.split(',')
            .map(|n| n.trim().trim_matches('`').to_owned())
            .filter(|n| n.starts_with("gear-"))
            .collect()
    };
    let mut graph = BTreeMap::new();
    for row in lines.skip(1).take_while(|l| l.starts_with('|')) {
        let cells: Vec<&str> = row.trim().trim_matches('|').split('|').collect();
        if let [krate, deps] = cells[..] {
            graph.insert(krate.trim().trim_matches('`').to_owned(), names(deps));
        } else {
            bail!("docs/architecture.md: `{row}` is not a `| crate | depends on |` row");
        }
    }
    Ok(graph)
}

/// The gear crates each workspace crate declares under `[dependencies]`.
fn declared_graph(root: &Path) -> Result<BTreeMap<String, BTreeSet<String>>> {
    let mut graph = BTreeMap::new();
    for entry in std::fs::read_dir(root.join("crates")).context("reading crates/")? {
        let manifest = entry?.path().join("Cargo.toml");
        if !manifest.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&manifest)
            .with_context(|| format!("reading {}", manifest.display()))?;
        let toml: toml::Table = text
            .parse()
            .with_context(|| format!("{} is not TOML", manifest.display()))?;
        let name = toml["package"]["name"]
            .as_str()
            .with_context(|| format!("{}: no package name", manifest.display()))?;
        let deps = toml
            .get("dependencies")
            .and_then(toml::Value::as_table)
            .map(|t| {
                t.keys()
                    .filter(|k| k.starts_with("gear-"))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        graph.insert(name.to_owned(), deps);
    }
    Ok(graph)
}

/// Where the declared graph and the documented one differ, one line per difference.
fn graph_differences(
    declared: &BTreeMap<String, BTreeSet<String>>,
    documented: &BTreeMap<String, BTreeSet<String>>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let none = BTreeSet::new();
    let crates: BTreeSet<&String> = declared.keys().chain(documented.keys()).collect();
    for krate in crates {
        match (declared.get(krate), documented.get(krate)) {
            (Some(_), None) => problems.push(format!(
                "docs/architecture.md: crate `{krate}` is missing from the table of edges"
            )),
            (None, Some(_)) => problems.push(format!(
                "docs/architecture.md: the table lists `{krate}`, which is not a crate under crates/"
            )),
            _ => {}
        }
        let (have, drawn) = (
            declared.get(krate).unwrap_or(&none),
            documented.get(krate).unwrap_or(&none),
        );
        for dep in have.difference(drawn) {
            problems.push(format!(
                "crates/{}/Cargo.toml: `{krate}` depends on `{dep}`, an edge docs/architecture.md \
                 does not draw (add it there, or drop the dependency)",
                krate.trim_start_matches("gear-")
            ));
        }
        for dep in drawn.difference(have) {
            problems.push(format!(
                "docs/architecture.md: draws `{krate}` → `{dep}`, which `{krate}` does not declare"
            ));
        }
    }
    problems
}

/// The crate graph against `docs/architecture.md`'s table of edges.
fn check_crate_graph(root: &Path) -> Result<Vec<String>> {
    let doc = std::fs::read_to_string(root.join("docs/architecture.md"))
        .context("reading docs/architecture.md")?;
    Ok(graph_differences(
        &declared_graph(root)?,
        &documented_graph(&doc)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn long_fn(lines: usize) -> String {
        let body: String = (0..lines)
            .map(|i| format!("    let _x{i} = {i};\n"))
            .collect();
        format!("//! doc\nfn big() {{\n{body}}}\n")
    }

    #[test]
    fn long_functions_are_found_outside_tests_only() {
        assert!(check_file("crates/a/src/x.rs", &long_fn(90))
            .unwrap()
            .is_empty());
        let p = check_file("crates/a/src/x.rs", &long_fn(120)).unwrap();
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("x.rs:2: fn big is 122 lines"), "{p:?}");
        let in_test_mod = format!("#[cfg(test)]\nmod tests {{\n{}}}\n", long_fn(120));
        assert!(check_file("crates/a/src/x.rs", &in_test_mod)
            .unwrap()
            .is_empty());
        assert!(check_file("crates/a/tests/t.rs", &long_fn(120))
            .unwrap()
            .is_empty());
        let method = format!(
            "struct S;\nimpl S {{\n{}}}\n",
            long_fn(120)
                .replace("fn big", "fn method")
                .replace("//! doc\n", "")
        );
        assert!(check_file("crates/a/src/x.rs", &method).unwrap()[0].contains("fn method"));
    }

    #[test]
    fn long_files_need_a_stated_reason() {
        let many: String = (0..600).map(|i| format!("const C{i}: u8 = 0;\n")).collect();
        let p = check_file("crates/a/src/x.rs", &many).unwrap();
        assert!(p[0].contains("600 lines"), "{p:?}");
        let stated = format!("//! doc\n{LONG_FILE_MARK}one table of cases\n{many}");
        assert!(check_file("crates/a/src/x.rs", &stated).unwrap().is_empty());
        // A mark with no reason does not count.
        let empty = format!("{LONG_FILE_MARK}\n{many}");
        assert_eq!(check_file("crates/a/src/x.rs", &empty).unwrap().len(), 1);
    }

    #[test]
    fn the_crate_graph_must_equal_the_documented_table() {
        let doc = "text\n| crate | depends on |\n|---|---|\n| `gear-a` | — |\n| `gear-b` | `gear-a` |\n\nmore";
        let documented = documented_graph(doc).unwrap();
        let set = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<BTreeSet<_>>();
        let mut declared = BTreeMap::new();
        declared.insert("gear-a".to_owned(), set(&[]));
        declared.insert("gear-b".to_owned(), set(&["gear-a"]));
        assert!(graph_differences(&declared, &documented).is_empty());
        declared.insert("gear-b".to_owned(), set(&["gear-a", "gear-c"]));
        declared.insert("gear-c".to_owned(), set(&[]));
        let p = graph_differences(&declared, &documented);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(
            p.iter().any(|l| l.contains("`gear-b` depends on `gear-c`")),
            "{p:?}"
        );
        assert!(p.iter().any(|l| l.contains("`gear-c` is missing")), "{p:?}");
        declared.insert("gear-b".to_owned(), set(&[]));
        declared.remove("gear-c");
        let p = graph_differences(&declared, &documented);
        assert!(p[0].contains("draws `gear-b` → `gear-a`"), "{p:?}");
        assert!(documented_graph("no table").is_err());
    }
}
