//! The Slint UI layer: the compiled components (ui/*.slint), the view model that feeds them
//! ([`view`]), the controller that runs core operations for the callbacks ([`controller`]),
//! and a headless software-rendering platform for screenshots ([`headless`]).

slint::include_modules!();

pub mod controller;
pub mod headless;
pub mod view;
