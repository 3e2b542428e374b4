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

/// Applies `engine.release_memory`. The environment's
/// `MIMALLOC_PURGE_DELAY` still wins.
pub fn apply(config: &ledgerflow::config::Config) {
    use ledgerflow::config::ReleaseMemory;
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    match config.engine.release_memory {
        ReleaseMemory::Lazy => {}
        // Purge at once, for a host where memory is scarcer than time.
        // SAFETY: sets a plain integer option, read at each purge decision.
        ReleaseMemory::Eager => unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) },
        ReleaseMemory::Bounded => bound(config.engine.resident_budget().as_u64()),
    }
}

/// How often the bound looks at the resident set. Reading `statm` costs a
/// few microseconds; a query can grow by tens of MiB between looks.
const BOUND_POLL: std::time::Duration = std::time::Duration::from_millis(5);

/// Keeps freed memory for reuse while the process holds less than `budget`
/// bytes (its resident set: C allocations and mapped files count too) and
/// returns the allocator's freed memory whenever it holds more. A purge
/// delay makes mimalloc note each range freed back to an arena without
/// returning it (a negative delay notes nothing, so a forced collect would
/// find nothing to purge); the watcher's forced collect purges the noted
/// ranges of every arena, whichever thread freed them. Pages still owned
/// by another thread's heap (retired, or emptied by other threads' frees)
/// go back only once that thread allocates again. Nothing else purges
/// within the delay, so memory goes back only when the process is over its
/// budget, instead of after every query as with "eager", whose re-faulted
/// pages cost ~30-50% of the time.
fn bound(budget: u64) {
    static STARTED: std::sync::Once = std::sync::Once::new();
    // An hour (`arena_purge_mult` is 1): a one-shot command never reaches
    // it, a daemon purges on its own at most hourly. The daemons' own idle
    // delay stays.
    const NOTE_ONLY: std::ffi::c_long = 3_600_000;
    // SAFETY: reads and sets plain integer options.
    unsafe {
        if libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) < 0 {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, NOTE_ONLY);
        }
    }
    STARTED.call_once(|| {
        // `resident_bytes` allocates, so this thread has a heap of its own
        // before its first collect (mimalloc skips a collect without one).
        // A collect that leaves the process over the budget is not
        // repeated until it has grown by `REGROWTH` or `RETRY` has passed:
        // what it could not purge (pages still owned by a busy thread's
        // heap, or memory in use) is still there at the next look, and a
        // forced collect at every look cost a mainnet month ~10 user-s.
        // Growth still triggers one at once: a plain 100 ms wait after a
        // purge that left the process over (tried in session 8) let a
        // mainnet week at a 384 MiB limit (budget then 512 MiB) peak at
        // 758 MiB instead of 540.
        const REGROWTH: u64 = 16 << 20;
        const RETRY: std::time::Duration = std::time::Duration::from_millis(100);
        let watcher = move || {
            let mut last: Option<(u64, std::time::Instant)> = None;
            loop {
                if let Some(held) = resident_bytes().filter(|&held| held > budget) {
                    let futile = last.is_some_and(|(after, at)| {
                        held < after.saturating_add(REGROWTH) && at.elapsed() < RETRY
                    });
                    if !futile {
                        // SAFETY: collects this thread's heap and purges the
                        // noted free ranges of every arena; safe from any
                        // thread.
                        unsafe { libmimalloc_sys::mi_collect(true) };
                        last = resident_bytes()
                            .filter(|&after| after > budget)
                            .map(|after| (after, std::time::Instant::now()));
                    }
                }
                std::thread::sleep(BOUND_POLL);
            }
        };
        if let Err(e) = std::thread::Builder::new()
            .name("memory-bound".into())
            .spawn(watcher)
        {
            tracing::warn!(error = %e, "could not start the memory bound; freed memory is kept");
        }
    });
}

/// This process's resident set in bytes (`/proc/self/statm`); `None` where
/// there is no procfs.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
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

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn memory_freed_over_the_budget_goes_back() {
        let budget = resident_bytes().unwrap() + (64 << 20);
        // As one-shot commands start (`tune`): nothing noted for a purge.
        // SAFETY: reads and sets plain integer options.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
        bound(budget);
        // SAFETY: as above.
        let delay = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert!(
            delay > 0,
            "freed ranges must be noted for the bound's purge"
        );
        // 256 MiB, every page touched, then freed: the allocator keeps
        // freed memory committed until the bound purges it.
        let blocks: Vec<Vec<u8>> = (0..256).map(|_| vec![1u8; 1 << 20]).collect();
        let held = resident_bytes().unwrap();
        assert!(held > budget + (128 << 20), "held {held}, budget {budget}");
        drop(blocks);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let held = resident_bytes().unwrap();
            if held <= budget {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "still {held} bytes resident, budget {budget}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
