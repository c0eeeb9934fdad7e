//! GeAR inference: global retrieval over a document index, local retrieval from fusion-encoder
//! cross-attention, and generation.
//!
//! Placeholder until the inference issue lands; see section 3 of the method document.
