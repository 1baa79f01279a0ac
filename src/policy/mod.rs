//! What users write: types, span-aware loading, ${…} interpolation, structural checks.
