//! Voice-room load harness.
//!
//! Not built yet: this crate is a placeholder in the workspace layout until its issue lands.
