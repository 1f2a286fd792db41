//! The PAX forms of GNU sparse files (versions 0.0, 0.1 and 1.0), which the `tar`
//! crate leaves to its caller. (The old GNU `S` entries it expands itself.)
//!
//! A PAX sparse file is stored as a regular entry whose data holds only the non-zero
//! chunks of the file, one after the other; its records (or, in 1.0, a text map at the
//! start of the data) say where each chunk goes and how long the real file is.

use std::io::Read;

/// Where the stored chunks go: `(offset, length)` in the real file, in order.
pub type Chunks = Vec<(u64, u64)>;

/// The largest 1.0 map read before the entry is rejected.
const MAX_MAP_BYTES: u64 = 8 << 20;

/// The `GNU.sparse.*` records of one entry.
#[derive(Debug, Default)]
pub struct SparseRecords {
    major: Option<Vec<u8>>,
    minor: Option<Vec<u8>>,
    /// The real name of the file (the entry's own name is a stand-in).
    pub name: Option<Vec<u8>>,
    size: Option<Vec<u8>>,
    real_size: Option<Vec<u8>>,
    map: Option<Vec<u8>>,
    pairs: Vec<Vec<u8>>,
    bad_pairs: bool,
}

/// How the chunk map of a sparse entry is stored.
#[derive(Debug)]
pub enum Layout {
    /// 0.0 and 0.1: the map came in the records.
    Records(Chunks),
    /// 1.0: the map opens the entry's data.
    InData,
}

/// A sparse entry: its map layout and the size of the real file.
#[derive(Debug)]
pub struct Sparse {
    /// Where the map is.
    pub layout: Layout,
    /// The size of the file that the chunks are part of.
    pub real_size: u64,
}

impl SparseRecords {
    /// Keeps `key = value` if it is a `GNU.sparse.*` record.
    pub fn record(&mut self, key: &[u8], value: &[u8]) {
        let Some(field) = key.strip_prefix(b"GNU.sparse.") else {
            return;
        };
        let value = Some(value.to_vec());
        match field {
            b"major" => self.major = value,
            b"minor" => self.minor = value,
            b"name" => self.name = value,
            b"size" => self.size = value,
            b"realsize" => self.real_size = value,
            b"map" => self.map = value,
            b"offset" | b"numbytes" => {
                // 0.0 repeats offset and numbytes records, strictly in turn.
                let want: &[u8] = if self.pairs.len().is_multiple_of(2) {
                    b"offset"
                } else {
                    b"numbytes"
                };
                if field != want {
                    self.bad_pairs = true;
                }
                self.pairs.extend(value);
            }
            _ => {}
        }
    }

    /// What the records describe: `Ok(None)` for an ordinary entry.
    pub fn parse(&self) -> Result<Option<Sparse>, String> {
        let version = (self.major.as_deref(), self.minor.as_deref());
        let one_zero = match version {
            (Some(b"0"), Some(b"0" | b"1")) => false,
            (Some(b"1"), Some(b"0")) => true,
            (None, None) if self.map.is_some() || !self.pairs.is_empty() => false,
            (None, None) => return Ok(None),
            _ => return Err("unknown GNU sparse format version".into()),
        };
        let size = self
            .size
            .as_deref()
            .or(self.real_size.as_deref())
            .ok_or("sparse file without a size")?;
        let real_size = number(size).ok_or("sparse file with a bad size")?;
        let layout = if one_zero {
            Layout::InData
        } else {
            if self.bad_pairs {
                return Err("sparse offsets and sizes out of turn".into());
            }
            let numbers: Vec<u64> = match &self.map {
                Some(map) if map.is_empty() => Vec::new(),
                Some(map) => map
                    .split(|&b| b == b',')
                    .map(number)
                    .collect::<Option<_>>()
                    .ok_or("sparse map with a bad number")?,
                None => self
                    .pairs
                    .iter()
                    .map(|v| number(v))
                    .collect::<Option<_>>()
                    .ok_or("sparse map with a bad number")?,
            };
            if !numbers.len().is_multiple_of(2) {
                return Err("sparse map with an odd count of numbers".into());
            }
            Layout::Records(numbers.chunks_exact(2).map(|p| (p[0], p[1])).collect())
        };
        Ok(Some(Sparse { layout, real_size }))
    }
}

/// A decimal number, strictly: ASCII digits only, no sign, no overflow.
fn number(text: &[u8]) -> Option<u64> {
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// Reads a 1.0 map from the start of the entry's data: a count, then an offset and a
/// length per chunk, each a decimal number on its own line, padded to whole 512-byte
/// blocks. Returns the chunks and the bytes that the map took.
pub fn read_map(data: &mut impl Read) -> Result<(Chunks, u64), MapError> {
    let mut text = Vec::new();
    let mut numbers = Vec::new();
    let mut parsed = 0;
    let mut consumed = 0u64;
    let mut block = [0u8; 512];
    loop {
        let wanted = match numbers.first() {
            Some(&count) => count_numbers(count)?,
            None => 1,
        };
        if numbers.len() as u64 >= wanted {
            break;
        }
        if let Some(end) = text[parsed..].iter().position(|&b| b == b'\n') {
            let line = &text[parsed..parsed + end];
            numbers.push(number(line).ok_or(MapError::Bad("sparse map with a bad number"))?);
            parsed += end + 1;
            continue;
        }
        if consumed >= MAX_MAP_BYTES {
            return Err(MapError::Bad("sparse map too large"));
        }
        data.read_exact(&mut block).map_err(MapError::Read)?;
        consumed += 512;
        text.extend_from_slice(&block);
    }
    let chunks = numbers[1..].chunks_exact(2).map(|p| (p[0], p[1])).collect();
    Ok((chunks, consumed))
}

fn count_numbers(count: u64) -> Result<u64, MapError> {
    count
        .checked_mul(2)
        .and_then(|n| n.checked_add(1))
        .ok_or(MapError::Bad("sparse map too large"))
}

/// Why a 1.0 map could not be read.
#[derive(Debug)]
pub enum MapError {
    /// The map is malformed.
    Bad(&'static str),
    /// The archive could not be read.
    Read(std::io::Error),
}

/// Checks that `chunks` are in order, do not overlap, fit in `real_size`, and that
/// their lengths add up to `stored`, the data that the entry holds for them.
pub fn validate(chunks: &Chunks, real_size: u64, stored: u64) -> Result<(), &'static str> {
    let mut end = 0u64;
    let mut total = 0u64;
    for &(offset, length) in chunks {
        if offset < end {
            return Err("sparse chunks overlap or are out of order");
        }
        end = offset
            .checked_add(length)
            .ok_or("sparse chunk past the end of the file")?;
        if end > real_size {
            return Err("sparse chunk past the end of the file");
        }
        total = total
            .checked_add(length)
            .ok_or("sparse chunks larger than the entry")?;
    }
    if total != stored {
        return Err("sparse chunks do not match the entry's data");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(pairs: &[(&str, &str)]) -> SparseRecords {
        let mut r = SparseRecords::default();
        for (k, v) in pairs {
            r.record(k.as_bytes(), v.as_bytes());
        }
        r
    }

    #[test]
    fn versions_are_told_apart() {
        assert!(records(&[("path", "x")]).parse().expect("plain").is_none());
        let v01 = records(&[
            ("GNU.sparse.major", "0"),
            ("GNU.sparse.minor", "1"),
            ("GNU.sparse.size", "100"),
            ("GNU.sparse.map", "0,10,90,10"),
        ]);
        let s = v01.parse().expect("0.1").expect("sparse");
        assert_eq!(s.real_size, 100);
        assert!(matches!(s.layout, Layout::Records(ref c) if c == &[(0, 10), (90, 10)]));
        let v00 = records(&[
            ("GNU.sparse.size", "50"),
            ("GNU.sparse.offset", "5"),
            ("GNU.sparse.numbytes", "1"),
            ("GNU.sparse.offset", "40"),
            ("GNU.sparse.numbytes", "2"),
        ]);
        let s = v00.parse().expect("0.0").expect("sparse");
        assert!(matches!(s.layout, Layout::Records(ref c) if c == &[(5, 1), (40, 2)]));
        let v10 = records(&[
            ("GNU.sparse.major", "1"),
            ("GNU.sparse.minor", "0"),
            ("GNU.sparse.realsize", "7"),
        ]);
        assert!(matches!(
            v10.parse().expect("1.0").expect("sparse").layout,
            Layout::InData
        ));
        assert!(
            records(&[("GNU.sparse.major", "2"), ("GNU.sparse.minor", "0")])
                .parse()
                .is_err()
        );
        assert!(
            records(&[("GNU.sparse.map", "1,2,3"), ("GNU.sparse.size", "9")])
                .parse()
                .is_err()
        );
        assert!(
            records(&[("GNU.sparse.map", "1,-2"), ("GNU.sparse.size", "9")])
                .parse()
                .is_err()
        );
    }

    #[test]
    fn one_zero_maps_are_read_from_the_data() {
        let mut data = b"2\n0\n3\n10\n4\n".to_vec();
        data.resize(512, 0);
        data.extend_from_slice(b"abcdefg");
        let mut reader = &data[..];
        let (chunks, consumed) = read_map(&mut reader).expect("map");
        assert_eq!(chunks, [(0, 3), (10, 4)]);
        assert_eq!(consumed, 512);
        assert_eq!(reader, b"abcdefg");
        let mut short = &b"2\n0\n"[..];
        assert!(matches!(read_map(&mut short), Err(MapError::Read(_))));
        let mut huge = vec![b'9'; 600];
        huge.resize(1024, 0);
        assert!(read_map(&mut &huge[..]).is_err());
    }

    #[test]
    fn maps_are_validated() {
        assert!(validate(&vec![(0, 3), (10, 4)], 14, 7).is_ok());
        assert!(validate(&vec![(0, 3), (10, 4)], 13, 7).is_err());
        assert!(validate(&vec![(0, 3), (2, 4)], 14, 7).is_err());
        assert!(validate(&vec![(0, 3), (10, 4)], 14, 8).is_err());
        assert!(validate(&vec![(u64::MAX, 3)], u64::MAX, 3).is_err());
    }
}
