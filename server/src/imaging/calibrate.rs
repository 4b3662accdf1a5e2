//! A start-up measurement of how fast this machine prepares a photo, so that `model=auto` predicts decoding
//! sensibly before the first real image arrives (it then learns from the images it serves).
use std::time::{Duration, Instant};

use super::{ImageLimits, inspect, prepare};
use crate::{
    error::{Error, Result},
    repository::InputSpec,
};

const WIDTH: usize = 1280;
const HEIGHT: usize = 720;
const ROUNDS: usize = 3;

/// One image's preparation time, with its compressed size and pixel count.
#[derive(Debug, Clone, Copy)]
pub struct DecodeSample {
    pub bytes: usize,
    pub pixels: u64,
    pub took: Duration,
}

/// Encodes a 1280x720 photo-like JPEG (smooth gradients under fine noise, which is what makes entropy decoding
/// cost what it costs on a photo), prepares it for `spec` three times, and gives its size and the fastest time
/// (the others carry start-up noise: page faults, cold caches).
pub fn decode_sample(spec: &InputSpec, limits: &ImageLimits) -> Result<DecodeSample> {
    let jpeg = sample_jpeg()?;
    let inspection = inspect(&jpeg, spec, limits)?;
    let mut fastest = Duration::MAX;
    for _ in 0..ROUNDS {
        let started = Instant::now();
        prepare(&jpeg, &inspection, spec)?;
        fastest = fastest.min(started.elapsed());
    }
    Ok(DecodeSample {
        bytes: jpeg.len(),
        pixels: inspection.header.pixels(),
        took: fastest,
    })
}

fn sample_jpeg() -> Result<Vec<u8>> {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut noise = move || {
        // xorshift64: deterministic noise, no dependency.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % 24) as i32 - 12
    };
    let mut pixels = Vec::with_capacity(WIDTH * HEIGHT * 3);
    for y in 0..HEIGHT {
        for x in 0..WIDTH {
            let base = [
                x * 255 / WIDTH,
                y * 255 / HEIGHT,
                (x + y) * 255 / (WIDTH + HEIGHT),
            ];
            pixels.extend(base.map(|v| (v as i32 + noise()).clamp(0, 255) as u8));
        }
    }
    let image = turbojpeg::Image {
        pixels: pixels.as_slice(),
        width: WIDTH,
        pitch: WIDTH * 3,
        height: HEIGHT,
        format: turbojpeg::PixelFormat::RGB,
    };
    turbojpeg::compress(image, 90, turbojpeg::Subsamp::Sub2x2)
        .map(|buf| buf.to_vec())
        .map_err(Error::internal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repository::{InputDtype, Layout, ResizeMode};

    #[test]
    fn the_sample_decodes_and_is_timed() {
        let spec = InputSpec {
            name: "x".into(),
            layout: Layout::Nhwc,
            dtype: InputDtype::Uint8,
            height: 224,
            width: 224,
            mean: [0.0; 3],
            std: [1.0; 3],
            resize: ResizeMode::Stretch,
        };
        let sample = decode_sample(&spec, &ImageLimits::default()).unwrap();
        assert_eq!(sample.pixels, (WIDTH * HEIGHT) as u64);
        assert!(
            sample.took > Duration::ZERO && sample.took < Duration::from_secs(5),
            "{sample:?}"
        );
        assert_eq!(sample.bytes, sample_jpeg().unwrap().len());
        assert!(sample.bytes > 100_000, "noise makes a photo-sized file");
    }
}
