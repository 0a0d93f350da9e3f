//! What the egret packages ship besides the binaries, derived from the sources.
//!
//! - [`conffile`]: the default configs installed in `/etc/egret`.

pub mod conffile;
