//! Japanese text normalization (issue 5; not built yet).
