//! The learning-rate schedule of the paper (Table 5): linear warm-up from `start_lr` to
//! `peak_lr` over `warmup_steps`, then cosine decay to `min_lr` at `total_steps`.

use serde::{Deserialize, Serialize};

/// Warm-up then cosine decay.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    /// Learning rate at step 0.
    pub start_lr: f64,
    /// Learning rate at the end of warm-up.
    pub peak_lr: f64,
    /// Learning rate at (and after) `total_steps`.
    pub min_lr: f64,
    /// Warm-up length in optimiser steps.
    pub warmup_steps: u64,
    /// Total optimiser steps of the run.
    pub total_steps: u64,
}

impl LrSchedule {
    /// The learning rate for optimiser step `step` (0-based).
    pub fn lr(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return self.start_lr
                + (self.peak_lr - self.start_lr) * step as f64 / self.warmup_steps as f64;
        }
        let span = self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
        let progress = ((step - self.warmup_steps) as f64 / span).min(1.0);
        self.min_lr
            + (self.peak_lr - self.min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_points() {
        let s = LrSchedule {
            start_lr: 1e-6,
            peak_lr: 1e-5,
            min_lr: 1e-6,
            warmup_steps: 1000,
            total_steps: 11_000,
        };
        let close = |a: f64, b: f64| assert!((a - b).abs() < 1e-15, "{a} != {b}");
        close(s.lr(0), 1e-6);
        close(s.lr(500), 5.5e-6);
        close(s.lr(1000), 1e-5);
        close(s.lr(6000), 5.5e-6); // half-way through the cosine
        close(s.lr(11_000), 1e-6);
        close(s.lr(20_000), 1e-6);
        assert!(s.lr(1001) < s.lr(1000) && s.lr(999) < s.lr(1000));
        let no_warmup = LrSchedule {
            warmup_steps: 0,
            ..s
        };
        close(no_warmup.lr(0), 1e-5);
    }
}
