//! Fuzz target: query-option parsing. The input is a query string (without the `?`), read for each of the
//! three endpoints by `http::extract::options`, the function the handlers call: `QueryOptions::parse` with
//! the endpoint's keys, then `options::{selector, classify, detect}` and the mask format.
use mobilenet_fuzz::{assert_client_error, assert_valid};
use mobilenet_serve::{http::extract, repository::Task};

fn main() {
    afl::fuzz!(|data: &[u8]| {
        // axum hands handlers the query as &str; percent-escapes inside it may still decode to any bytes.
        let Ok(query) = std::str::from_utf8(data) else {
            return;
        };
        for task in [Task::Classification, Task::Detection, Task::Segmentation] {
            match extract::options(task, Some(query)) {
                Ok(options) => assert_valid(task, &options),
                Err(error) => assert_client_error(&error),
            }
        }
    });
}
