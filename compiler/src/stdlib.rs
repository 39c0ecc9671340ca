//! The embedded Nickel stdlib (`stdlib/*.ncl`), registered in memory under a virtual directory
//! so that `import "chimera.ncl"` works with no file on disk.

/// The virtual directory the stdlib lives in. Absolute, so Nickel's path normalisation keeps it
/// as is; the `%` signs keep it from colliding with a real directory.
pub const VIRTUAL_DIR: &str = "/%chimera-stdlib%";

/// How stdlib files are named in diagnostics.
pub const DISPLAY_PREFIX: &str = "<stdlib>";

/// Version of the stdlib's schemas and catalog; part of every cache key.
pub const VERSION: &str = "0.1.0";

pub const FILES: &[(&str, &str)] = &[
    ("chimera.ncl", include_str!("../../stdlib/chimera.ncl")),
    ("catalog.ncl", include_str!("../../stdlib/catalog.ncl")),
];

pub fn virtual_path(file: &str) -> String {
    format!("{VIRTUAL_DIR}/{file}")
}

/// The display name of a source file, shortening the stdlib's virtual paths.
pub fn display_name(name: &str) -> String {
    match name.strip_prefix(VIRTUAL_DIR) {
        Some(rest) => format!("{DISPLAY_PREFIX}{rest}"),
        None => name.to_string(),
    }
}

/// A digest of the embedded stdlib sources and the price catalog (`stdlib/prices.json`: a price
/// change can move a `'cheapest` placement and changes every `monthly_cost`), for cache keys.
pub fn digest() -> String {
    let mut h = blake3::Hasher::new();
    h.update(VERSION.as_bytes());
    let prices = ("prices.json", crate::prices::JSON);
    for (name, text) in FILES.iter().chain([&prices]) {
        h.update(name.as_bytes());
        h.update(&(text.len() as u64).to_le_bytes());
        h.update(text.as_bytes());
    }
    h.finalize().to_hex().to_string()
}
