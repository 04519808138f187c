//! The C2SP tlog-tiles layout (c2sp.org/tlog-tiles): tiles of 256 hashes
//! (`tile/<L>/<N>`, partial ones `tile/<L>/<N>.p/<W>`) and entry bundles
//! (`tile/entries/<N>`, each entry a big-endian u16 length and the leaf
//! data), served read-only so auditors can follow the log.

use std::path::{Path, PathBuf};

use crate::leaf::LEAF_LEN;
use crate::merkle::MemoryTree;
use crate::Error;

const WIDTH: u64 = 256;
const HEIGHT: u32 = 8;

/// `1234067` → `x001/x234/067`.
pub fn index_path(n: u64) -> String {
    let digits = n.to_string();
    let padded = format!("{}{digits}", "0".repeat((3 - digits.len() % 3) % 3));
    let groups: Vec<&str> = padded
        .as_bytes()
        .chunks(3)
        .map(|c| std::str::from_utf8(c).unwrap_or("000"))
        .collect();
    let last = groups.len() - 1;
    groups
        .iter()
        .enumerate()
        .map(|(i, g)| {
            if i < last {
                format!("x{g}")
            } else {
                (*g).to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The relative path of a tile (`level` is `None` for entry bundles).
pub fn tile_path(level: Option<u32>, index: u64, width: u64) -> String {
    let level = level.map_or("entries".to_owned(), |l| l.to_string());
    let mut path = format!("tile/{level}/{}", index_path(index));
    if width < WIDTH {
        path.push_str(&format!(".p/{width}"));
    }
    path
}

/// Every tile that a tree of `size` has, with its expected bytes, for tiles
/// whose index is at least the one that covered `from_size`.
pub fn tiles_between<F>(
    tree: &MemoryTree,
    from_size: u64,
    size: u64,
    mut leaves: F,
) -> Result<Vec<(PathBuf, Vec<u8>)>, Error>
where
    F: FnMut(u64, u64) -> Result<Vec<[u8; LEAF_LEN]>, Error>,
{
    let mut out = Vec::new();
    for level in 0.. {
        let height = level * HEIGHT;
        if height >= 64 {
            break;
        }
        let nodes = size >> height;
        if nodes == 0 {
            break;
        }
        let first = (from_size >> height) / WIDTH;
        for n in first..=((nodes - 1) / WIDTH) {
            let start = n * WIDTH;
            let end = (start + WIDTH).min(nodes);
            let mut data = Vec::with_capacity(((end - start) * 32) as usize);
            for i in start..end {
                let hash = tree.stored(height as usize, i).ok_or_else(|| {
                    Error::Store(format!("node {height}/{i} missing from the tree"))
                })?;
                data.extend_from_slice(&hash);
            }
            out.push((PathBuf::from(tile_path(Some(level), n, end - start)), data));
        }
    }
    if size > 0 {
        for n in (from_size / WIDTH)..=((size - 1) / WIDTH) {
            let start = n * WIDTH;
            let end = (start + WIDTH).min(size);
            let mut bundle = Vec::with_capacity(((end - start) as usize) * (LEAF_LEN + 2));
            for data in leaves(start, end)? {
                bundle.extend_from_slice(&(LEAF_LEN as u16).to_be_bytes());
                bundle.extend_from_slice(&data);
            }
            out.push((PathBuf::from(tile_path(None, n, end - start)), bundle));
        }
    }
    Ok(out)
}

/// Writes tiles from [`tiles_between`] under `dir`.
pub fn write_tile_files(dir: &Path, tiles: Vec<(PathBuf, Vec<u8>)>) -> Result<(), Error> {
    for (path, data) in tiles {
        let path = dir.join(path);
        // Full tiles never change; skip them when present.
        // A full tile never changes, so one already on disk with the right
        // bytes is kept; a torn or altered one is written again.
        if !path.to_string_lossy().contains(".p/")
            && std::fs::read(&path).is_ok_and(|existing| existing == data)
        {
            continue;
        }
        // Written and fsync'd (file and directory) before the checkpoint row
        // that covers it is stored (Ledger::checkpoint_only).
        crate::durable::write_replacing(&path, &data)?;
    }
    Ok(())
}

/// Compares every tile of a tree of `size` leaves with the files on disk.
pub fn check_tiles<F>(
    dir: &Path,
    tree: &MemoryTree,
    size: u64,
    leaves: F,
) -> Result<Vec<String>, Error>
where
    F: FnMut(u64, u64) -> Result<Vec<[u8; LEAF_LEN]>, Error>,
{
    let mut defects = Vec::new();
    for (path, expected) in tiles_between(tree, 0, size, leaves)? {
        match std::fs::read(dir.join(&path)) {
            Ok(actual) if actual == expected => {}
            Ok(_) => defects.push(format!(
                "tile {} differs from the recomputed tree",
                path.display()
            )),
            Err(e) => defects.push(format!("tile {}: {e}", path.display())),
        }
    }
    Ok(defects)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_table() {
        #[rustfmt::skip]
        let cases = [
            (Some(0), 0,       256, "tile/0/000"),
            (Some(0), 5,       17,  "tile/0/005.p/17"),
            (Some(1), 1234067, 256, "tile/1/x001/x234/067"),
            (None,    1000,    256, "tile/entries/x001/000"),
            (None,    999,     3,   "tile/entries/999.p/3"),
        ];
        for (level, index, width, want) in cases {
            assert_eq!(tile_path(level, index, width), want);
        }
    }
}
