//! The end-to-end suite lives in `tests/`: every test is `#[ignore]` and runs
//! only against a live cluster started by `scripts/e2e.sh` (which passes
//! `--ignored`). This library is empty on purpose; it must never hold
//! fixture values or talk to a cluster on its own.
