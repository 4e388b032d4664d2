//! Haven desktop client (Slint UI over a UI-free core).
//!
//! Not built yet: this crate is a placeholder in the workspace layout until its issue lands.
