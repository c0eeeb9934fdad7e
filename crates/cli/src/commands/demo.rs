//! `gear demo`: embed a small built-in corpus with the pretrained encoder and search it.
//! The corpus is the project's own text; it shows global retrieval end to end.

use anyhow::Result;

use crate::args::EncoderArgs;

/// Options of `gear demo`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    model: EncoderArgs,
    /// Results per query.
    #[arg(long, default_value_t = 3, value_parser = crate::args::count(1..=1000))]
    top_k: usize,
    /// Extra queries to run after the built-in ones.
    queries: Vec<String>,
}

const CORPUS: &[&str] = &[
    "The Rhine flows from the Swiss Alps through Germany and the Netherlands into the North Sea.",
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen inside chloroplasts.",
    "The first transatlantic telegraph cable was completed in 1858 but failed after three weeks.",
    "Honey bees communicate the direction of flowers to their hive mates with a waggle dance.",
    "A sourdough starter is a culture of wild yeast and lactic acid bacteria kept in flour and water.",
    "The Great Barrier Reef, off Queensland, is the largest coral reef system on Earth.",
    "Ada Lovelace wrote what is often called the first computer program, for Babbage's Analytical Engine.",
    "Mount Kilimanjaro in Tanzania is the highest free-standing mountain in the world.",
    "Vaccines train the immune system by exposing it to a harmless part or form of a pathogen.",
    "The violin family includes the viola, the cello and the double bass.",
    "Jupiter's moon Europa is thought to hide a salt-water ocean beneath its icy crust.",
    "The printing press with movable type spread across Europe after Gutenberg's work in Mainz.",
];

const QUERIES: &[&str] = &[
    "river, alps, north sea",
    "who wrote the first computer program",
    "ocean under the ice of a moon",
    "how do bees tell each other where food is",
];

pub fn run(args: &Args) -> Result<()> {
    let encoder = args.model.load()?;
    eprintln!(
        "encoder: {} ({} layers, width {}); corpus: {} passages",
        encoder.dir().display(),
        encoder.config().num_hidden_layers,
        encoder.dim(),
        CORPUS.len()
    );
    let docs = encoder.embed(CORPUS)?;
    let queries: Vec<&str> = QUERIES
        .iter()
        .copied()
        .chain(args.queries.iter().map(String::as_str))
        .collect();
    let q = encoder.embed(&queries)?;
    let scores = q.matmul(&docs.transpose(0, 1));
    let k = args.top_k.clamp(1, CORPUS.len()) as i64;
    let (top_scores, top_ids) = scores.topk(k, 1, true, true);
    for (i, query) in queries.iter().enumerate() {
        outln!("\nquery: {query}")?;
        for j in 0..k {
            let doc = top_ids.int64_value(&[i as i64, j]) as usize;
            let score = top_scores.double_value(&[i as i64, j]);
            outln!("  {score:.3}  {}", CORPUS[doc])?;
        }
    }
    Ok(())
}
