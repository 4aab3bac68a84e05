//! zpipe-compress
