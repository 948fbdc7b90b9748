//! One module per subcommand.

pub mod analyze;
pub mod calibrate;
pub mod child;
pub mod export;
pub mod load;
pub mod mark;
pub mod plot;
pub mod record;
pub mod sources;
