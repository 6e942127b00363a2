//! Synthetic returns for the demo and tests (to be written).
