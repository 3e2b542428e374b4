//! The allocator and when it gives memory back.

use crate::cli::Command;

// glibc malloc returns large freed blocks to the kernel, so every query
// batch faulted fresh zeroed pages in again (~20% of a run's CPU was page
// faults); mimalloc keeps them for reuse.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc v3's option enum (the sys crate has
/// no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// When freed memory goes back to the kernel. A query frees and reallocates
/// hundreds of MiB between batches, and each early purge made the kernel
/// zero those pages again: a day's run spent 1.1-1.4 s of system time with
/// a 10 ms delay, 0.8-0.9 s never purging. One-shot commands never purge
/// (the process ends soon); the daemons purge after 1 s idle so a quiet
/// scheduler does not sit on a run's peak; `serve` purges at once: its
/// requests allocate little, and a delayed purge waits for the thread's
/// next allocation, so an idle page server kept ~25 MiB of freed pages.
/// A `MIMALLOC_PURGE_DELAY` in the environment wins. (Until 2026-12-06 this
/// only applied when the default was 10 ms; the linked mimalloc's is
/// 1000 ms, so no command was tuned.)
pub fn tune(command: &Command) {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    let delay = match command {
        Command::Serve(_) => 0,
        Command::Schedule(_) | Command::Realtime(_) => 1000,
        _ => -1,
    };
    // SAFETY: sets a plain integer option.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, delay) };
}

/// `engine.release_memory = "eager"`: purge at once, for a host where
/// memory is scarcer than time. The environment still wins.
pub fn apply(config: &ledgerflow::config::Config) {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some()
        || config.engine.release_memory != ledgerflow::config::ReleaseMemory::Eager
    {
        return;
    }
    // SAFETY: sets a plain integer option, read at each purge decision.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
}

/// Drops this binary's read-only pages (code, constants) from the resident
/// set and turns off the kernel's fault-around for them (`MADV_RANDOM`), so
/// a daemon keeps resident only the code it runs after its start-up: the
/// start-up touched code all over a large binary, and fault-around mapped
/// 64 KiB around each touch (~20 MiB for `serve`). Only clean file pages
/// are dropped (a later touch reads them back from the page cache): a
/// mapping with anonymous pages (RELRO: relocated, then made read-only) or
/// a writable one is left alone.
pub fn release_code_pages() {
    let (Ok(exe), Ok(smaps)) = (
        std::fs::read_link("/proc/self/exe"),
        std::fs::read_to_string("/proc/self/smaps"),
    ) else {
        return;
    };
    let exe = exe.display().to_string();
    let mut mapping: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or_default();
        if let Some((a, b)) = first.split_once('-').filter(|_| !first.ends_with(':')) {
            // A mapping's header: range, perms, offset, dev, inode, path.
            let perms = fields.next().unwrap_or_default();
            let ours =
                line.ends_with(exe.as_str()) && perms.starts_with('r') && !perms.contains('w');
            mapping = match (
                ours,
                usize::from_str_radix(a, 16),
                usize::from_str_radix(b, 16),
            ) {
                (true, Ok(a), Ok(b)) => Some((a, b)),
                _ => None,
            };
            continue;
        }
        // Anonymous is listed before VmFlags; the decision waits for it.
        if first == "Anonymous:" {
            let anonymous = fields
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(1);
            if let (Some((start, end)), 0) = (mapping.take(), anonymous) {
                let (addr, len) = (start as *mut libc::c_void, end - start);
                // SAFETY: a read-only private file mapping of this executable
                // with no anonymous (modified) page: dropping its pages
                // loses nothing, and MADV_RANDOM only changes paging.
                unsafe {
                    libc::madvise(addr, len, libc::MADV_RANDOM);
                    libc::madvise(addr, len, libc::MADV_DONTNEED);
                }
            }
        }
    }
}
