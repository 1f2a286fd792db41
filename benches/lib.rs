//! Shared pieces of vic's benches. The criterion benches live in `benches/benches/`;
//! end-to-end measurement scripts (`*.sh`) beside this file.
