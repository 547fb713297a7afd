//! The README's examples stay true: every ```sql block parses and every ```toml block
//! is a valid `quiver.toml`.

use std::path::Path;

fn blocks(language: &str) -> Vec<String> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap();
    let fence = format!("```{language}\n");
    let mut out = Vec::new();
    let mut rest = readme.as_str();
    while let Some(start) = rest.find(&fence) {
        let body = &rest[start + fence.len()..];
        let end = body.find("```").unwrap();
        out.push(body[..end].to_string());
        rest = &body[end + 3..];
    }
    out
}

#[test]
fn readme_sql_examples_parse() {
    let blocks = blocks("sql");
    assert!(blocks.len() >= 4, "the README documents every statement");
    for block in blocks {
        let (_, diagnostics) = quiver_core::parser::parse_str("README.md", &block, Path::new("."));
        assert!(
            diagnostics.is_empty(),
            "README example does not parse:\n{block}\n{diagnostics}"
        );
    }
}

#[test]
fn readme_config_example_is_valid() {
    let blocks = blocks("toml");
    assert_eq!(blocks.len(), 1);
    let config =
        quiver_core::config::Config::parse_with_env(Path::new("README.md"), &blocks[0], [])
            .unwrap();
    assert_eq!(config.project, "rides");
}
