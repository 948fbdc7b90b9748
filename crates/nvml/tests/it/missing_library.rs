//! Without a usable libnvidia-ml, the backend says so clearly (runs everywhere: the paths
//! are chosen so that loading fails on a GPU machine too).

use flinch_core::ErrorKind;
use flinch_nvml::{NvmlBackend, NvmlConfig};
use std::path::PathBuf;

#[test]
fn a_missing_library_path_is_not_available_and_says_what_to_do() {
    let e = NvmlBackend::open(NvmlConfig {
        lib_path: Some(PathBuf::from("/nonexistent/libnvidia-ml.so.1")),
        ..Default::default()
    })
    .err()
    .expect("loading a missing file fails");
    assert_eq!(e.kind, ErrorKind::NotAvailable);
    assert!(
        e.message.contains("--nvml-lib") && e.message.contains("no such file"),
        "{}",
        e.message
    );
}

#[test]
fn a_library_without_nvml_symbols_is_not_available() {
    // A real shared library that is not NVML.
    let libc = [
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        "/lib64/libc.so.6",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .expect("libc.so.6 is present on any glibc Linux");
    let e = NvmlBackend::open(NvmlConfig {
        lib_path: Some(libc),
        ..Default::default()
    })
    .err()
    .expect("libc is not NVML");
    assert_eq!(e.kind, ErrorKind::NotAvailable, "{e}");
    assert!(
        e.message.contains("libnvidia-ml.so.1") || e.message.contains("lacks symbol"),
        "{}",
        e.message
    );
}
