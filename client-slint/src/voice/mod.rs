//! Voice: the call model the UI shows (roster, speaking, mute/deafen/PTT), the sans-IO
//! audio engine, the str0m media connection, and audio devices.

pub mod call;
pub mod denoise;
pub mod device;
pub mod engine;
pub mod jitter;
pub mod level;
pub mod media;
pub mod mixer;
pub mod resample;
pub mod runner;
pub mod session;
pub mod speaking;
pub mod speech;
pub mod state;

pub use call::{CallEvent, VoiceCall};
pub use engine::{EncodedFrame, EngineConfig, VoiceEngine};
pub use state::{InputMode, Participant, VoicePhase, VoiceState};
