//! Identifiers and names as Docker makes them: 64-hex ids, short-id prefixes, and
//! generated `adjective_surname` names.

use crate::{Error, Result};

/// A new random 64-hex-digit id, as Docker gives containers.
pub fn new_id() -> String {
    let mut buf = [0u8; 32];
    // getrandom only fails when the OS has no entropy source, which Linux always has.
    if getrandom::fill(&mut buf).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (t >> ((i % 16) * 8)) as u8 ^ (i as u8).wrapping_mul(151);
        }
    }
    hex(&buf)
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// The 12-digit short form of an id.
pub fn short_id(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// True for a full 64-hex id.
pub fn is_full_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// Checks a container name against Docker's rule `[a-zA-Z0-9][a-zA-Z0-9_.-]+`
/// (a leading `/` is allowed and dropped).
pub fn validate_name(name: &str) -> Result<&str> {
    let n = name.strip_prefix('/').unwrap_or(name);
    let mut chars = n.chars();
    let ok = n.len() >= 2
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(n)
    } else {
        Err(Error::InvalidArgument(format!(
            "Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )))
    }
}

/// Resolves `key` (a full id, a unique id prefix, or a name) among `(id, name)` pairs, as
/// Docker does: an exact id first, then an exact name, then a unique id prefix.
pub fn resolve<'a, I>(kind: &'static str, key: &str, items: I) -> Result<String>
where
    I: IntoIterator<Item = (&'a str, &'a str)> + Clone,
{
    let key_name = key.strip_prefix('/').unwrap_or(key);
    if let Some((id, _)) = items.clone().into_iter().find(|(id, _)| *id == key) {
        return Ok(id.to_string());
    }
    if let Some((id, _)) = items.clone().into_iter().find(|(_, n)| *n == key_name) {
        return Ok(id.to_string());
    }
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::not_found(kind, key));
    }
    let mut hits = items.into_iter().filter(|(id, _)| id.starts_with(key));
    match (hits.next(), hits.next()) {
        (Some((id, _)), None) => Ok(id.to_string()),
        (Some(_), Some(_)) => Err(Error::InvalidArgument(format!(
            "multiple IDs found with provided prefix: {key}"
        ))),
        _ => Err(Error::not_found(kind, key)),
    }
}

const LEFT: &[&str] = &[
    "admiring",
    "adoring",
    "agitated",
    "amazing",
    "angry",
    "awesome",
    "blissful",
    "bold",
    "brave",
    "busy",
    "charming",
    "clever",
    "cool",
    "compassionate",
    "competent",
    "confident",
    "crazy",
    "dazzling",
    "determined",
    "distracted",
    "dreamy",
    "eager",
    "ecstatic",
    "elastic",
    "elegant",
    "eloquent",
    "epic",
    "fervent",
    "festive",
    "focused",
    "friendly",
    "frosty",
    "gallant",
    "gifted",
    "goofy",
    "gracious",
    "happy",
    "hardcore",
    "hopeful",
    "hungry",
    "infallible",
    "inspiring",
    "jolly",
    "jovial",
    "keen",
    "kind",
    "laughing",
    "loving",
    "lucid",
    "modest",
    "musing",
    "mystifying",
    "nervous",
    "nice",
    "nifty",
    "nostalgic",
    "objective",
    "optimistic",
    "peaceful",
    "pedantic",
    "pensive",
    "practical",
    "priceless",
    "quirky",
    "quizzical",
    "relaxed",
    "reverent",
    "romantic",
    "serene",
    "sharp",
    "silly",
    "sleepy",
    "stoic",
    "strange",
    "stupefied",
    "suspicious",
    "tender",
    "thirsty",
    "trusting",
    "upbeat",
    "vibrant",
    "vigilant",
    "wizardly",
    "wonderful",
    "xenodochial",
    "youthful",
    "zealous",
    "zen",
];

const RIGHT: &[&str] = &[
    "albattani",
    "allen",
    "almeida",
    "archimedes",
    "ardinghelli",
    "babbage",
    "banach",
    "bardeen",
    "bartik",
    "bassi",
    "bell",
    "bhabha",
    "blackwell",
    "bohr",
    "booth",
    "borg",
    "bose",
    "brahmagupta",
    "brattain",
    "brown",
    "carson",
    "chandrasekhar",
    "clarke",
    "colden",
    "cori",
    "cray",
    "curie",
    "darwin",
    "davinci",
    "dijkstra",
    "dubinsky",
    "easley",
    "einstein",
    "elion",
    "engelbart",
    "euclid",
    "euler",
    "fermat",
    "fermi",
    "feynman",
    "franklin",
    "galileo",
    "gates",
    "goldberg",
    "goldstine",
    "goodall",
    "hamilton",
    "hawking",
    "heisenberg",
    "hermann",
    "hodgkin",
    "hoover",
    "hopper",
    "hugle",
    "hypatia",
    "jang",
    "jennings",
    "jepsen",
    "joliot",
    "jones",
    "kalam",
    "kare",
    "keller",
    "kepler",
    "khorana",
    "kilby",
    "kirch",
    "knuth",
    "kowalevski",
    "lalande",
    "lamarr",
    "lamport",
    "leakey",
    "leavitt",
    "lewin",
    "lichterman",
    "liskov",
    "lovelace",
    "lumiere",
    "mahavira",
    "mayer",
    "mccarthy",
    "mcclintock",
    "mclean",
    "mcnulty",
    "meitner",
    "mestorf",
    "mirzakhani",
    "morse",
    "murdock",
    "newton",
    "nightingale",
    "nobel",
    "noether",
    "northcutt",
    "noyce",
    "panini",
    "pare",
    "pasteur",
    "payne",
    "perlman",
    "pike",
    "poincare",
    "poitras",
    "ptolemy",
    "raman",
    "ramanujan",
    "ride",
    "ritchie",
    "roentgen",
    "rosalind",
    "saha",
    "sammet",
    "shannon",
    "shaw",
    "shirley",
    "shockley",
    "sinoussi",
    "snyder",
    "spence",
    "stallman",
    "stonebraker",
    "swanson",
    "swartz",
    "swirles",
    "tesla",
    "thompson",
    "torvalds",
    "turing",
    "varahamihira",
    "visvesvaraya",
    "volhard",
    "wescoff",
    "williams",
    "wilson",
    "wing",
    "wozniak",
    "wright",
    "yalow",
    "yonath",
];

/// A Docker-style generated name (`adjective_surname`) not accepted by `taken`;
/// after a few collisions a digit is appended, as Docker does.
pub fn generate_name(taken: impl Fn(&str) -> bool) -> String {
    for attempt in 0..64u32 {
        let mut r = [0u8; 4];
        let _ = getrandom::fill(&mut r);
        let n = u32::from_le_bytes(r) as usize;
        let mut name = format!("{}_{}", LEFT[n % LEFT.len()], RIGHT[(n >> 8) % RIGHT.len()]);
        if attempt >= 8 {
            name.push_str(&(n % 10).to_string());
        }
        if !taken(&name) {
            return name;
        }
    }
    format!("vic_{}", short_id(&new_id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_hex() {
        let a = new_id();
        assert!(is_full_id(&a));
        assert_ne!(a, new_id());
        assert_eq!(short_id(&a).len(), 12);
    }

    #[test]
    fn names() {
        assert!(validate_name("web").is_ok());
        assert_eq!(validate_name("/web-1.a_b").unwrap(), "web-1.a_b");
        assert!(validate_name("a").is_err());
        assert!(validate_name("-web").is_err());
        assert!(validate_name("we b").is_err());
        let n = generate_name(|n| n.starts_with('a'));
        assert!(!n.starts_with('a') && n.contains('_'));
    }

    #[test]
    fn resolution_order() {
        let items = [("abc123", "web"), ("abd456", "abc"), ("fff", "db")];
        assert_eq!(resolve("container", "web", items).unwrap(), "abc123");
        // an exact name beats an id prefix
        assert_eq!(resolve("container", "abc", items).unwrap(), "abd456");
        assert_eq!(resolve("container", "ff", items).unwrap(), "fff");
        assert!(matches!(
            resolve("container", "ab", items),
            Err(Error::InvalidArgument(_))
        ));
        assert!(
            resolve("container", "zzz", items)
                .unwrap_err()
                .is_not_found()
        );
    }
}
