//! Per-kind attribute schema shared by the planner and every provider: which attributes force
//! a replacement when they change. Providers may be stricter, never looser.

use crate::Kind;

/// Attributes whose change cannot be applied in place.
pub fn force_new(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Network => &["cidr"],
        Kind::Subnet => &["network", "cidr", "zone"],
        Kind::Firewall => &["network"],
        Kind::Instance => &["image", "image_ref", "subnet", "user_data"],
        Kind::Volume => &["zone", "encrypted", "type", "disk_type"],
    }
}

/// Whether changing `attr` of `kind` forces a replacement. The provider escape hatch and the
/// region are always force-new (they may name anything).
pub fn is_force_new(kind: Kind, attr: &str) -> bool {
    force_new(kind).contains(&attr) || matches!(attr, "local" | "aws" | "gcp" | "azure")
}
