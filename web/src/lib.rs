//! clreg's web UI: server-rendered pages (maud templates, checked at compile time), inline SVG
//! charts and the lineage graph, and the one stylesheet and script. Pure rendering: the server
//! gathers the data (and decides who may see what) and hands it here as plain view structs.

pub mod charts;
pub mod layout;
pub mod lineage;
pub mod pages;

/// The stylesheet, served at [`layout::CSS_PATH`].
pub const CSS: &str = include_str!("../static/clreg.css");
/// The script, served at [`layout::JS_PATH`]; pages work without it.
pub const JS: &str = include_str!("../static/clreg.js");
