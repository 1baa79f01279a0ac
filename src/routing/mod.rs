//! The routing engine: model references, catalog, CEL environment, strategies → Plan.
