//! CUDA kernels against the CPU reference (contract 2): every op forward and backward on
//! fresh random inputs, every output poisoned with NaN before its kernel runs, tolerance
//! 1e-5 (max relative error, relative to max(1, |reference|)) for elementwise ops and 1e-4
//! for reductions and matmuls; Philox words and uniforms bit for bit. The opt-in TF32
//! matmul has its own tolerance, relative to the norms of the row and column multiplied
//! (`TF32`).
//!
//! The op cases are shared with `tests/wgpu_parity.rs` (`tests/common/op_cases.rs`);
//! this file runs them on cuda:0 and adds the CUDA-only tests (Philox fill kernel, TF32).
//!
//! Without a CUDA device (or driver, or NVRTC) the tests print why and pass, unless
//! `AMORTIZE_REQUIRE_CUDA=1` makes that a failure.

mod common;
#[macro_use]
#[path = "common/op_cases.rs"]
mod op_cases;

use std::sync::Arc;

use amortize::backend::cuda::{CudaBackend, MatmulPrecision};
use amortize::backend::{for_device, Backend, MatLayout, MatmulDims};
use amortize::rng::{box_muller, key_from_seed, philox4x32_10, uniform_open01, PhiloxStream};
use amortize::Device;
use op_cases::{cpu, matmul_cases, up, ELEMENTWISE, MATMUL_SHAPES};

/// TF32 matmul: |C - C_cpu| <= TF32 · |A' row| · |B' column| per element. Rounding both
/// inputs to TF32 costs up to 2^-10 ≈ 9.8e-4 of that product (Cauchy–Schwarz), the f32
/// accumulations of the tensor cores and of the CPU up to k·(2^-23 + 2^-24) more: below
/// 2e-3 for k <= 4096 (`kernels/matmul_tf32.cu` derives it).
const TF32: f32 = 2e-3;

/// The backend of cuda:0 with output poisoning on, or `None` (after printing why) when
/// there is none and the environment does not require one.
fn gpu(test: &str) -> Option<Arc<CudaBackend>> {
    let g = common::cuda_or_skip(test)?;
    g.set_poison_outputs(true);
    Some(g)
}

/// cuda:0 for the shared op cases (its backend poisoning outputs), or `None` as [`gpu`].
fn device(test: &str) -> Option<Device> {
    gpu(test).map(|g| g.device())
}

op_parity_tests! {device:
    fill_upload_download_round_trip => upload_download_and_fill_round_trip,
    matmul_all_layouts_and_batches => matmul_every_layout_and_edge_shape,
    binary_and_scale => binary_and_scale_with_and_without_broadcast,
    unary_forward_and_backward => unary_forward_and_backward_every_op,
    concat_and_split => concat_and_split_along_features,
    reductions_forward_and_backward => reductions_and_their_backward,
    softmax_family_and_logsumexp => softmax_family_and_logsumexp,
    layer_norm_forward_and_backward => layer_norm_forward_and_backward,
    masked_set_reduce_forward_and_backward => masked_set_reduce_forward_and_backward,
    masked_softmax_with_padding_and_causal_masks => masked_softmax_with_padding_and_causal_masks,
    rq_spline_forward_inverse_and_backward => rq_spline_forward_inverse_and_backward,
    gather_rows_forward_and_deterministic_backward => gather_rows_forward_and_deterministic_backward,
    mse_forward_and_backward => mse_forward_and_backward,
    adam_update_in_place_with_copy_on_write => adam_update_in_place_and_copy_on_write,
}

#[test]
fn asking_for_a_missing_device_is_an_error_that_says_why() {
    // Runs everywhere: on a machine without CUDA this is the "no driver" error; with CUDA,
    // an ordinal no machine has.
    let err = CudaBackend::shared(4096).unwrap_err().to_string();
    assert!(err.contains("cuda:4096"), "{err}");
    match for_device(Device::Cuda(0)) {
        Ok(b) => assert_eq!(b.device(), Device::Cuda(0)),
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains("cuda:0") && msg.len() > "device cuda:0: ".len(),
                "{msg}"
            );
        }
    }
}

#[test]
fn philox_streams_match_bit_for_bit() {
    let Some(g) = gpu("philox_streams_match_bit_for_bit") else {
        return;
    };
    for (seed, stream, step, lanes, blocks) in [
        (0u64, 0u32, 0u32, 1usize, 1usize),
        (0x0123_4567_89ab_cdef, 3, 7, 1000, 3),
        (u64::MAX, u32::MAX, u32::MAX, 257, 2),
    ] {
        let (words, uniforms, normals) = g.philox_fill(seed, stream, step, lanes, blocks).unwrap();
        for lane in 0..lanes {
            let reader = PhiloxStream::at_step(seed, stream, step, lane as u32);
            for block in 0..blocks {
                let w = philox4x32_10(
                    [stream, step, lane as u32, block as u32],
                    key_from_seed(seed),
                );
                assert_eq!(w, reader.block(block as u64), "rng.rs counter layout");
                let o = 4 * (lane * blocks + block);
                assert_eq!(&words[o..o + 4], &w, "words, lane {lane} block {block}");
                for i in 0..4 {
                    assert_eq!(
                        uniforms[o + i].to_bits(),
                        uniform_open01(w[i]).to_bits(),
                        "uniform {i}, lane {lane} block {block}"
                    );
                }
                let (z0, z1) = box_muller(w[0], w[1]);
                let (z2, z3) = box_muller(w[2], w[3]);
                for (i, z) in [z0, z1, z2, z3].into_iter().enumerate() {
                    let got = normals[o + i];
                    assert!(
                        (got - z).abs() <= ELEMENTWISE * z.abs().max(1.0),
                        "normal {i}, lane {lane} block {block}: {got} vs {z}"
                    );
                }
            }
        }
    }
}

#[test]
fn matmul_tf32_all_layouts_and_edge_shapes() {
    let Some(g) = gpu("matmul_tf32_all_layouts_and_edge_shapes") else {
        return;
    };
    assert_eq!(g.matmul_precision(), MatmulPrecision::F32, "the default");
    if g.compute_capability().0 < 8 {
        // TF32 tensor cores need compute capability 8.0: asking is an error that says so.
        let err = g
            .set_matmul_precision(MatmulPrecision::Tf32)
            .unwrap_err()
            .to_string();
        assert!(err.contains("compute capability 8.0"), "{err}");
        eprintln!("matmul_tf32: {} has no TF32 tensor cores", g.describe());
        return;
    }
    let c = cpu();
    let mut worst_of_all = 0.0f32;
    // The shapes of the f32 test, and tiles of the tensor-core fragments and beyond.
    let extra = [(1, 16, 8, 16), (2, 63, 33, 129)];
    for (layout, dims, a, b) in matmul_cases(MATMUL_SHAPES.iter().chain(&extra), 500) {
        let MatmulDims { batch, m, k, n } = dims;
        let out_shape = [batch, m, n];
        let want = c.matmul(&a, &b, layout, dims, &out_shape).unwrap();
        let got = g
            .matmul_with_precision(
                &up(&*g, &a),
                &up(&*g, &b),
                layout,
                dims,
                &out_shape,
                MatmulPrecision::Tf32,
            )
            .unwrap();
        assert_eq!(got.shape(), &out_shape);
        let got = g.download(&got).unwrap();
        let want = want.to_vec().unwrap();
        // A'[z, i, p] and B'[z, p, j] for the norms of rows and columns.
        let (av, bv) = (a.to_vec().unwrap(), b.to_vec().unwrap());
        let a_at = |z: usize, i: usize, p: usize| match layout {
            MatLayout::TN => av[(z * k + p) * m + i],
            _ => av[(z * m + i) * k + p],
        };
        let b_at = |z: usize, p: usize, j: usize| match layout {
            MatLayout::NT => bv[(z * n + j) * k + p],
            _ => bv[(z * k + p) * n + j],
        };
        let what = format!("matmul_tf32 {layout:?} batch {batch} m {m} k {k} n {n}");
        let mut worst = 0.0f32;
        for z in 0..batch {
            let row_norms: Vec<f32> = (0..m)
                .map(|i| (0..k).map(|p| a_at(z, i, p).powi(2)).sum::<f32>().sqrt())
                .collect();
            let col_norms: Vec<f32> = (0..n)
                .map(|j| (0..k).map(|p| b_at(z, p, j).powi(2)).sum::<f32>().sqrt())
                .collect();
            for (i, row_norm) in row_norms.iter().enumerate() {
                for (j, col_norm) in col_norms.iter().enumerate() {
                    let e = (z * m + i) * n + j;
                    assert!(!got[e].is_nan(), "{what}: element {e} is NaN (unwritten?)");
                    let err = (got[e] - want[e]).abs();
                    let scale = row_norm * col_norm;
                    assert!(
                        err <= TF32 * scale,
                        "{what}: element {e} = {} differs from {} by {err} > {TF32} · {scale}",
                        got[e],
                        want[e]
                    );
                    if scale > 0.0 {
                        worst = worst.max(err / scale);
                    }
                }
            }
        }
        eprintln!("{what}: max error / (|row| |column|) = {worst:e}");
        worst_of_all = worst_of_all.max(worst);
    }
    // Rounded inputs leave errors near 2^-11 / sqrt(k) of the scale, f32 ones near 1e-8:
    // the products really ran in TF32.
    assert!(
        worst_of_all > 1e-6,
        "TF32 error {worst_of_all:e} looks like f32"
    );
}
