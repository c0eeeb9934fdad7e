//! `gear embed`: stream stdin lines through the sentence encoder.

use std::io::{BufRead, BufWriter, Write};
use std::time::Instant;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::args::EncoderArgs;

/// Lines read and embedded per round; bounds memory on large inputs.
const CHUNK: usize = 2048;

/// Options of `gear embed`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    model: EncoderArgs,
    /// Print `{"texts": N, "seconds": S, "texts_per_second": R}` on stderr at the end
    /// (time spent tokenising, encoding and writing; model loading excluded).
    #[arg(long)]
    stats: bool,
}

#[derive(Serialize)]
struct Line<'a> {
    text: &'a str,
    embedding: &'a [f32],
}

pub fn run(args: &Args) -> Result<()> {
    let encoder = args.model.load()?;
    let stdin = std::io::stdin().lock();
    let stdout = std::io::stdout().lock();
    let started = Instant::now();
    let bar = crate::spinner("embed: 0 texts".into());
    let result = embed_stream(&encoder, stdin, BufWriter::new(stdout), &mut |n| {
        bar.set_message(format!("embed: {n} texts"));
    });
    bar.finish_and_clear();
    let count = match result {
        Err(e) if crate::is_broken_pipe(&e) => return Ok(()),
        other => other?,
    };
    if args.stats {
        let seconds = started.elapsed().as_secs_f64();
        eprintln!(
            "{}",
            serde_json::json!({"texts": count, "seconds": seconds, "texts_per_second": count as f64 / seconds})
        );
    }
    Ok(())
}

/// Embeds every line of `input` and writes one JSON object per line to `output`, in input order;
/// `progress` gets the running count. Returns the number of lines.
pub fn embed_stream(
    encoder: &gear_model::SentenceEncoder,
    mut input: impl BufRead,
    mut output: impl Write,
    progress: &mut dyn FnMut(usize),
) -> Result<usize> {
    let mut total = 0usize;
    let mut buf = Vec::new();
    loop {
        let mut texts: Vec<String> = Vec::with_capacity(CHUNK);
        while texts.len() < CHUNK {
            buf.clear();
            let n = input.read_until(b'\n', &mut buf).context("reading stdin")?;
            if n == 0 {
                break;
            }
            if buf.ends_with(b"\n") {
                buf.pop();
                if buf.ends_with(b"\r") {
                    buf.pop();
                }
            }
            let line = total + texts.len() + 1;
            let text = String::from_utf8(std::mem::take(&mut buf))
                .map_err(|_| anyhow::anyhow!("stdin line {line}: not valid UTF-8"))?;
            texts.push(text);
        }
        if texts.is_empty() {
            break;
        }
        let vectors = encoder.embed_vecs(&texts)?;
        for (text, embedding) in texts.iter().zip(&vectors) {
            serde_json::to_writer(&mut output, &Line { text, embedding })?;
            output.write_all(b"\n")?;
        }
        total += texts.len();
        tracing::info!(texts = total, "embedded");
        progress(total);
    }
    output.flush()?;
    Ok(total)
}
