//! The Azure provider on the ARM REST API (issue #18; being written).
