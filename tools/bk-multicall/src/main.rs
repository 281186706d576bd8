//! `bk`: every bk tool in one binary, the way the install ships them.
//!
//! Nine binaries meant nine link-time optimizations and nine copies of the
//! S3 client: most of a 25-minute install on two cores. One binary, linked
//! once, runs as the tool it is called as (`bk-put` is a link to `bk`), or
//! as `bk put …`; the tools stay separate commands with their own man pages.
//! `bk generate` writes those man pages and the shell completions from the
//! same clap definitions the tools parse with.

mod generate;
mod tool;

use std::ffi::OsString;
use std::path::Path;
use tool::Tool;

fn main() {
    let mut args: Vec<OsString> = std::env::args_os().collect();
    let called_as = args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Some(tool) = Tool::named(&called_as) {
        tool.run(args)
    }
    let first = args.get(1).map(|a| a.to_string_lossy().into_owned());
    match first.as_deref() {
        Some(name) if Tool::named(name).is_some() => {
            let tool = Tool::named(name).expect("checked above");
            args.remove(0);
            args[0] = OsString::from(tool.name());
            tool.run(args)
        }
        Some("generate") => generate::main(&args[2..]),
        Some("-V" | "--version") => println!("bk {}", env!("CARGO_PKG_VERSION")),
        Some("-h" | "--help" | "help") => print!("{}", usage()),
        None => {
            eprint!("{}", usage());
            std::process::exit(bk::ExitCode::Usage.code())
        }
        Some(other) => usage_error(
            &format!("no tool named {other:?}"),
            "run `bk --help` for the list",
        ),
    }
}

/// The tools and what each does, as `bk --help` lists them.
fn usage() -> String {
    let mut text = format!(
        "bk {}: deduplicated, compressed, encrypted backups as small Unix tools\n\n\
         Usage: bk TOOL [ARGS]...    (the same as bk-TOOL [ARGS]...)\n       \
         bk generate man DIR\n       \
         bk generate completions bash|zsh|fish DIR\n\nTools:\n",
        env!("CARGO_PKG_VERSION")
    );
    for tool in Tool::ALL {
        let about = tool
            .command()
            .get_about()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let about = about.trim_end_matches('.');
        text.push_str(&format!("  {:<10} {about}\n", tool.name()));
    }
    text.push_str("\nSee bk(7), and bk-TOOL --help or man bk-TOOL for each tool.\n");
    text
}

/// The tools' two-line argument error: what is wrong, then what to do.
fn usage_error(message: &str, hint: &str) -> ! {
    eprintln!("bk: error: {message}");
    eprintln!("bk: hint: {hint}");
    std::process::exit(bk::ExitCode::Usage.code())
}
