//! Test helpers shared by the extractor's and the tar-split's tests.

use tar::{EntryType, Header};

/// A layer tar written header by header, so that names the `tar` crate's own
/// builder refuses (`..`, absolute) can be written too.
pub struct Tar(pub tar::Builder<Vec<u8>>);

impl Tar {
    pub fn new() -> Self {
        Tar(tar::Builder::new(Vec::new()))
    }

    /// One entry of type `kind` with raw `name` and `link`; names longer than a header
    /// holds go into GNU long name and long link entries before it.
    pub fn raw(
        &mut self,
        kind: u8,
        name: &[u8],
        link: &[u8],
        mode: u32,
        mtime: u64,
        data: &[u8],
    ) -> &mut Self {
        let mut h = Header::new_gnu();
        if name.len() > 100 {
            self.long(b'L', name);
        } else {
            h.as_old_mut().name[..name.len()].copy_from_slice(name);
        }
        if link.len() > 100 {
            self.long(b'K', link);
        } else {
            h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
        }
        // Raw, since `EntryType` writes an old-style `\0` as `0`.
        h.as_old_mut().linkflag[0] = kind;
        h.set_mode(mode);
        h.set_mtime(mtime);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.0.append(&h, data).expect("append");
        self
    }

    pub fn long(&mut self, kind: u8, value: &[u8]) {
        let mut h = Header::new_gnu();
        let name = b"././@LongLink";
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_entry_type(EntryType::new(kind));
        h.set_mode(0o644);
        let mut data = value.to_vec();
        data.push(0);
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.0.append(&h, &data[..]).expect("append long name");
    }

    pub fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.raw(b'0', name.as_bytes(), b"", 0o644, 1_600_000_000, data)
    }

    pub fn dir(&mut self, name: &str) -> &mut Self {
        self.raw(b'5', name.as_bytes(), b"", 0o755, 1_600_000_000, b"")
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(
            b'2',
            name.as_bytes(),
            target.as_bytes(),
            0o777,
            1_600_000_000,
            b"",
        )
    }

    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(
            b'1',
            name.as_bytes(),
            target.as_bytes(),
            0o644,
            1_600_000_000,
            b"",
        )
    }

    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        self.0
            .append_pax_extensions(records.iter().copied())
            .expect("pax");
        self
    }

    pub fn bytes(&mut self) -> Vec<u8> {
        let builder = std::mem::replace(&mut self.0, tar::Builder::new(Vec::new()));
        builder.into_inner().expect("finish")
    }
}

/// A PAX 1.0 sparse entry: `chunks` of `real_size`, the map in front of the data.
pub fn pax_sparse_1_0(tar: &mut Tar, name: &str, real_size: u64, chunks: &[(u64, &[u8])]) {
    let mut data = format!("{}\n", chunks.len()).into_bytes();
    for (offset, bytes) in chunks {
        data.extend_from_slice(format!("{offset}\n{}\n", bytes.len()).as_bytes());
    }
    data.resize(data.len().div_ceil(512) * 512, 0);
    for (_, bytes) in chunks {
        data.extend_from_slice(bytes);
    }
    let size = real_size.to_string();
    tar.pax(&[
        ("GNU.sparse.major", b"1"),
        ("GNU.sparse.minor", b"0"),
        ("GNU.sparse.name", name.as_bytes()),
        ("GNU.sparse.realsize", size.as_bytes()),
    ]);
    tar.raw(
        b'0',
        format!("GNUSparseFile.0/{name}").as_bytes(),
        b"",
        0o644,
        0,
        &data,
    );
}

/// A tar with two PAX sparse files: `one-zero` (PAX 1.0: 4 MiB with `head` at 0 and
/// `middle` at 1 MiB) and `zero-one` (PAX 0.1: 2 MiB with `ab` at 0 and `cde` at 1 MiB).
pub fn pax_sparse_pair() -> Vec<u8> {
    let mut tar = Tar::new();
    pax_sparse_1_0(
        &mut tar,
        "one-zero",
        4 << 20,
        &[(0, b"head"), (1 << 20, b"middle"), (4 << 20, b"")],
    );
    let real = (2u64 << 20).to_string();
    tar.pax(&[
        ("GNU.sparse.major", b"0"),
        ("GNU.sparse.minor", b"1"),
        ("GNU.sparse.name", b"zero-one"),
        ("GNU.sparse.size", real.as_bytes()),
        ("GNU.sparse.map", b"0,2,1048576,3"),
    ]);
    tar.raw(b'0', b"GNUSparseFile.0/zero-one", b"", 0o600, 0, b"abcde");
    tar.bytes()
}
