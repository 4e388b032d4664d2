//! Rendering the real UI without a display: a Slint platform backed by a
//! `MinimalSoftwareWindow` and the software renderer. Used for the README screenshots (and
//! anywhere a picture of the UI is wanted on a machine without X or Wayland).
//!
//! A Slint platform can be installed once per process, so a process that uses this cannot
//! also open real windows.

use std::rc::Rc;
use std::time::{Duration, Instant};

use slint::platform::software_renderer::{MinimalSoftwareWindow, RepaintBufferType};
use slint::platform::{Platform, WindowAdapter, WindowEvent};
use slint::PlatformError;
use slint::Rgb8Pixel;

struct HeadlessPlatform {
    window: Rc<MinimalSoftwareWindow>,
    start: Instant,
}

impl Platform for HeadlessPlatform {
    fn create_window_adapter(&self) -> Result<Rc<dyn WindowAdapter>, PlatformError> {
        Ok(self.window.clone())
    }

    fn duration_since_start(&self) -> Duration {
        self.start.elapsed()
    }
}

/// The headless window every component created afterwards renders into.
pub struct HeadlessWindow {
    window: Rc<MinimalSoftwareWindow>,
}

/// Why headless rendering could not start.
#[derive(Debug, thiserror::Error)]
#[error("could not install the headless Slint platform: {0}")]
pub struct HeadlessError(String);

impl HeadlessWindow {
    /// Install the headless platform for this process.
    pub fn install() -> Result<Self, HeadlessError> {
        let window = MinimalSoftwareWindow::new(RepaintBufferType::NewBuffer);
        slint::platform::set_platform(Box::new(HeadlessPlatform {
            window: window.clone(),
            start: Instant::now(),
        }))
        .map_err(|e| HeadlessError(e.to_string()))?;
        Ok(Self { window })
    }

    /// Render the current frame at `width`×`height` logical pixels and `scale` (1.0 = 100 %),
    /// returning RGB pixels of the physical size.
    pub fn render(&self, width: u32, height: u32, scale: f32) -> (u32, u32, Vec<Rgb8Pixel>) {
        let (pw, ph) = (
            (width as f32 * scale) as u32,
            (height as f32 * scale) as u32,
        );
        self.window.dispatch_event(WindowEvent::ScaleFactorChanged {
            scale_factor: scale,
        });
        self.window.set_size(slint::PhysicalSize::new(pw, ph));
        let mut buffer = vec![Rgb8Pixel::default(); (pw * ph) as usize];
        // Layout and text measurement settle over a couple of frames.
        for _ in 0..3 {
            slint::platform::update_timers_and_animations();
            self.window.request_redraw();
            self.window.draw_if_needed(|renderer| {
                renderer.render(&mut buffer, pw as usize);
            });
        }
        (pw, ph, buffer)
    }
}
