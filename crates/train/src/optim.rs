//! AdamW written out over tensors, as `torch.optim.AdamW` computes it, so that its moments can
//! be checkpointed and restored exactly (tch's optimiser state is not reachable from Rust).
//! Biases and LayerNorm parameters get no weight decay. Each parameter may carry a learning-rate
//! multiplier (as a torch parameter group with its own `lr` would), used to train newly
//! initialised blocks faster than pretrained ones.

use tch::{Kind, Tensor};

use serde::{Deserialize, Serialize};

/// AdamW hyper-parameters (paper defaults: betas 0.9/0.999, eps 1e-8, weight decay 0.05).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdamWConfig {
    /// β₁.
    pub beta1: f64,
    /// β₂.
    pub beta2: f64,
    /// ε.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.05,
        }
    }
}

struct Param {
    name: String,
    value: Tensor,
    m: Tensor,
    v: Tensor,
    decay: bool,
    lr_scale: f64,
}

/// The optimiser.
pub struct AdamW {
    params: Vec<Param>,
    config: AdamWConfig,
    step: u64,
}

/// Whether a parameter is exempt from weight decay (biases, LayerNorm, scalars such as the
/// temperature).
pub fn no_decay(name: &str, value: &Tensor) -> bool {
    name.ends_with("bias")
        || name.contains("LayerNorm")
        || value.dim() <= 1 && !name.contains("embeddings")
}

impl AdamW {
    /// Optimises `params` (name, variable); moments start at zero.
    pub fn new(params: Vec<(String, Tensor)>, config: AdamWConfig) -> Self {
        let params = params
            .into_iter()
            .map(|(name, value)| {
                let decay = !no_decay(&name, &value);
                let m = value.zeros_like().set_requires_grad(false);
                let v = value.zeros_like().set_requires_grad(false);
                Param {
                    name,
                    value,
                    m,
                    v,
                    decay,
                    lr_scale: 1.0,
                }
            })
            .collect();
        Self {
            params,
            config,
            step: 0,
        }
    }

    /// Sets each parameter's learning-rate multiplier to `scale(name)`: its updates use the
    /// step's `lr` times that value, weight decay included, as torch does for a parameter group
    /// with its own `lr`. Returns how many parameters got a multiplier other than 1.
    pub fn set_lr_scales(&mut self, scale: impl Fn(&str) -> f64) -> usize {
        let mut scaled = 0;
        for p in &mut self.params {
            p.lr_scale = scale(&p.name);
            if p.lr_scale != 1.0 {
                scaled += 1;
            }
        }
        scaled
    }

    /// Optimiser steps taken.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// Clears every parameter's gradient.
    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.value.zero_grad();
        }
    }

    /// Scales gradients so their global L2 norm is at most `max_norm`; returns the norm before.
    pub fn clip_grad_norm(&self, max_norm: f64) -> f64 {
        let norms: Vec<Tensor> = self
            .params
            .iter()
            .map(|p| p.value.grad())
            .filter(Tensor::defined)
            .map(|g| g.to_kind(Kind::Float).pow_tensor_scalar(2).sum(Kind::Float))
            .collect();
        if norms.is_empty() {
            return 0.0;
        }
        let total = Tensor::stack(&norms, 0)
            .sum(Kind::Float)
            .sqrt()
            .double_value(&[]);
        if max_norm > 0.0 && total > max_norm {
            let scale = max_norm / (total + 1e-6);
            tch::no_grad(|| {
                for p in &self.params {
                    let mut g = p.value.grad();
                    if g.defined() {
                        let _ = g.g_mul_scalar_(scale);
                    }
                }
            });
        }
        total
    }

    /// One AdamW update at learning rate `lr` (times each parameter's scale) with the current
    /// gradients.
    pub fn step(&mut self, lr: f64) {
        self.step += 1;
        let AdamWConfig {
            beta1,
            beta2,
            eps,
            weight_decay,
        } = self.config;
        let bc1 = 1.0 - beta1.powi(self.step as i32);
        let bc2 = 1.0 - beta2.powi(self.step as i32);
        tch::no_grad(|| {
            for p in &mut self.params {
                let g = p.value.grad();
                if !g.defined() {
                    continue;
                }
                let lr = lr * p.lr_scale;
                if p.decay && weight_decay != 0.0 {
                    let _ = p.value.g_mul_scalar_(1.0 - lr * weight_decay);
                }
                let _ = p.m.g_mul_scalar_(beta1).g_add_(&(&g * (1.0 - beta1)));
                let _ = p.v.g_mul_scalar_(beta2).g_add_(&(&g * &g * (1.0 - beta2)));
                let denom = p.v.sqrt() / bc2.sqrt() + eps;
                let _ = p.value.g_sub_(&(&p.m / denom * (lr / bc1)));
            }
        });
    }

    /// Moments as `(m.<name>, tensor)`, `(v.<name>, tensor)` pairs for a checkpoint.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        self.params
            .iter()
            .flat_map(|p| {
                [
                    (format!("m.{}", p.name), p.m.shallow_clone()),
                    (format!("v.{}", p.name), p.v.shallow_clone()),
                ]
            })
            .collect()
    }

    /// Restores moments written by [`AdamW::state`] and the step count. Every parameter's
    /// moments must be present with the right shape.
    pub fn load_state(
        &mut self,
        get: impl Fn(&str) -> Option<Tensor>,
        steps: u64,
    ) -> Result<(), String> {
        tch::no_grad(|| {
            for p in &mut self.params {
                for (key, dst) in [
                    (format!("m.{}", p.name), &mut p.m),
                    (format!("v.{}", p.name), &mut p.v),
                ] {
                    let src = get(&key).ok_or_else(|| format!("optimiser state lacks `{key}`"))?;
                    if src.size() != dst.size() {
                        return Err(format!(
                            "optimiser state `{key}` has shape {:?}, expected {:?}",
                            src.size(),
                            dst.size()
                        ));
                    }
                    dst.copy_(&src);
                }
            }
            Ok(())
        })?;
        self.step = steps;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn matches_torch_adamw_by_hand() {
        // One scalar-like weight w = [1.0, -2.0] with loss Σ w², lr 0.1, wd 0.05, two steps.
        let w = Tensor::from_slice(&[1.0f32, -2.0])
            .view([1, 2])
            .set_requires_grad(true);
        let mut opt = AdamW::new(
            vec![("layer.weight".into(), w.shallow_clone())],
            AdamWConfig::default(),
        );
        let mut expect = [1.0f64, -2.0];
        let (mut m, mut v) = ([0.0f64; 2], [0.0f64; 2]);
        for step in 1..=2 {
            opt.zero_grad();
            (&w * &w).sum(Kind::Float).backward();
            opt.step(0.1);
            for i in 0..2 {
                let g = 2.0 * expect[i];
                expect[i] *= 1.0 - 0.1 * 0.05;
                m[i] = 0.9 * m[i] + 0.1 * g;
                v[i] = 0.999 * v[i] + 0.001 * g * g;
                let (bc1, bc2) = (1.0 - 0.9f64.powi(step), 1.0 - 0.999f64.powi(step));
                expect[i] -= 0.1 / bc1 * m[i] / ((v[i].sqrt() / bc2.sqrt()) + 1e-8);
            }
        }
        let got = Vec::<f32>::try_from(w.flatten(0, -1)).unwrap();
        for (g, e) in got.iter().zip(expect) {
            assert!((f64::from(*g) - e).abs() < 1e-6, "{got:?} vs {expect:?}");
        }
        assert_eq!(opt.steps(), 2);
    }

    #[test]
    fn an_lr_scale_multiplies_the_step_and_the_decay_of_its_parameters_only() {
        // Two identical weights, one with scale 10: after one step from the same gradient each
        // moved by its own lr · (decay · w + m̂ / (√v̂ + ε)) — the scaled one exactly 10× as far.
        let a = Tensor::from_slice(&[1.0f32, -2.0])
            .view([1, 2])
            .set_requires_grad(true);
        let b = Tensor::from_slice(&[1.0f32, -2.0])
            .view([1, 2])
            .set_requires_grad(true);
        let mut opt = AdamW::new(
            vec![
                ("encoder.dense.weight".into(), a.shallow_clone()),
                ("decoder.dense.weight".into(), b.shallow_clone()),
            ],
            AdamWConfig::default(),
        );
        let scaled = opt.set_lr_scales(|n| if n.starts_with("decoder.") { 10.0 } else { 1.0 });
        assert_eq!(scaled, 1);
        ((&a * &a).sum(Kind::Float) + (&b * &b).sum(Kind::Float)).backward();
        opt.step(0.01);
        let start = [1.0f64, -2.0];
        let got_a = Vec::<f32>::try_from(a.flatten(0, -1)).unwrap();
        let got_b = Vec::<f32>::try_from(b.flatten(0, -1)).unwrap();
        for i in 0..2 {
            // First step: m̂ = g, v̂ = g², so the Adam term is sign(g) (up to ε).
            let adam = start[i].signum();
            let want_a = start[i] * (1.0 - 0.01 * 0.05) - 0.01 * adam;
            let want_b = start[i] * (1.0 - 0.1 * 0.05) - 0.1 * adam;
            assert!((f64::from(got_a[i]) - want_a).abs() < 1e-6, "{got_a:?}");
            assert!((f64::from(got_b[i]) - want_b).abs() < 1e-6, "{got_b:?}");
        }
    }

    #[test]
    fn biases_and_layer_norms_are_not_decayed() {
        let b = Tensor::zeros([3], (Kind::Float, Device::Cpu));
        let w = Tensor::zeros([3, 3], (Kind::Float, Device::Cpu));
        assert!(no_decay("encoder.layer.0.output.dense.bias", &b));
        assert!(no_decay("encoder.layer.0.output.LayerNorm.weight", &b));
        assert!(!no_decay("encoder.layer.0.output.dense.weight", &w));
        assert!(!no_decay("embeddings.word_embeddings.weight", &w));
    }

    #[test]
    fn clipping_bounds_the_global_norm_and_state_round_trips() {
        let w = Tensor::from_slice(&[3.0f32, 4.0]).set_requires_grad(true);
        let mut opt = AdamW::new(
            vec![("w".into(), w.shallow_clone())],
            AdamWConfig::default(),
        );
        (&w * &w).sum(Kind::Float).backward(); // grad (6, 8), norm 10
        assert!((opt.clip_grad_norm(1.0) - 10.0).abs() < 1e-5);
        let g = w.grad();
        assert!((g.norm().double_value(&[]) - 1.0).abs() < 1e-4);
        opt.step(0.01);
        let state: std::collections::HashMap<String, Tensor> = opt
            .state()
            .into_iter()
            .map(|(k, t)| (k, t.copy()))
            .collect();
        let mut fresh = AdamW::new(
            vec![("w".into(), w.shallow_clone())],
            AdamWConfig::default(),
        );
        fresh
            .load_state(|k| state.get(k).map(Tensor::shallow_clone), 1)
            .unwrap();
        assert!(fresh.state()[0].1.equal(&state["m.w"]));
        assert!(fresh.load_state(|_| None, 1).unwrap_err().contains("m.w"));
    }
}
