//! `amortize simulate`: (θ, x) pairs of a built-in task as `.npy` files.

use std::path::PathBuf;

use amortize::io::npy::write_npy;
use amortize::tasks::Task;
use amortize::{Error, Result};

/// Arguments of `amortize simulate`.
#[derive(clap::Args)]
pub struct Args {
    /// Task name (gaussian10, mog10, multimodal2, gaussian_linear, two_moons, gaussian_mixture, slcp).
    #[arg(long)]
    pub task: String,
    /// Number of simulations.
    #[arg(long, default_value_t = 10_000)]
    pub num: usize,
    /// Seed of the prior draws and the simulator noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output directory (gets theta.npy and x.npy).
    #[arg(long)]
    pub out: PathBuf,
}

/// Simulates and writes both arrays; nothing is written if anything fails first.
pub fn run(args: &Args) -> Result<()> {
    let task = Task::by_name(&args.task)?;
    if args.num == 0 {
        return Err(Error::invalid("simulate", "--num must be positive"));
    }
    let (theta, x) = task.simulate_dataset(args.num, args.seed);
    std::fs::create_dir_all(&args.out).map_err(|source| Error::Io {
        path: args.out.clone(),
        source,
    })?;
    write_npy(
        args.out.join("theta.npy"),
        &theta,
        &[args.num, task.dim_theta()],
    )?;
    write_npy(args.out.join("x.npy"), &x, &[args.num, task.dim_x()])?;
    println!(
        "{} simulations of {task} (theta [{}, {}], x [{}, {}]) written to {}",
        args.num,
        args.num,
        task.dim_theta(),
        args.num,
        task.dim_x(),
        args.out.display()
    );
    Ok(())
}
