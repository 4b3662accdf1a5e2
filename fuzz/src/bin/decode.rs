//! Fuzz target: image sniffing, header checks and decode-to-tensor (`imaging::prepare`), the code that
//! every image of every request goes through, on the decode pool and on the model threads.
//!
//! The input is the image file itself, so a crash found here is a file to send with `curl --data-binary`.
//! The model input is picked by the input's length modulo 4, among the layouts the repository uses plus a
//! float NCHW one, so both resize modes and every `to_tensor` branch are reached.
use mobilenet_fuzz::assert_client_error;
use mobilenet_serve::{
    imaging,
    repository::{InputDtype, InputSpec, Layout, ResizeMode},
};

fn spec(layout: Layout, dtype: InputDtype, side: u32, resize: ResizeMode, mean: f32) -> InputSpec {
    InputSpec {
        name: "input".into(),
        layout,
        dtype,
        height: side,
        width: side,
        mean: [mean; 3],
        std: [127.5; 3],
        resize,
    }
}

fn main() {
    use {InputDtype::*, Layout::*, ResizeMode::*};
    let specs = [
        spec(Nhwc, Uint8, 224, Stretch, 0.0),
        spec(Nhwc, Float32, 257, Stretch, 127.5),
        spec(Nchw, Float32, 224, CenterCrop, 127.5),
        spec(Nhwc, Uint8, 300, CenterCrop, 0.0),
    ];
    // The server's defaults (`--max-image-*`).
    let limits = imaging::ImageLimits::default();
    afl::fuzz!(|data: &[u8]| {
        let _ = imaging::sniff_format(data);
        let spec = &specs[data.len() % specs.len()];
        match imaging::prepare_checked(data, spec, &limits) {
            Ok(prepared) => {
                let (w, h) = (prepared.width, prepared.height);
                assert!(w > 0 && h > 0 && u64::from(w) * u64::from(h) <= limits.max_pixels);
                assert_eq!(prepared.data.len(), 3 * (spec.width * spec.height) as usize);
            }
            Err(error) => assert_client_error(&error),
        }
    });
}
