//! Signaling service: Supabase JWT verification, RLS-authorized voice joins, SFU placement, live events.
//!
//! Not built yet: this crate is a placeholder in the workspace layout until its issue lands.
