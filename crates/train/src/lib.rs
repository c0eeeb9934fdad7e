//! GeAR training: contrastive loss with momentum distillation, the LM loss, the cosine warm-up
//! schedule and the trainer.
//!
//! Placeholder until the training issue lands; see section 2 of the method document.
