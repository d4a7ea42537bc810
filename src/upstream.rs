//! Connecting to an upstream (TCP, optional TLS) and fetching the secret to authenticate with.
