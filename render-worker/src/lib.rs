//! render-worker's code that is not the process: what the fuzz targets
//! exercise as render-worker runs it.

pub mod framing;
