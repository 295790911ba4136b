//! The `amortize` command-line tool: simulate, train, sample, evaluate, and a quickstart
//! that runs all four on the gaussian10 task.

mod devices;
mod evaluate;
mod progress;
mod quickstart;
mod sample;
mod simulate;
mod train;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

// The CPU backend allocates every op's output: see the mimalloc line of Cargo.toml.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Amortized simulation-based inference on hand-written CPU, CUDA and WGSL kernels.
#[derive(Parser)]
#[command(name = "amortize", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the CPU, CUDA devices and wgpu adapters, and check a matmul on each backend
    /// against the CPU reference.
    Devices,
    /// Simulate (θ, x) pairs of a built-in task into DIR/theta.npy and DIR/x.npy.
    Simulate(simulate::Args),
    /// Train a score-based posterior estimator on simulated pairs.
    Train(train::Args),
    /// Draw posterior samples given one or more iid observations.
    Sample(sample::Args),
    /// Compare a model's posterior with the analytic or sbibm reference posterior.
    Evaluate(evaluate::Args),
    /// Simulate gaussian10, train, sample n = 1, 2, 4, 8 and print C2ST and samples/s.
    Quickstart(quickstart::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Devices => devices::run(),
        Command::Simulate(args) => simulate::run(&args),
        Command::Train(args) => train::run(&args),
        Command::Sample(args) => sample::run(&args),
        Command::Evaluate(args) => evaluate::run(&args),
        Command::Quickstart(args) => quickstart::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        // Catches clashing flag names between flattened argument groups.
        super::Cli::command().debug_assert();
    }
}
