//! What every bk binary shares on its command line: the repository address,
//! the secret, and the way errors become messages and exit codes.
//!
//! Secrets are read from a file, the environment or the terminal, never
//! from argv (which every user on the machine can read in /proc).

use crate::error::{Error, ExitCode, Result};
use crate::store::keys::Secret;
use crate::store::repo::Repository;
use crate::sys::AllocatorProfile;
use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::path::PathBuf;
use zeroize::Zeroizing;

#[derive(clap::Args, Debug, Clone, Default)]
pub struct RepoArgs {
    /// Repository: a directory path, file:// URL or s3://BUCKET/PREFIX
    /// (endpoint and credentials from the usual AWS_* variables)
    ///
    /// The PREFIX of an S3 address is optional; the AWS_* variables and the
    /// BK_S3_* tunables are in bk(7). In the tools with subcommands
    /// (bk-repo, bk-wal, bk-sqlite) it may come before or after the
    /// subcommand. An empty BK_REPO counts as unset, as every empty BK_*
    /// variable does (a CronJob template often sets one to nothing).
    #[arg(
        short = 'r',
        long = "repo",
        env = "BK_REPO",
        value_name = "REPO",
        global = true
    )]
    pub repo: Option<String>,
    /// Read the passphrase from FILE (first line)
    ///
    /// Only the first line counts, without its line ending. A file that
    /// cannot be read, or whose first line is empty, is a usage error
    /// (exit 2) that names it as the password file. Prefer this (a file
    /// with mode 0600, or a mounted secret) to BK_PASSWORD: a process's
    /// environment is visible to its owner and to root.
    ///
    /// An identity file is tried before a password file, except that this
    /// flag beats an identity file named only by BK_IDENTITY_FILE: the
    /// destination of a copy pipeline can take a passphrase while the
    /// variable is exported for the source. After both come BK_PASSWORD
    /// and a prompt on the terminal (see SECRETS in bk(7)).
    #[arg(long, env = "BK_PASSWORD_FILE", value_name = "FILE", global = true)]
    pub password_file: Option<PathBuf>,
    /// Unlock with an age X25519 identity file (a secret key) instead of a
    /// passphrase
    ///
    /// Not to be confused with `--identity USER@HOST:/PATH`, which names
    /// whose snapshots these are and is no secret.
    ///
    /// The file holds age identity lines (AGE-SECRET-KEY-1…; # comments
    /// and blank lines are ignored). Unattended jobs should use one: a
    /// passphrase runs scrypt in every process that opens the repository
    /// (about 0.13 s and 70 MiB of peak memory), an identity unlocks in
    /// milliseconds and a few MiB. `bk-repo key add --generate-identity
    /// FILE` makes one; for `bk-repo init`, the first identity in the file
    /// becomes the repository's first key.
    #[arg(long, env = "BK_IDENTITY_FILE", value_name = "FILE", global = true)]
    pub identity_file: Option<PathBuf>,
}

/// Which paths of the sources a backup takes (bk-chunk, bk-put --from)
/// and a drill compares (bk-verify --against): see ops::exclude.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ExcludeArgs {
    /// Leave out paths matching PATTERN (gitignore syntax: `*.tmp` at any
    /// depth, `/cache` at the root, `dir/` only directories, `!` keeps;
    /// repeatable)
    ///
    /// Patterns are matched against each path relative to the walk's root:
    /// the source, the sources' deepest common directory, or the DIR of
    /// bk-verify --against. A pattern with a slash at the start or in the
    /// middle is anchored there (`var/tmp` is not `x/var/tmp`); `*` and `?`
    /// do not match a slash, `**` matches any number of directories
    /// (`**/logs/*.gz`). An absolute pattern under the root is taken as
    /// that path, as restic users write them: backing up /home,
    /// `/home/me/.cache` means `/me/.cache`, while `/var/log` means
    /// /home/var/log.
    ///
    /// A directory left out is not read at all, and nothing below it can be
    /// taken back with `!`, as in git. The root and the directories leading
    /// to the sources are always taken. See Exclusion rules in bk-chunk(1)
    /// or bk-put(1).
    #[arg(long, value_name = "PATTERN")]
    pub exclude: Vec<String>,
    /// Like --exclude, ignoring case
    ///
    /// For names whose case varies between programs and file systems:
    /// `--iexclude '*.jpg'` also leaves out IMG_0001.JPG. Repeatable.
    #[arg(long, value_name = "PATTERN")]
    pub iexclude: Vec<String>,
    /// Read --exclude patterns from FILE, one per line (# comments)
    ///
    /// Blank lines and lines that start with # are skipped, and trailing
    /// spaces are removed, so one file can hold a policy with its reasons.
    /// Repeatable. A file that cannot be read, or a pattern that does not
    /// parse, is a usage error (exit 2): nothing is backed up with half a
    /// policy.
    #[arg(long, value_name = "FILE")]
    pub exclude_file: Vec<PathBuf>,
    /// Read --iexclude patterns from FILE
    ///
    /// The format of --exclude-file; the patterns ignore case. Repeatable.
    #[arg(long, value_name = "FILE")]
    pub iexclude_file: Vec<PathBuf>,
    /// Leave out the contents of directories holding a file NAME (whose
    /// content starts with HEADER, if given); repeatable
    ///
    /// NAME is a file name, not a path: every directory, at any depth,
    /// that holds an entry called NAME (`--exclude-if-present .nobackup`)
    /// is emptied. With HEADER, only if that entry is a file whose content
    /// starts with the bytes of HEADER. The directory itself is kept,
    /// empty, as restic keeps it, so a restore recreates it; the contents
    /// left out are not counted in the snapshot's `excluded`.
    #[arg(long, value_name = "NAME[:HEADER]")]
    pub exclude_if_present: Vec<String>,
    /// Leave out the contents of directories tagged with a valid
    /// CACHEDIR.TAG
    ///
    /// Valid means that the file starts with the standard signature
    /// `Signature: 8a477f597d28d172789f06886806bc55` (see
    /// https://bford.info/cachedir/); a CACHEDIR.TAG without it is ignored,
    /// so a stray file of that name hides nothing. The directory is kept,
    /// empty.
    #[arg(long)]
    pub exclude_caches: bool,
    /// Leave out files larger than SIZE (e.g. 500M, 2G)
    ///
    /// Only regular files count. SIZE is a number of bytes (4096), or a
    /// number with a binary unit K, M, G or T, optionally followed by B or
    /// iB, in any case (500M, 2G, 1.5GiB; 1M is 1048576 bytes).
    #[arg(long, value_name = "SIZE", value_parser = parse_size_arg)]
    pub exclude_larger_than: Option<u64>,
    /// Stay on the file system of each source: mount points below it are
    /// kept as empty directories (/proc, /sys, other disks)
    ///
    /// The mount points are kept, as restic keeps them, so a restore has
    /// somewhere to mount them again. With several sources, each keeps to
    /// its own file system: a source that is itself a mount point is read
    /// whole, and mount points below it are kept empty. Without -x the
    /// walk crosses file system boundaries.
    #[arg(short = 'x', long)]
    pub one_file_system: bool,
}

fn parse_size_arg(s: &str) -> std::result::Result<u64, String> {
    crate::format::human::parse_size(s)
        .ok_or_else(|| format!("{s:?} is not a size such as 4096, 500M or 2G"))
}

impl ExcludeArgs {
    pub fn options(&self) -> crate::ops::exclude::ExcludeOptions {
        crate::ops::exclude::ExcludeOptions {
            exclude: self.exclude.clone(),
            iexclude: self.iexclude.clone(),
            exclude_files: self.exclude_file.clone(),
            iexclude_files: self.iexclude_file.clone(),
            exclude_if_present: self.exclude_if_present.clone(),
            exclude_caches: self.exclude_caches,
            exclude_larger_than: self.exclude_larger_than,
            one_file_system: self.one_file_system,
        }
    }
}

/// Where a backup's paths come from besides the command line.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct FilesFromArgs {
    /// Also back up the paths listed in FILE (one per line, # comments; -
    /// for stdin); repeatable
    ///
    /// Blank lines and lines that start with # are skipped, and spaces
    /// around each path are removed. Relative paths are taken from the
    /// current directory. The listed paths and those on the command line
    /// make one snapshot (see Several sources in bk-chunk(1) or bk-put(1)).
    /// An empty list is a usage error (exit 2), so a generator that
    /// printed nothing does not silently back up nothing; so is `-` when
    /// stdin is a terminal.
    #[arg(long, value_name = "FILE")]
    pub files_from: Vec<PathBuf>,
    /// Like --files-from, each line taken exactly as written
    ///
    /// Spaces and a leading # are part of the path; only empty lines (and
    /// a carriage return before the newline) are dropped. For lists made
    /// by programs, where a file may really be called `#notes` or end in a
    /// space.
    #[arg(long, value_name = "FILE")]
    pub files_from_verbatim: Vec<PathBuf>,
    /// The --files-from lists are separated by NUL bytes (find -print0)
    ///
    /// Applies to --files-from and --files-from-verbatim alike. Each name
    /// is taken exactly as written (a newline in a file name survives);
    /// empty ones are skipped.
    #[arg(short = '0', long = "null")]
    pub null: bool,
}

impl FilesFromArgs {
    /// `given` followed by the listed paths.
    pub fn paths(&self, given: &[PathBuf]) -> Result<Vec<PathBuf>> {
        let mut out = given.to_vec();
        if self
            .files_from
            .iter()
            .chain(&self.files_from_verbatim)
            .any(|f| f.as_os_str() == "-")
        {
            refuse_terminal_stdin(
                "a list of paths (--files-from -)",
                "pipe it in: `find /srv -name '*.conf' -print0 | bk-put --files-from - -0`",
            )?;
        }
        for f in &self.files_from {
            out.extend(crate::ops::exclude::read_files_from(f, false, self.null)?);
        }
        for f in &self.files_from_verbatim {
            out.extend(crate::ops::exclude::read_files_from(f, true, self.null)?);
        }
        Ok(out)
    }
}

/// Parses the command line. Empty `BK_*` variables count as unset (a
/// CronJob template often sets `BK_PASSWORD_FILE=` to nothing).
/// A command line that does not parse gets the tools' usual two lines,
/// `TOOL: error: …` and `TOOL: hint: …`, and exit 2.
pub fn parse<T: clap::Parser>() -> T {
    parse_from(std::env::args_os())
}

/// [`parse`] of given arguments (the first is the program name): the
/// multi-call `bk` binary runs `bk put …` as `bk-put …`.
pub fn parse_from<T: clap::Parser>(args: impl IntoIterator<Item = std::ffi::OsString>) -> T {
    for (k, v) in std::env::vars_os() {
        if v.is_empty() && k.to_string_lossy().starts_with("BK_") {
            std::env::remove_var(&k);
        }
    }
    let parsed = T::command().try_get_matches_from(args).and_then(|matches| {
        let _ = GIVEN_ON_COMMAND_LINE.set(command_line_ids(&matches));
        T::from_arg_matches(&matches).map_err(|e| e.format(&mut T::command()))
    });
    match parsed {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion)
                || e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            {
                e.exit();
            }
            let tool = T::command().get_name().to_string();
            let (message, hint) = usage_error_lines(&e.to_string());
            eprintln!("{tool}: error: {message}");
            eprintln!(
                "{tool}: hint: {}see `{tool} --help`",
                hint.map(|h| format!("{h}; ")).unwrap_or_default()
            );
            std::process::exit(ExitCode::Usage.code())
        }
    }
}

/// The arguments (by clap id) this process was given on its command line
/// rather than through the environment: a `--password-file` flag beats an
/// exported `BK_IDENTITY_FILE`, and only clap knows which was which.
static GIVEN_ON_COMMAND_LINE: std::sync::OnceLock<BTreeSet<String>> = std::sync::OnceLock::new();

fn command_line_ids(matches: &clap::ArgMatches) -> BTreeSet<String> {
    let mut ids: BTreeSet<String> = matches
        .ids()
        .filter(|id| {
            matches.value_source(id.as_str()) == Some(clap::parser::ValueSource::CommandLine)
        })
        .map(|id| id.to_string())
        .collect();
    if let Some((_, sub)) = matches.subcommand() {
        ids.extend(command_line_ids(sub));
    }
    ids
}

fn given_on_command_line(id: &str) -> bool {
    GIVEN_ON_COMMAND_LINE
        .get()
        .is_some_and(|ids| ids.contains(id))
}

/// clap's multi-line message as one line (what was wrong, its details
/// joined) and its tip, if any.
fn usage_error_lines(text: &str) -> (String, Option<String>) {
    let mut message = Vec::new();
    let mut tip = None;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with("Usage:") || line.starts_with("For more information")
        {
            continue;
        }
        if let Some(t) = line.strip_prefix("tip: ") {
            tip = Some(t.to_string());
            continue;
        }
        message.push(line.strip_prefix("error: ").unwrap_or(line));
    }
    (message.join(" "), tip)
}

/// Reads a passphrase file: the first line, without its line ending.
pub fn read_password_file(path: &std::path::Path) -> Result<Zeroizing<String>> {
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
        Error::usage_hint(
            format!("cannot read the password file {}: {e}", path.display()),
            "--password-file or BK_PASSWORD_FILE names it; its first line is the passphrase",
        )
    })?);
    let first = text.lines().next().unwrap_or("");
    if first.is_empty() {
        return Err(Error::Usage(format!(
            "{}: the passphrase file is empty",
            path.display()
        )));
    }
    Ok(Zeroizing::new(first.to_string()))
}

/// Asks on the terminal (never echoed); `confirm` asks twice.
pub fn prompt_passphrase(prompt: &str, confirm: bool) -> Result<Zeroizing<String>> {
    if !std::io::stderr().is_terminal() {
        return Err(Error::Usage(
            "no passphrase given: use --password-file, BK_PASSWORD_FILE, BK_PASSWORD or --identity-file".into(),
        ));
    }
    let p =
        Zeroizing::new(rpassword::prompt_password(prompt).map_err(|e| Error::io("/dev/tty", e))?);
    if p.is_empty() {
        return Err(Error::Usage("empty passphrase".into()));
    }
    if confirm {
        let again = Zeroizing::new(
            rpassword::prompt_password(format!("{}: repeat passphrase: ", tool_name()))
                .map_err(|e| Error::io("/dev/tty", e))?,
        );
        if *again != *p {
            return Err(Error::Usage("the passphrases do not match".into()));
        }
    }
    Ok(p)
}

/// A passphrase a parent bk process handed over on a pipe
/// ([`take_handed_over_secrets`]).
static HANDED_OVER_PASSPHRASE: std::sync::OnceLock<Zeroizing<String>> = std::sync::OnceLock::new();

pub use crate::sys::SECRET_ENV;

/// The secrets of this process's environment as one JSON line for a child
/// bk process; `None` if there are none. Call [`Command::env_remove`] for
/// each of [`SECRET_ENV`] and set `BK_SECRETS_STDIN=1` on the child, which
/// reads the line with [`take_handed_over_secrets`].
///
/// [`Command::env_remove`]: std::process::Command::env_remove
pub fn hand_over_secrets() -> Option<Zeroizing<String>> {
    let mut m = serde_json::Map::new();
    if let Ok(p) = std::env::var("BK_PASSWORD") {
        m.insert("password".into(), p.into());
    }
    if let (Ok(id), Ok(secret)) = (
        std::env::var("AWS_ACCESS_KEY_ID"),
        std::env::var("AWS_SECRET_ACCESS_KEY"),
    ) {
        m.insert("aws_access_key_id".into(), id.into());
        m.insert("aws_secret_access_key".into(), secret.into());
        if let Ok(t) = std::env::var("AWS_SESSION_TOKEN") {
            m.insert("aws_session_token".into(), t.into());
        }
    }
    if m.is_empty() {
        return None;
    }
    let mut line = serde_json::Value::Object(m).to_string();
    line.push('\n');
    Some(Zeroizing::new(line))
}

/// In a child started with `BK_SECRETS_STDIN=1`: reads the line
/// [`hand_over_secrets`] wrote on stdin and keeps its secrets in memory
/// (the passphrase for [`RepoArgs::secret`], the credentials for S3), so
/// they never enter this process's environment or argv.
pub fn take_handed_over_secrets() -> Result<()> {
    if std::env::var_os("BK_SECRETS_STDIN").is_none() {
        return Ok(());
    }
    let mut line = Zeroizing::new(String::new());
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| Error::io("stdin (secrets handed over)", e))?;
    let v: serde_json::Value = serde_json::from_str(&line).map_err(|_| {
        Error::Usage("BK_SECRETS_STDIN: stdin does not start with the secrets line".into())
    })?;
    let field = |k: &str| v.get(k).and_then(|x| x.as_str());
    if let Some(p) = field("password") {
        let _ = HANDED_OVER_PASSPHRASE.set(Zeroizing::new(p.to_string()));
    }
    if let (Some(id), Some(secret)) = (field("aws_access_key_id"), field("aws_secret_access_key")) {
        crate::store::backend::s3::set_handed_over_credentials(
            id,
            secret,
            field("aws_session_token"),
        );
    }
    Ok(())
}

impl RepoArgs {
    pub fn location(&self) -> Result<&str> {
        self.repo
            .as_deref()
            .filter(|r| !r.is_empty())
            .ok_or_else(|| {
                Error::Usage("no repository given: use -r/--repo REPO or set BK_REPO".into())
            })
    }

    /// Where the key comes from, without the key: an identity file's or
    /// password file's path, or `BK_PASSWORD`. State kept between calls
    /// (bk-wal's prefetch spool) is keyed by it, so a call configured with
    /// another key never takes what one with the right key prepared.
    pub fn key_source(&self) -> String {
        if let Some(p) = &self.identity_file {
            format!("identity-file:{}", p.display())
        } else if let Some(p) = &self.password_file {
            format!("password-file:{}", p.display())
        } else {
            "password".into()
        }
    }

    /// The secret, from (in order) an identity file, a password file,
    /// `BK_PASSWORD`, or a prompt on the terminal.
    pub fn secret(&self, confirm: bool) -> Result<Secret> {
        // A flag beats the environment: `--password-file` given for the
        // other repository of a copy wins over an exported BK_IDENTITY_FILE.
        let password_flag_over_identity_env = self.identity_file.is_some()
            && self.password_file.is_some()
            && !given_on_command_line("identity_file")
            && given_on_command_line("password_file");
        if let Some(p) = self
            .identity_file
            .as_ref()
            .filter(|_| !password_flag_over_identity_env)
        {
            return Secret::from_identity_file(p);
        }
        if let Some(p) = &self.password_file {
            return Ok(Secret::passphrase(read_password_file(p)?.to_string()));
        }
        if let Some(p) = HANDED_OVER_PASSPHRASE.get() {
            return Ok(Secret::passphrase(p.to_string()));
        }
        if let Ok(p) = std::env::var("BK_PASSWORD") {
            if !p.is_empty() {
                return Ok(Secret::passphrase(p));
            }
        }
        let p = prompt_passphrase(
            &format!("{}: passphrase for {}: ", tool_name(), self.location()?),
            confirm,
        )?;
        Ok(Secret::passphrase(p.to_string()))
    }

    pub fn open(&self) -> Result<Repository> {
        let backend = crate::store::backend::open(self.location()?)?;
        Repository::open(backend, &self.secret(false)?)
    }
}

/// Refuses to read `what` from stdin when stdin is a terminal: a tool that
/// waits there silently looks hung. `hint` says what to pipe in instead.
pub fn refuse_terminal_stdin(what: &str, hint: &str) -> Result<()> {
    if std::io::stdin().is_terminal() {
        return Err(Error::usage_hint(
            format!("expected {what} on stdin, which is a terminal"),
            hint.to_string(),
        ));
    }
    Ok(())
}

/// How a long operation reports how far it has come.
#[derive(clap::ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ProgressMode {
    /// A bar on stderr when stderr is a terminal, nothing otherwise.
    #[default]
    Auto,
    /// One `{"type":"progress",…}` line on stderr per second, for wrappers.
    Json,
    /// Nothing.
    None,
}

/// The output conventions of the long operations.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct OutputArgs {
    /// Print nothing on stderr but warnings and errors (no progress, no
    /// notes)
    ///
    /// Notes are the lines that say what a tool chose for you, such as the
    /// snapshot `latest` named. For jobs whose mail or log should hold only
    /// what needs attention. -q wins over --progress, json included.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Progress on stderr: a bar when it is a terminal (auto), JSON lines
    /// for wrappers (json), or nothing (none)
    ///
    /// auto shows counts, bytes and the rate, and the share done and an
    /// ETA when the total is known (a restore of a whole snapshot knows it;
    /// a backup, which does not walk its tree twice, does not); it shows
    /// nothing when stderr is not a terminal (a pipe, a log file), so logs
    /// never fill with bars. json writes one `{"type":"progress",…}` line
    /// on stderr about once a second and a last one with `"done":true`
    /// (the record is described in bk-stream(5)), for a wrapper such as a
    /// web interface or a Kubernetes mover.
    #[arg(
        long,
        value_enum,
        value_name = "WHEN",
        default_value_t = ProgressMode::Auto,
        global = true
    )]
    pub progress: ProgressMode,
}

impl OutputArgs {
    /// Starts reporting `what` from `counters`, or returns `None` when
    /// nothing is to be shown. Reporting stops when the reporter drops.
    pub fn report(
        &self,
        what: &'static str,
        counters: &std::sync::Arc<crate::ops::progress::Progress>,
    ) -> Option<ProgressReporter> {
        if self.quiet {
            log::set_max_level(log::LevelFilter::Warn);
            return None;
        }
        let mode = match self.progress {
            ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressMode::Auto,
            ProgressMode::Auto | ProgressMode::None => return None,
            ProgressMode::Json => ProgressMode::Json,
        };
        Some(ProgressReporter::start(
            what,
            std::sync::Arc::clone(counters),
            mode,
        ))
    }
}

/// A thread that draws a progress bar (or writes JSON progress lines)
/// from an operation's counters until dropped.
pub struct ProgressReporter {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for ProgressReporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProgressReporter")
    }
}

impl ProgressReporter {
    fn start(
        what: &'static str,
        counters: std::sync::Arc<crate::ops::progress::Progress>,
        mode: ProgressMode,
    ) -> Self {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = std::sync::Arc::clone(&stop);
        let tool = tool_name();
        let thread = std::thread::spawn(move || {
            let started = std::time::Instant::now();
            let bar = (mode == ProgressMode::Auto).then(|| progress_bar(tool, what, false));
            let mut sized = false;
            let tick = if bar.is_some() { 100 } else { 1000 };
            loop {
                let done = stopped.load(Ordering::Relaxed);
                let now = counters.read();
                match &bar {
                    Some(bar) => {
                        if now.total_bytes > 0 && !sized {
                            sized = true;
                            bar.set_style(progress_style(tool, what, true));
                            bar.set_length(now.total_bytes);
                        }
                        let unit = counters.unit();
                        bar.set_message(match now.total_items {
                            0 => format!("{} {unit}", now.items),
                            t => format!("{}/{t} {unit}", now.items),
                        });
                        bar.set_position(now.bytes);
                    }
                    None => {
                        let secs = started.elapsed().as_secs_f64();
                        let rec = crate::format::wire::ProgressRecord {
                            v: crate::format::wire::VERSION,
                            tool: tool.to_string(),
                            operation: what.to_string(),
                            unit: counters.unit().to_string(),
                            items: now.items,
                            bytes: now.bytes,
                            total_items: now.total_items,
                            total_bytes: now.total_bytes,
                            elapsed_s: (secs * 10.0).round() / 10.0,
                            done,
                        };
                        let mut line = Vec::new();
                        let _ = crate::format::wire::write_record(
                            &mut line,
                            &crate::format::wire::Record::Progress(rec),
                        );
                        let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), &line);
                    }
                }
                if done {
                    break;
                }
                for _ in 0..tick / 50 {
                    if stopped.load(Ordering::Relaxed) {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
            }
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
        });
        ProgressReporter {
            stop,
            thread: Some(thread),
        }
    }
}

fn progress_bar(tool: &str, what: &str, sized: bool) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(
        None,
        indicatif::ProgressDrawTarget::stderr_with_hz(10),
    );
    bar.set_style(progress_style(tool, what, sized));
    bar
}

/// With a known total: a bar, the share done and an ETA; without one
/// (a backup does not walk its tree twice): counts and the rate.
fn progress_style(tool: &str, what: &str, sized: bool) -> indicatif::ProgressStyle {
    let template = if sized {
        format!(
            "{tool}: {what} [{{bar:30}}] {{percent}}% {{msg}}, {{bytes}}/{{total_bytes}}, \
             {{binary_bytes_per_sec}}, ETA {{eta}}"
        )
    } else {
        format!("{tool}: {what} {{msg}}, {{bytes}}, {{binary_bytes_per_sec}} [{{elapsed}}]")
    };
    indicatif::ProgressStyle::with_template(&template)
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
}

impl Drop for ProgressReporter {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Parses `KEY=VALUE` tags (a later value for the same key wins).
pub fn parse_tags(tags: &[String]) -> Result<BTreeMap<String, String>> {
    tags.iter().map(|t| parse_tag(t)).collect()
}

/// Parses one `KEY=VALUE` tag. Repeatable rules such as `--keep-tag
/// env=prod --keep-tag env=dev` need the pairs, not a map keyed by KEY.
pub fn parse_tag(t: &str) -> Result<(String, String)> {
    match t.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(Error::Usage(format!("tag {t:?} is not KEY=VALUE"))),
    }
}

/// Runs a tool's body: prints a one-line error (and a hint) on stderr and
/// exits with the documented code. A closed stdout ends the tool quietly.
/// The allocator gets the readers' profile ([`AllocatorProfile::FewArenas`]).
pub fn run(tool: &str, body: impl FnOnce() -> Result<ExitCode>) -> ! {
    run_with_allocator(tool, AllocatorProfile::FewArenas, body)
}

/// [`run`] for a tool whose memory wants another allocator profile
/// (bk-put, which recycles its large buffers: see sys.rs).
pub fn run_with_allocator(
    tool: &str,
    profile: AllocatorProfile,
    body: impl FnOnce() -> Result<ExitCode>,
) -> ! {
    run_mapped(
        tool,
        profile,
        || body().map(ExitCode::code),
        |e| e.exit_code().code(),
    )
}

/// [`run`] for a tool whose exit statuses are another program's contract
/// (bk-wal fetch answers PostgreSQL): `status` maps each error to the
/// status to exit with, after the error and its hint are printed.
pub fn run_mapped(
    tool: &str,
    profile: AllocatorProfile,
    body: impl FnOnce() -> Result<i32>,
    status: impl FnOnce(&Error) -> i32,
) -> ! {
    crate::sys::tune_allocator(profile);
    crate::sys::install_signal_handlers();
    let _ = TOOL.set(tool.to_string());
    if log::set_logger(&STDERR_LOG).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
    let code = match take_handed_over_secrets().and_then(|()| body()) {
        Ok(code) => code,
        Err(e) if e.is_broken_pipe() => ExitCode::Success.code(),
        Err(e) => {
            eprintln!("{tool}: error: {e}");
            if let Some(h) = e.hint() {
                eprintln!("{tool}: hint: {h}");
            }
            status(&e)
        }
    };
    std::process::exit(code)
}

/// The running tool's name, for the prefix of every line it prints on
/// stderr.
static TOOL: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The running tool's name (`bk` outside [`run`]).
pub fn tool_name() -> &'static str {
    TOOL.get().map(String::as_str).unwrap_or("bk")
}

/// Prints the library's per-item errors, warnings and notes (the `log`
/// facade) on stderr as `TOOL: error: …`, `TOOL: warning: …` and
/// `TOOL: …` (what a tool chose for the user, such as the snapshot `latest`
/// named); records from other crates are left out.
struct StderrLog;

static STDERR_LOG: StderrLog = StderrLog;

impl log::Log for StderrLog {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::Level::Info && (m.target() == "bk" || m.target().starts_with("bk::"))
    }

    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            let tool = tool_name();
            match r.level() {
                log::Level::Error => eprintln!("{tool}: error: {}", r.args()),
                log::Level::Warn => eprintln!("{tool}: warning: {}", r.args()),
                _ => eprintln!("{tool}: {}", r.args()),
            }
        }
    }

    fn flush(&self) {}
}
