//! zrecv-wrap
