//! C2SP tlog-tiles: hash tiles, entry bundles and their paths.
//!
//! A hash tile at level `L`, index `N` holds up to 256 consecutive hashes at
//! tree level `8·L`: the hash `i` of tile `N` is the Merkle tree hash of
//! leaves `[(256·N + i)·256^L, (256·N + i + 1)·256^L)`. A *full* tile holds
//! 256 hashes (8,192 bytes); the rightmost tiles of a tree may be *partial*,
//! with `W` in 1..=255 hashes, and carry `.p/<W>` in their path. Tiles are
//! served at `tile/<L>/<N>[.p/<W>]` and entry bundles at
//! `tile/entries/<N>[.p/<W>]`, where `<N>` is written in groups of three
//! digits, all but the last prefixed with `x` (`1234067` is
//! `x001/x234/067`).
//!
//! An entry bundle holds the entries of one level-0 tile, each prefixed
//! with its length as a big-endian `u16`.

use crate::error::{MerkleError, TileError};
use crate::merkle::{HASH_SIZE, HashReader, stored_hash_index};

/// Tree levels per tile.
pub const TILE_HEIGHT: u32 = 8;

/// Hashes (or entries) in a full tile (or bundle).
pub const FULL_WIDTH: u16 = 256;

/// The highest tile level.
pub const MAX_LEVEL: u8 = 63;

/// A hash tile's coordinates: level, index within the level, width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tile {
    level: u8,
    index: u64,
    width: u16,
}

/// An entry bundle's coordinates: index (the level-0 tile it matches) and
/// width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bundle {
    index: u64,
    width: u16,
}

/// What a parsed path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TilePath {
    /// A hash tile, `tile/<L>/<N>[.p/<W>]`.
    Hashes(Tile),
    /// An entry bundle, `tile/entries/<N>[.p/<W>]`.
    Entries(Bundle),
}

fn check_width(width: u16) -> Result<(), TileError> {
    if width == 0 || width > FULL_WIDTH {
        return Err(TileError::Width { width });
    }
    Ok(())
}

impl Tile {
    /// A tile at `level` (0..=63), `index`, with `width` hashes (1..=256).
    pub fn new(level: u8, index: u64, width: u16) -> Result<Self, TileError> {
        if level > MAX_LEVEL {
            return Err(TileError::Level { level });
        }
        check_width(width)?;
        Ok(Self {
            level,
            index,
            width,
        })
    }

    /// The tile's level.
    pub fn level(&self) -> u8 {
        self.level
    }

    /// The tile's index within its level.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// The number of hashes in the tile.
    pub fn width(&self) -> u16 {
        self.width
    }

    /// Whether the tile holds all 256 hashes.
    pub fn is_full(&self) -> bool {
        self.width == FULL_WIDTH
    }

    /// The tile's path, `tile/<L>/<N>[.p/<W>]`.
    pub fn path(&self) -> String {
        format!(
            "tile/{}/{}",
            self.level,
            index_and_width(self.index, self.width)
        )
    }

    /// The tile of `level` and `index` as it stands in a tree of `size`
    /// leaves: full, partial, or `None` if the tree has no hash in it yet.
    pub fn at_size(level: u8, index: u64, size: u64) -> Result<Option<Self>, TileError> {
        if level > MAX_LEVEL {
            return Err(TileError::Level { level });
        }
        let hashes_at_level = size
            .checked_shr(TILE_HEIGHT * u32::from(level))
            .unwrap_or(0);
        let first = index.saturating_mul(u64::from(FULL_WIDTH));
        if hashes_at_level <= first {
            return Ok(None);
        }
        let width = (hashes_at_level - first).min(u64::from(FULL_WIDTH));
        // width is within 1..=256 here.
        let width = u16::try_from(width).map_err(|_| TileError::Width { width: 0 })?;
        Self::new(level, index, width).map(Some)
    }

    /// The stored-hash indices of the tile's hashes, in order.
    pub fn hash_indices(&self) -> impl Iterator<Item = u64> + '_ {
        let level = TILE_HEIGHT * u32::from(self.level);
        // Beyond any real tree the indices saturate (never stored) rather
        // than wrap.
        let start = self.index.saturating_mul(u64::from(FULL_WIDTH));
        (0..u64::from(self.width)).map(move |i| stored_hash_index(level, start.saturating_add(i)))
    }

    /// The tile's contents: its hashes concatenated, read through `reader`.
    /// The caller checks the tile is within the tree (see [`Tile::at_size`]
    /// and [`tiles_for_size`]).
    pub fn data(&self, reader: &impl HashReader) -> Result<Vec<u8>, MerkleError> {
        let mut out = Vec::with_capacity(usize::from(self.width) * HASH_SIZE);
        for index in self.hash_indices() {
            out.extend_from_slice(reader.read_hash(index)?.as_bytes());
        }
        Ok(out)
    }
}

impl Bundle {
    /// The bundle at `index` with `width` entries (1..=256).
    pub fn new(index: u64, width: u16) -> Result<Self, TileError> {
        check_width(width)?;
        Ok(Self { index, width })
    }

    /// The bundle's index (that of its level-0 tile).
    pub fn index(&self) -> u64 {
        self.index
    }

    /// The number of entries in the bundle.
    pub fn width(&self) -> u16 {
        self.width
    }

    /// Whether the bundle holds all 256 entries.
    pub fn is_full(&self) -> bool {
        self.width == FULL_WIDTH
    }

    /// The index of the bundle's first entry in the log.
    pub fn first_entry(&self) -> u64 {
        self.index.saturating_mul(u64::from(FULL_WIDTH))
    }

    /// The bundle's path, `tile/entries/<N>[.p/<W>]`.
    pub fn path(&self) -> String {
        format!("tile/entries/{}", index_and_width(self.index, self.width))
    }

    /// The level-0 tile whose hashes are this bundle's entries' leaf hashes.
    pub fn tile(&self) -> Tile {
        Tile {
            level: 0,
            index: self.index,
            width: self.width,
        }
    }
}

/// `<N>[.p/<W>]`, with `N` in groups of three digits.
fn index_and_width(index: u64, width: u16) -> String {
    let mut n = index;
    let mut s = format!("{:03}", n % 1000);
    while n >= 1000 {
        n /= 1000;
        s = format!("x{:03}/{s}", n % 1000);
    }
    if width != FULL_WIDTH {
        s.push_str(&format!(".p/{width}"));
    }
    s
}

/// Parses a decimal with no leading zeroes (other than `0` itself).
fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse().ok()
}

/// Parses a tile or entry bundle path.
pub fn parse_path(path: &str) -> Result<TilePath, TileError> {
    let bad = |reason| TileError::MalformedPath {
        path: path.to_owned(),
        reason,
    };
    let mut parts: Vec<&str> = path.split('/').collect();
    if parts.len() < 3 || parts[0] != "tile" {
        return Err(bad("does not start with tile/<L>/"));
    }
    // `.p/<W>` ends the path of a partial tile.
    let mut width = FULL_WIDTH;
    if parts.len() >= 4 {
        let before_last = parts[parts.len() - 2];
        if let Some(stripped) = before_last.strip_suffix(".p") {
            let w = parts[parts.len() - 1];
            let w = parse_decimal(w).ok_or_else(|| bad("partial width is not a decimal"))?;
            if w == 0 || w >= u64::from(FULL_WIDTH) {
                return Err(bad("partial width is not within 1..=255"));
            }
            width = u16::try_from(w).map_err(|_| bad("partial width is not within 1..=255"))?;
            let at = parts.len() - 2;
            parts[at] = stripped;
            parts.pop();
        }
    }
    let groups = &parts[2..];
    let mut index: u64 = 0;
    for (i, group) in groups.iter().enumerate() {
        let last = i + 1 == groups.len();
        let digits = if last {
            *group
        } else {
            group
                .strip_prefix('x')
                .ok_or_else(|| bad("an index group other than the last lacks its x"))?
        };
        if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("an index group is not three digits"));
        }
        if i == 0 && !last && digits == "000" {
            return Err(bad("the index has a leading zero group"));
        }
        let d: u64 = digits
            .parse()
            .map_err(|_| bad("an index group is not three digits"))?;
        index = index
            .checked_mul(1000)
            .and_then(|v| v.checked_add(d))
            .ok_or_else(|| bad("the index overflows"))?;
    }
    if parts[1] == "entries" {
        return Ok(TilePath::Entries(Bundle::new(index, width)?));
    }
    let level = parse_decimal(parts[1]).ok_or_else(|| bad("level is not a decimal"))?;
    let level = u8::try_from(level).map_err(|_| bad("level is above 63"))?;
    Ok(TilePath::Hashes(Tile::new(level, index, width)?))
}

/// The hash tiles a log publishes when it grows from `old_size` to
/// `new_size` leaves: every tile that is new or wider at `new_size`, lowest
/// level first. With `old_size` 0 this is every tile of the tree.
pub fn tiles_for_size(old_size: u64, new_size: u64) -> Vec<Tile> {
    let mut tiles = Vec::new();
    let full = u64::from(FULL_WIDTH);
    for level in 0..=MAX_LEVEL {
        let shift = TILE_HEIGHT * u32::from(level);
        let new_n = new_size.checked_shr(shift).unwrap_or(0);
        if new_n == 0 {
            break;
        }
        let old_n = old_size.checked_shr(shift).unwrap_or(0);
        if old_n >= new_n {
            continue;
        }
        for index in old_n / full..new_n / full {
            tiles.push(Tile {
                level,
                index,
                width: FULL_WIDTH,
            });
        }
        let index = new_n / full;
        let width = new_n % full;
        if width > 0 {
            // width < 256 here.
            tiles.push(Tile {
                level,
                index,
                width: width as u16,
            });
        }
    }
    tiles
}

/// The entry bundles a log publishes when it grows from `old_size` to
/// `new_size` leaves (the level-0 tiles' coordinates).
pub fn bundles_for_size(old_size: u64, new_size: u64) -> Vec<Bundle> {
    tiles_for_size(old_size, new_size)
        .into_iter()
        .filter(|t| t.level == 0)
        .map(|t| Bundle {
            index: t.index,
            width: t.width,
        })
        .collect()
}

/// Encodes entries as a bundle: each prefixed with its big-endian `u16`
/// length.
pub fn encode_bundle<E: AsRef<[u8]>>(entries: &[E]) -> Result<Vec<u8>, TileError> {
    if entries.is_empty() || entries.len() > usize::from(FULL_WIDTH) {
        return Err(TileError::MalformedBundle(
            "a bundle holds 1 to 256 entries",
        ));
    }
    let mut out = Vec::new();
    for e in entries {
        let e = e.as_ref();
        let len = u16::try_from(e.len()).map_err(|_| TileError::EntryTooLong { len: e.len() })?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(e);
    }
    Ok(out)
}

/// Decodes a bundle into its entries; it must hold exactly `width`
/// entries and nothing after them.
pub fn decode_bundle(bytes: &[u8], width: u16) -> Result<Vec<Vec<u8>>, TileError> {
    let mut entries = Vec::with_capacity(usize::from(width));
    let mut rest = bytes;
    while !rest.is_empty() {
        if entries.len() == usize::from(width) {
            return Err(TileError::MalformedBundle(
                "more entries than the bundle's width",
            ));
        }
        let (len, tail) = rest
            .split_first_chunk::<2>()
            .ok_or(TileError::MalformedBundle("a length prefix is cut short"))?;
        let len = usize::from(u16::from_be_bytes(*len));
        if tail.len() < len {
            return Err(TileError::MalformedBundle("an entry is cut short"));
        }
        let (entry, tail) = tail.split_at(len);
        entries.push(entry.to_vec());
        rest = tail;
    }
    if entries.len() != usize::from(width) {
        return Err(TileError::MalformedBundle(
            "fewer entries than the bundle's width",
        ));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_encode_index_in_groups() {
        let t = Tile::new(4, 1_234_067, 1).unwrap();
        assert_eq!(t.path(), "tile/4/x001/x234/067.p/1");
        let t = Tile::new(4, 1_234_067, 256).unwrap();
        assert_eq!(t.path(), "tile/4/x001/x234/067");
        assert_eq!(Tile::new(0, 0, 256).unwrap().path(), "tile/0/000");
        assert_eq!(Tile::new(1, 999, 17).unwrap().path(), "tile/1/999.p/17");
        assert_eq!(Tile::new(0, 1000, 256).unwrap().path(), "tile/0/x001/000");
        assert_eq!(
            Bundle::new(1_234_067, 112).unwrap().path(),
            "tile/entries/x001/x234/067.p/112"
        );
    }

    #[test]
    fn paths_round_trip_and_reject_non_canonical() {
        for t in [
            Tile::new(0, 0, 1).unwrap(),
            Tile::new(63, u64::MAX, 256).unwrap(),
            Tile::new(2, 1_000_000, 255).unwrap(),
        ] {
            assert_eq!(parse_path(&t.path()).unwrap(), TilePath::Hashes(t));
        }
        let b = Bundle::new(273, 112).unwrap();
        assert_eq!(parse_path(&b.path()).unwrap(), TilePath::Entries(b));
        // Far beyond any tree, indices saturate instead of wrapping.
        let far = Tile::new(63, u64::MAX, 256).unwrap();
        assert!(far.hash_indices().all(|i| i == u64::MAX));
        assert_eq!(Bundle::new(u64::MAX, 1).unwrap().first_entry(), u64::MAX);
        for bad in [
            "tile/0/1",
            "tile/0/0001",
            "tile/00/000",
            "tile/64/000",
            "tile/0/x000/001",
            "tile/0/001/002",
            "tile/0/000.p/0",
            "tile/0/000.p/256",
            "tile/0/000.p/01",
            "tile/0/000.p",
            "tiles/0/000",
            "tile/0/x001",
            "tile/entries/x1000/000",
        ] {
            assert!(parse_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tiles_of_a_70000_tree_are_the_specs() {
        // The spec: 273 full level-0 tiles, a partial level-0 tile of width
        // 112, one full level-1 tile, a partial level-1 tile of width 17 and a
        // partial level-2 tile of width 1.
        let tiles = tiles_for_size(0, 70_000);
        let level0: Vec<_> = tiles.iter().filter(|t| t.level == 0).collect();
        assert_eq!(level0.len(), 274);
        assert_eq!(level0.iter().filter(|t| t.is_full()).count(), 273);
        assert_eq!(level0[273].width, 112);
        let level1: Vec<_> = tiles.iter().filter(|t| t.level == 1).collect();
        assert_eq!(level1.len(), 2);
        assert!(level1[0].is_full());
        assert_eq!(level1[1].width, 17);
        let level2: Vec<_> = tiles.iter().filter(|t| t.level == 2).collect();
        assert_eq!(level2.len(), 1);
        assert_eq!(level2[0].width, 1);
        assert_eq!(tiles.len(), 277);
        // A tree of size 256: one full level-0 tile, a level-1 tile of width 1.
        assert_eq!(
            tiles_for_size(0, 256),
            vec![Tile::new(0, 0, 256).unwrap(), Tile::new(1, 0, 1).unwrap()]
        );
        assert_eq!(Tile::at_size(1, 0, 70_000).unwrap().unwrap().width, 256);
        assert_eq!(Tile::at_size(1, 1, 70_000).unwrap().unwrap().width, 17);
        assert_eq!(Tile::at_size(2, 1, 70_000).unwrap(), None);
    }

    #[test]
    fn growth_publishes_new_and_wider_tiles_only() {
        assert_eq!(
            tiles_for_size(255, 257),
            vec![
                Tile::new(0, 0, 256).unwrap(),
                Tile::new(0, 1, 1).unwrap(),
                Tile::new(1, 0, 1).unwrap()
            ]
        );
        assert!(tiles_for_size(10, 10).is_empty());
    }

    #[test]
    fn bundles_round_trip() {
        let entries: Vec<Vec<u8>> = vec![vec![], vec![1, 2, 3], vec![7; 300]];
        let b = encode_bundle(&entries).unwrap();
        assert_eq!(&b[..2], &[0, 0]);
        assert_eq!(&b[2..4], &[0, 3]);
        assert_eq!(decode_bundle(&b, 3).unwrap(), entries);
        assert!(decode_bundle(&b, 2).is_err());
        assert!(decode_bundle(&b, 4).is_err());
        assert!(decode_bundle(&b[..b.len() - 1], 3).is_err());
        assert!(matches!(
            encode_bundle(&[vec![0u8; 65_536]]),
            Err(TileError::EntryTooLong { len: 65_536 })
        ));
    }

    proptest::proptest! {
        /// Parsing never panics, and paths round-trip.
        #[test]
        fn parse_is_total_and_paths_round_trip(
            junk in "[a-z0-9x./]{0,40}",
            level in 0u8..=63,
            index in proptest::prelude::any::<u64>(),
            width in 1u16..=256,
        ) {
            let _ = parse_path(&junk);
            let t = Tile::new(level, index, width).unwrap();
            proptest::prop_assert_eq!(parse_path(&t.path()).unwrap(), TilePath::Hashes(t));
            let b = Bundle::new(index, width).unwrap();
            proptest::prop_assert_eq!(parse_path(&b.path()).unwrap(), TilePath::Entries(b));
        }
    }
}
