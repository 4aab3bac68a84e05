//! zsend-wrap
