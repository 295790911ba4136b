//! Model directories (contract 6): `weights.safetensors` (every parameter of the store,
//! f32, keyed by its name) beside `config.json` (`{"format": ..., "format_version": ...,
//! "kind": ..., "config": {...}}`).
//!
//! A directory is written whole or not at all: both files go into a temporary sibling
//! directory that is then renamed into place (an existing model there is replaced).
//! Loading checks the format version and that every parameter the architecture expects
//! is present with its shape, and names what is wrong.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::autograd::ParamStore;
use crate::error::{Error, Result};
use crate::io::write_atomic;
use crate::rng::{streams, PhiloxStream};
use crate::tensor::Tensor;

/// The `format` field of every amortize model's `config.json`.
pub const FORMAT: &str = "amortize-model";
/// The version of the model directory layout this build writes. Each version's configs
/// may carry fields that change what a model computes and that an older reader would
/// ignore without a word, so an older build refuses them: version 2 added NRE's
/// `activation` and a score model's `theta_space`, version 3 a score network's
/// `x_encoder`, version 4 a score model's `gaussian_base`. This build reads them all
/// ([`READS_FORMAT_VERSIONS`]).
pub const FORMAT_VERSION: u32 = 4;
/// The versions this build reads: an older file lacks only fields whose absence means
/// what its version computed.
pub const READS_FORMAT_VERSIONS: std::ops::RangeInclusive<u32> = 1..=FORMAT_VERSION;
/// Weights file inside a model directory.
pub const WEIGHTS_FILE: &str = "weights.safetensors";
/// Config file inside a model directory.
pub const CONFIG_FILE: &str = "config.json";

#[derive(Serialize, Deserialize)]
struct Envelope<C> {
    format: String,
    format_version: u32,
    kind: String,
    config: C,
}

#[derive(Deserialize)]
struct Header {
    format: Option<String>,
    format_version: Option<u32>,
    kind: Option<String>,
}

fn io_error(path: &Path, msg: impl Into<String>) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, msg.into()),
    }
}

fn with_path(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes a model of `kind` with `config` and the parameters of `store` to `dir`.
pub fn save_model<C: Serialize>(
    dir: &Path,
    kind: &str,
    config: &C,
    store: &ParamStore,
) -> Result<()> {
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = store
        .iter()
        .map(|(_, name, t)| {
            let data = t.to_vec()?;
            Ok((
                name.to_string(),
                t.shape().to_vec(),
                bytemuck::cast_slice(&data).to_vec(),
            ))
        })
        .collect::<Result<_>>()?;
    let views = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::invalid("save_model", format!("{name}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let weights = safetensors::serialize(views, None)
        .map_err(|e| Error::invalid("save_model", format!("cannot serialize the weights: {e}")))?;
    save_model_dir(dir, kind, config, |staging| {
        write_atomic(staging.join(WEIGHTS_FILE), &weights)
    })
}

/// Writes a model directory `dir` whose `config.json` holds `kind` and `config`, and
/// whose other files `fill` writes into the directory it is given (a staging sibling
/// that is renamed into place once everything is written, replacing a model there).
pub fn save_model_dir<C: Serialize>(
    dir: &Path,
    kind: &str,
    config: &C,
    fill: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    let envelope = Envelope {
        format: FORMAT.to_string(),
        format_version: FORMAT_VERSION,
        kind: kind.to_string(),
        config,
    };
    let json = serde_json::to_string_pretty(&envelope)
        .map_err(|e| Error::invalid("save_model", format!("cannot serialize the config: {e}")))?;
    let staging = staging_dir(dir);
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(with_path(&staging))?;
    let written = (|| {
        fill(&staging)?;
        write_atomic(staging.join(CONFIG_FILE), json.as_bytes())?;
        replace_dir(&staging, dir)
    })();
    if written.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    written
}

/// An estimator with its own model directory (`config.json` of kind [`ModelFile::KIND`]),
/// so that composites such as [`crate::estimators::ensemble::Ensemble`] can store it.
pub trait ModelFile: Sized {
    /// The `kind` field of its `config.json`.
    const KIND: &'static str;
    /// Writes the model directory `dir` whole (replacing a model already there).
    fn save_dir(&self, dir: &Path) -> Result<()>;
    /// Reads a model directory written by [`ModelFile::save_dir`].
    fn load_dir(dir: &Path) -> Result<Self>;
}

/// Implements [`ModelFile`] for a model type through its inherent `save` and `load`.
macro_rules! impl_model_file {
    ($model:ty, $kind:expr) => {
        impl $crate::io::model::ModelFile for $model {
            const KIND: &'static str = $kind;
            fn save_dir(&self, dir: &std::path::Path) -> $crate::error::Result<()> {
                self.save(dir)
            }
            fn load_dir(dir: &std::path::Path) -> $crate::error::Result<Self> {
                <$model>::load(dir)
            }
        }
    };
}
pub(crate) use impl_model_file;

/// `DIR.tmp-<pid>` beside `dir`.
fn staging_dir(dir: &Path) -> PathBuf {
    let mut name = dir.as_os_str().to_owned();
    name.push(format!(".tmp-{}", std::process::id()));
    PathBuf::from(name)
}

/// Moves `staging` to `dir`, replacing a previous model there.
fn replace_dir(staging: &Path, dir: &Path) -> Result<()> {
    if dir.exists() {
        if !dir.join(CONFIG_FILE).exists()
            && dir.read_dir().map_err(with_path(dir))?.next().is_some()
        {
            return Err(io_error(
                dir,
                "exists and is not a model directory; refusing to replace it",
            ));
        }
        let mut old = dir.as_os_str().to_owned();
        old.push(format!(".old-{}", std::process::id()));
        let old = PathBuf::from(old);
        std::fs::rename(dir, &old).map_err(with_path(dir))?;
        std::fs::rename(staging, dir).map_err(with_path(dir))?;
        let _ = std::fs::remove_dir_all(&old);
    } else {
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(with_path(parent))?;
        }
        std::fs::rename(staging, dir).map_err(with_path(dir))?;
    }
    Ok(())
}

/// The `kind` of the model in `dir` ("score", "npe", ...), after checking its format
/// and version.
pub fn model_kind(dir: &Path) -> Result<String> {
    let config_path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&config_path).map_err(with_path(&config_path))?;
    let header = check_header(&config_path, &text)?;
    header
        .kind
        .ok_or_else(|| io_error(&config_path, "has no \"kind\""))
}

/// Parses and checks the format and version fields of a `config.json`.
fn check_header(config_path: &Path, text: &str) -> Result<Header> {
    let header: Header =
        serde_json::from_str(text).map_err(|e| io_error(config_path, format!("not JSON: {e}")))?;
    if header.format.as_deref() != Some(FORMAT) {
        return Err(io_error(
            config_path,
            format!("not an amortize model (format {:?})", header.format),
        ));
    }
    if !header
        .format_version
        .is_some_and(|v| READS_FORMAT_VERSIONS.contains(&v))
    {
        return Err(io_error(
            config_path,
            format!(
                "model format version {:?}, but this build reads versions {} to {}",
                header.format_version,
                READS_FORMAT_VERSIONS.start(),
                READS_FORMAT_VERSIONS.end()
            ),
        ));
    }
    Ok(header)
}

/// A loaded model directory: its config and its tensors by name.
pub struct LoadedModel<C> {
    /// The `config` object of `config.json`.
    pub config: C,
    tensors: HashMap<String, Tensor>,
    path: PathBuf,
}

/// The `config` object of the `config.json` in `dir`, after checking the format, the
/// version and that the model is of `kind`.
pub fn load_config<C: DeserializeOwned>(dir: &Path, kind: &str) -> Result<C> {
    let config_path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&config_path).map_err(with_path(&config_path))?;
    let header = check_header(&config_path, &text)?;
    if header.kind.as_deref() != Some(kind) {
        return Err(io_error(
            &config_path,
            format!("a {:?} model, expected {kind:?}", header.kind),
        ));
    }
    let envelope: Envelope<C> = serde_json::from_str(&text)
        .map_err(|e| io_error(&config_path, format!("invalid config: {e}")))?;
    Ok(envelope.config)
}

/// Reads a model directory of `kind`, checking the format and version.
pub fn load_model<C: DeserializeOwned>(dir: &Path, kind: &str) -> Result<LoadedModel<C>> {
    let config = load_config(dir, kind)?;
    let weights_path = dir.join(WEIGHTS_FILE);
    let bytes = std::fs::read(&weights_path).map_err(with_path(&weights_path))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| io_error(&weights_path, format!("not safetensors: {e}")))?;
    let mut tensors = HashMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != Dtype::F32 {
            return Err(io_error(
                &weights_path,
                format!("{name} is {:?}, expected F32", view.dtype()),
            ));
        }
        let data: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        tensors.insert(name.to_string(), Tensor::from_vec(data, view.shape())?);
    }
    Ok(LoadedModel {
        config,
        tensors,
        path: weights_path,
    })
}

/// Reads a model directory of `kind` and rebuilds the model: `build` makes the
/// architecture the config describes in a fresh store (from a fixed seed: the initial
/// values only fix the shapes, the file's tensors overwrite them). Returns the config,
/// what `build` made and the filled store.
pub fn load_architecture<C: DeserializeOwned, N>(
    dir: &Path,
    kind: &str,
    build: impl FnOnce(&C, &mut ParamStore, &mut PhiloxStream) -> Result<N>,
) -> Result<(C, N, ParamStore)> {
    let mut loaded = load_model::<C>(dir, kind)?;
    let mut store = ParamStore::new();
    let mut rng = PhiloxStream::new(0, streams::INIT, 0);
    let built = build(&loaded.config, &mut store, &mut rng)?;
    loaded.fill(&mut store)?;
    Ok((loaded.config, built, store))
}

impl<C> LoadedModel<C> {
    /// Overwrites every parameter of `store` (built fresh from the config's
    /// architecture) with the file's tensor of the same name; errors name the missing,
    /// mis-shaped or unexpected tensor.
    pub fn fill(&mut self, store: &mut ParamStore) -> Result<()> {
        let ids: Vec<_> = store
            .iter()
            .map(|(id, name, t)| (id, name.to_string(), t.shape().to_vec()))
            .collect();
        for (id, name, shape) in &ids {
            let t = self
                .tensors
                .remove(name)
                .ok_or_else(|| io_error(&self.path, format!("missing tensor {name}")))?;
            if t.shape() != shape.as_slice() {
                return Err(io_error(
                    &self.path,
                    format!(
                        "tensor {name} has shape {:?}, the architecture needs {shape:?}",
                        t.shape()
                    ),
                ));
            }
            store.set(*id, t)?;
        }
        if let Some(extra) = self.tensors.keys().next() {
            return Err(io_error(
                &self.path,
                format!("unexpected tensor {extra} (not in the architecture)"),
            ));
        }
        Ok(())
    }
}
