//! `_acme-challenge` delegated by CNAME into another zone.
