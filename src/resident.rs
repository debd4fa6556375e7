//! Gives back memory the agent holds but does not use: the pages only starting up needed, and
//! the allocator's free pages once the agent goes quiet.
//!
//! **Startup pages.** Starting touches code that never runs again: parsing the config,
//! compiling VRL programs, building every component. Each first touch of a code page maps not
//! one page but the 64 KiB around it from the page cache (the kernel's fault-around), so the
//! few hundred code pages that run at startup leave ~9 MiB of the binary resident for the
//! life of the process. [`release_startup_memory`] drops the binary's read-only mappings from
//! the process's page tables (`MADV_DONTNEED`). Nothing is lost: the read-only segments of a
//! file mapping hold no private pages, so the kernel maps a page again from the page cache (a
//! minor fault, no disk read while it stays cached) when it is next run or read. The writable
//! segment, which holds the loader's relocations, is never touched.
//!
//! **Free heap pages.** mimalloc gives freed pages back to the system only after a delay, and
//! only when the thread that owns them next calls into it: a worker that goes quiet after a
//! burst kept every page the burst had used (34 MiB resident for an idle http_server agent
//! after 100,000 events, measured). The runtime's workers call [`on_worker_park`] each time
//! they run out of work; a worker that has run since, and last collected a second or more
//! ago, returns its free pages then ([`set_free_memory_collector`]; the binary installs
//! mimalloc's `mi_collect`). At most once a second per worker, so pages freed and reused
//! under load are not handed back and faulted in again (mimalloc's own purge delay is a
//! second too).

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long the agent runs before startup memory is given back: long enough for the
/// components' own start (connecting, binding, reading state), which runs after
/// `Topology::start` returns.
pub const AFTER_START: Duration = Duration::from_secs(5);

/// How often at most a worker hands its free pages back when it parks.
pub const COLLECT_EVERY: Duration = Duration::from_secs(1);

static COLLECTOR: OnceLock<fn()> = OnceLock::new();

/// Installs what returns the calling thread's free heap pages to the system (the binary's
/// allocator; tests and tools that use the system allocator install nothing).
pub fn set_free_memory_collector(collect: fn()) {
    let _ = COLLECTOR.set(collect);
}

/// A runtime worker's collection state.
struct Worker {
    /// It ran tasks since it last collected.
    ran: Cell<bool>,
    /// When it last collected.
    last: Cell<Option<Instant>>,
    /// A timer is set to nudge the workers when this one may collect again.
    reminder: Cell<bool>,
    /// The last [`NUDGES`] count it saw.
    nudges_seen: Cell<u64>,
}

thread_local! {
    static WORKER: Worker = const {
        Worker {
            // A new worker may run tasks before it first parks.
            ran: Cell::new(true),
            last: Cell::new(None),
            reminder: Cell::new(false),
            nudges_seen: Cell::new(0),
        }
    };
}

/// How many times a reminder woke the workers: a worker that parks after a nudge collects at
/// once (a nudge comes at most once a second per worker), and sets no timer of its own, so
/// nudges do not keep each other going.
static NUDGES: AtomicU64 = AtomicU64::new(0);

/// A runtime worker is about to run tasks.
pub fn on_worker_unpark() {
    WORKER.with(|worker| worker.ran.set(true));
}

/// A runtime worker ran out of tasks and is about to sleep. If it ran since it last collected,
/// it returns its free heap pages now when that was [`COLLECT_EVERY`] ago or more, or when a
/// nudge woke it. If it collected less than that ago, it sets a timer that, when it fires,
/// nudges every worker: each wakes, finds nothing to do and parks again, collecting then. So
/// the last burst before a quiet spell is handed back too, by every worker that had a part in
/// it, not only by the one the timer wakes.
pub fn on_worker_park() {
    let Some(collect) = COLLECTOR.get() else {
        return;
    };
    WORKER.with(|worker| {
        if !worker.ran.get() {
            return;
        }
        let now = Instant::now();
        let nudges = NUDGES.load(Ordering::Acquire);
        let nudged = worker.nudges_seen.replace(nudges) != nudges;
        let since = worker.last.get().map(|last| now.duration_since(last));
        match since {
            Some(since) if since < COLLECT_EVERY && !nudged => {
                if !worker.reminder.get() {
                    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                        worker.reminder.set(true);
                        runtime.spawn(nudge_workers_after(COLLECT_EVERY - since));
                    }
                }
            }
            _ => {
                collect();
                worker.ran.set(false);
                worker.last.set(Some(now));
                worker.reminder.set(false);
            }
        }
    });
}

/// After `wait`, wakes the runtime's workers: one task per worker, each yielding a few times,
/// keeps work on the queues long enough for the parked workers to be woken to steal it.
async fn nudge_workers_after(wait: Duration) {
    tokio::time::sleep(wait).await;
    NUDGES.fetch_add(1, Ordering::AcqRel);
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    for _ in 0..workers {
        tokio::spawn(async {
            for _ in 0..3 {
                tokio::task::yield_now().await;
            }
        });
    }
}

/// Drops the binary's read-only segments from the page tables. Safe to call at any time, from any thread, any number of times.
pub fn release_startup_memory() {
    #[cfg(target_os = "linux")]
    if !traced() {
        release_read_only_segments();
    }
}

/// `MADV_DONTNEED` on every loadable segment of the executable that is neither writable nor
/// part of the relocation-read-only range (`PT_GNU_RELRO`), in whole pages.
#[cfg(target_os = "linux")]
fn release_read_only_segments() {
    for range in read_only_ranges() {
        // SAFETY: the range lies inside a read-only, file-backed mapping of the executable
        // without private pages (no relocations are written there), so dropping the mapping's
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

/// The executable's read-only segments as page-aligned address ranges.
#[cfg(target_os = "linux")]
pub(crate) fn read_only_ranges() -> Vec<std::ops::Range<usize>> {
    struct Found {
        ranges: Vec<std::ops::Range<usize>>,
    }
    unsafe extern "C" fn visit(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: the loader passes a valid `dl_phdr_info`; `data` is the `Found` below.
        let (info, found) = unsafe { (&*info, &mut *(data as *mut Found)) };
        // The first object listed is the executable itself.
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
        1 // stop after the executable
    }
    let mut found = Found { ranges: Vec::new() };
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
        let deadline = Instant::now() + Duration::from_secs(10);
        while COLLECTED.load(std::sync::atomic::Ordering::SeqCst) < at_least {
            assert!(Instant::now() < deadline, "{what}: no collection");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A worker collects when it goes quiet, and a burst that ends within a second of its
    /// last collection is collected too, by the timer it sets, with nothing else running.
    #[test]
    fn a_quiet_worker_collects_and_so_does_one_quiet_again_within_a_second() {
        set_free_memory_collector(count_collection);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .on_thread_unpark(on_worker_unpark)
            .on_thread_park(on_worker_park)
            .build()
            .unwrap();
        runtime.block_on(async {
            tokio::spawn(async { vec![0u8; 1 << 20].len() })
                .await
                .unwrap()
        });
        wait_for_collections(1, "after the first burst");
        let first = COLLECTED.load(std::sync::atomic::Ordering::SeqCst);
        let started = Instant::now();
        runtime.block_on(async {
            tokio::spawn(async { vec![0u8; 1 << 20].len() })
                .await
                .unwrap()
        });
        wait_for_collections(first + 1, "after a second burst within a second");
        assert!(
            started.elapsed() >= COLLECT_EVERY / 2,
            "collected again after {:?}, sooner than the throttle allows",
            started.elapsed()
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
