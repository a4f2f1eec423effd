use std::process::ExitCode;

fn main() -> ExitCode {
    trailkeep::util::tune_malloc();
    trailkeep::cli::main()
}
