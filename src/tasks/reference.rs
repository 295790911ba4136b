//! sbibm reference data: `<data_dir>/sbibm/<task>/obs<k>/{observation,
//! true_parameters, reference_posterior_samples}.npy` (k = 1..5; see the shared data
//! README).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::io::npy::read_npy_matrix;
use crate::tasks::Task;

/// Environment variable that overrides [`default_data_dir`].
pub const DATA_DIR_ENV: &str = "AMORTIZE_DATA_DIR";

/// The data folder: `$AMORTIZE_DATA_DIR` if set, else `../shared/data` next to the
/// crate's manifest (where the project keeps it).
pub fn default_data_dir() -> PathBuf {
    match std::env::var_os(DATA_DIR_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data"),
    }
}

/// One sbibm observation with its reference posterior.
#[derive(Clone, Debug)]
pub struct ReferenceObservation {
    /// The task.
    pub task: Task,
    /// The observation number (1..=5).
    pub index: usize,
    /// The folder the files were read from.
    pub dir: PathBuf,
    /// The observation, `[1, dim_x]`.
    pub observation: Vec<f32>,
    /// The parameters that generated it, `[1, dim_theta]`, if the file exists.
    pub true_parameters: Option<Vec<f32>>,
    /// Reference posterior samples, `[num_samples, dim_theta]` row-major.
    pub reference_samples: Vec<f32>,
    /// Number of reference samples (10 000 in sbibm).
    pub num_samples: usize,
}

/// Loads observation `index` of an sbibm task from `data_dir` (default:
/// [`default_data_dir`]). Errors for tasks that are not sbibm tasks, for a missing
/// folder or file (naming it), and for arrays of the wrong width.
pub fn load_reference(
    task: Task,
    index: usize,
    data_dir: Option<&Path>,
) -> Result<ReferenceObservation> {
    if !task.is_sbibm() {
        return Err(Error::invalid(
            "load_reference",
            format!(
                "task {} has no sbibm reference data (sbibm tasks: gaussian_linear, two_moons, gaussian_mixture, slcp)",
                task.name()
            ),
        ));
    }
    let base = data_dir
        .map(Path::to_path_buf)
        .unwrap_or_else(default_data_dir);
    let dir = base
        .join("sbibm")
        .join(task.name())
        .join(format!("obs{index}"));
    if !dir.is_dir() {
        return Err(Error::Io {
            path: dir,
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "no reference folder for {} observation {index} (observations are 1..5; set {DATA_DIR_ENV} to move the data folder)",
                    task.name()
                ),
            ),
        });
    }
    let (observation, rows, _) = read_npy_matrix(dir.join("observation.npy"), Some(task.dim_x()))?;
    if rows != 1 {
        return Err(Error::Io {
            path: dir.join("observation.npy"),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("expected one observation row, got {rows}"),
            ),
        });
    }
    let true_path = dir.join("true_parameters.npy");
    let true_parameters = if true_path.exists() {
        Some(read_npy_matrix(&true_path, Some(task.dim_theta()))?.0)
    } else {
        None
    };
    let (reference_samples, num_samples, _) = read_npy_matrix(
        dir.join("reference_posterior_samples.npy"),
        Some(task.dim_theta()),
    )?;
    Ok(ReferenceObservation {
        task,
        index,
        dir,
        observation,
        true_parameters,
        reference_samples,
        num_samples,
    })
}
