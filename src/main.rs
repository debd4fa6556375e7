// mimalloc: event processing allocates many small short-lived values (VRL objects, strings);
// glibc malloc spent ~25% of the remap benchmark in malloc/free, mimalloc roughly halves that.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    sluice::cli::main()
}
