//! The GCP provider on google-cloud-compute-v1 (issue #17; being written).
