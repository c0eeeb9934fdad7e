//! `gear locate`, `gear generate`, `gear explain`: one (query, document) pair through the fusion
//! encoder — its sentences ranked by cross-attention, the decoder's text, or both with the most
//! attended tokens, in the terminal, as JSON or as an HTML page.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use gear_data::Document;
use gear_infer::{render_html, render_terminal, DocumentIndex, Retriever};
use gear_model::{GenerationOptions, LocateOptions, Search};

use crate::args::{count, Aggregation, DecodingArg, GearModelArgs};

/// Where the document of `locate`/`generate`/`explain` comes from.
#[derive(clap::Args, Debug, Clone)]
pub struct DocChoice {
    /// A text file holding the document.
    #[arg(long, conflicts_with = "doc_id")]
    doc: Option<PathBuf>,
    /// A document of `--index` (or `--store`) by id.
    #[arg(long)]
    doc_id: Option<String>,
    /// The index to look `--doc-id` up in.
    #[arg(long, requires = "doc_id", conflicts_with = "store")]
    index: Option<PathBuf>,
    /// The PostgreSQL store (`gear index push`) to look `--doc-id` up in:
    /// `postgres://user@host:port/db`.
    #[arg(long, requires = "doc_id")]
    store: Option<String>,
    /// The store's schema.
    #[arg(long, default_value = "gear", requires = "store")]
    schema: String,
}

impl DocChoice {
    fn load(&self) -> Result<Document> {
        match (&self.doc, &self.doc_id, &self.index) {
            (Some(path), _, _) => {
                let text = gear_data::read_text(path)?;
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                Ok(Document {
                    id: name.clone(),
                    title: name,
                    text: text.trim_end().to_owned(),
                })
            }
            (None, Some(id), Some(index)) => {
                Ok(DocumentIndex::open(index, tch::Device::Cpu)?.document(id)?)
            }
            (None, Some(id), None) if self.store.is_some() => {
                let url = self.store.as_deref().unwrap_or_default();
                let address = gear_store::StoreAddress::new(url, &self.schema)?;
                gear_store::find_document(&address, id)?.with_context(|| {
                    format!(
                        "no document with id `{id}` in store {} schema {}",
                        address.target(),
                        self.schema
                    )
                })
            }
            _ => bail!("pass --doc FILE, or --doc-id ID with --index DIR or --store URL"),
        }
    }
}

/// Options of `gear locate`, `gear generate` and `gear explain`.
#[derive(clap::Args, Debug)]
pub struct PairArgs {
    #[command(flatten)]
    model: GearModelArgs,
    #[command(flatten)]
    doc: DocChoice,
    /// Sentences shown.
    #[arg(long, short, default_value_t = 5, value_parser = count(1..=10_000))]
    k: usize,
    /// Sentence score: the attention mass on its tokens (`sum`) or its mean per token (`mean`).
    #[arg(long, value_enum, default_value_t = Aggregation::Sum)]
    aggregation: Aggregation,
    /// Fusion layer whose cross-attention ranks sentences (1-based); default: the model's
    /// `local_layer`.
    #[arg(long, value_parser = count(1..=1000))]
    layer: Option<usize>,
    /// Beam width for generation (1: greedy); with span decoding, the start positions tried.
    #[arg(long, default_value_t = 1, value_parser = count(1..=64))]
    beams: usize,
    /// Free or span decoding; default: the model's (`decoder.decoding` in its gear.toml).
    #[arg(long, value_enum)]
    decoding: Option<DecodingArg>,
    /// Span decoding: pass over spans made only of the question's tokens (`true` or `false`);
    /// default: the model's (`decoder.skip_question_echoes`).
    #[arg(long, value_name = "BOOL")]
    skip_question_echoes: Option<bool>,
    /// Write the explanation as a self-contained HTML page.
    #[arg(long)]
    html: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// The query.
    query: String,
}

/// `locate`, `generate` or `explain`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairMode {
    /// Sentences only.
    Locate,
    /// Generated text only.
    Generate,
    /// Everything.
    Explain,
}

pub fn pair(args: &PairArgs, mode: PairMode) -> Result<()> {
    if let Some(why) = gear_data::blank_reason(&args.query) {
        bail!("the query {why}");
    }
    if mode == PairMode::Locate
        && (args.decoding.is_some() || args.skip_question_echoes.is_some() || args.beams != 1)
    {
        bail!("`gear locate` generates nothing: --decoding, --beams and --skip-question-echoes are for `generate` and `explain`");
    }
    let (mut model, _) = args.model.load()?;
    if let Some(d) = args.decoding {
        model.set_decoding(d.into())?;
    }
    if let Some(skip) = args.skip_question_echoes {
        model.set_skip_question_echoes(skip)?;
    }
    let doc = args.doc.load()?;
    let mut retriever = Retriever::from_model(model);
    retriever.set_locate_options(LocateOptions {
        aggregation: args.aggregation.into(),
        layer: args.layer,
        ..LocateOptions::default()
    });
    let model = retriever.model();
    let search = if args.beams > 1 {
        Search::Beam {
            width: args.beams,
            length_penalty: 1.0,
        }
    } else {
        Search::Greedy
    };
    let generation = GenerationOptions {
        max_len: model.config().max_target_len,
        search,
        use_cache: true,
        decoding: args.decoding.map(Into::into),
    };
    let e = retriever.explain(
        &args.query,
        &doc,
        10,
        (mode != PairMode::Locate).then_some(&generation),
        None,
    )?;
    if let Some(path) = &args.html {
        std::fs::write(path, render_html(&e, args.k))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&e)?)?;
        return Ok(());
    }
    match mode {
        PairMode::Locate => {
            for s in e.sentences.iter().take(args.k) {
                outln!("{:.4}  [{}] {}", s.score, s.index, s.text)?;
            }
        }
        PairMode::Generate => {
            outln!("{}", e.generated.clone().unwrap_or_default())?;
            // Where it was read from, beside the answer (stderr: stdout stays the answer alone).
            if let Some(span) = e.generated_span {
                if let Some(s) = e.sentences.iter().find(|s| s.span.contains(span.start)) {
                    let rank = e
                        .sentences
                        .iter()
                        .position(|r| r.index == s.index)
                        .unwrap_or(0);
                    eprintln!(
                        "read from sentence {} (ranked {} by cross-attention): {}",
                        s.index + 1,
                        rank + 1,
                        s.text
                    );
                }
            }
        }
        PairMode::Explain => {
            let color = std::io::IsTerminal::is_terminal(&std::io::stdout());
            out!("{}", render_terminal(&e, color, args.k))?;
        }
    }
    Ok(())
}
