//! Optimizers, learning-rate schedules and gradient clipping.

use std::collections::HashMap;

use crate::autograd::{ParamGrads, ParamId, ParamStore};
use crate::backend::{self, AdamStep};
use crate::error::{Error, Result};
use crate::ops;
use crate::tensor::Tensor;

/// Hyper-parameters of Adam and AdamW.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    /// Base learning rate (a schedule may scale it per step).
    pub lr: f32,
    /// First-moment decay (0.9).
    pub beta1: f32,
    /// Second-moment decay (0.999).
    pub beta2: f32,
    /// Denominator guard (1e-8).
    pub eps: f32,
    /// Weight decay; 0 disables it.
    pub weight_decay: f32,
    /// `true` for AdamW's decoupled decay, `false` for Adam's L2 term in the gradient.
    pub decoupled: bool,
}

impl AdamConfig {
    /// Adam (Kingma & Ba) with PyTorch's defaults and learning rate `lr`.
    pub fn adam(lr: f32) -> Self {
        AdamConfig {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: false,
        }
    }

    /// AdamW (Loshchilov & Hutter): decoupled weight decay `weight_decay`.
    pub fn adamw(lr: f32, weight_decay: f32) -> Self {
        AdamConfig {
            weight_decay,
            decoupled: true,
            ..Self::adam(lr)
        }
    }

    fn validate(&self) -> Result<()> {
        let ok = self.lr >= 0.0
            && (0.0..1.0).contains(&self.beta1)
            && (0.0..1.0).contains(&self.beta2)
            && self.eps > 0.0
            && self.weight_decay >= 0.0;
        if !ok {
            return Err(Error::invalid(
                "Adam",
                format!("invalid hyper-parameters {self:?}"),
            ));
        }
        Ok(())
    }
}

/// Adam / AdamW with bias correction. Moments live on each parameter's device and are
/// created at a parameter's first update.
#[derive(Debug)]
pub struct Adam {
    config: AdamConfig,
    steps: u32,
    moments: HashMap<ParamId, (Tensor, Tensor)>,
}

impl Adam {
    /// A new optimizer; errors on out-of-range hyper-parameters.
    pub fn new(config: AdamConfig) -> Result<Self> {
        config.validate()?;
        Ok(Adam {
            config,
            steps: 0,
            moments: HashMap::new(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &AdamConfig {
        &self.config
    }

    /// Number of steps taken.
    pub fn steps(&self) -> u32 {
        self.steps
    }

    /// One update of every parameter that has a gradient, with learning rate `lr` (pass
    /// `config().lr` when no schedule is used).
    pub fn step(&mut self, store: &mut ParamStore, grads: &ParamGrads, lr: f32) -> Result<()> {
        self.steps += 1;
        let t = self.steps as i32;
        let c = &self.config;
        let step = AdamStep {
            lr,
            beta1: c.beta1,
            beta2: c.beta2,
            eps: c.eps,
            weight_decay: c.weight_decay,
            decoupled: c.decoupled,
            bias_correction1: 1.0 - c.beta1.powi(t),
            bias_correction2: 1.0 - c.beta2.powi(t),
        };
        for (id, grad) in grads.iter() {
            let param = store.get_mut(id);
            let (m, v) = match self.moments.entry(id) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    let backend = backend::for_device(param.device())?;
                    let zeros = backend.fill(param.shape(), 0.0)?;
                    e.insert((zeros.clone(), zeros))
                }
            };
            ops::adam_update(param, grad, m, v, &step)?;
        }
        Ok(())
    }
}

/// Linear warm-up to `base_lr` over `warmup_steps`, then a half cosine down to `min_lr`
/// at `total_steps` (and `min_lr` after).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CosineSchedule {
    /// Peak learning rate.
    pub base_lr: f32,
    /// Final learning rate.
    pub min_lr: f32,
    /// Steps of linear warm-up from base_lr/warmup_steps.
    pub warmup_steps: usize,
    /// Step at which the cosine reaches min_lr.
    pub total_steps: usize,
}

impl CosineSchedule {
    /// The learning rate of step `step` (0-based).
    pub fn lr_at(&self, step: usize) -> f32 {
        if step < self.warmup_steps {
            return self.base_lr * (step + 1) as f32 / self.warmup_steps as f32;
        }
        let span = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        let progress = ((step - self.warmup_steps) as f32 / span as f32).min(1.0);
        let cosine = 0.5 * (1.0 + (std::f32::consts::PI * progress).cos());
        self.min_lr + (self.base_lr - self.min_lr) * cosine
    }
}

/// Scales all gradients down so their global L2 norm is at most `max_norm`; returns the
/// norm before clipping. A non-finite norm is an error (training has diverged).
pub fn clip_grad_norm(grads: &mut ParamGrads, max_norm: f32) -> Result<f32> {
    let norm = grads.global_norm()?;
    if !norm.is_finite() {
        return Err(Error::invalid(
            "clip_grad_norm",
            format!("gradient norm is {norm}: training diverged"),
        ));
    }
    if norm > max_norm {
        grads.scale(max_norm / norm)?;
    }
    Ok(norm)
}
