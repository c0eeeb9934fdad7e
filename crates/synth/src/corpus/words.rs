//! The vocabularies the generated articles draw from.

pub(super) const ONSETS: &[&str] = &[
    "b", "br", "c", "d", "dr", "f", "g", "gr", "h", "k", "l", "m", "n", "p", "r", "s", "st", "t",
    "th", "v", "w", "z", "sk", "tr", "kl",
];
pub(super) const VOWELS: &[&str] = &["a", "e", "i", "o", "u", "ai", "ea", "ou", "y"];
pub(super) const CODAS: &[&str] = &[
    "", "n", "r", "l", "s", "th", "nd", "rk", "m", "x", "ld", "st",
];
pub(super) const SUFFIXES: &[&str] = &[
    "holm", "ford", "wick", "stad", "mere", "by", "dale", "port", "ton", "vik",
];

pub(super) const REGIONS: &[&str] = &[
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
pub(super) const COUNTRIES: &[&str] = &[
    "Ostria", "Valmora", "Kestland", "Norvale", "Dunmark", "Aurelia", "Tessaly", "Brennia",
];
pub(super) const TRADES: &[&str] = &[
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
pub(super) const MATERIALS: &[&str] = &[
    "granite",
    "sandstone",
    "oak",
    "iron",
    "limestone",
    "brick",
    "marble",
    "slate",
];
pub(super) const BUILDINGS: &[&str] = &[
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
pub(super) const FESTIVALS: &[&str] = &[
    "lantern", "harvest", "river", "music", "kite", "winter", "flower", "boat",
];
pub(super) const MONTHS: &[&str] = &[
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
pub(super) const DIRECTIONS: &[&str] =
    &["north", "south", "east", "west", "northeast", "southwest"];
pub(super) const FIELDS: &[&str] = &[
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
pub(super) const PROFESSIONS: &[&str] = &[
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
pub(super) const HABITATS: &[&str] = &[
    "wetlands",
    "pine forests",
    "alpine meadows",
    "rocky coasts",
    "river banks",
    "grasslands",
    "limestone caves",
    "peat bogs",
];
pub(super) const FOODS: &[&str] = &[
    "seeds",
    "insects",
    "small fish",
    "berries",
    "snails",
    "grasses",
    "worms",
    "lichens",
];
pub(super) const COLOURS: &[&str] = &[
    "grey",
    "amber",
    "olive",
    "copper",
    "pale blue",
    "dark brown",
    "silver",
    "rust red",
];
pub(super) const INSTRUMENTS: &[&str] = &[
    "telescope",
    "barometer",
    "printing press",
    "water pump",
    "loom",
    "compass",
    "steam engine",
    "microscope",
];
