//! Shared pieces of vic's benches. The criterion benches live in `benches/benches/`;
//! end-to-end measurement scripts (`*.sh`) beside this file; their helpers in
//! `benches/examples/`.
//!
//! | what | run with | measures |
//! |---|---|---|
//! | `benches/simulator.rs` | `cargo bench -p vic-benches --bench simulator` | one container-VM lifecycle on the simulator |
//! | `benches/layer_pipeline.rs` | `cargo bench -p vic-benches --bench layer_pipeline` | layer blob → decompression and diff ID → extraction, MiB/s of tar, per compression |
//! | `endpoint-startup.sh [RUNS]` | `bash benches/endpoint-startup.sh` | vic-endpoint start to first `/_ping` |
//! | `pull-vs-dockerd.sh [RUNS] [MIB]` | `bash benches/pull-vs-dockerd.sh 5 256` | cold `docker pull` through vic and through dockerd, medians and ratio |
//! | `examples/push_big.rs` | `cargo run --release -p vic-benches --example push-big -- ADDR MIB` | (helper) pushes the `big` test image |
