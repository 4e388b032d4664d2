//! Haven's signaling service: verifies Supabase access tokens, authorizes voice joins
//! through row-level-security RPCs as the user, places rooms on SFU nodes and fans out
//! live events. Work in progress (issue 4): only token verification exists so far.

pub mod jwt;
