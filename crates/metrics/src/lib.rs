//! Retrieval and generation metrics for GeAR-rs, with no libtorch dependency.
//!
//! This crate will hold Recall@k, MAP@k, MRR@k, nDCG@k, SQuAD EM/F1 and ROUGE, as defined in
//! section 5 of the method document. It is an empty placeholder until the data/metrics issue lands.
