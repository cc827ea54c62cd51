//! The crash-safe write-ahead journal (redb). On-disk format: `journal-format.md`.
