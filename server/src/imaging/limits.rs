//! The per-image limits, checked from the header and the cost estimate before anything is decoded. Each has
//! its own error kind, so a client learns which limit it hit and an operator which flag to raise.
use super::header::Header;
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImageLimits {
    /// Largest width x height (`--max-image-pixels`).
    pub max_pixels: u64,
    /// Largest width or height (`--max-image-side`).
    pub max_side: u32,
    /// Largest ratio of the longer side to the shorter (`--max-image-aspect-ratio`).
    pub max_aspect_ratio: u32,
    /// Largest estimated decode + resize memory (`--max-image-memory-mib`, capped by the decode budget).
    pub max_memory_bytes: u64,
    /// Not a limit but how far a JPEG is decoded (`--jpeg-scaled-decode`): at the strongest IDCT reduction
    /// that covers the model's input, or in full. Here because it travels with the limits to every decode
    /// site.
    pub scaled_jpeg_decode: bool,
}

impl Default for ImageLimits {
    /// The server's defaults (see `config`).
    fn default() -> ImageLimits {
        ImageLimits {
            max_pixels: 40_000_000,
            max_side: 32_768,
            max_aspect_ratio: 32,
            max_memory_bytes: 512 << 20,
            scaled_jpeg_decode: true,
        }
    }
}

impl ImageLimits {
    /// Refuses the shape first (it is what a client can fix most easily), then the memory estimate.
    pub fn check(&self, header: &Header, memory_bytes: u64) -> Result<()> {
        let pixels = header.pixels();
        if pixels > self.max_pixels {
            return Err(Error::ImageTooLarge {
                pixels,
                limit: self.max_pixels,
            });
        }
        let (long, short) = (
            header.width.max(header.height),
            header.width.min(header.height),
        );
        if long > self.max_side {
            return Err(Error::ImageShape(format!(
                "a side of {long} pixels is over the limit of {}",
                self.max_side
            )));
        }
        // Integer comparison: long / short > max  <=>  long > max * short.
        if u64::from(long) > u64::from(self.max_aspect_ratio) * u64::from(short) {
            return Err(Error::ImageShape(format!(
                "an aspect ratio of {long}x{short} is over the limit of {}:1",
                self.max_aspect_ratio
            )));
        }
        if memory_bytes > self.max_memory_bytes {
            return Err(Error::ImageMemory {
                bytes: Some(memory_bytes),
                limit: self.max_memory_bytes,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imaging::header::{Details, ImageFormat};

    fn header(width: u32, height: u32) -> Header {
        Header {
            format: ImageFormat::Bmp,
            width,
            height,
            details: Details::Bmp { bits_per_pixel: 24 },
        }
    }

    #[test]
    fn each_limit_has_its_error() {
        let limits = ImageLimits {
            max_pixels: 1000,
            max_side: 100,
            max_aspect_ratio: 4,
            max_memory_bytes: 5000,
            scaled_jpeg_decode: false,
        };
        assert!(limits.check(&header(40, 10), 5000).is_ok());
        assert!(matches!(
            limits.check(&header(40, 40), 0),
            Err(Error::ImageTooLarge { pixels: 1600, .. })
        ));
        assert!(
            matches!(limits.check(&header(101, 5), 0), Err(Error::ImageShape(m)) if m.contains("side"))
        );
        assert!(
            matches!(limits.check(&header(41, 10), 0), Err(Error::ImageShape(m)) if m.contains("aspect"))
        );
        assert!(matches!(
            limits.check(&header(10, 41), 0),
            Err(Error::ImageShape(_))
        ));
        assert!(matches!(
            limits.check(&header(10, 10), 5001),
            Err(Error::ImageMemory {
                bytes: Some(5001),
                limit: 5000
            })
        ));
    }
}
