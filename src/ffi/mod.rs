//! Placeholder: filled by the C ABI work.
