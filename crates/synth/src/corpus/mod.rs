//! The embedded default corpus: a seeded generator of Wikipedia-like articles about invented
//! towns, rivers, people, species, ships and inventions, so `cargo xtask train-rir` needs no
//! download. The text is this project's own, produced at run time.
//!
//! Each article has 14–21 sentences and 230–430 WordPiece tokens (MiniLM's tokenizer, measured
//! on 400 articles); every sentence states a
//! different fact built from shared vocabularies (regions, rivers, trades, materials, people), so
//! the same words recur across articles and a keyword query is not solved by one rare token.

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use gear_data::Document;

mod articles;
mod words;

use articles::{common, invention, person, ship, species, town};
use words::{CODAS, COLOURS, ONSETS, SUFFIXES, VOWELS};
/// Words that never start a generated name's syllable pattern twice in a row; kept simple.
fn name(rng: &mut ChaCha8Rng, syllables: usize) -> String {
    let mut s = String::new();
    for _ in 0..syllables {
        s.push_str(ONSETS.choose(rng).unwrap_or(&"b"));
        s.push_str(VOWELS.choose(rng).unwrap_or(&"a"));
        s.push_str(CODAS.choose(rng).unwrap_or(&""));
    }
    let mut chars = s.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

fn pick<'a>(rng: &mut ChaCha8Rng, items: &'a [&'a str]) -> &'a str {
    items.choose(rng).copied().unwrap_or("")
}

/// Shared proper names (rivers, people) that recur across articles.
struct World {
    rivers: Vec<String>,
    people: Vec<String>,
    cities: Vec<String>,
}

impl World {
    fn new(rng: &mut ChaCha8Rng) -> Self {
        let rivers = (0..24).map(|_| name(rng, 2)).collect();
        let people = (0..60)
            .map(|_| format!("{} {}", name(rng, 2), name(rng, 2)))
            .collect();
        let cities = (0..30)
            .map(|_| format!("{}{}", name(rng, 1), pick(rng, SUFFIXES)))
            .collect();
        Self {
            rivers,
            people,
            cities,
        }
    }
    fn river(&self, rng: &mut ChaCha8Rng) -> String {
        self.rivers.choose(rng).cloned().unwrap_or_default()
    }
    fn person(&self, rng: &mut ChaCha8Rng) -> String {
        self.people.choose(rng).cloned().unwrap_or_default()
    }
    fn city(&self, rng: &mut ChaCha8Rng) -> String {
        self.cities.choose(rng).cloned().unwrap_or_default()
    }
}

/// Generates `count` documents from `seed`; the same seed gives the same corpus on every platform.
pub fn generate_corpus(count: usize, seed: u64) -> Vec<Document> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let world = World::new(&mut rng);
    let mut titles = std::collections::HashSet::new();
    let mut docs = Vec::with_capacity(count.min(1 << 16));
    while docs.len() < count {
        let kind = docs.len() % 5;
        let title = match kind {
            0 => {
                let syllables = 1 + rng.random_range(0..2);
                format!("{}{}", name(&mut rng, syllables), pick(&mut rng, SUFFIXES))
            }
            1 => format!("{} {}", name(&mut rng, 2), name(&mut rng, 2)),
            2 => {
                let colour = pick(&mut rng, COLOURS)
                    .split(' ')
                    .next_back()
                    .unwrap_or("grey");
                let stem = name(&mut rng, 1).to_lowercase();
                let kind = pick(
                    &mut rng,
                    &["warbler", "newt", "beetle", "minnow", "moth", "gecko"],
                );
                format!("{colour}-{stem} {kind}")
            }
            3 => format!(
                "{} {}",
                name(&mut rng, 2),
                pick(
                    &mut rng,
                    &["loom", "press", "engine", "pump", "lathe", "regulator"]
                )
            ),
            _ => format!("HMS {}", name(&mut rng, 2)),
        };
        if !titles.insert(title.clone()) {
            continue;
        }
        let mut sentences = match kind {
            0 => town(&mut rng, &world, &title),
            1 => person(&mut rng, &world, &title),
            2 => species(&mut rng, &world, &title),
            3 => invention(&mut rng, &world, &title),
            _ => ship(&mut rng, &world, &title),
        };
        // Keep the opening sentence; drop a random few of the rest so articles differ in shape.
        let keep = rng.random_range(10..=sentences.len().max(10));
        let first = sentences.remove(0);
        while sentences.len() + 1 > keep {
            let i = rng.random_range(0..sentences.len());
            sentences.remove(i);
        }
        // Add four to seven general facts at random positions after the opening sentence.
        let mut extra = common(&mut rng, &world, &title);
        for _ in 0..rng.random_range(4..=7) {
            let fact = extra.swap_remove(rng.random_range(0..extra.len()));
            let at = rng.random_range(0..=sentences.len());
            sentences.insert(at, fact);
        }
        let text = std::iter::once(first)
            .chain(sentences)
            .collect::<Vec<_>>()
            .join(" ");
        docs.push(Document {
            id: format!("gen-{:04}", docs.len()),
            title,
            text,
        });
    }
    docs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_and_varied() {
        let a = generate_corpus(50, 7);
        assert_eq!(a, generate_corpus(50, 7));
        assert_ne!(a, generate_corpus(50, 8));
        let titles: std::collections::HashSet<_> = a.iter().map(|d| &d.title).collect();
        assert_eq!(titles.len(), 50);
        for d in &a {
            let sentences = gear_data::split_sentences(&d.text);
            assert!(
                sentences.len() >= 14,
                "{} has {} sentences",
                d.title,
                sentences.len()
            );
            let words = d.text.split_whitespace().count();
            assert!((150..=420).contains(&words), "{}: {words} words", d.title);
        }
    }
}
