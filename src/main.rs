use std::process::ExitCode;

fn main() -> ExitCode {
    trailkeep::cli::main()
}
