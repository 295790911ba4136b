//! Discovery of the accelerators this machine has: CUDA devices through the driver
//! library (loaded at run time, so machines without CUDA still run amortize), the NVRTC
//! compiler, and wgpu adapters (Vulkan, Metal, DX12, or Mesa's lavapipe on the CPU).
//!
//! Every function here answers "none, because ..." instead of failing when a driver is
//! missing: `amortize devices` must work on any machine.

use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::error::{Error, Result};

/// One CUDA device as the driver reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CudaDeviceInfo {
    /// Device ordinal, the `n` of `Device::Cuda(n)`.
    pub ordinal: usize,
    /// Marketing name, e.g. "NVIDIA H100 80GB HBM3".
    pub name: String,
    /// Compute capability `(major, minor)`.
    pub compute_capability: (i32, i32),
    /// Device memory in bytes.
    pub total_memory_bytes: u64,
}

/// One wgpu adapter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WgpuAdapterInfo {
    /// Position in the enumeration, the `n` of `Device::Wgpu(n)`.
    pub index: usize,
    /// Adapter name, e.g. "llvmpipe (LLVM 19.1.7, 256 bits)".
    pub name: String,
    /// Graphics API behind the adapter.
    pub backend: String,
    /// Discrete GPU, integrated GPU, CPU, ...
    pub device_type: String,
    /// Driver name and version as the adapter reports them.
    pub driver: String,
    /// Bytes of workgroup shared memory a compute shader may use.
    pub max_compute_workgroup_storage_size: u32,
    /// Largest storage buffer binding in bytes.
    pub max_storage_buffer_binding_size: u64,
}

/// Runs `f`, turning a panic inside a driver binding into an error message. cudarc
/// panics when a symbol is missing from an old driver; a listing must not die of it.
fn without_panics<T>(
    what: &str,
    f: impl FnOnce() -> std::result::Result<T, String>,
) -> std::result::Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| Err(format!("{what} panicked")))
}

/// Whether the CUDA driver library (`libcuda.so`) can be loaded.
pub fn cuda_driver_present() -> bool {
    // SAFETY: only tries to dlopen the library by its usual names.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Whether the NVRTC library (`libnvrtc.so`) can be loaded.
pub fn nvrtc_present() -> bool {
    // SAFETY: only tries to dlopen the library by its usual names.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// Every CUDA device, or why there are none (no driver library, driver error).
pub fn cuda_devices() -> std::result::Result<Vec<CudaDeviceInfo>, String> {
    if !cuda_driver_present() {
        return Err("no CUDA driver library (libcuda.so) on this machine".into());
    }
    without_panics("the CUDA driver", || {
        use cudarc::driver::CudaContext;
        let count = CudaContext::device_count().map_err(|e| format!("cuInit failed: {e}"))?;
        (0..count as usize)
            .map(|ordinal| {
                let ctx = CudaContext::new(ordinal).map_err(|e| format!("cuda:{ordinal}: {e}"))?;
                let describe = |e| format!("cuda:{ordinal}: {e}");
                Ok(CudaDeviceInfo {
                    ordinal,
                    name: ctx.name().map_err(describe)?,
                    compute_capability: ctx.compute_capability().map_err(describe)?,
                    total_memory_bytes: ctx.total_mem().map_err(describe)? as u64,
                })
            })
            .collect()
    })
}

/// The NVRTC version `(major, minor)`, or why NVRTC cannot be used.
pub fn nvrtc_version() -> std::result::Result<(i32, i32), String> {
    if !nvrtc_present() {
        return Err("no NVRTC library (libnvrtc.so) on the library path".into());
    }
    without_panics("NVRTC", || {
        let (mut major, mut minor) = (0, 0);
        // SAFETY: nvrtcVersion writes two ints through valid pointers.
        let status = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
        status
            .result()
            .map_err(|e| format!("nvrtcVersion failed: {e:?}"))?;
        Ok((major, minor))
    })
}

/// Opens the CUDA context of device `ordinal`.
pub fn open_cuda_device(ordinal: usize) -> Result<std::sync::Arc<cudarc::driver::CudaContext>> {
    let device = format!("cuda:{ordinal}");
    if !cuda_driver_present() {
        return Err(Error::Device {
            device,
            msg: "no CUDA driver library (libcuda.so) on this machine".into(),
        });
    }
    without_panics("the CUDA driver", || {
        cudarc::driver::CudaContext::new(ordinal).map_err(|e| e.to_string())
    })
    .map_err(|msg| Error::Device { device, msg })
}

fn wgpu_instance() -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::all());
    wgpu::Instance::new(desc)
}

/// Preference of a graphics API for compute: the native APIs first, OpenGL (compute
/// through GLES emulation, fewer features) last. Lower is better.
fn wgpu_backend_rank(backend: wgpu::Backend) -> u8 {
    match backend {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 0,
        wgpu::Backend::Gl => 2,
        wgpu::Backend::Noop => 3,
        _ => 1,
    }
}

/// The adapters in the order that defines `wgpu:N`: native APIs (Vulkan, Metal, DX12)
/// before OpenGL, and otherwise in the driver's enumeration order (a stable sort), so
/// `wgpu:0` is the best compute adapter. [`wgpu_adapters`] and [`open_wgpu_device`] both
/// use this order.
fn enumerate_wgpu_adapters() -> Vec<wgpu::Adapter> {
    let instance = wgpu_instance();
    let mut adapters = catch_unwind(AssertUnwindSafe(|| {
        pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()))
    }))
    .unwrap_or_default();
    adapters.sort_by_key(|a| wgpu_backend_rank(a.get_info().backend));
    adapters
}

/// Every wgpu adapter, in enumeration order (empty when there is no driver).
pub fn wgpu_adapters() -> Vec<WgpuAdapterInfo> {
    enumerate_wgpu_adapters()
        .iter()
        .enumerate()
        .map(|(index, adapter)| {
            let info = adapter.get_info();
            let limits = adapter.limits();
            WgpuAdapterInfo {
                index,
                name: info.name,
                backend: format!("{:?}", info.backend),
                device_type: format!("{:?}", info.device_type),
                driver: format!("{} {}", info.driver, info.driver_info)
                    .trim()
                    .to_string(),
                max_compute_workgroup_storage_size: limits.max_compute_workgroup_storage_size,
                max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
            }
        })
        .collect()
}

/// Opens adapter `index` with the adapter's own limits (compute kernels want the largest
/// buffers and workgroup memory the hardware allows, not WebGPU's portable defaults).
pub fn open_wgpu_device(index: usize) -> Result<(wgpu::Device, wgpu::Queue)> {
    let device = format!("wgpu:{index}");
    let adapter = enumerate_wgpu_adapters()
        .into_iter()
        .nth(index)
        .ok_or_else(|| Error::Device {
            device: device.clone(),
            msg: "no such adapter (run `amortize devices` to list them)".into(),
        })?;
    let desc = wgpu::DeviceDescriptor {
        label: Some("amortize"),
        required_limits: adapter.limits(),
        ..Default::default()
    };
    pollster::block_on(adapter.request_device(&desc)).map_err(|e| Error::Device {
        device,
        msg: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_never_panics_and_explains_absence() {
        match cuda_devices() {
            Ok(list) => {
                for (i, d) in list.iter().enumerate() {
                    assert_eq!(d.ordinal, i);
                    assert!(d.total_memory_bytes > 0);
                }
            }
            Err(why) => assert!(!why.is_empty()),
        }
        if let Err(why) = nvrtc_version() {
            assert!(!why.is_empty());
        }
        for (i, a) in wgpu_adapters().iter().enumerate() {
            assert_eq!(a.index, i);
        }
    }

    #[test]
    fn opening_a_missing_adapter_is_an_error() {
        let err = open_wgpu_device(usize::MAX).unwrap_err();
        assert!(err.to_string().contains("wgpu:"), "{err}");
    }
}
