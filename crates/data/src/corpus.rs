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

use crate::Document;

const ONSETS: &[&str] = &[
    "b", "br", "c", "d", "dr", "f", "g", "gr", "h", "k", "l", "m", "n", "p", "r", "s", "st", "t",
    "th", "v", "w", "z", "sk", "tr", "kl",
];
const VOWELS: &[&str] = &["a", "e", "i", "o", "u", "ai", "ea", "ou", "y"];
const CODAS: &[&str] = &[
    "", "n", "r", "l", "s", "th", "nd", "rk", "m", "x", "ld", "st",
];
const SUFFIXES: &[&str] = &[
    "holm", "ford", "wick", "stad", "mere", "by", "dale", "port", "ton", "vik",
];

const REGIONS: &[&str] = &[
    "northern highlands",
    "eastern lowlands",
    "coastal plain",
    "central valley",
    "western marches",
    "southern uplands",
    "lake district",
    "river delta",
    "forest belt",
    "salt flats",
];
const COUNTRIES: &[&str] = &[
    "Ostria", "Valmora", "Kestland", "Norvale", "Dunmark", "Aurelia", "Tessaly", "Brennia",
];
const TRADES: &[&str] = &[
    "wool weaving",
    "copper mining",
    "shipbuilding",
    "salt production",
    "glassmaking",
    "timber milling",
    "cheese making",
    "paper manufacturing",
    "fishing",
    "wine growing",
    "brick making",
    "clockmaking",
    "tanning",
    "silk dyeing",
    "rope making",
];
const MATERIALS: &[&str] = &[
    "granite",
    "sandstone",
    "oak",
    "iron",
    "limestone",
    "brick",
    "marble",
    "slate",
];
const BUILDINGS: &[&str] = &[
    "cathedral",
    "lighthouse",
    "town hall",
    "observatory",
    "market hall",
    "abbey",
    "fortress",
    "library",
    "railway station",
    "opera house",
];
const FESTIVALS: &[&str] = &[
    "lantern", "harvest", "river", "music", "kite", "winter", "flower", "boat",
];
const MONTHS: &[&str] = &[
    "January",
    "March",
    "April",
    "May",
    "June",
    "August",
    "September",
    "October",
    "November",
];
const DIRECTIONS: &[&str] = &["north", "south", "east", "west", "northeast", "southwest"];
const FIELDS: &[&str] = &[
    "astronomy",
    "botany",
    "chemistry",
    "mathematics",
    "geology",
    "medicine",
    "architecture",
    "linguistics",
    "physics",
    "zoology",
];
const PROFESSIONS: &[&str] = &[
    "astronomer",
    "botanist",
    "chemist",
    "mathematician",
    "geologist",
    "physician",
    "architect",
    "painter",
    "composer",
    "engineer",
];
const HABITATS: &[&str] = &[
    "wetlands",
    "pine forests",
    "alpine meadows",
    "rocky coasts",
    "river banks",
    "grasslands",
    "limestone caves",
    "peat bogs",
];
const FOODS: &[&str] = &[
    "seeds",
    "insects",
    "small fish",
    "berries",
    "snails",
    "grasses",
    "worms",
    "lichens",
];
const COLOURS: &[&str] = &[
    "grey",
    "amber",
    "olive",
    "copper",
    "pale blue",
    "dark brown",
    "silver",
    "rust red",
];
const INSTRUMENTS: &[&str] = &[
    "telescope",
    "barometer",
    "printing press",
    "water pump",
    "loom",
    "compass",
    "steam engine",
    "microscope",
];

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

fn town(rng: &mut ChaCha8Rng, w: &World, title: &str) -> Vec<String> {
    let year = rng.random_range(1120..1890);
    let (river, person, city) = (w.river(rng), w.person(rng), w.city(rng));
    vec![
        format!(
            "{title} is a market town in the {} of {}.",
            pick(rng, REGIONS),
            pick(rng, COUNTRIES)
        ),
        format!(
            "The town lies on the {river} River, about {} kilometres {} of {city}.",
            rng.random_range(5..180),
            pick(rng, DIRECTIONS)
        ),
        format!(
            "Its population was {} at the census of {}.",
            rng.random_range(1_200..95_000),
            rng.random_range(1950..2021)
        ),
        format!(
            "A charter granted in {year} gave the settlement the right to hold a weekly market."
        ),
        format!(
            "The local economy grew around {} and later {}.",
            pick(rng, TRADES),
            pick(rng, TRADES)
        ),
        format!(
            "A {} bridge across the {river} was completed in {} by the engineer {person}.",
            pick(rng, MATERIALS),
            year + rng.random_range(40..300)
        ),
        format!(
            "The {} {} on the main square dates from the {} century.",
            pick(rng, MATERIALS),
            pick(rng, BUILDINGS),
            ordinal(rng.random_range(13..19))
        ),
        format!(
            "Every {} the town holds a {} festival that draws visitors from {city}.",
            pick(rng, MONTHS),
            pick(rng, FESTIVALS)
        ),
        format!(
            "The railway reached {title} in {}, linking its mills to the port of {}.",
            rng.random_range(1840..1910),
            w.city(rng)
        ),
        format!(
            "Severe floods on the {river} in {} destroyed the lower quarter of the town.",
            rng.random_range(1700..1990)
        ),
        format!(
            "The poet {} was born in a house near the old {} gate.",
            w.person(rng),
            pick(rng, MATERIALS)
        ),
        format!(
            "Football club {title} Athletic plays its home games at a ground beside the {river}."
        ),
        format!(
            "A museum of {} opened in the former {} warehouse in {}.",
            pick(rng, TRADES),
            pick(rng, TRADES),
            rng.random_range(1955..2015)
        ),
        format!(
            "The surrounding farmland produces barley, {} and {}.",
            pick(rng, FOODS),
            pick(rng, &["apples", "hops", "rye", "flax", "potatoes"])
        ),
    ]
}

fn person(rng: &mut ChaCha8Rng, w: &World, title: &str) -> Vec<String> {
    let born = rng.random_range(1600..1920);
    let died = born + rng.random_range(45..90);
    let (field, prof, city) = (pick(rng, FIELDS), pick(rng, PROFESSIONS), w.city(rng));
    vec![
        format!(
            "{title} ({born}–{died}) was a {} {prof} known for work on {field}.",
            pick(rng, COUNTRIES)
        ),
        format!(
            "Born in {city}, {title} was the son of a {} merchant.",
            pick(rng, TRADES)
        ),
        format!(
            "{title} studied {field} at the University of {} under {}.",
            w.city(rng),
            w.person(rng)
        ),
        format!(
            "In {} the young scholar built a {} that could measure {}.",
            born + rng.random_range(20..35),
            pick(rng, INSTRUMENTS),
            pick(
                rng,
                &[
                    "air pressure",
                    "star positions",
                    "tidal heights",
                    "river flow",
                    "wind speed"
                ]
            )
        ),
        format!(
            "A long correspondence with {} shaped the theory of {}.",
            w.person(rng),
            pick(rng, FIELDS)
        ),
        format!(
            "The {} Academy elected {title} a fellow in {}.",
            pick(rng, COUNTRIES),
            born + rng.random_range(30..50)
        ),
        format!(
            "Critics praised the treatise on {field} published in {} as clear and practical.",
            born + rng.random_range(28..55)
        ),
        format!(
            "A crater on the Moon and a street in {} are named after {title}.",
            w.city(rng)
        ),
        format!(
            "The family estate on the {} River later became a school of {}.",
            w.river(rng),
            pick(rng, FIELDS)
        ),
        format!(
            "Portraits of {title} hang in the {} of {}.",
            pick(rng, BUILDINGS),
            w.city(rng)
        ),
        format!(
            "Late in life {title} moved to {} and taught {} to the children of {} workers.",
            w.city(rng),
            pick(rng, FIELDS),
            pick(rng, TRADES)
        ),
        format!(
            "The collected letters, edited by {}, appeared in {} volumes.",
            w.person(rng),
            rng.random_range(2..12)
        ),
    ]
}

fn species(rng: &mut ChaCha8Rng, w: &World, title: &str) -> Vec<String> {
    let (colour, habitat, food) = (pick(rng, COLOURS), pick(rng, HABITATS), pick(rng, FOODS));
    vec![
        format!("The {title} is a species of {} found in the {habitat} of {}.", pick(rng, &["songbird", "frog", "beetle", "river fish", "bat", "lizard", "moth", "salamander"]), pick(rng, COUNTRIES)),
        format!("Adults reach a length of {} centimetres and have {colour} markings on the back.", rng.random_range(2..60)),
        format!("The naturalist {} first described the animal in {} from a specimen caught near the {} River.", w.person(rng), rng.random_range(1760..1930), w.river(rng)),
        format!("Its diet consists mainly of {food}, with {} taken in late summer.", pick(rng, FOODS)),
        format!("Breeding pairs lay between {} and {} eggs each {}.", rng.random_range(2..5), rng.random_range(6..14), pick(rng, MONTHS)),
        format!("Populations declined sharply when the {habitat} were drained for {}.", pick(rng, TRADES)),
        format!("A protected reserve near {} now shelters the largest remaining colony.", w.city(rng)),
        format!("Local farmers call the animal the {} {} because of its call at dusk.", colour, pick(rng, &["piper", "whistler", "drummer", "singer", "caller"])),
        format!("Genetic studies in {} showed a close relationship to species living in the {}.", rng.random_range(1990..2022), pick(rng, HABITATS)),
        format!("The national conservation list classed the species as {} in {}.", pick(rng, &["vulnerable", "endangered", "near threatened", "of least concern"]), rng.random_range(1995..2023)),
        format!("Winter months are spent under {} stones or fallen {} logs.", pick(rng, MATERIALS), pick(rng, &["oak", "pine", "birch", "beech"])),
    ]
}

fn invention(rng: &mut ChaCha8Rng, w: &World, title: &str) -> Vec<String> {
    let inventor = w.person(rng);
    let year = rng.random_range(1650..1950);
    let instr = pick(rng, INSTRUMENTS);
    vec![
        format!("The {title} is a {instr} designed by {inventor} in {year}."),
        format!(
            "It replaced the older hand-driven machines used in {} workshops.",
            pick(rng, TRADES)
        ),
        format!(
            "A {} frame held the moving parts, which were cast from {}.",
            pick(rng, MATERIALS),
            pick(rng, &["bronze", "iron", "brass", "steel"])
        ),
        format!(
            "The first working model was shown at the {} exhibition in {}.",
            pick(rng, COUNTRIES),
            w.city(rng)
        ),
        format!(
            "Mills along the {} River adopted the device within {} years.",
            w.river(rng),
            rng.random_range(3..30)
        ),
        format!(
            "A patent dispute with {} lasted until {}.",
            w.person(rng),
            year + rng.random_range(3..25)
        ),
        format!(
            "Output in the {} trade rose by a third after its introduction.",
            pick(rng, TRADES)
        ),
        format!(
            "Surviving examples are kept in the {} of {} and in private collections.",
            pick(rng, BUILDINGS),
            w.city(rng)
        ),
        format!(
            "Engineers later fitted a {} to drive it, which doubled its speed.",
            pick(
                rng,
                &["steam engine", "water wheel", "electric motor", "windmill"]
            )
        ),
        format!(
            "Schoolbooks of the {} century used the {title} to explain {}.",
            ordinal(rng.random_range(18..21)),
            pick(rng, FIELDS)
        ),
        format!(
            "Production ended in {} when cheaper machines arrived from {}.",
            year + rng.random_range(60..150),
            pick(rng, COUNTRIES)
        ),
    ]
}

fn ship(rng: &mut ChaCha8Rng, w: &World, title: &str) -> Vec<String> {
    let year = rng.random_range(1700..1960);
    vec![
        format!(
            "{title} was a {} built at the yards of {} in {year}.",
            pick(
                rng,
                &[
                    "three-masted barque",
                    "paddle steamer",
                    "cargo schooner",
                    "river ferry",
                    "research vessel",
                    "ocean liner"
                ]
            ),
            w.city(rng)
        ),
        format!(
            "Her hull of {} and {} measured {} metres from bow to stern.",
            pick(rng, &["oak", "iron", "steel", "teak"]),
            pick(
                rng,
                &["copper sheathing", "riveted plates", "pine planking"]
            ),
            rng.random_range(18..220)
        ),
        format!(
            "Captain {} commanded the ship on her maiden voyage to {}.",
            w.person(rng),
            w.city(rng)
        ),
        format!(
            "She carried {} and {} between the ports of the {}.",
            pick(
                rng,
                &["grain", "coal", "timber", "passengers", "wool", "salt"]
            ),
            pick(rng, &["mail", "wine", "cattle", "iron ore", "cloth"]),
            pick(rng, REGIONS)
        ),
        format!(
            "A storm off the {} coast in {} tore away her foremast.",
            pick(rng, COUNTRIES),
            year + rng.random_range(2..30)
        ),
        format!(
            "During the war she served as a {} for the {} navy.",
            pick(
                rng,
                &[
                    "hospital ship",
                    "troop transport",
                    "supply tender",
                    "minelayer"
                ]
            ),
            pick(rng, COUNTRIES)
        ),
        format!(
            "The crew of {} sailors included the later explorer {}.",
            rng.random_range(12..900),
            w.person(rng)
        ),
        format!(
            "She was sold for scrap in {} after running aground in the {} River estuary.",
            year + rng.random_range(25..70),
            w.river(rng)
        ),
        format!(
            "Her bell now hangs in the {} at {}.",
            pick(rng, BUILDINGS),
            w.city(rng)
        ),
        format!(
            "A scale model of the ship won a prize at the {} fair.",
            pick(rng, FESTIVALS)
        ),
    ]
}

fn ordinal(n: u32) -> String {
    let suffix = match (n % 10, n % 100) {
        (1, r) if r != 11 => "st",
        (2, r) if r != 12 => "nd",
        (3, r) if r != 13 => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// Facts any article can carry: its place in archives, exhibitions, studies and local memory.
fn common(rng: &mut ChaCha8Rng, w: &World, title: &str) -> Vec<String> {
    vec![
        format!(
            "In {} the historian {} published a short account of {title} based on parish records.",
            rng.random_range(1850..2010),
            w.person(rng)
        ),
        format!(
            "A {} exhibition in {} presented drawings and maps connected with {title}.",
            pick(rng, FESTIVALS),
            w.city(rng)
        ),
        format!(
            "Archives in the {} of {} hold {} letters that mention {title}.",
            pick(rng, BUILDINGS),
            w.city(rng),
            rng.random_range(12..400)
        ),
        format!(
            "Students of {} at the college in {} still visit the site on field trips each {}.",
            pick(rng, FIELDS),
            w.city(rng),
            pick(rng, MONTHS)
        ),
        format!(
            "The {} painter {} made a series of watercolours of {title} around {}.",
            pick(rng, COUNTRIES),
            w.person(rng),
            rng.random_range(1780..1950)
        ),
        format!(
            "A survey of the {} in {} recorded {title} on its first printed map.",
            pick(rng, REGIONS),
            rng.random_range(1600..1900)
        ),
        format!(
            "Local legend links {title} to a lost {} hoard said to lie under the {} River.",
            pick(rng, &["silver", "gold", "copper", "amber"]),
            w.river(rng)
        ),
        format!(
            "A documentary film about {title} was broadcast in {} and narrated by {}.",
            rng.random_range(1960..2022),
            w.person(rng)
        ),
        format!(
            "Stamps issued by the {} post office in {} showed {title} in {}.",
            pick(rng, COUNTRIES),
            rng.random_range(1925..2020),
            pick(rng, COLOURS)
        ),
        format!(
            "The name {title} appears in a {}-century ballad about {} merchants.",
            ordinal(rng.random_range(14..19)),
            pick(rng, TRADES)
        ),
    ]
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
            let sentences = crate::split_sentences(&d.text);
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
