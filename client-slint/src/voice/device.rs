//! Audio devices behind a `cpal::Host`: the system's (ALSA/PulseAudio), PulseAudio
//! explicitly, or a paced fake built on cpal's `custom` host for tests. Everything above
//! this file sees plain f32 interleaved callbacks with the device's rate and channel count.
//!
//! The fake is a real cpal host: the same code path that opens a sound card opens it, and it
//! delivers and consumes samples on its own thread at real-time pace, like hardware.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{
    Data, DeviceDescription, DeviceDescriptionBuilder, DeviceId, Error as CpalError, ErrorKind,
    FrameCount, InputCallbackInfo, InputStreamTimestamp, OutputCallbackInfo, OutputStreamTimestamp,
    SampleFormat, StreamConfig, StreamInstant, SupportedBufferSize, SupportedStreamConfig,
    SupportedStreamConfigRange,
};

/// Why a device could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// No such device (or no device at all).
    #[error("no audio device {0}")]
    NotFound(String),
    /// The device exists but cannot be opened (busy, unplugged, no server).
    #[error("audio device unavailable: {0}")]
    Unavailable(String),
}

impl From<CpalError> for DeviceError {
    fn from(e: CpalError) -> Self {
        DeviceError::Unavailable(e.to_string())
    }
}

/// An open stream; audio flows until it is dropped.
pub struct AudioStream {
    _stream: cpal::Stream,
    /// Device rate.
    pub rate: u32,
    /// Device channels.
    pub channels: u16,
}

impl std::fmt::Debug for AudioStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioStream")
            .field("rate", &self.rate)
            .field("channels", &self.channels)
            .finish()
    }
}

/// Audio devices of one cpal host.
pub struct AudioDevices {
    host: cpal::Host,
}

impl std::fmt::Debug for AudioDevices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioDevices").finish_non_exhaustive()
    }
}

impl AudioDevices {
    /// The system's default host (PulseAudio when a server runs, else ALSA).
    pub fn system() -> Self {
        Self {
            host: cpal::default_host(),
        }
    }

    /// PulseAudio explicitly.
    pub fn pulseaudio() -> Result<Self, DeviceError> {
        Ok(Self {
            host: cpal::host_from_id(cpal::HostId::PulseAudio)?,
        })
    }

    /// Any host (tests pass the fake).
    pub fn with_host(host: cpal::Host) -> Self {
        Self { host }
    }

    /// Input device names, default first.
    pub fn input_names(&self) -> Vec<String> {
        let default = self
            .host
            .default_input_device()
            .and_then(|d| device_name(&d));
        let mut names: Vec<String> = self
            .host
            .input_devices()
            .map(|it| it.filter_map(|d| device_name(&d)).collect())
            .unwrap_or_default();
        sort_default_first(&mut names, default);
        names
    }

    /// Output device names, default first.
    pub fn output_names(&self) -> Vec<String> {
        let default = self
            .host
            .default_output_device()
            .and_then(|d| device_name(&d));
        let mut names: Vec<String> = self
            .host
            .output_devices()
            .map(|it| it.filter_map(|d| device_name(&d)).collect())
            .unwrap_or_default();
        sort_default_first(&mut names, default);
        names
    }

    fn find_input(&self, name: Option<&str>) -> Result<cpal::Device, DeviceError> {
        match name {
            None => self
                .host
                .default_input_device()
                .ok_or_else(|| DeviceError::NotFound("(default input)".into())),
            Some(n) => self
                .host
                .input_devices()?
                .find(|d| device_name(d).as_deref() == Some(n))
                .ok_or_else(|| DeviceError::NotFound(n.to_string())),
        }
    }

    fn find_output(&self, name: Option<&str>) -> Result<cpal::Device, DeviceError> {
        match name {
            None => self
                .host
                .default_output_device()
                .ok_or_else(|| DeviceError::NotFound("(default output)".into())),
            Some(n) => self
                .host
                .output_devices()?
                .find(|d| device_name(d).as_deref() == Some(n))
                .ok_or_else(|| DeviceError::NotFound(n.to_string())),
        }
    }

    /// Open an input; `on_data(samples, rate, channels)` runs on the audio thread.
    pub fn open_input<F>(
        &self,
        name: Option<&str>,
        mut on_data: F,
    ) -> Result<AudioStream, DeviceError>
    where
        F: FnMut(&[f32], u32, u16) + Send + 'static,
    {
        let device = self.find_input(name)?;
        let supported = device.default_input_config()?;
        let config: StreamConfig = supported.config();
        let (rate, channels) = (config.sample_rate, config.channels);
        let on_error = |e: CpalError| tracing::warn!("input stream error: {e}");
        let stream = match supported.sample_format() {
            SampleFormat::F32 => device.build_input_stream::<f32, _, _>(
                config,
                move |d, _| on_data(d, rate, channels),
                on_error,
                None,
            )?,
            SampleFormat::I16 => {
                let mut buf = Vec::new();
                device.build_input_stream::<i16, _, _>(
                    config,
                    move |d, _| {
                        buf.clear();
                        buf.extend(d.iter().map(|s| f32::from(*s) / 32_768.0));
                        on_data(&buf, rate, channels)
                    },
                    on_error,
                    None,
                )?
            }
            other => {
                return Err(DeviceError::Unavailable(format!(
                    "unsupported sample format {other:?}"
                )))
            }
        };
        stream.play()?;
        Ok(AudioStream {
            _stream: stream,
            rate,
            channels,
        })
    }

    /// Open an output; `fill(buffer, rate, channels)` runs on the audio thread.
    pub fn open_output<F>(
        &self,
        name: Option<&str>,
        mut fill: F,
    ) -> Result<AudioStream, DeviceError>
    where
        F: FnMut(&mut [f32], u32, u16) + Send + 'static,
    {
        let device = self.find_output(name)?;
        let supported = device.default_output_config()?;
        let config: StreamConfig = supported.config();
        let (rate, channels) = (config.sample_rate, config.channels);
        let on_error = |e: CpalError| tracing::warn!("output stream error: {e}");
        let stream = match supported.sample_format() {
            SampleFormat::F32 => device.build_output_stream::<f32, _, _>(
                config,
                move |d, _| fill(d, rate, channels),
                on_error,
                None,
            )?,
            SampleFormat::I16 => {
                let mut buf = Vec::new();
                device.build_output_stream::<i16, _, _>(
                    config,
                    move |d: &mut [i16], _| {
                        buf.resize(d.len(), 0.0);
                        fill(&mut buf, rate, channels);
                        for (o, s) in d.iter_mut().zip(&buf) {
                            *o = (s.clamp(-1.0, 1.0) * 32_767.0) as i16;
                        }
                    },
                    on_error,
                    None,
                )?
            }
            other => {
                return Err(DeviceError::Unavailable(format!(
                    "unsupported sample format {other:?}"
                )))
            }
        };
        stream.play()?;
        Ok(AudioStream {
            _stream: stream,
            rate,
            channels,
        })
    }
}

fn device_name(d: &cpal::Device) -> Option<String> {
    d.description().ok().map(|desc| desc.name().to_string())
}

fn sort_default_first(names: &mut Vec<String>, default: Option<String>) {
    names.dedup();
    if let Some(default) = default {
        if let Some(i) = names.iter().position(|n| *n == default) {
            let d = names.remove(i);
            names.insert(0, d);
        }
    }
}

// --- the paced fake ---------------------------------------------------------------------------

/// Samples waiting to be "captured" by the fake microphone, and what the fake speaker played.
#[derive(Debug, Default)]
struct FakeBuffers {
    mic: VecDeque<f32>,
    speaker: Vec<f32>,
}

/// A paced fake sound card (48 kHz mono f32, 10 ms periods) as a cpal custom host. Clone it
/// to keep a handle for feeding the microphone and reading what was played.
#[derive(Clone, Debug)]
pub struct FakeSoundCard {
    name: String,
    rate: u32,
    period: FrameCount,
    buffers: Arc<Mutex<FakeBuffers>>,
}

impl FakeSoundCard {
    /// A card named `name` at 48 kHz with 10 ms periods.
    pub fn new(name: &str) -> Self {
        Self::with_format(name, 48_000, 480)
    }

    /// A card with another rate / period (to exercise resampling).
    pub fn with_format(name: &str, rate: u32, period: FrameCount) -> Self {
        Self {
            name: name.to_string(),
            rate,
            period,
            buffers: Arc::new(Mutex::new(FakeBuffers::default())),
        }
    }

    /// A cpal host whose only device is this card.
    pub fn host(&self) -> cpal::Host {
        cpal::Host::from(cpal::platform::CustomHost::from_host(FakeHost {
            card: self.clone(),
        }))
    }

    /// Queue samples for the microphone (silence is captured when the queue is empty).
    pub fn speak_into_mic(&self, samples: &[f32]) {
        if let Ok(mut b) = self.buffers.lock() {
            b.mic.extend(samples.iter().copied());
        }
    }

    /// Samples not yet captured.
    pub fn mic_pending(&self) -> usize {
        self.buffers.lock().map(|b| b.mic.len()).unwrap_or(0)
    }

    /// Take everything the speaker played so far.
    pub fn take_played(&self) -> Vec<f32> {
        self.buffers
            .lock()
            .map(|mut b| std::mem::take(&mut b.speaker))
            .unwrap_or_default()
    }
}

// cpal devices are compared and hashed by identity; the card's name is its identity.
impl PartialEq for FakeSoundCard {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for FakeSoundCard {}

impl std::hash::Hash for FakeSoundCard {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl std::fmt::Display for FakeSoundCard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

#[derive(Clone)]
struct FakeHost {
    card: FakeSoundCard,
}

impl HostTrait for FakeHost {
    type Device = FakeSoundCard;
    type Devices = std::iter::Once<FakeSoundCard>;

    fn is_available() -> bool {
        true
    }

    fn devices(&self) -> Result<Self::Devices, CpalError> {
        Ok(std::iter::once(self.card.clone()))
    }

    fn default_input_device(&self) -> Option<Self::Device> {
        Some(self.card.clone())
    }

    fn default_output_device(&self) -> Option<Self::Device> {
        Some(self.card.clone())
    }
}

impl FakeSoundCard {
    fn supported(&self) -> SupportedStreamConfig {
        SupportedStreamConfig::new(
            1,
            self.rate,
            SupportedBufferSize::Range {
                min: self.period,
                max: self.period,
            },
            SampleFormat::F32,
        )
    }

    fn range(&self) -> SupportedStreamConfigRange {
        SupportedStreamConfigRange::new(
            1,
            self.rate,
            self.rate,
            SupportedBufferSize::Range {
                min: self.period,
                max: self.period,
            },
            SampleFormat::F32,
        )
    }

    /// Run `tick` every period on a thread, at absolute deadlines so pacing never drifts.
    fn paced(
        &self,
        mut tick: impl FnMut(&mut [f32], StreamInstant) + Send + 'static,
    ) -> FakeStream {
        let running = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let period = Duration::from_secs_f64(f64::from(self.period) / f64::from(self.rate));
        let frames = self.period as usize;
        let start = Instant::now();
        let (run, halt) = (running.clone(), stop.clone());
        let handle = std::thread::Builder::new()
            .name("fake-sound-card".into())
            .spawn(move || {
                let mut buffer = vec![0.0f32; frames];
                let mut deadline = Instant::now();
                while !halt.load(Ordering::Relaxed) {
                    deadline += period;
                    let now = Instant::now();
                    if deadline > now {
                        std::thread::sleep(deadline - now);
                    } else if now - deadline > period * 10 {
                        // Hopelessly late (a stopped debugger, a loaded CI box): resync.
                        deadline = now;
                    }
                    if !run.load(Ordering::Relaxed) {
                        continue;
                    }
                    let elapsed = start.elapsed();
                    tick(
                        &mut buffer,
                        StreamInstant::new(elapsed.as_secs(), elapsed.subsec_nanos()),
                    );
                }
            })
            .ok();
        FakeStream {
            running,
            stop,
            handle,
            start,
            period: self.period,
        }
    }
}

impl DeviceTrait for FakeSoundCard {
    type SupportedInputConfigs = std::iter::Once<SupportedStreamConfigRange>;
    type SupportedOutputConfigs = std::iter::Once<SupportedStreamConfigRange>;
    type Stream = FakeStream;

    fn description(&self) -> Result<DeviceDescription, CpalError> {
        Ok(DeviceDescriptionBuilder::new(self.name.clone()).build())
    }

    fn id(&self) -> Result<DeviceId, CpalError> {
        Ok(DeviceId::new(cpal::HostId::Custom, &self.name))
    }

    fn supported_input_configs(&self) -> Result<Self::SupportedInputConfigs, CpalError> {
        Ok(std::iter::once(self.range()))
    }

    fn supported_output_configs(&self) -> Result<Self::SupportedOutputConfigs, CpalError> {
        Ok(std::iter::once(self.range()))
    }

    fn default_input_config(&self) -> Result<SupportedStreamConfig, CpalError> {
        Ok(self.supported())
    }

    fn default_output_config(&self) -> Result<SupportedStreamConfig, CpalError> {
        Ok(self.supported())
    }

    fn build_input_stream_raw<D, E>(
        &self,
        config: StreamConfig,
        format: SampleFormat,
        mut data_callback: D,
        _error_callback: E,
        _timeout: Option<Duration>,
    ) -> Result<Self::Stream, CpalError>
    where
        D: FnMut(&Data, &InputCallbackInfo) + Send + 'static,
        E: FnMut(CpalError) + Send + 'static,
    {
        if format != SampleFormat::F32 || config.channels != 1 || config.sample_rate != self.rate {
            return Err(CpalError::new(ErrorKind::UnsupportedConfig));
        }
        let buffers = self.buffers.clone();
        Ok(self.paced(move |buf, at| {
            if let Ok(mut b) = buffers.lock() {
                for s in buf.iter_mut() {
                    *s = b.mic.pop_front().unwrap_or(0.0);
                }
            }
            // SAFETY: `buf` is a live, exclusively borrowed f32 slice of `buf.len()` samples.
            let data =
                unsafe { Data::from_parts(buf.as_mut_ptr().cast(), buf.len(), SampleFormat::F32) };
            data_callback(
                &data,
                &InputCallbackInfo::new(InputStreamTimestamp {
                    callback: at,
                    capture: at,
                }),
            );
        }))
    }

    fn build_output_stream_raw<D, E>(
        &self,
        config: StreamConfig,
        format: SampleFormat,
        mut data_callback: D,
        _error_callback: E,
        _timeout: Option<Duration>,
    ) -> Result<Self::Stream, CpalError>
    where
        D: FnMut(&mut Data, &OutputCallbackInfo) + Send + 'static,
        E: FnMut(CpalError) + Send + 'static,
    {
        if format != SampleFormat::F32 || config.channels != 1 || config.sample_rate != self.rate {
            return Err(CpalError::new(ErrorKind::UnsupportedConfig));
        }
        let buffers = self.buffers.clone();
        Ok(self.paced(move |buf, at| {
            buf.fill(0.0);
            // SAFETY: as above.
            let mut data =
                unsafe { Data::from_parts(buf.as_mut_ptr().cast(), buf.len(), SampleFormat::F32) };
            data_callback(
                &mut data,
                &OutputCallbackInfo::new(OutputStreamTimestamp {
                    callback: at,
                    playback: at,
                }),
            );
            if let Ok(mut b) = buffers.lock() {
                b.speaker.extend_from_slice(buf);
            }
        }))
    }
}

/// The fake's stream: a pacing thread, stopped and joined on drop.
pub struct FakeStream {
    running: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
    start: Instant,
    period: FrameCount,
}

impl StreamTrait for FakeStream {
    fn play(&self) -> Result<(), CpalError> {
        self.running.store(true, Ordering::Relaxed);
        Ok(())
    }

    fn pause(&self) -> Result<(), CpalError> {
        self.running.store(false, Ordering::Relaxed);
        Ok(())
    }

    fn now(&self) -> StreamInstant {
        let e = self.start.elapsed();
        StreamInstant::new(e.as_secs(), e.subsec_nanos())
    }

    fn buffer_size(&self) -> Result<FrameCount, CpalError> {
        Ok(self.period)
    }
}

impl Drop for FakeStream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
