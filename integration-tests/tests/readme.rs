//! The README as a newcomer follows it: its build command builds every binary, each Rust snippet
//! comes with the dependency lines it needs (the snippets themselves are compiled as doctests of
//! this crate), and the Gateway API snippet works against the shipped example configs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn readme() -> String {
    std::fs::read_to_string(root().join("README.md")).expect("README.md")
}

/// A fenced code block: its info string, its text, and the `## ` section it is in.
struct Block {
    lang: String,
    text: String,
    section: String,
}

fn blocks(markdown: &str) -> Vec<Block> {
    let (mut out, mut section, mut open): (Vec<Block>, String, Option<Block>) = (vec![], String::new(), None);
    for line in markdown.lines() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(lang)) => {
                open = Some(Block { lang: lang.trim().to_string(), text: String::new(), section: section.clone() });
            }
            (Some(_), Some(_)) => out.extend(open.take()),
            (Some(block), None) => {
                block.text.push_str(line);
                block.text.push('\n');
            }
            (None, None) => {
                if let Some(title) = line.strip_prefix("## ") {
                    section = title.to_string();
                }
            }
        }
    }
    out
}

/// Crates a Rust snippet names: the first segment of each `a::b` path (hidden `# ` lines count,
/// they are compiled too).
fn crates_used(code: &str) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    let bytes = code.as_bytes();
    let mut i = 0;
    while let Some(pos) = code[i..].find("::") {
        let end = i + pos;
        let start = code[..end].rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map_or(0, |p| p + 1);
        let word = &code[start..end];
        let after_path = start > 0 && bytes[start - 1] == b':';
        if !after_path && word.starts_with(|c: char| c.is_ascii_lowercase()) {
            used.insert(word.to_string());
        }
        i = end + 2;
    }
    used
}

/// The crate names a `[dependencies]` block adds (as Rust spells them), checking that each path
/// dependency on this project names the folder that really holds that crate.
fn dependencies(toml_block: &str) -> BTreeSet<String> {
    let mut deps = BTreeSet::new();
    for line in toml_block.lines().map(str::trim).filter(|l| !l.starts_with('#') && !l.starts_with('[')) {
        let Some((name, spec)) = line.split_once('=') else { continue };
        let name = name.trim();
        if let Some(folder) = spec.split("\"../gatewayrs/").nth(1).and_then(|s| s.split('"').next()) {
            let manifest = std::fs::read_to_string(root().join(folder).join("Cargo.toml"))
                .unwrap_or_else(|e| panic!("README dependency {name}: no crate in {folder}/ ({e})"));
            assert!(
                manifest.contains(&format!("name = \"{name}\"")),
                "README: {folder}/ does not hold the crate {name}"
            );
        }
        deps.insert(name.replace('-', "_"));
    }
    deps
}

#[test]
fn every_rust_snippet_shows_the_dependency_lines_it_needs() {
    let blocks = blocks(&readme());
    let rust: Vec<&Block> = blocks.iter().filter(|b| b.lang.split(',').next() == Some("rust")).collect();
    assert!(rust.len() >= 2, "the README's application and Gateway API snippets");
    for snippet in rust {
        let deps = blocks
            .iter()
            .filter(|b| b.section == snippet.section && b.lang == "toml" && b.text.contains("[dependencies]"))
            .map(|b| dependencies(&b.text))
            .next()
            .unwrap_or_else(|| {
                panic!("README section {:?}: a Rust snippet without its [dependencies]", snippet.section)
            });
        for krate in crates_used(&snippet.text) {
            assert!(
                ["std", "core", "alloc", "crate", "self", "super"].contains(&krate.as_str()) || deps.contains(&krate),
                "README section {:?}: the snippet uses `{krate}` but its [dependencies] block does not add it",
                snippet.section
            );
        }
    }
}

#[test]
fn no_code_block_is_an_untagged_doctest() {
    // Rustdoc compiles an untagged block as Rust: output and diagrams must say `text`.
    for block in blocks(&readme()) {
        assert!(!block.lang.is_empty(), "untagged code block in section {:?}:\n{}", block.section, block.text);
    }
}

#[test]
fn the_gateway_api_snippet_works_against_the_shipped_configs() {
    let register: gw_config::RegisterConfig =
        gw_config::load(Some(&root().join("configs/register.toml")), |_| None).expect("configs/register.toml");
    let gateway: gw_config::GatewayConfig =
        gw_config::load(Some(&root().join("configs/gateway.toml")), |_| None).expect("configs/gateway.toml");
    assert_eq!(register.secret, gateway.secret, "the shipped configs share one secret");
    let blocks = blocks(&readme());
    let snippet = blocks
        .iter()
        .find(|b| b.lang.starts_with("rust") && b.text.contains("GatewayClient::builder("))
        .expect("a Gateway API snippet in the README");
    let code: String = snippet.text.lines().map(|l| l.split("//").next().unwrap_or_default()).collect();
    let registers = code.split("GatewayClient::builder([").nth(1).and_then(|s| s.split("])").next()).unwrap();
    assert_eq!(registers.trim(), format!("{:?}", register.listen), "the snippet dials the shipped register");
    let secret = code.split(".secret(").nth(1).map(|s| s.split(')').next().unwrap_or_default().trim().to_string());
    let shipped = (!register.secret.is_empty()).then(|| format!("{:?}", register.secret));
    assert_eq!(secret, shipped, "the snippet's secret is the shipped configs' (they have none)");
}

#[test]
fn the_readme_build_command_builds_every_binary() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(root())
        .output()
        .expect("cargo metadata");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let defaults: Vec<&str> =
        meta["workspace_default_members"].as_array().unwrap().iter().filter_map(|m| m.as_str()).collect();
    let mut binaries = Vec::new();
    for package in meta["packages"].as_array().unwrap() {
        for target in package["targets"].as_array().unwrap() {
            if target["kind"].as_array().unwrap().iter().any(|k| k == "bin") {
                let bin = target["name"].as_str().unwrap().to_string();
                assert!(
                    defaults.contains(&package["id"].as_str().unwrap()),
                    "`cargo build --release` at the root does not build `{bin}`: its package is not a default member"
                );
                binaries.push(bin);
            }
        }
    }
    for daemon in ["register", "gateway", "business-worker", "gatewayrs", "chat-web"] {
        assert!(binaries.iter().any(|b| b == daemon), "no binary {daemon}");
    }
    let text = readme();
    let build = text.find("cargo build --release\n").expect("the README's build command");
    assert!(text[build..].contains("target/release/register"), "the README runs what it built");
}

#[test]
fn the_recovery_config_snippets_are_valid_gateway_configs() {
    use gw_config::Validate;
    let snippets: Vec<String> = blocks(&readme())
        .into_iter()
        .filter(|b| b.section == "Recovery" && b.lang == "toml")
        .map(|b| b.text)
        .chain(
            blocks(&std::fs::read_to_string(root().join("docs/recovery.md")).expect("docs/recovery.md"))
                .into_iter()
                .filter(|b| b.lang == "toml")
                .map(|b| b.text),
        )
        .collect();
    assert_eq!(snippets.len(), 2, "the README's and docs/recovery.md's [recovery] snippets");
    for text in snippets {
        let config: gw_config::GatewayConfig =
            gw_config::parse(&text, Path::new("README.md")).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert!(config.recovery.enabled, "{text}");
        assert_eq!(
            config.recovery,
            gw_config::RecoveryConfig { enabled: true, ..Default::default() },
            "the defaults, shown"
        );
        assert!(config.validate().is_empty(), "{:?}", config.validate());
    }
}
