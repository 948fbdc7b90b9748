//! The `flinch` command line.
mod backends;

fn main() {
    let _ = backends::all();
}
