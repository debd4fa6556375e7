//! Gives back memory the agent holds but does not use: the pages only starting up needed, and
//! the allocator's free pages once the agent goes quiet.
//!
//! **Startup pages.** Starting touches code that never runs again: parsing the config,
//! compiling VRL programs, building every component. Each first touch of a code page maps not
//! one page but the 64 KiB around it from the page cache (the kernel's fault-around), so the
//! few hundred code pages that run at startup leave ~9 MiB of the binary resident for the
//! life of the process, and the shared libraries (libc, OpenSSL for librdkafka) add ~3 MiB
//! more. [`release_startup_memory`] drops the read-only mappings of the binary and its
//! libraries from the process's page tables (`MADV_DONTNEED`). Nothing is lost: the read-only
//! segments of a file mapping hold no private pages, so the kernel maps a page again from the
//! page cache (a minor fault, no disk read while it stays cached) when it is next run or read.
//! The writable segments, which hold the loader's relocations, are never touched.
//!
//! **Free heap pages.** mimalloc gives freed pages back to the system only after a delay, and
//! only when the thread that owns them next calls into it: a worker that goes quiet after a
//! burst kept every page the burst had used (37-44 MiB resident for an idle http_server
//! agent after 100,000 events, measured). The runtime's workers call [`on_worker_park`] each time
//! they run out of work. Once the whole runtime has been quiet for a second, each worker is
//! woken once and returns its free pages as it parks again ([`set_free_memory_collector`];
//! the binary installs mimalloc's `mi_collect`). Under load nothing is collected: handing
//! pages back at every pause cost 5-10% more CPU in page faults (measured). The code pages
//! the burst mapped are dropped again then too, as after startup: an http_server agent idle
//! 10 s after 100,000 events held 11.8-12.0 MiB, 6.5-6.6 of them its binary's pages, and now
//! holds 7.7-9.8 MiB (load bench, `BENCH_FILTER=idle`).

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// How long the agent runs before startup memory is given back: long enough for the
/// components' own start (connecting, binding, reading state), which runs after
/// `Topology::start` returns.
pub const AFTER_START: Duration = Duration::from_secs(5);

/// How long the runtime must be quiet before its workers hand their free pages back.
pub const QUIET_FOR: Duration = Duration::from_secs(1);

/// At most this many worker wake-ups per worker within [`QUIET_FOR`] still count as quiet: the
/// agent's own timers wake a worker about once a second.
const QUIET_WAKEUPS_PER_WORKER: u64 = 4;

static COLLECTOR: OnceLock<fn()> = OnceLock::new();

/// Installs what returns the calling thread's free heap pages to the system (the binary's
/// allocator; tests and tools that use the system allocator install nothing).
pub fn set_free_memory_collector(collect: fn()) {
    let _ = COLLECTOR.set(collect);
}

/// Returns the calling thread's free heap pages to the system now, if a collector is
/// installed.
pub fn collect_free_memory() {
    if let Some(collect) = COLLECTOR.get() {
        collect();
    }
}

/// Worker wake-ups so far, across the runtime: how busy it is.
static WAKEUPS: AtomicU64 = AtomicU64::new(0);
/// How many times the runtime was found quiet and its workers nudged to collect.
static NUDGES: AtomicU64 = AtomicU64::new(0);
/// A watch for quiet is running.
static WATCHING: AtomicBool = AtomicBool::new(false);
/// [`WAKEUPS`] when the last nudge was sent.
static WAKEUPS_AT_NUDGE: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// The [`NUDGES`] count this worker last saw.
    static NUDGES_SEEN: Cell<u64> = const { Cell::new(0) };
}

/// A runtime worker is about to run tasks.
pub fn on_worker_unpark() {
    WAKEUPS.fetch_add(1, Ordering::Relaxed);
}

/// A runtime worker ran out of tasks and is about to sleep. After a nudge (the runtime was
/// quiet for [`QUIET_FOR`]) it returns its free heap pages; otherwise it makes sure a watch
/// for quiet is running. Under load nothing is collected, so pages freed and reused are not
/// handed back and faulted in again; a worker parked after a nudge starts no watch, so an
/// idle agent is not woken again and again.
pub fn on_worker_park() {
    let Some(collect) = COLLECTOR.get() else {
        return;
    };
    let nudges = NUDGES.load(Ordering::Acquire);
    if NUDGES_SEEN.with(|seen| seen.replace(nudges)) != nudges {
        collect();
        return;
    }
    // A load first: under load a watch is nearly always running, and a swap at every park
    // would bounce the flag's cache line between the workers.
    if WATCHING.load(Ordering::Relaxed) || WATCHING.swap(true, Ordering::AcqRel) {
        return;
    }
    match tokio::runtime::Handle::try_current() {
        // After a nudge, the next watch waits for work: the nudge's own wake-ups (each worker
        // parks more than once as its nudge task yields) and an idle agent's timers must not
        // start one, or an idle runtime is nudged again every second or so.
        Ok(runtime) if nudges > 0 && !busy_since_nudge(&runtime) => {
            WATCHING.store(false, Ordering::Release)
        }
        Ok(runtime) => {
            runtime.spawn(nudge_workers_when_quiet());
        }
        Err(_) => WATCHING.store(false, Ordering::Release),
    }
}

/// Whether the workers woke more since the last nudge than a quiet runtime does in
/// [`QUIET_FOR`] (twice over, for the nudge's own wake-ups).
fn busy_since_nudge(runtime: &tokio::runtime::Handle) -> bool {
    let workers = runtime.metrics().num_workers() as u64;
    let since = WAKEUPS.load(Ordering::Relaxed) - WAKEUPS_AT_NUDGE.load(Ordering::Relaxed);
    since > 2 * QUIET_WAKEUPS_PER_WORKER * workers
}

/// Waits until a whole [`QUIET_FOR`] passes with the workers (nearly) asleep, then wakes each
/// of them once: one task per worker, each yielding a few times, keeps work on the queues long
/// enough for the parked workers to be woken to steal it, and each collects as it parks again.
async fn nudge_workers_when_quiet() {
    let runtime = tokio::runtime::Handle::current();
    let workers = runtime.metrics().num_workers() as u64;
    loop {
        let before = WAKEUPS.load(Ordering::Relaxed);
        tokio::time::sleep(QUIET_FOR).await;
        if WAKEUPS.load(Ordering::Relaxed) - before <= QUIET_WAKEUPS_PER_WORKER * workers {
            break;
        }
    }
    WAKEUPS_AT_NUDGE.store(WAKEUPS.load(Ordering::Relaxed), Ordering::Relaxed);
    // The code a burst ran is resident too, 64 KiB around each page it touched: dropped
    // again, as after startup, it is mapped back from the page cache when next run.
    release_startup_memory();
    NUDGES.fetch_add(1, Ordering::AcqRel);
    WATCHING.store(false, Ordering::Release);
    for _ in 0..workers {
        runtime.spawn(async {
            for _ in 0..3 {
                tokio::task::yield_now().await;
            }
        });
    }
}

/// Drops the read-only segments of the binary and its libraries from the page tables. Safe
/// to call at any time, from any thread, any number of times.
pub fn release_startup_memory() {
    #[cfg(target_os = "linux")]
    if !traced() {
        release_read_only_segments();
    }
}

/// `MADV_DONTNEED` on every loadable segment of the executable and of the shared libraries
/// that is neither writable nor part of the relocation-read-only range (`PT_GNU_RELRO`), in
/// whole pages.
#[cfg(target_os = "linux")]
fn release_read_only_segments() {
    for range in read_only_ranges() {
        // SAFETY: the range lies inside a read-only, file-backed mapping of the executable or
        // a library without private pages (no relocations are written there), so dropping its
        // pages only makes the kernel read them again from the file when next touched.
        unsafe {
            libc::madvise(
                range.start as *mut libc::c_void,
                range.end - range.start,
                libc::MADV_DONTNEED,
            );
        }
    }
}

/// Whether a debugger is attached: its breakpoints are private copies of code pages, which
/// `MADV_DONTNEED` would drop.
#[cfg(target_os = "linux")]
fn traced() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("TracerPid:"))
                .map(|pid| pid.trim() != "0")
        })
        .unwrap_or(true)
}

/// The read-only segments of the executable and its shared libraries as page-aligned
/// address ranges.
#[cfg(target_os = "linux")]
fn read_only_ranges() -> Vec<std::ops::Range<usize>> {
    struct Found {
        /// The executable, always listed first, has been visited.
        seen_executable: bool,
        ranges: Vec<std::ops::Range<usize>>,
    }
    unsafe extern "C" fn visit(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: the loader passes a valid `dl_phdr_info`; `data` is the `Found` below.
        let (info, found) = unsafe { (&*info, &mut *(data as *mut Found)) };
        // The first object listed is the executable itself (no name); then the shared
        // libraries by path, and the kernel's vDSO (a name without a path), which is left alone.
        let first = !std::mem::replace(&mut found.seen_executable, true);
        let from_file = !info.dlpi_name.is_null()
            // SAFETY: a NUL-terminated string owned by the loader.
            && unsafe { std::ffi::CStr::from_ptr(info.dlpi_name) }
                .to_bytes()
                .starts_with(b"/");
        if !first && !from_file {
            return 0;
        }
        // SAFETY: the loader's program headers of this object, `dlpi_phnum` of them.
        let headers =
            unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) };
        let base = info.dlpi_addr as usize;
        let page = page_size();
        let relro: Vec<std::ops::Range<usize>> = headers
            .iter()
            .filter(|h| h.p_type == libc::PT_GNU_RELRO)
            .map(|h| base + h.p_vaddr as usize..base + (h.p_vaddr + h.p_memsz) as usize)
            .collect();
        for header in headers {
            if header.p_type != libc::PT_LOAD || header.p_flags & libc::PF_W != 0 {
                continue;
            }
            let start = (base + header.p_vaddr as usize).next_multiple_of(page);
            let end = (base + (header.p_vaddr + header.p_filesz) as usize) / page * page;
            let overlaps_relro = relro.iter().any(|r| r.start < end && start < r.end);
            if start < end && !overlaps_relro {
                found.ranges.push(start..end);
            }
        }
        0 // on to the next object
    }
    let mut found = Found {
        seen_executable: false,
        ranges: Vec::new(),
    };
    // SAFETY: `visit` matches the callback's signature and only reads what it is given.
    unsafe { libc::dl_iterate_phdr(Some(visit), &mut found as *mut Found as *mut libc::c_void) };
    found.ranges
}

#[cfg(target_os = "linux")]
fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// A pointer the loader relocates at start: it lives in the relocation-read-only range.
    static RELOCATED: &str = "a string in .rodata";

    fn inside(address: usize) -> bool {
        read_only_ranges().iter().any(|r| r.contains(&address))
    }

    fn status_kib(field: &str) -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with(field)).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    #[test]
    fn ranges_cover_code_and_constants_but_not_relocated_or_writable_data() {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        assert!(!read_only_ranges().is_empty());
        assert!(inside(release_startup_memory as *const () as usize), "code");
        assert!(inside(RELOCATED.as_ptr() as usize), "string constants");
        assert!(
            inside(libc::getpid as *const () as usize),
            "the C library's code"
        );
        assert!(
            !inside(&RELOCATED as *const &str as usize),
            "a relocated pointer"
        );
        assert!(!inside(&COUNTER as *const _ as usize), "writable data");
        for range in read_only_ranges() {
            assert_eq!(range.start % page_size(), 0);
            assert_eq!(range.end % page_size(), 0);
        }
    }

    static COLLECTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    fn count_collection() {
        COLLECTED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    fn wait_for_collections(at_least: usize, what: &str) {
        use std::time::Instant;
        let deadline = Instant::now() + Duration::from_secs(10);
        while COLLECTED.load(std::sync::atomic::Ordering::SeqCst) < at_least {
            assert!(Instant::now() < deadline, "{what}: no collection");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Workers collect once the runtime has been quiet for a second, after each burst, with
    /// nothing else running to wake them; not while it is busy.
    #[test]
    fn workers_collect_once_the_runtime_is_quiet_and_not_while_it_is_busy() {
        use std::time::Instant;
        set_free_memory_collector(count_collection);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .on_thread_unpark(on_worker_unpark)
            .on_thread_park(on_worker_park)
            .build()
            .unwrap();
        let burst = || {
            runtime.block_on(async {
                for _ in 0..100 {
                    tokio::spawn(async { vec![0u8; 1 << 16].len() })
                        .await
                        .unwrap();
                }
            })
        };
        let collected = || COLLECTED.load(std::sync::atomic::Ordering::SeqCst);
        let started = Instant::now();
        burst();
        wait_for_collections(1, "after the first burst");
        assert!(
            started.elapsed() >= QUIET_FOR,
            "collected before a quiet second"
        );
        // Busy: a wake-up every millisecond for half a second. No nudge meanwhile (a worker
        // that had not parked since the last nudge may still collect for that one).
        let nudges = || NUDGES.load(std::sync::atomic::Ordering::SeqCst);
        let nudges_before = nudges();
        runtime.block_on(async {
            for _ in 0..500 {
                tokio::spawn(tokio::time::sleep(Duration::from_millis(1)))
                    .await
                    .unwrap();
            }
        });
        assert_eq!(nudges(), nudges_before, "nudged while busy");
        let before = collected();
        wait_for_collections(before + 1, "after the busy spell");
        // Quiet for good: no more nudges, so no more collections.
        let settled = nudges();
        std::thread::sleep(QUIET_FOR * 3);
        assert!(
            nudges() <= settled + 1,
            "kept nudging while idle: {settled} -> {}",
            nudges()
        );
    }

    #[test]
    fn released_pages_leave_the_resident_set_and_everything_still_runs() {
        let program = ". = parse_json!(.message)\n.n = length!(.items)\ndel(.drop)";
        let run = || {
            use crate::transforms::vrl_program::{compile, Runner};
            let program = compile("resident", program).unwrap();
            let mut value = vrl::value!({
                "message": r#"{"items":[1,2,3],"drop":true,"keep":"yes"}"#
            });
            Runner::default().run(&program, &mut value).unwrap();
            value
        };
        let before = run();
        assert_eq!(
            before,
            vrl::value!({"items": [1, 2, 3], "keep": "yes", "n": 3})
        );
        let resident = status_kib("RssFile:");
        release_startup_memory();
        let after_release = status_kib("RssFile:");
        assert!(
            after_release < resident,
            "file-backed RSS {resident} kB -> {after_release} kB"
        );
        assert_eq!(run(), before, "the same result from code paged in again");
        assert_eq!(RELOCATED, "a string in .rodata");
    }
}
