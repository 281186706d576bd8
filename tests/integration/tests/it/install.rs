//! The install: one `bk` binary that runs as each tool it is linked as (or
//! as `bk TOOL`), man pages that are what the generator writes from the
//! clap definitions, and completions for bash, zsh and fish.

use crate::common::*;
use std::path::Path;

/// scripts/install with the debug `bk` (the release build is what
/// scripts/quickstart times), into a scratch root.
fn install(env: &Env) -> std::path::PathBuf {
    let root = env.path("root");
    let script = workspace_root().join("scripts/install");
    let out = std::process::Command::new(&script)
        .env("BK_INSTALL_ROOT", &root)
        .env("BK_INSTALL_BINARY", bin_dir().join("bk"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "scripts/install: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    root
}

#[test]
fn the_installed_bk_runs_each_tool_by_its_link_name_and_as_bk_tool() {
    let env = Env::new();
    let root = install(&env);
    let bin = root.join("bin");
    for tool in TOOLS {
        let link = std::fs::read_link(bin.join(tool)).unwrap();
        assert_eq!(link, Path::new("bk"), "{tool}");
    }
    std::fs::create_dir_all(env.path("src/d")).unwrap();
    std::fs::write(env.path("src/d/f"), "installed\n").unwrap();
    // Only the installed links on PATH ahead of everything else.
    let path = format!("PATH={}:/usr/bin:/bin", bin.display());
    let put = env.ok(&format!("{path} bk-chunk src | {path} bk put --tag via=bk"));
    assert!(put.contains("\"type\":\"snapshot\""), "{put}");
    env.ok(&format!(
        "{path} bk-get latest --into out && diff -r src out"
    ));
    let listing = env.ok(&format!("{path} bk ls latest"));
    assert!(listing.contains("d/f"), "{listing}");

    // Errors name the tool that was run, however it was called.
    let err = env.fails(&format!("{path} bk get --no-such-flag"), 2);
    assert!(err.starts_with("bk-get: error:"), "{err}");
    let err = env.fails(&format!("{path} bk-ls --no-such-flag"), 2);
    assert!(err.starts_with("bk-ls: error:"), "{err}");
    let help = env.ok(&format!("{path} bk-put --help"));
    assert!(help.contains("Usage: bk-put"), "{help}");

    let help = env.ok(&format!("{path} bk --help"));
    for tool in TOOLS {
        assert!(help.contains(tool), "bk --help lacks {tool}: {help}");
    }
    let err = env.fails(&format!("{path} bk nosuchtool"), 2);
    assert!(
        err.contains("bk: error: no tool named \"nosuchtool\""),
        "{err}"
    );
    assert!(err.contains("bk: hint:"), "{err}");
    env.fails(&format!("{path} bk"), 2);

    // man finds the pages through PATH (bin/ → ../share/man).
    for tool in TOOLS {
        assert!(
            root.join(format!("share/man/man1/{tool}.1")).exists(),
            "{tool}"
        );
    }
    for page in ["man5/bk-stream.5", "man5/bk-repository.5", "man7/bk.7"] {
        assert!(root.join("share/man").join(page).exists(), "{page}");
    }
}

#[test]
fn committed_man_pages_are_what_bk_generate_writes() {
    let env = Env::bare();
    let dir = env.path("man");
    env.ok(&format!("bk generate man '{}'", dir.display()));
    let committed = workspace_root().join("man");
    for tool in TOOLS {
        let name = format!("{tool}.1");
        let generated = std::fs::read_to_string(dir.join(&name)).unwrap();
        let kept = std::fs::read_to_string(committed.join(&name)).unwrap_or_default();
        assert!(
            generated == kept,
            "man/{name} differs from what `bk generate man` writes from the clap \
             definitions and man/prose/{tool}.roff: run scripts/generate-man and commit"
        );
        // Well-formed roff: groff reads it without a warning.
        if Path::new("/usr/bin/groff").exists() {
            let out = std::process::Command::new("groff")
                .args(["-man", "-Tutf8", "-ww", "-z"])
                .arg(committed.join(&name))
                .output()
                .unwrap();
            assert!(
                out.stderr.is_empty(),
                "groff warns about man/{name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn completions_for_bash_zsh_and_fish_name_every_tool_and_its_flags() {
    let env = Env::new();
    let root = install(&env);
    let share = root.join("share");
    for tool in TOOLS.iter().copied().chain(["bk"]) {
        let bash = share.join(format!("bash-completion/completions/{tool}"));
        let zsh = share.join(format!("zsh/site-functions/_{tool}"));
        let fish = share.join(format!("fish/vendor_completions.d/{tool}.fish"));
        for f in [&bash, &zsh, &fish] {
            let text = std::fs::read_to_string(f).unwrap();
            // Every tool has --help; bk-put's flags include the exclusion rules.
            assert!(text.contains("help"), "{} lacks --help", f.display());
            if tool == "bk-put" {
                assert!(text.contains("exclude-caches"), "{}", f.display());
            }
        }
        env.ok(&format!("bash -n '{}'", bash.display()));
    }
    // Completion of a flag, as bash runs it.
    let words = env.ok(&format!(
        "source '{}'; f=$(complete -p bk-put | sed 's/.*-F \\([^ ]*\\).*/\\1/'); \
         COMP_WORDS=(bk-put --exclude-c); COMP_CWORD=1; $f bk-put --exclude-c bk-put; \
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        share.join("bash-completion/completions/bk-put").display()
    ));
    assert!(
        words.lines().any(|w| w.trim() == "--exclude-caches"),
        "{words}"
    );

    let err = env.fails("bk generate completions tcsh /tmp/x", 2);
    assert!(err.contains("bk: hint:"), "{err}");
}
