#!/usr/bin/env python3
r"""Eager PyTorch (and torch.compile) baseline for the fused Algorithm 2 sampler.

What it computes
----------------
Loads an amortize score model directory (``config.json`` + ``weights.safetensors``,
parsed here without the safetensors package) and draws ``--num`` samples of the
posterior given the n observations in ``--obs`` (``[n, dim x]`` or ``[dim x]``) with
Geffner et al.'s Algorithm 2 and their composition of n scores with the prior term
(the paper's composition, ``amortize sample --compose geffner``; not GAUSS), on a grid
of ``--levels`` levels S of the model's cosine schedule. It is the same computation as
``ScoreModel::sample`` (src/estimators/score_model.rs, src/samplers/mod.rs):

* network space: u = B⁻¹(θ) (the prior's bijection) standardized with the model's
  ``theta_standardization``, θ̃ = (u − m)/s; x standardized with ``x_standardization``;
* ε̂(θ̃, t, x) = head([e(θ̃), e(x), e(t)]): three residual MLPs (input layer + SiLU,
  ``hidden_layers − 1`` blocks h ← h + SiLU(W h + b), linear output), weights in
  PyTorch's ``[out, in]`` layout, e(t) the sinusoidal embedding; evaluated as
  ``ScorePlan`` does (src/samplers/score_plan.rs): ``W_x e(x_j) + b`` and ``W_t e(t_k)``
  once per call, the θ-MLP's output layer folded into the head's θ columns, so the
  multiply-adds per draw and level are exactly ``ScorePlan::macs_per_step(n)``;
* grid t_k = k·T/S (f32), γ_k = γ(t_k), α_k = γ_k/γ_{k−1}; θ̃ ~ N(0, I/n); for
  k = S−1 … 1: s_j = −ε̂(θ̃, t_k, x_j)/√(1 − γ_k), σ_k² = (1 − α_k)/(n − α_k(n − 1)),
  μ_k = (Σ_j (θ̃ + (1 − α_k)s_j)/√α_k − (n − 1)√α_k θ̃)/(n − α_k(n − 1))
        + σ_k² (1 − n)(S − k)/S ∇log p(θ̃),  θ̃ ← μ_k + σ_k z, with σ_1 = 0 (the last
  step returns its mean: ``SamplerConfig::denoise_last``, our default);
* ∇log p(θ̃) = s ⊙ ∇_u log p_u(m + s ⊙ θ̃) (Gaussian: −P(u − c); log-normal: −(u − μ)/σ²;
  uniform box: 1 − 2 sigmoid(u)); the draws are mapped back by θ = B(m + s ⊙ θ̃).

The noise is the backend's own generator, not amortize's Philox stream, so draws match
ours in distribution, not bit for bit. Everything runs in float32 (TF32 matmuls only
with ``--tf32``; our kernels are strict FP32).

It prints, per mode (eager, then compiled), the time, samples/s, and FLOPs per draw
counted as ``benches/sample_cuda.rs`` counts them: 2 · macs_per_step(n) · (S − 1)
(dense layers only), so the lines compare with ``cargo bench --bench sample_cuda``
(which uses random weights of the same shape and a standard normal prior; throughput
does not depend on the weights). The timed region is the whole chain of all draws plus
the copy of the draws to the host (as ``sample_cuda`` returns them on the host); the
conditioning precomputation and the warm-up (and compilation) are outside it. Draws
are made in chunks of ``--batch`` rows (all chunks full-size, so a compiled step never
sees a new shape; samples/s counts the rows drawn, ``--out`` keeps the first ``--num``).

Running it on the GPU machine (PyTorch + CUDA + numpy there, no Rust, no network)
--------------------------------------------------------------------------------
Here, write a width-128 gaussian10 model (the bench's network size) and observations
into an ignored folder, and let ``run`` carry it (``carry: ["target/torch_ref"]``)::

    target/release/amortize simulate --task gaussian10 --num 10000 --seed 2 --out /tmp/g10data
    target/release/amortize train --data /tmp/g10data --task gaussian10 --width 128 \
        --out target/torch_ref/g10model --epochs 100
    python3 -c "import numpy as np; r = np.random.default_rng(3); \
        np.save('target/torch_ref/obs1.npy', r.normal(size=(1, 10)).astype('f4')); \
        np.save('target/torch_ref/obs8.npy', r.normal(size=(8, 10)).astype('f4'))"

(the model is ~0.75 MB; observations of gaussian10 task data would do as well). There::

    python3 benches/torch_reference.py --model target/torch_ref/g10model \
        --obs target/torch_ref/obs1.npy --num 100000 --levels 400
    python3 benches/torch_reference.py --model target/torch_ref/g10model \
        --obs target/torch_ref/obs8.npy --num 100000 --levels 400

and ``--num 1000000`` (chunked by ``--batch``); ``--no-compile`` skips torch.compile,
``--tf32`` allows TF32 matmuls.

What was verified, and what was not
-----------------------------------
On a CPU machine with no GPU, first with ``--backend numpy`` (the same network and
sampler functions, run on numpy arrays):

* The network, value for value: ``examples/score_eps.rs`` prints ``ScorePlan::eps_hat``
  for fixed θ̃ (4 rows) and x (3 observations) as JSON; ``eps_hat`` here on the same
  inputs agreed to a max abs difference of 1.0e-7 (width 64, 20 epochs) and 9.5e-7
  (width 128, 100 epochs; max |ε̂| 1.9) at levels k = 1, 50, 99 of S = 100 and 399 of
  S = 400 (relative ≤ 6.2e-7).
* The sampler, in distribution: 5000 draws, S = 100, against
  ``amortize sample --compose geffner --num 5000 --levels 100 --seed 1`` (Philox noise,
  so not bit for bit). Per-dimension means and stds agree within Monte Carlo error;
  the largest difference over the dimensions, in standard errors:

  ===============================================  =====  ==========  =========
  model (trained by ``amortize train``)            n      max |z|     max |z|
                                                          of means    of stds
  ===============================================  =====  ==========  =========
  gaussian10, width 128, 10⁴ sims, 100 epochs      1      1.1         2.2
  gaussian10, width 128, 10⁴ sims, 100 epochs      3      1.5         1.6
  gaussian10, width 64, 3000 sims, 20 epochs       1      1.9         1.3
  gaussian10, width 64, 3000 sims, 20 epochs       3      2.1         1.5
  two_moons (uniform prior), width 64, 40 epochs   3      0.7         1.2
  ===============================================  =====  ==========  =========

  (e.g. gaussian10 width 128, n = 1, dimension 0: mean −0.428 ours, −0.432 here; std
  0.677 ours, 0.684 here. The 20-epoch model is barely trained and its draws spread
  over ±60, identically in both.) n = 3 exercises the prior term, with the Gaussian
  and the uniform box's logistic score.

The torch path ran there on the CPU (torch 2.15.0 from PyPI in a throwaway venv,
``--device cpu``), eager and torch.compile (inductor) both: against 80 000 of our draws
(gaussian10 width 128, n = 1, S = 100), 80 000 compiled draws agreed with max |z| 2.6
of means and 1.7 of stds over the 10 dimensions; 5000 draws at n = 3: 1.6 and 2.1.

NOT verified there: CUDA (``torch.cuda.synchronize``, device memory at 10⁵–10⁶ draws,
the GPU timings, torch.compile for CUDA), and the log-normal prior.
"""

import argparse
import json
import math
import struct
import time
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

MODEL_FORMAT = "amortize-model"
MODEL_FORMAT_VERSIONS = (1, 2, 3, 4)
COSINE_OFFSET = 0.008
MAX_PERIOD = 10_000.0


# ---------------------------------------------------------------------------- model file


def read_safetensors(path):
    """The tensors of a safetensors file by name, as float32 numpy arrays.

    Layout: an 8-byte little-endian header length, a JSON header mapping each name to
    its dtype, shape and [start, end) byte offsets into the raw data that follows.
    """
    raw = Path(path).read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_len])
    data = raw[8 + header_len :]
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            raise ValueError(f"{path}: {name} is {info['dtype']}, expected F32")
        start, end = info["data_offsets"]
        array = np.frombuffer(data[start:end], dtype="<f4").astype(np.float32)
        tensors[name] = array.reshape(info["shape"])
    return tensors


def read_model(directory):
    """(config, tensors) of an amortize score model directory, format checked."""
    directory = Path(directory)
    envelope = json.loads((directory / "config.json").read_text())
    if (
        envelope.get("format") != MODEL_FORMAT
        or envelope.get("format_version") not in MODEL_FORMAT_VERSIONS
    ):
        raise ValueError(f"{directory}: not an amortize model of format version 1 to 4")
    if envelope.get("kind") != "score":
        raise ValueError(f"{directory}: a {envelope.get('kind')!r} model, expected 'score'")
    if envelope["config"].get("theta_space", "unconstrained") != "unconstrained":
        raise ValueError(
            f"{directory}: θ in its natural space (train --theta-space natural) is not reproduced here"
        )
    if envelope["config"]["network"].get("x_encoder") is not None:
        raise ValueError(
            f"{directory}: a set encoder in the x path (train --x-encoder) is not reproduced here"
        )
    if envelope["config"].get("gaussian_base") is not None:
        raise ValueError(
            f"{directory}: a Gaussian base under the network (train --gaussian-base) is not reproduced here"
        )
    return envelope["config"], read_safetensors(directory / "weights.safetensors")


def read_observations(path, dim_x):
    """The observations ``[n, dim x]`` of a .npy file (a 1-D array is one row)."""
    obs = np.asarray(np.load(path), dtype=np.float32)
    obs = obs.reshape(1, -1) if obs.ndim == 1 else obs
    if obs.ndim != 2 or obs.shape[1] != dim_x or obs.shape[0] == 0:
        raise ValueError(f"{path}: expected [n >= 1, {dim_x}], got {obs.shape}")
    return obs


# ------------------------------------------------------------------------------ network


@dataclass
class Plan:
    """The network as ``ScorePlan`` evaluates it; each layer is (Wᵀ ``[in, out]``, b).

    The head's first layer is split by input columns into θ, x and t parts; the θ-MLP's
    output layer is folded into the θ part (``theta_to_head``).
    """

    theta_input: tuple
    theta_blocks: list
    theta_to_head: tuple
    x_input: tuple
    x_blocks: list
    x_output: tuple
    head_x: tuple
    head_t: tuple
    head_blocks: list
    head_output: tuple

    def map(self, convert):
        """A copy with every array passed through ``convert`` (e.g. to a device)."""

        def converted(value):
            """A layer's arrays converted, or a list of layers' arrays."""
            if isinstance(value, list):
                return [converted(v) for v in value]
            return tuple(convert(a) for a in value)

        return Plan(**{f.name: converted(getattr(self, f.name)) for f in fields(self)})


def read_layer(tensors, name):
    """The layer ``name`` as (Wᵀ, b): y = x @ Wᵀ + b for PyTorch's ``[out, in]`` weight."""
    return (np.ascontiguousarray(tensors[f"{name}.weight"].T), tensors[f"{name}.bias"])


def build_plan(network, tensors):
    """The ``Plan`` of a model's tensors; the fold W_θ·W_o, W_θ·b_o is done in f64."""
    blocks = range(1, network["hidden_layers"])
    e, t_dim = network["embedding"], network["time_embedding"]
    head_w = tensors["head.input.weight"].astype(np.float64)
    if head_w.shape[1] != 2 * e + t_dim:
        raise ValueError(
            f"head.input.weight has shape {head_w.shape}, config says {2 * e + t_dim} inputs"
        )
    w_theta = head_w[:, :e]
    out_w = tensors["theta_net.output.weight"].astype(np.float64)
    out_b = tensors["theta_net.output.bias"].astype(np.float64)
    f32 = np.float32
    return Plan(
        theta_input=read_layer(tensors, "theta_net.input"),
        theta_blocks=[read_layer(tensors, f"theta_net.block{i}") for i in blocks],
        theta_to_head=(
            np.ascontiguousarray((w_theta @ out_w).T, dtype=f32),
            (w_theta @ out_b).astype(f32),
        ),
        x_input=read_layer(tensors, "x_net.input"),
        x_blocks=[read_layer(tensors, f"x_net.block{i}") for i in blocks],
        x_output=read_layer(tensors, "x_net.output"),
        head_x=(
            np.ascontiguousarray(head_w[:, e : 2 * e].T, dtype=f32),
            tensors["head.input.bias"],
        ),
        head_t=(
            np.ascontiguousarray(head_w[:, 2 * e :].T, dtype=f32),
            np.zeros(head_w.shape[0], f32),
        ),
        head_blocks=[read_layer(tensors, f"head.block{i}") for i in blocks],
        head_output=read_layer(tensors, "head.output"),
    )


def dense(h, weights):
    """h @ Wᵀ + b."""
    wt, b = weights
    return h @ wt + b


def residual_blocks(h, blocks, silu):
    """h ← h + SiLU(W h + b) for each block."""
    for block in blocks:
        h = h + silu(dense(h, block))
    return h


def eps_hat(plan, theta, x_part, t_part_k, silu):
    """ε̂(θ̃, t_k, x_j) for every observation j: ``[n, rows, dim θ]`` (``ScorePlan::eps_hat``)."""
    h = residual_blocks(silu(dense(theta, plan.theta_input)), plan.theta_blocks, silu)
    theta_part = dense(h, plan.theta_to_head)
    head = silu(theta_part[None, :, :] + x_part[:, None, :] + t_part_k)
    return dense(residual_blocks(head, plan.head_blocks, silu), plan.head_output)


def macs_per_step(network, n):
    """Multiply-adds of one ε̂ per sample with n observations (``ScorePlan::macs_per_step``)."""
    w, d, blocks = network["width"], network["dim_theta"], network["hidden_layers"] - 1
    return d * w + blocks * w * w + w * w + n * (blocks * w * w + w * d)


# ---------------------------------------------------------------------- schedule, prior


def gamma(t, levels):
    """γ(t) of the cosine schedule on [0, T] (``NoiseSchedule::gamma``)."""

    def f(s):
        """cos²((s + c)/(1 + c)·π/2)."""
        return math.cos((s + COSINE_OFFSET) / (1.0 + COSINE_OFFSET) * math.pi / 2) ** 2

    s = min(max(t / levels, 0.0), 1.0)
    return 0.0 if s >= 1.0 else min(max(f(s) / f(0.0), 0.0), 1.0)


def sampling_grid(steps, levels):
    """(t_k as f32 ``[S + 1]``, γ_k as floats) for k = 0..S (``NoiseSchedule::grid``)."""
    t = np.array([k * levels / steps for k in range(steps + 1)], dtype=np.float32)
    return t, [gamma(float(tk), levels) for tk in t]


def sinusoidal_embedding(t, dim):
    """e(t)[2i] = sin(t ω_i), e(t)[2i+1] = cos(t ω_i), ω_i = 10000^(−2i/dim): ``[len t, dim]``."""
    omega = MAX_PERIOD ** (-(2.0 * np.arange(dim // 2)) / dim)
    angle = t.astype(np.float64)[:, None] * omega[None, :]
    out = np.empty((len(t), dim), dtype=np.float32)
    out[:, 0::2], out[:, 1::2] = np.sin(angle), np.cos(angle)
    return out


def numpy_sigmoid(x):
    """1/(1 + e^−x) without overflow."""
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def numpy_silu(x):
    """x·sigmoid(x)."""
    return x * numpy_sigmoid(x)


def condition(plan, x_std, t, time_embedding):
    """(``W_x e(x_j) + b`` ``[n, width]``, ``W_t e(t_k)`` ``[S + 1, width]``), in f32 numpy."""
    h = residual_blocks(numpy_silu(dense(x_std, plan.x_input)), plan.x_blocks, numpy_silu)
    x_part = dense(dense(h, plan.x_output), plan.head_x)
    t_part = dense(sinusoidal_embedding(t, time_embedding), plan.head_t)
    return x_part.astype(np.float32), t_part.astype(np.float32)


def algorithm2_coefficients(gammas, n):
    """Per level k, the update θ̃ ← a_k θ̃ + b_k Σ_j ε̂_j + c_k ∇log p(θ̃) + σ_k z.

    Returns four f32 arrays ``[S + 1]`` (entries 0 and S unused): a_k, b_k (with the
    score's −1/√(1 − γ_k)), c_k = σ_k²(1 − n)(S − k)/S and σ_k (0 at k = 1, as our
    sampler's default ``denoise_last``); computed in f64.
    """
    levels = len(gammas) - 1
    table = np.zeros((4, levels + 1))
    for k in range(1, levels):
        alpha = gammas[k] / gammas[k - 1]
        denom = n - alpha * (n - 1)
        var = (1.0 - alpha) / denom
        sqrt_alpha = math.sqrt(alpha)
        table[0, k] = (n / sqrt_alpha - (n - 1) * sqrt_alpha) / denom
        table[1, k] = -(1.0 - alpha) / (sqrt_alpha * denom * math.sqrt(1.0 - gammas[k]))
        table[2, k] = var * (1 - n) * (levels - k) / levels
        table[3, k] = 0.0 if k == 1 else math.sqrt(var)
    return table.astype(np.float32)


def prior_tables(prior):
    """("gaussian", c, P) with ∇_u log p_u(u) = −P(u − c), or ("logistic", None, None)."""
    kind = prior["kind"]
    if kind == "gaussian":
        return "gaussian", np.array(prior["mean"]), np.linalg.inv(np.array(prior["cov"]))
    if kind == "log_normal":
        return "gaussian", np.array(prior["mu"]), np.diag(1.0 / np.array(prior["sigma"]) ** 2)
    if kind in ("uniform", "box_uniform", "box"):
        return "logistic", None, None
    raise ValueError(f"unknown prior kind {kind!r}")


def make_prior_score(prior, standardization, backend):
    """∇log p(θ̃) = s ⊙ ∇_u log p_u(m + s ⊙ θ̃) on the backend's arrays."""
    m = backend.asarray(standardization["mean"])
    s = backend.asarray(standardization["std"])
    kind, center, precision = prior_tables(prior)
    if kind == "logistic":
        return lambda theta: s * (1.0 - 2.0 * backend.sigmoid(m + s * theta))
    c, p = backend.asarray(center), backend.asarray(precision)
    # P is symmetric, so the rows of −P(u − c) are (c − u) @ P.
    return lambda theta: s * ((c - (m + s * theta)) @ p)


def to_parameters(draws, prior, standardization):
    """θ = B(m + s ⊙ θ̃) of the draws ``[num, dim θ]`` (f32)."""
    u = (
        np.asarray(standardization["mean"], np.float32)
        + np.asarray(standardization["std"], np.float32) * draws
    )
    kind = prior["kind"]
    if kind == "gaussian":
        return u
    u = u.astype(np.float64)
    if kind == "log_normal":
        return np.exp(u).astype(np.float32)
    lo, hi = np.array(prior["lo"]), np.array(prior["hi"])
    return (lo + (hi - lo) * numpy_sigmoid(u)).astype(np.float32)


# ----------------------------------------------------------------------------- backends


class NumpyBackend:
    """float32 numpy on the CPU: the check of the math where there is no PyTorch."""

    name = "numpy"
    silu = staticmethod(numpy_silu)
    sigmoid = staticmethod(numpy_sigmoid)

    def __init__(self, seed):
        """A backend whose normals come from numpy's PCG64 seeded with ``seed``."""
        self.rng = np.random.default_rng(seed)

    def asarray(self, a):
        """``a`` as a float32 array."""
        return np.asarray(a, dtype=np.float32)

    def to_numpy(self, a):
        """``a`` itself."""
        return a

    def normal(self, shape):
        """Standard normals of ``shape``."""
        return self.rng.standard_normal(shape, dtype=np.float32)

    def synchronize(self):
        """Nothing to wait for."""

    def compile(self, fn):
        """numpy has no compiler."""
        raise RuntimeError("the numpy backend has no compiler")


class TorchBackend:
    """float32 PyTorch tensors on ``device``."""

    name = "torch"

    def __init__(self, device, seed, tf32):
        """A backend on ``device`` whose normals come from a generator seeded with ``seed``."""
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        torch.set_float32_matmul_precision("high" if tf32 else "highest")
        self.silu = torch.nn.functional.silu
        self.sigmoid = torch.sigmoid

    def asarray(self, a):
        """``a`` as a float32 tensor on the device."""
        return self.torch.as_tensor(np.asarray(a, dtype=np.float32), device=self.device)

    def to_numpy(self, a):
        """``a`` copied to the host."""
        return a.cpu().numpy()

    def normal(self, shape):
        """Standard normals of ``shape`` on the device."""
        return self.torch.randn(shape, device=self.device, generator=self.generator)

    def synchronize(self):
        """Waits for the device's queued work."""
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)

    def compile(self, fn):
        """``torch.compile(fn)`` (compilation happens at the first call)."""
        return self.torch.compile(fn)


# ------------------------------------------------------------------------------ sampler


@dataclass
class Chain:
    """What every transition of one call reads, on the backend.

    The conditioning ``x_part`` ``[n, width]`` and ``t_part`` ``[S + 1, width]``, and the
    ``coefficients`` ``[4, S + 1]`` (rows a_k, b_k, c_k, σ_k).
    """

    x_part: object
    t_part: object
    coefficients: object
    levels: int
    dim: int
    observations: int


def make_step(plan, prior_score, silu, n):
    """One Algorithm 2 transition as a function of arrays only (what torch.compile gets)."""

    def step(theta, x_part, t_part_k, a, b, c, sigma, z):
        """θ̃ ← a θ̃ + b Σ_j ε̂(θ̃, t_k, x_j) [+ c ∇log p(θ̃) if n > 1] + σ z."""
        mean = a * theta + b * eps_hat(plan, theta, x_part, t_part_k, silu).sum(0)
        if n > 1:
            mean = mean + c * prior_score(theta)
        return mean + sigma * z

    return step


def run_chain(backend, step, chain, rows):
    """``rows`` draws θ̃ ``[rows, dim θ]``: θ̃ ~ N(0, I/n), then k = S−1 … 1."""
    theta = backend.normal((rows, chain.dim)) * (1.0 / math.sqrt(chain.observations))
    a, b, c, sigma = chain.coefficients
    for k in range(chain.levels - 1, 0, -1):
        z = backend.normal((rows, chain.dim))
        theta = step(theta, chain.x_part, chain.t_part[k], a[k], b[k], c[k], sigma[k], z)
    return theta


def warm_up(backend, step, chain, rows):
    """Two transitions at the timed shape (compiles a compiled step); returns seconds."""
    start = time.perf_counter()
    theta = backend.normal((rows, chain.dim))
    a, b, c, sigma = chain.coefficients
    k = chain.levels - 1
    for _ in range(2):
        z = backend.normal((rows, chain.dim))
        theta = step(theta, chain.x_part, chain.t_part[k], a[k], b[k], c[k], sigma[k], z)
    backend.synchronize()
    return time.perf_counter() - start


def timed_draws(backend, step, chain, num, batch):
    """(draws θ̃ ``[num, dim θ]`` on the host, rows drawn, seconds) in full chunks of ``batch``."""
    rows = min(batch, num)
    chunks = -(-num // rows)
    backend.synchronize()
    start = time.perf_counter()
    draws = [backend.to_numpy(run_chain(backend, step, chain, rows)) for _ in range(chunks)]
    backend.synchronize()
    seconds = time.perf_counter() - start
    return np.concatenate(draws)[:num], chunks * rows, seconds


# --------------------------------------------------------------------------------- main


def parse_args():
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="amortize score model directory")
    p.add_argument("--obs", required=True, help=".npy observations [n, dim x]")
    p.add_argument("--num", type=int, default=100_000, help="posterior draws")
    p.add_argument("--levels", type=int, default=400, help="levels S of the sampling grid")
    p.add_argument("--backend", choices=["torch", "numpy"], default="torch")
    p.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--batch", type=int, default=100_000, help="draws per chunk")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    p.add_argument("--tf32", action="store_true", help="allow TF32 matmuls (default: FP32)")
    p.add_argument("--out", help="write the last mode's draws θ [num, dim θ] to this .npy")
    args = p.parse_args()
    if args.num < 1 or args.batch < 1 or args.levels < 2:
        p.error("--num and --batch must be positive and --levels at least 2")
    return args


def make_backend(args):
    """The backend the arguments ask for."""
    if args.backend == "numpy":
        return NumpyBackend(args.seed)
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return TorchBackend(device, args.seed, args.tf32)


def prepare(args, config, tensors, backend):
    """(network config, Chain, step) for the model and observations on ``backend``."""
    network = config["network"]
    obs = read_observations(args.obs, network["dim_x"])
    xs = config["x_standardization"]
    x_std = (obs - np.asarray(xs["mean"], np.float32)) / np.asarray(xs["std"], np.float32)
    plan = build_plan(network, tensors)
    t, gammas = sampling_grid(args.levels, config["schedule"]["levels"])
    x_part, t_part = condition(plan, x_std, t, network["time_embedding"])
    n = obs.shape[0]
    chain = Chain(
        x_part=backend.asarray(x_part),
        t_part=backend.asarray(t_part),
        coefficients=backend.asarray(algorithm2_coefficients(gammas, n)),
        levels=args.levels,
        dim=network["dim_theta"],
        observations=n,
    )
    prior_score = make_prior_score(config["prior"], config["theta_standardization"], backend)
    step = make_step(plan.map(backend.asarray), prior_score, backend.silu, n)
    return network, chain, step


def report(label, draws, drawn, seconds, flops_per_draw):
    """Prints one mode's throughput line and the draws' per-dimension mean and std."""
    gflops = flops_per_draw * drawn / seconds / 1e9
    print(
        f"{label}: {drawn} draws: {seconds:.3f} s, {drawn / seconds:.0f} samples/s, "
        f"{flops_per_draw / 1e6:.1f} MFLOP/draw, {gflops:.1f} GFLOP/s"
    )
    print(f"  mean {np.array2string(draws.mean(0), precision=4, max_line_width=200)}")
    print(f"  std  {np.array2string(draws.std(0), precision=4, max_line_width=200)}")


def run_mode(label, backend, step, chain, args, config, flops_per_draw):
    """Warms ``step`` up, times the draws, reports them; returns the draws θ."""
    rows = min(args.batch, args.num)
    print(f"{label}: warm-up (and compilation) {warm_up(backend, step, chain, rows):.1f} s")
    draws, drawn, seconds = timed_draws(backend, step, chain, args.num, args.batch)
    theta = to_parameters(draws, config["prior"], config["theta_standardization"])
    report(label, theta, drawn, seconds, flops_per_draw)
    return theta


def main():
    """Loads, prepares, runs eager and (torch only) compiled, reports, saves."""
    args = parse_args()
    config, tensors = read_model(args.model)
    backend = make_backend(args)
    network, chain, step = prepare(args, config, tensors, backend)
    n = chain.observations
    flops_per_draw = 2.0 * macs_per_step(network, n) * (args.levels - 1)
    where = backend.name + (f" on {backend.device}" if backend.name == "torch" else "")
    print(
        f"Algorithm 2 (geffner), {where}: dim θ {network['dim_theta']}, width {network['width']}, "
        f"n = {n}, S = {args.levels} levels (T = {config['schedule']['levels']})"
    )
    mode = (backend, step, chain, args, config, flops_per_draw)
    draws = run_mode("eager", *mode)
    if backend.name == "torch" and not args.no_compile:
        compiled = (backend, backend.compile(step)) + mode[2:]
        try:
            draws = run_mode("torch.compile", *compiled)
        except Exception as e:  # torch.compile reports its failures at the first call
            print(f"torch.compile: failed: {type(e).__name__}: {str(e)[:2000]}")
    if args.out:
        np.save(args.out, draws)


if __name__ == "__main__":
    main()
