//! The LLM rewriter: any OpenAI-compatible chat-completions endpoint (vLLM, llama.cpp's server,
//! …) rewrites each unit sentence into a keyword query, as the paper does with
//! Llama-3.1-70B-Instruct. Transient failures (connection errors, HTTP 429 and 5xx) are retried
//! with exponential back-off; other HTTP errors fail at once with the server's message.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use gear_data::Error as DataError;

use crate::{Error, Result};

use crate::Rewriter;

/// The instruction sent with every sentence (our wording of the paper's task).
pub const REWRITE_INSTRUCTION: &str = "You turn sentences into web search queries. \
Rewrite the sentence the user gives you as the short query a person would type into a search \
engine to find it: a comma-separated list of keywords and key phrases. Keep the subject, the key \
objects and the important nouns, names, numbers and dates from the sentence. Add nothing that is \
not in the sentence. Answer with the query only.";

/// Settings of [`OpenAiRewriter`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAiConfig {
    /// Base URL up to and including `/v1`, e.g. `http://127.0.0.1:8000/v1`.
    pub url: String,
    /// Model name the server knows.
    pub model: String,
    /// Bearer token, if the server wants one.
    #[serde(default)]
    pub api_key: Option<String>,
    /// Attempts per sentence, the first included.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Wait before the first retry; doubled on each further one.
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: u64,
    /// Request timeout.
    #[serde(default = "default_timeout_s")]
    pub timeout_s: u64,
}

fn default_attempts() -> u32 {
    5
}
fn default_backoff_ms() -> u64 {
    500
}
fn default_timeout_s() -> u64 {
    120
}

impl OpenAiConfig {
    /// Settings for `url` and `model` with default retries.
    pub fn new(url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            model: model.into(),
            api_key: None,
            max_attempts: default_attempts(),
            backoff_ms: default_backoff_ms(),
            timeout_s: default_timeout_s(),
        }
    }
}

/// Rewrites sentences through a chat-completions endpoint.
pub struct OpenAiRewriter {
    config: OpenAiConfig,
    agent: ureq::Agent,
    endpoint: String,
}

#[derive(Deserialize)]
struct Completion {
    choices: Vec<Choice>,
}

#[derive(Deserialize)]
struct Choice {
    message: Message,
}

#[derive(Deserialize)]
struct Message {
    content: Option<String>,
}

impl OpenAiRewriter {
    /// A rewriter with `config`; nothing is sent until the first sentence.
    pub fn new(config: OpenAiConfig) -> Result<Self> {
        if !(config.url.starts_with("http://") || config.url.starts_with("https://")) {
            return Err(DataError::InvalidSetting {
                field: "url",
                message: format!("`{}` is not an http(s) URL", config.url),
            }
            .into());
        }
        if config.max_attempts == 0 {
            return Err(DataError::InvalidSetting {
                field: "max_attempts",
                message: "must be at least 1".into(),
            }
            .into());
        }
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(config.timeout_s))
            .build();
        let endpoint = format!("{}/chat/completions", config.url.trim_end_matches('/'));
        Ok(Self {
            config,
            agent,
            endpoint,
        })
    }

    fn fail(&self, message: String) -> Error {
        Error::Rewrite {
            rewriter: format!("openai {}", self.endpoint),
            message,
        }
    }

    fn attempt(&self, sentence: &str) -> std::result::Result<String, (bool, String)> {
        let body = serde_json::json!({
            "model": self.config.model,
            "temperature": 0.0,
            "messages": [
                {"role": "system", "content": REWRITE_INSTRUCTION},
                {"role": "user", "content": sentence},
            ],
        });
        let mut req = self.agent.post(&self.endpoint);
        if let Some(key) = &self.config.api_key {
            req = req.set("Authorization", &format!("Bearer {key}"));
        }
        match req.send_json(body) {
            Ok(resp) => {
                let parsed: Completion = resp
                    .into_json()
                    .map_err(|e| (false, format!("unreadable response: {e}")))?;
                parsed
                    .choices
                    .into_iter()
                    .next()
                    .and_then(|c| c.message.content)
                    .map(|c| c.trim().to_owned())
                    .ok_or_else(|| (false, "response without choices[0].message.content".into()))
            }
            Err(ureq::Error::Status(code, resp)) => {
                let text = resp.into_string().unwrap_or_default();
                let retry = code == 429 || code >= 500;
                Err((
                    retry,
                    format!(
                        "HTTP {code}: {}",
                        text.chars().take(300).collect::<String>()
                    ),
                ))
            }
            Err(ureq::Error::Transport(t)) => Err((true, t.to_string())),
        }
    }
}

impl Rewriter for OpenAiRewriter {
    fn name(&self) -> &str {
        "openai"
    }

    fn rewrite(&self, sentence: &str) -> Result<String> {
        let mut wait = Duration::from_millis(self.config.backoff_ms);
        let mut last = String::new();
        for attempt in 1..=self.config.max_attempts {
            match self.attempt(sentence) {
                Ok(query) => return Ok(query),
                Err((false, message)) => return Err(self.fail(message)),
                Err((true, message)) => {
                    tracing::warn!(attempt, %message, "rewrite failed, retrying");
                    last = message;
                    if attempt < self.config.max_attempts {
                        std::thread::sleep(wait);
                        wait *= 2;
                    }
                }
            }
        }
        Err(self.fail(format!(
            "gave up after {} attempts: {last}",
            self.config.max_attempts
        )))
    }
}
