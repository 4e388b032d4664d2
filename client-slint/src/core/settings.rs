//! The user's client preferences (devices, input mode, push-to-talk key, noise suppression,
//! per-user volumes), kept in `settings.json` next to the session file. A missing or broken
//! file means defaults: preferences must never block starting the app.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::core::error::CoreError;

/// Preferences.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Input device name (`None`: the system default).
    pub input_device: Option<String>,
    /// Output device name (`None`: the system default).
    pub output_device: Option<String>,
    /// Push-to-talk instead of voice activity.
    pub push_to_talk: bool,
    /// The push-to-talk key, as the key's text (" " is Space).
    pub ptt_key: String,
    /// Noise suppression on the microphone.
    pub noise_suppression: bool,
    /// Per-user playback volume (1.0 = 100 %).
    pub volumes: HashMap<Uuid, f32>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            input_device: None,
            output_device: None,
            push_to_talk: false,
            ptt_key: "`".into(),
            noise_suppression: true,
            volumes: HashMap::new(),
        }
    }
}

impl Settings {
    fn path(config_dir: &Path) -> PathBuf {
        config_dir.join("settings.json")
    }

    /// Load from `config_dir`, defaults when absent or unreadable.
    pub fn load(config_dir: &Path) -> Self {
        std::fs::read(Self::path(config_dir))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Save to `config_dir`.
    pub fn save(&self, config_dir: &Path) -> Result<(), CoreError> {
        let path = Self::path(config_dir);
        let err = |e: &dyn std::fmt::Display| CoreError::SessionFile {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        std::fs::create_dir_all(config_dir).map_err(|e| err(&e))?;
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| err(&e))?;
        std::fs::write(&path, bytes).map_err(|e| err(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_and_survive_garbage() {
        let dir = std::env::temp_dir().join(format!("haven-settings-{}", Uuid::new_v4()));
        assert_eq!(Settings::load(&dir), Settings::default());
        let mut s = Settings {
            push_to_talk: true,
            ptt_key: " ".into(),
            ..Settings::default()
        };
        s.volumes.insert(Uuid::nil(), 1.5);
        s.save(&dir).unwrap();
        assert_eq!(Settings::load(&dir), s);
        std::fs::write(dir.join("settings.json"), b"[1,2").unwrap();
        assert_eq!(Settings::load(&dir), Settings::default());
        std::fs::remove_dir_all(dir).ok();
    }
}
