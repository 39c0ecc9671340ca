//! Editor support and shell completions: `chimera stdlib export` writes the embedded stdlib
//! where Nickel's own tools find it (evaluated here the way the `nickel` CLI and the language
//! server do: a plain Nickel program whose import path is the exported directory), `chimera
//! init` sets it up, and `chimera completions` prints a script for each shell.

use std::path::Path;
use std::process::{Command, Output};

use nickel_lang_core::eval::cache::CacheImpl;
use nickel_lang_core::program::{Program, ProgramBuilder};

fn chimera(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chimera"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("CHIMERA_STATE")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Evaluates `file` as plain Nickel (no Chimera in between), with `import_path` as
/// `NICKEL_IMPORT_PATH` would give it; the error message if it fails.
fn nickel_eval(file: &Path, import_path: Option<&Path>) -> Result<(), String> {
    let mut b = ProgramBuilder::new().add_path(file.as_os_str());
    if let Some(p) = import_path {
        b = b.add_import_paths([p.to_path_buf()]);
    }
    let mut prog: Program<CacheImpl> = b.build().map_err(|e| format!("{e:?}"))?;
    prog.eval_full_for_export()
        .map(|_| ())
        .map_err(|e| format!("{e:?}"))
}

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn exported_stdlib_lets_plain_nickel_evaluate_a_stack() {
    let tmp = tempfile::tempdir().unwrap();
    let o = chimera(tmp.path(), &["stdlib", "export", "lib"]);
    assert!(o.status.success(), "{}", text(&o));
    let lib = tmp.path().join("lib");
    let said = text(&o);
    assert!(
        said.contains(&format!("export NICKEL_IMPORT_PATH={}", lib.display())),
        "{said}"
    );
    for name in ["chimera.ncl", "catalog.ncl"] {
        assert_eq!(
            std::fs::read_to_string(lib.join(name)).unwrap(),
            std::fs::read_to_string(repo_root().join("stdlib").join(name)).unwrap(),
            "{name} is not the embedded stdlib"
        );
    }

    let stack = repo_root().join("examples/webapp/main.ncl");
    // Without the import path Nickel cannot resolve the import (what an editor showed before)…
    let err = nickel_eval(&stack, None).expect_err("chimera.ncl resolved without an import path");
    assert!(err.contains("chimera.ncl"), "{err}");
    // …with it, the whole stack evaluates, contracts and all.
    nickel_eval(&stack, Some(&lib)).expect("the webapp example evaluates with the exported stdlib");

    // A contract error is reported by plain Nickel too (what an editor underlines).
    let broken = tmp.path().join("broken.ncl");
    std::fs::write(
        &broken,
        "let c = import \"chimera.ncl\" in\nlet block | c.contracts.Cidr = \"10.0.0.0/99\" in\n{ stack = \"x\", resources = [c.Network & { name = \"n\", cidr = block }] }\n",
    )
    .unwrap();
    let err = nickel_eval(&broken, Some(&lib)).expect_err("a /99 block passed the Cidr contract");
    assert!(err.to_lowercase().contains("contract"), "{err}");

    // Exporting again replaces the files (after an upgrade).
    std::fs::write(lib.join("chimera.ncl"), "stale").unwrap();
    let o = chimera(tmp.path(), &["stdlib", "export", "lib"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_ne!(
        std::fs::read_to_string(lib.join("chimera.ncl")).unwrap(),
        "stale"
    );
}

#[test]
fn init_sets_up_the_editor() {
    let tmp = tempfile::tempdir().unwrap();
    let o = chimera(tmp.path(), &["init", "infra"]);
    assert!(o.status.success(), "{}", text(&o));
    let repo = tmp.path().join("infra");
    let envrc = std::fs::read_to_string(repo.join(".envrc")).unwrap();
    assert!(
        envrc.contains("export NICKEL_IMPORT_PATH=\"$PWD/.chimera/stdlib\""),
        "{envrc}"
    );
    let lib = repo.join(".chimera/stdlib");
    nickel_eval(&repo.join("main.ncl"), Some(&lib))
        .expect("the scaffolded stack evaluates as plain Nickel");
}

#[test]
fn stdlib_export_to_an_unwritable_place_is_a_diagnostic() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("file"), "").unwrap();
    let o = chimera(tmp.path(), &["stdlib", "export", "file/lib"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let said = text(&o);
    assert!(
        said.contains("E0322") && said.contains("file/lib"),
        "{said}"
    );
    assert!(!said.contains("panicked"), "{said}");
}

#[test]
fn completions_for_each_shell() {
    let tmp = tempfile::tempdir().unwrap();
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef chimera"),
        ("fish", "complete -c chimera"),
    ] {
        let o = chimera(tmp.path(), &["completions", shell]);
        assert!(o.status.success(), "{shell}: {}", text(&o));
        let script = String::from_utf8_lossy(&o.stdout);
        assert!(script.contains(marker), "{shell}: {script}");
        // Subcommands and their flags are in it.
        for word in ["apply", "serve", "stdlib", "parallelism"] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
    }
    let o = chimera(tmp.path(), &["completions", "tcsh"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}
