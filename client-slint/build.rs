//! Compiles the Slint UI (ui/app.slint) into Rust. Debug info is always on so the testing
//! backend can find elements by id in UI tests; the dark Fluent style matches our theme.

fn main() {
    let config = slint_build::CompilerConfiguration::new()
        .with_style("fluent-dark".into())
        .with_debug_info(true);
    if let Err(e) = slint_build::compile_with_config("ui/app.slint", config) {
        eprintln!("slint compile error: {e}");
        std::process::exit(1);
    }
}
