//! Small wrappers over OS facts bk records (host, user, uid/gid names).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// How glibc's malloc should treat a tool's memory. Peak RSS is a figure
/// users size containers by, and glibc's defaults inflate it for bk's
/// pattern (megabyte buffers freed by threads other than the one that
/// allocated them): after the first large free, glibc raises its mapping
/// threshold to that size, and from then on every thread's arena keeps up
/// to twice that much freed memory. Measured with `/usr/bin/time -v` on the
/// 1.3 GB toolchain tree and a 2 GiB file (identity key, release build).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllocatorProfile {
    /// Map every allocation from 128 KiB up and unmap it when freed (the
    /// threshold stays fixed). For bk-put, which recycles its chunk-sized
    /// buffers itself: first backup peaks fell 70 -> 58 MiB (tree) and
    /// 55 -> 42 MiB (2 GiB file) at unchanged speed.
    MapLarge,
    /// At most two arenas. For the restore and read paths, which allocate
    /// decoded chunks on several threads: the tree restore peak fell
    /// 80-95 -> 52-56 MiB at unchanged speed. (Mapping as above slowed it
    /// by 15%, a page fault per 4 KiB of every fresh buffer.)
    FewArenas,
}

/// Applies an [`AllocatorProfile`]; call before any thread starts. Does
/// nothing where the allocator is not glibc's.
#[allow(unsafe_code)]
pub fn tune_allocator(profile: AllocatorProfile) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let (param, value) = match profile {
            AllocatorProfile::MapLarge => (libc::M_MMAP_THRESHOLD, 128 << 10),
            AllocatorProfile::FewArenas => (libc::M_ARENA_MAX, 2),
        };
        // SAFETY: mallopt(3) only changes allocator parameters; it takes
        // plain integers, touches no memory of ours, and is documented as
        // safe to call at any time (we call it before threads start).
        unsafe {
            libc::mallopt(param, value);
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = profile;
}

pub fn hostname() -> Option<String> {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
}

pub fn username() -> Option<String> {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| user_name(nix::unistd::getuid().as_raw()))
}

/// Fills `buf` from `offset` with positional reads until it is full or the
/// file ends; returns the bytes read (fewer only at the end of the file).
pub fn read_at_most(f: &std::fs::File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// The extended attributes of `path` itself (a symlink's own, not its
/// target's), sorted by name. A filesystem without them has none;
/// attributes this process may not read (`trusted.*` unless root) are not
/// listed by the kernel.
pub fn read_xattrs(path: &std::path::Path) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let names = match xattr::list(path) {
        Ok(n) => n,
        Err(e) if xattrs_unsupported(&e) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for name in names {
        // Removed between the list and the get: gone, not an error.
        if let Some(value) = xattr::get(path, &name)? {
            out.push((name.to_string_lossy().into_owned(), value));
        }
    }
    out.sort();
    Ok(out)
}

/// Whether an xattr call failed because the filesystem (or, for a
/// namespace such as `security.*`, this process) cannot hold or set it,
/// rather than because something is wrong with the file.
pub fn xattrs_unsupported(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOTSUP) | Some(libc::EPERM) | Some(libc::EACCES)
    )
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

type NameCache = HashMap<u32, Option<String>>;

fn cache() -> &'static Mutex<(NameCache, NameCache)> {
    static C: OnceLock<Mutex<(NameCache, NameCache)>> = OnceLock::new();
    C.get_or_init(Default::default)
}

/// Name of a uid, cached (NSS lookups are slow and trees repeat owners).
pub fn user_name(uid: u32) -> Option<String> {
    let mut c = cache().lock().unwrap_or_else(|e| e.into_inner());
    c.0.entry(uid)
        .or_insert_with(|| {
            nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                .ok()
                .flatten()
                .map(|u| u.name)
        })
        .clone()
}

pub fn group_name(gid: u32) -> Option<String> {
    let mut c = cache().lock().unwrap_or_else(|e| e.into_inner());
    c.1.entry(gid)
        .or_insert_with(|| {
            nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid))
                .ok()
                .flatten()
                .map(|g| g.name)
        })
        .clone()
}

/// The environment variables that carry secrets. A child bk starts gets
/// them on a pipe instead (`crate::cli::hand_over_secrets`); a child that
/// is not bk (psql) does not get them at all.
pub const SECRET_ENV: [&str; 3] = ["BK_PASSWORD", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"];

/// Set when SIGINT or SIGTERM arrives; long loops poll it and stop cleanly.
pub fn interrupted() -> &'static Arc<AtomicBool> {
    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    FLAG.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            let _ = signal_hook::flag::register(sig, Arc::clone(&flag));
        }
        flag
    })
}

/// Installs the signal handlers (call early in main).
pub fn install_signal_handlers() {
    let _ = interrupted();
}

pub fn check_interrupted() -> crate::Result<()> {
    if interrupted().load(Ordering::Relaxed) {
        Err(crate::Error::Interrupted)
    } else {
        Ok(())
    }
}

pub fn process_alive(pid: u32) -> bool {
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None) {
        Ok(()) => true,
        Err(nix::errno::Errno::EPERM) => true,
        Err(_) => false,
    }
}

/// Enlarges a pipe's kernel buffer (to 1 MiB, the default unprivileged
/// maximum). With the default 64 KiB, a chunk stream between two processes
/// costs a context switch per 64 KiB and measurably slows the pipeline.
/// Does nothing when `fd` is not a pipe.
pub fn widen_pipe(fd: &impl std::os::fd::AsRawFd) {
    let raw = fd.as_raw_fd();
    let max = std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .unwrap_or(1 << 20)
        .min(1 << 20);
    let _ = nix::fcntl::fcntl(raw, nix::fcntl::FcntlArg::F_SETPIPE_SZ(max));
}
/// Applies `f` to every item on up to `threads` threads (small objects from
/// a remote store are latency-bound), keeping the input order. The first
/// error wins.
pub fn parallel_map<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> crate::Result<R> + Sync,
) -> crate::Result<Vec<R>> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<crate::Result<R>>>> =
        items.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..threads.clamp(1, items.len().max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                let r = f(item);
                let failed = r.is_err();
                *results[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
                if failed {
                    next.store(usize::MAX / 2, std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
    });
    let mut out = Vec::with_capacity(items.len());
    for r in results {
        match r.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(Ok(v)) => out.push(v),
            Some(Err(e)) => return Err(e),
            None => {}
        }
    }
    Ok(out)
}
