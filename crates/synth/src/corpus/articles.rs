//! One generator per kind of article (town, person, species, invention, ship) and the general
//! facts any article can carry; each returns the article's sentences.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::words::*;
use super::{pick, World};

pub(super) fn town(rng: &mut ChaCha8Rng, w: &World, title: &str) -> Vec<String> {
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

pub(super) fn person(rng: &mut ChaCha8Rng, w: &World, title: &str) -> Vec<String> {
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

pub(super) fn species(rng: &mut ChaCha8Rng, w: &World, title: &str) -> Vec<String> {
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

pub(super) fn invention(rng: &mut ChaCha8Rng, w: &World, title: &str) -> Vec<String> {
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

pub(super) fn ship(rng: &mut ChaCha8Rng, w: &World, title: &str) -> Vec<String> {
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
pub(super) fn common(rng: &mut ChaCha8Rng, w: &World, title: &str) -> Vec<String> {
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
