//! The documentation cannot drift from the code: every configuration key
//! the code accepts (found by asking the code itself, section by section)
//! and every environment variable `--help` names is described in
//! `docs/configuration.md`; every relative link in the README and `docs/`
//! leads to a file and a heading that exist; the README stays short.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use perfproxy::settings::Settings;

const PROBE: &str = "zz_not_a_key";

/// The keys a table at `header` accepts, from the code's own answer to an
/// unknown key there (`None`: not a table of known keys).
fn keys_at(header: &str) -> Option<Vec<String>> {
    let text = if header.is_empty() { format!("{PROBE} = 1\n") } else { format!("{header}\n{PROBE} = 1\n") };
    let err = toml::from_str::<Settings>(&text).err()?.to_string();
    let listed = err.split(&format!("unknown field `{PROBE}`, expected")).nth(1)?;
    let listed = listed.lines().next().unwrap_or("");
    Some(listed.split('`').skip(1).step_by(2).map(str::to_string).collect())
}

/// Every key path (`cache.rules.ttl_ms`), walking tables and arrays of tables.
fn every_key(path: &str, out: &mut BTreeSet<String>) {
    let header = |array: bool| match (path.is_empty(), array) {
        (true, _) => String::new(),
        (false, false) => format!("[{path}]"),
        (false, true) => format!("[[{path}]]"),
    };
    let Some(keys) = keys_at(&header(false)).or_else(|| keys_at(&header(true))) else { return };
    for k in keys {
        let full = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
        out.insert(full.clone());
        every_key(&full, out);
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The words inside backticks in `text`.
fn quoted_words(text: &str) -> BTreeSet<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .flat_map(|span| span.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map(str::to_string))
        .filter(|w| !w.is_empty())
        .collect()
}

#[test]
fn every_config_key_in_the_code_is_in_docs_configuration() {
    let mut keys = BTreeSet::new();
    every_key("", &mut keys);
    // The walk itself found the sections (a broken probe finds nothing).
    for known in ["listen", "cache.memory_bytes", "cache.rules.ttl_ms", "alerts.keep_firing_ms", "health.http.url"] {
        assert!(keys.contains(known), "the walk missed {known}: {keys:?}");
    }
    let doc = read(&root().join("docs/configuration.md"));
    let words = quoted_words(&doc);
    let missing: Vec<&String> = keys.iter().filter(|k| !k.split('.').all(|part| words.contains(part))).collect();
    assert!(missing.is_empty(), "keys the code accepts that docs/configuration.md does not name: {missing:?}");
}

/// `config/perfproxy.toml` is the example with every key: each one the code
/// accepts is there, set or commented out, and each table has its header.
#[test]
fn every_config_key_in_the_code_is_in_the_example_config() {
    let mut keys = BTreeSet::new();
    every_key("", &mut keys);
    let example = read(&root().join("config/perfproxy.toml"));
    let lines: Vec<&str> = example.lines().map(|l| l.trim_start_matches(['#', ' '])).collect();
    let missing: Vec<&String> = keys
        .iter()
        .filter(|k| {
            let table = keys.iter().any(|other| other.starts_with(&format!("{k}.")));
            let last = k.rsplit('.').next().expect("a key has a name");
            let set = |l: &&str| l.split('=').next().is_some_and(|name| name.trim() == last) && l.contains('=');
            let header = |l: &&str| l.starts_with(&format!("[{k}]")) || l.starts_with(&format!("[[{k}]]"));
            !(lines.iter().any(set) || (table && lines.iter().any(header)))
        })
        .collect();
    assert!(missing.is_empty(), "keys the code accepts that config/perfproxy.toml does not show: {missing:?}");
}

#[test]
fn every_environment_variable_in_help_is_in_docs_configuration() {
    let out = Command::new(support::binary()).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    let vars: Vec<&str> = help.split("[env: ").skip(1).filter_map(|t| t.split(']').next()).collect();
    assert!(vars.len() >= 10, "{help}");
    let words = quoted_words(&read(&root().join("docs/configuration.md")));
    let missing: Vec<&&str> = vars.iter().filter(|v| !words.contains(**v)).collect();
    assert!(missing.is_empty(), "variables --help names that docs/configuration.md does not: {missing:?}");
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces
/// to hyphens.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(text: &str) -> BTreeSet<String> {
    let mut fenced = false;
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        }
        if !fenced && line.starts_with('#') {
            out.insert(anchor(line.trim_start_matches('#')));
        }
    }
    out
}

#[test]
fn the_readme_is_short_and_every_link_leads_somewhere() {
    let readme = read(&root().join("README.md"));
    assert!(readme.lines().count() <= 400, "README.md has {} lines (at most 400)", readme.lines().count());
    let pages: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    assert!(pages.len() >= 4, "docs/ holds {} pages", pages.len());
    let mut broken = Vec::new();
    for file in pages.iter().chain([&root().join("README.md")]) {
        let text = read(file);
        for link in text.split("](").skip(1).filter_map(|t| t.split(')').next()) {
            if link.contains("://") || link.starts_with("mailto:") {
                continue;
            }
            let (target, fragment) = link.split_once('#').unwrap_or((link, ""));
            let target_path = if target.is_empty() { file.clone() } else { file.parent().unwrap().join(target) };
            if !target_path.exists() {
                broken.push(format!("{}: {link} (no such file)", file.display()));
                continue;
            }
            let is_md = target_path.extension().is_some_and(|x| x == "md");
            if !fragment.is_empty() && is_md && !anchors(&read(&target_path)).contains(fragment) {
                broken.push(format!("{}: {link} (no such heading)", file.display()));
            }
        }
        // Every page is linked from the README.
        if file.parent() == Some(&root().join("docs")) {
            let name = file.file_name().unwrap().to_string_lossy();
            assert!(readme.contains(&format!("docs/{name}")), "README does not link docs/{name}");
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}
