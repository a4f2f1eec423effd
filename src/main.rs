use std::process::ExitCode;

fn main() -> ExitCode {
    limit_malloc_arenas();
    trailkeep::cli::main()
}

/// glibc gives each thread that allocates concurrently its own arena (up to
/// 8 per core); the journal and compression work on tokio's blocking pool
/// then leaves freed memory stranded across many arenas, and RSS creeps up
/// with the run's length rather than with the work in hand. Two arenas keep
/// the engine benchmark's peak RSS flat (BENCHMARKS.md). An operator's own
/// MALLOC_ARENA_MAX wins.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only adjusts allocator tunables; called before any
        // other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}
