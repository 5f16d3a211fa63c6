//! The man pages and shell completions in `dist/` are generated from the clap definitions
//! of both programs; this test fails when they no longer match the code.
//!
//! To regenerate them after changing an option or a subcommand:
//!
//! ```sh
//! AOE_UPDATE_DIST=1 cargo test -p aoe-cli --test dist_files
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;

/// Set to `1` to write the generated files instead of comparing them.
const UPDATE_ENV: &str = "AOE_UPDATE_DIST";

/// The shells completions are generated for, with the file name each expects.
const SHELLS: [(Shell, &str); 3] = [(Shell::Bash, "{}.bash"), (Shell::Zsh, "_{}"), (Shell::Fish, "{}.fish")];

fn dist() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist")
}

/// Every generated file, by its path under `dist/`.
fn generated() -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    for cmd in [aoe_cli::aoe::command(), aoe_cli::target::Cli::command()] {
        man_pages(&cmd, &mut files);
        let name = cmd.get_name().to_string();
        for (shell, file) in SHELLS {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut cmd.clone(), &name, &mut out);
            files.insert(Path::new("completions").join(file.replace("{}", &name)), out);
        }
    }
    // `aoe-target ctl` has man pages of its own (its arguments are parsed apart from vblade's).
    man_pages(&aoe_cli::target::ctl::CtlCli::command(), &mut files);
    files
}

/// `name.1` for the command and `name-sub.1` for each subcommand (as `git` names its pages),
/// the way `clap_mangen::generate_to` lays them out, kept in memory.
fn man_pages(cmd: &clap::Command, files: &mut BTreeMap<PathBuf, Vec<u8>>) {
    fn render(cmd: clap::Command, files: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned() {
            render(sub, files);
        }
        let man = clap_mangen::Man::new(cmd);
        let mut out = Vec::new();
        man.render(&mut out).expect("render a man page");
        files.insert(Path::new("man").join(man.get_filename()), out);
    }
    let mut cmd = cmd.clone().disable_help_subcommand(true);
    cmd.build();
    render(cmd, files);
}

#[test]
fn man_pages_and_completions_match_the_code() {
    let dist = dist();
    let update = std::env::var(UPDATE_ENV).is_ok_and(|v| v == "1");
    let mut stale = Vec::new();
    for (path, content) in generated() {
        let full = dist.join(&path);
        if update {
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(&full, &content).unwrap();
        } else if std::fs::read(&full).ok().as_deref() != Some(&content[..]) {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "dist/ is out of date for {}: run `{UPDATE_ENV}=1 cargo test -p aoe-cli --test dist_files`",
        stale.join(", ")
    );
}

#[test]
fn no_stray_files_in_dist() {
    let expected = generated();
    for dir in ["man", "completions"] {
        let Ok(entries) = std::fs::read_dir(dist().join(dir)) else { continue };
        for entry in entries {
            let path = Path::new(dir).join(entry.unwrap().file_name());
            assert!(
                expected.contains_key(&path),
                "dist/{} is not generated from the code: remove it",
                path.display()
            );
        }
    }
}
