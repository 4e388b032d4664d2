//! SFU media node: selective forwarding of Opus RTP with str0m.
//!
//! Not built yet: this crate is a placeholder in the workspace layout until its issue lands.
