//! zpipe-verify
