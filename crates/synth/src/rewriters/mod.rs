//! The query rewriters of the RIR pipeline (step 4): [`KeywordRewriter`], offline and the default,
//! and [`OpenAiRewriter`] for any OpenAI-compatible chat endpoint, as the paper does with an LLM.

mod keywords;
mod openai;

pub use keywords::{extract_keywords, KeywordOptions, KeywordRewriter};
pub use openai::{OpenAiConfig, OpenAiRewriter, REWRITE_INSTRUCTION};
