//! One real audio backend: a private PulseAudio daemon with a null sink (no sound card
//! needed), opened through cpal's PulseAudio host by the same `AudioDevices` code the app
//! uses. Proves a real stream opens and moves samples: a tone played into the null sink
//! comes back on its monitor source.
//!
//! Skipped (with a message) when the `pulseaudio` binary is not installed.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use haven_client::voice::device::AudioDevices;

struct Daemon {
    child: Child,
    dir: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_pulseaudio() -> Option<Daemon> {
    let dir = std::env::temp_dir().join(format!("haven-pulse-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).ok()?;
    }
    let child = Command::new("pulseaudio")
        .args([
            "-n",
            "--daemonize=no",
            "--exit-idle-time=-1",
            "--disallow-exit",
            // Anonymous auth: the client need not find the daemon's cookie under its HOME.
            "--load=module-native-protocol-unix auth-anonymous=1",
            "--load=module-null-sink sink_name=nullsink rate=48000",
        ])
        .env("XDG_RUNTIME_DIR", &dir)
        .env("HOME", &dir)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("daemon.log")).ok()?)
        .spawn()
        .ok()?;
    let daemon = Daemon {
        child,
        dir: dir.clone(),
    };
    let socket = dir.join("pulse/native");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(daemon)
}

#[test]
fn a_pulseaudio_null_sink_stream_opens_and_moves_samples() {
    if Command::new("pulseaudio")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: pulseaudio is not installed (apt-get install pulseaudio)");
        return;
    }
    let daemon = start_pulseaudio().expect("pulseaudio daemon started");
    // The client always sends a 256-byte cookie in its AUTH; one of any other length (none
    // found: a fresh machine has no ~/.config/pulse/cookie) is a protocol error to the
    // daemon. Anonymous auth accepts any cookie, so hand the client one of our own.
    let cookie = daemon.dir.join("client-cookie");
    std::fs::write(&cookie, [0x5au8; 256]).expect("cookie written");
    // This test binary has only this test, so setting the process environment is safe.
    std::env::set_var("PULSE_COOKIE", &cookie);
    std::env::set_var("XDG_RUNTIME_DIR", &daemon.dir);
    std::env::set_var(
        "PULSE_SERVER",
        format!("unix:{}", daemon.dir.join("pulse/native").display()),
    );

    // The socket exists a moment before the daemon finishes starting up: retry briefly.
    let deadline = Instant::now() + Duration::from_secs(5);
    let devices = loop {
        match AudioDevices::pulseaudio() {
            Ok(d) => break d,
            Err(e) if Instant::now() < deadline => {
                eprintln!("pulse not ready yet: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("cpal PulseAudio host: {e}"),
        }
    };
    let outputs = devices.output_names();
    let inputs = devices.input_names();
    println!("pulse outputs {outputs:?}, inputs {inputs:?}");
    assert!(!outputs.is_empty() && !inputs.is_empty());

    let played = Arc::new(Mutex::new(0usize));
    let counter = played.clone();
    let mut phase = 0.0f32;
    let output = devices
        .open_output(None, move |out, rate, channels| {
            let step = 440.0 * 2.0 * std::f32::consts::PI / rate as f32;
            for frame in out.chunks_mut(usize::from(channels)) {
                phase = (phase + step) % (2.0 * std::f32::consts::PI);
                frame.fill(phase.sin() * 0.5);
            }
            if let Ok(mut n) = counter.lock() {
                *n += out.len() / usize::from(channels);
            }
        })
        .expect("output stream opens on the null sink");
    let monitor = inputs.iter().find(|n| n.contains("onitor")).cloned();
    let captured = Arc::new(Mutex::new(Vec::<f32>::new()));
    let sink = captured.clone();
    let input = devices
        .open_input(monitor.as_deref(), move |samples, _rate, _channels| {
            if let Ok(mut c) = sink.lock() {
                c.extend_from_slice(samples);
            }
        })
        .expect("input stream opens on the monitor");
    std::thread::sleep(Duration::from_millis(1500));
    drop(input);
    drop(output);
    let played = *played.lock().unwrap();
    let captured = captured.lock().unwrap();
    let energy = captured.iter().map(|s| s * s).sum::<f32>() / captured.len().max(1) as f32;
    println!(
        "pulse: played {played} frames, captured {} samples, mean power {energy:.4}",
        captured.len()
    );
    assert!(played > 24_000, "the null sink consumed samples ({played})");
    assert!(
        captured.len() > 10_000,
        "the monitor produced samples ({})",
        captured.len()
    );
    assert!(
        energy > 0.01,
        "the tone came back through the monitor (power {energy})"
    );
}
