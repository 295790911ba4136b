//! `Tensor` = shape + storage on one device (contract 1: f32, row-major, contiguous,
//! batch first). Moving data between devices is always explicit: no op copies behind
//! the caller's back.

use std::any::Any;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::backend;
use crate::error::{Error, Result};

/// Where a tensor's data lives and which backend runs its ops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Device {
    /// The rayon CPU reference backend.
    Cpu,
    /// CUDA device with this ordinal (through cudarc).
    Cuda(usize),
    /// wgpu adapter with this index (in `devices::wgpu_adapters()` order).
    Wgpu(usize),
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
            Device::Wgpu(n) => write!(f, "wgpu:{n}"),
        }
    }
}

impl FromStr for Device {
    type Err = Error;

    /// Parses `cpu`, `cuda`, `cuda:N`, `wgpu`, `wgpu:N` (no index means 0).
    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| Error::Device {
            device: s.to_string(),
            msg: format!("{why}; expected cpu, cuda:N or wgpu:N"),
        };
        let (kind, index) = match s.split_once(':') {
            Some((kind, index)) => {
                let index = index
                    .parse::<usize>()
                    .map_err(|_| bad("device index is not a non-negative integer"))?;
                (kind, index)
            }
            None => (s, 0),
        };
        match kind.to_ascii_lowercase().as_str() {
            "cpu" if !s.contains(':') => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(index)),
            "wgpu" => Ok(Device::Wgpu(index)),
            _ => Err(bad("unknown device")),
        }
    }
}

/// A buffer owned by a GPU backend. The handle is opaque here so that a backend's file
/// (e.g. `backend/cuda.rs`) can store its own buffer type without this file knowing it;
/// the backend downcasts it back.
#[derive(Clone)]
pub struct GpuBuffer {
    /// Number of f32 elements in the buffer.
    pub len: usize,
    /// The backend's own buffer object.
    pub handle: Arc<dyn Any + Send + Sync>,
}

impl fmt::Debug for GpuBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GpuBuffer({} f32)", self.len)
    }
}

/// The data behind a tensor. CPU data is reference counted so that the tape can keep a
/// parameter's value without copying it; writes go through `Arc::make_mut`
/// (copy-on-write).
#[derive(Clone, Debug)]
pub enum Storage {
    /// Host memory.
    Cpu(Arc<Vec<f32>>),
    /// Memory on CUDA device `ordinal`.
    Cuda {
        /// The device ordinal.
        ordinal: usize,
        /// The device buffer.
        buffer: GpuBuffer,
    },
    /// Memory on wgpu adapter `index`.
    Wgpu {
        /// The adapter index.
        index: usize,
        /// The device buffer.
        buffer: GpuBuffer,
    },
}

/// An f32 tensor: row-major, contiguous, batch first.
#[derive(Clone, Debug)]
pub struct Tensor {
    shape: Vec<usize>,
    storage: Storage,
}

impl Tensor {
    /// A CPU tensor from data and a shape; errors if their sizes disagree.
    pub fn from_vec(data: Vec<f32>, shape: &[usize]) -> Result<Tensor> {
        let numel: usize = shape.iter().product();
        if numel != data.len() {
            return Err(Error::shape_because(
                "Tensor::from_vec",
                shape,
                &[data.len()],
                "the shape's element count differs from the data length",
            ));
        }
        Ok(Tensor {
            shape: shape.to_vec(),
            storage: Storage::Cpu(Arc::new(data)),
        })
    }

    /// A CPU tensor copied from a slice.
    pub fn from_slice(data: &[f32], shape: &[usize]) -> Result<Tensor> {
        Tensor::from_vec(data.to_vec(), shape)
    }

    /// A CPU tensor of zeros.
    pub fn zeros(shape: &[usize]) -> Tensor {
        Tensor::full(shape, 0.0)
    }

    /// A CPU tensor with every element equal to `value`.
    pub fn full(shape: &[usize], value: f32) -> Tensor {
        let numel = shape.iter().product();
        Tensor {
            shape: shape.to_vec(),
            storage: Storage::Cpu(Arc::new(vec![value; numel])),
        }
    }

    /// A tensor on `device` with every element equal to `value`, filled by the device's
    /// backend: on a GPU a fill kernel, with no host upload.
    pub fn full_on(device: Device, shape: &[usize], value: f32) -> Result<Tensor> {
        backend::for_device(device)?.fill(shape, value)
    }

    /// A rank-0 CPU tensor holding one value.
    pub fn scalar(value: f32) -> Tensor {
        Tensor::full(&[], value)
    }

    /// Wraps backend-owned storage. Backends use this to return their results.
    pub fn from_storage(storage: Storage, shape: &[usize]) -> Tensor {
        Tensor {
            shape: shape.to_vec(),
            storage,
        }
    }

    /// The shape, outermost dimension first.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of dimensions (0 for a scalar).
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Size of the last axis (the features); 1 for a scalar.
    pub fn cols(&self) -> usize {
        self.shape.last().copied().unwrap_or(1)
    }

    /// Number of rows when every axis but the last is flattened into rows.
    pub fn rows(&self) -> usize {
        self.numel() / self.cols().max(1)
    }

    /// The device the data lives on.
    pub fn device(&self) -> Device {
        match &self.storage {
            Storage::Cpu(_) => Device::Cpu,
            Storage::Cuda { ordinal, .. } => Device::Cuda(*ordinal),
            Storage::Wgpu { index, .. } => Device::Wgpu(*index),
        }
    }

    /// The storage, for backends.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Mutable storage, for backends that update a tensor in place (optimizers).
    pub fn storage_mut(&mut self) -> &mut Storage {
        &mut self.storage
    }

    /// The data of a CPU tensor; an error naming `op` if the tensor is elsewhere.
    pub fn cpu_data(&self, op: &'static str) -> Result<&[f32]> {
        match &self.storage {
            Storage::Cpu(data) => Ok(data),
            _ => Err(Error::DeviceMismatch {
                op,
                lhs: Device::Cpu.to_string(),
                rhs: self.device().to_string(),
            }),
        }
    }

    /// Mutable data of a CPU tensor (copy-on-write if the data is shared).
    pub fn cpu_data_mut(&mut self, op: &'static str) -> Result<&mut [f32]> {
        let device = self.device();
        match &mut self.storage {
            Storage::Cpu(data) => Ok(Arc::make_mut(data).as_mut_slice()),
            _ => Err(Error::DeviceMismatch {
                op,
                lhs: Device::Cpu.to_string(),
                rhs: device.to_string(),
            }),
        }
    }

    /// The same data under another shape with the same element count (no copy).
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        let numel: usize = shape.iter().product();
        if numel != self.numel() {
            return Err(Error::shape_because(
                "reshape",
                &self.shape,
                shape,
                "element counts differ",
            ));
        }
        Ok(Tensor {
            shape: shape.to_vec(),
            storage: self.storage.clone(),
        })
    }

    /// Copies the data to host memory (a device read-back for GPU tensors).
    pub fn to_vec(&self) -> Result<Vec<f32>> {
        match &self.storage {
            Storage::Cpu(data) => Ok(data.as_ref().clone()),
            _ => backend::for_device(self.device())?.download(self),
        }
    }

    /// The single value of a one-element tensor.
    pub fn item(&self) -> Result<f32> {
        if self.numel() != 1 {
            return Err(Error::shape_because(
                "item",
                &self.shape,
                &[],
                "only one-element tensors have an item",
            ));
        }
        Ok(self.to_vec()?[0])
    }

    /// A copy of this tensor on `device` (the same tensor, shared, if it is already there).
    pub fn to_device(&self, device: Device) -> Result<Tensor> {
        if device == self.device() {
            return Ok(self.clone());
        }
        let host = self.to_vec()?;
        backend::for_device(device)?.upload(&host, &self.shape)
    }
}
