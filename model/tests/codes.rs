//! The code registry is the one place codes live: docs/diagnostics.md documents exactly its
//! codes with exactly its meanings, codes are unique, and no source file outside it writes a
//! code as a string.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chimera_model::codes;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

fn is_code(s: &str) -> bool {
    s.len() == 5 && s.starts_with('E') && s[1..].bytes().all(|b| b.is_ascii_digit())
}

#[test]
fn every_code_is_unique_and_well_formed() {
    let mut seen = BTreeMap::new();
    for (code, meaning) in codes::ALL {
        assert!(is_code(code.0), "{}", code.0);
        assert!(
            !meaning.is_empty() && !meaning.ends_with('.'),
            "{}: {meaning}",
            code.0
        );
        assert!(seen.insert(code.0, meaning).is_none(), "{} twice", code.0);
        assert_eq!(codes::meaning(*code), Some(*meaning));
    }
    let mut sorted: Vec<_> = codes::ALL.iter().map(|(c, _)| c.0).collect();
    sorted.sort();
    assert_eq!(
        sorted,
        codes::ALL.iter().map(|(c, _)| c.0).collect::<Vec<_>>(),
        "the registry is in code order"
    );
}

#[test]
fn the_docs_document_exactly_the_registry() {
    let doc = std::fs::read_to_string(root().join("docs/diagnostics.md")).unwrap();
    let documented: BTreeMap<String, String> = doc
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.trim().trim_matches('|').split(" | ").collect();
            match cells.as_slice() {
                [code, meaning] if is_code(code.trim()) => {
                    Some((code.trim().to_string(), meaning.trim().to_string()))
                }
                _ => None,
            }
        })
        .collect();
    let registry: BTreeMap<String, String> = codes::ALL
        .iter()
        .map(|(c, m)| (c.0.to_string(), m.to_string()))
        .collect();
    for (code, meaning) in &registry {
        assert_eq!(
            documented.get(code),
            Some(meaning),
            "docs/diagnostics.md must document {code} as `{meaning}`"
        );
    }
    for code in documented.keys() {
        assert!(
            registry.contains_key(code),
            "docs/diagnostics.md documents {code}, which is not in model/src/codes.rs"
        );
    }
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if p.is_dir() {
            // Only code: tests may name the codes they expect.
            if !["target", "tests", "benches", ".git", "snapshots"].contains(&name) {
                sources(&p, out);
            }
        } else if name.ends_with(".rs") {
            out.push(p);
        }
    }
}

#[test]
fn no_code_is_written_outside_the_registry() {
    let mut files = Vec::new();
    sources(&root(), &mut files);
    let registry = root().join("model/src/codes.rs");
    assert!(files.contains(&registry));
    let mut found = Vec::new();
    for f in files.iter().filter(|f| **f != registry) {
        let text = std::fs::read_to_string(f).unwrap();
        for (n, line) in text.lines().enumerate() {
            let bytes = line.as_bytes();
            for i in 0..bytes.len().saturating_sub(6) {
                if bytes[i] == b'"' && bytes[i + 6] == b'"' && is_code(&line[i + 1..i + 6]) {
                    found.push(format!("{}:{}: {}", f.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "codes written outside model/src/codes.rs (use chimera_model::codes):\n{}",
        found.join("\n")
    );
}
