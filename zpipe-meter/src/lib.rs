//! zpipe-meter
