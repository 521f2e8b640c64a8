//! Run configuration: TOML file + flags, validated once.
