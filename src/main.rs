//! The `certkeeper` command: parses arguments, sets up logging, calls the library, and maps the result to
//! an exit code. Nothing else lives here.

mod cli;

fn main() -> std::process::ExitCode {
    // Reads FAILPOINTS for the crash tests; inert unless built with the `failpoints` feature.
    let _failpoints = fail::FailScenario::setup();
    cli::main()
}
